"""The ``data`` and ``tokenizer`` groups: where the parallel text comes from, and its subwords."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from mtkit.config.checks import check_choice, check_value


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it is turned into batches.

    ``format`` picks the reader: ``dir`` reads ``{dir}/{split}.{lang}`` files, ``files``
    reads explicit ``[source, target]`` file pairs, ``tsv`` reads ``source<TAB>target``
    lines, ``jsonl`` reads ``{"translation": {lang: text}}`` lines, and ``hf`` reads a
    Hugging Face dataset by hub id or local path (``name``).
    """

    format: str = "dir"
    dir: str | None = None
    name: str | None = None
    hf_config: str | None = None
    src_lang: str = MISSING
    tgt_lang: str = MISSING
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str | None = "test"
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    reverse_source: bool = True
    max_len: int = 100
    batch_tokens: int = 4000
    buckets: list[list[int]] | None = None
    pool_batches: int = 64
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        s = "data"
        check_choice(s, "format", self.format, ("dir", "files", "tsv", "jsonl", "hf"))
        self._check_file_lists()
        if MISSING not in (self.src_lang, self.tgt_lang):
            ok = self.src_lang != self.tgt_lang
            check_value(ok, s, "tgt_lang", self.tgt_lang, "a language other than data.src_lang")
        for key in ("max_len", "batch_tokens", "pool_batches"):
            value = getattr(self, key)
            check_value(value >= 1, s, key, value, "an integer >= 1")
        if self.buckets is not None:
            ok = len(self.buckets) > 0 and all(
                len(b) == 2 and b[0] >= 1 and b[1] >= 1 for b in self.buckets
            )
            check_value(ok, s, "buckets", self.buckets, "a list of [source_len, target_len] pairs")

    def _check_file_lists(self) -> None:
        """``files`` takes a [source, target] pair per split, ``tsv`` and ``jsonl`` one file;
        the test split may be left out."""
        per_split = {"files": 2, "tsv": 1, "jsonl": 1}.get(self.format)
        if per_split is None:
            return
        what = "[SOURCE_FILE, TARGET_FILE]" if per_split == 2 else "[FILE]"
        for key in ("train", "valid", "test"):
            paths = getattr(self, key)
            ok = len(paths) == per_split or (key == "test" and not paths)
            check_value(ok, "data", key, paths, f"a list {what}")


@dataclass
class TokenizerConfig:
    """Sentencepiece subwords, trained on the training split only, unless existing models
    are given (``model`` for both sides, or ``src_model`` and ``tgt_model``): then they
    encode the data as they are, and the training keys are not used."""

    type: str = "unigram"
    vocab_size: int = 8000
    joint: bool = True
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000
    model: str | None = None  # an existing sentencepiece .model for both languages
    src_model: str | None = None  # or one per side (both given)
    tgt_model: str | None = None

    def __post_init__(self) -> None:
        s = "tokenizer"
        if self.model is not None:
            ok = self.src_model is None and self.tgt_model is None
            expected = "null when tokenizer.src_model / tgt_model are given (one or the other)"
            check_value(ok, s, "model", self.model, expected)
        if (self.src_model is None) != (self.tgt_model is None):
            key = "src_model" if self.src_model is not None else "tgt_model"
            other = "tgt_model" if key == "src_model" else "src_model"
            value = getattr(self, key)
            check_value(False, s, key, value, f"tokenizer.{other} too (or tokenizer.model)")
        check_choice(s, "type", self.type, ("unigram", "bpe"))
        check_value(self.vocab_size >= 16, s, "vocab_size", self.vocab_size, "an integer >= 16")
        ok = 0.9 <= self.character_coverage <= 1.0
        check_value(ok, s, "character_coverage", self.character_coverage, "a number in [0.9, 1]")
        ok = self.max_sentences >= 1
        check_value(ok, s, "max_sentences", self.max_sentences, "an int >= 1")

    @property
    def given_models(self) -> dict[str, str] | None:
        """``{"src": path, "tgt": path}`` of existing models (the same path for both sides
        with ``model``), or None when sentencepiece is to be trained."""
        if self.model is not None:
            return {"src": self.model, "tgt": self.model}
        if self.src_model is not None and self.tgt_model is not None:
            return {"src": self.src_model, "tgt": self.tgt_model}
        return None
