"""What an experiment is: one YAML file per experiment under ``conf/experiment/``.

An experiment is data, not code: the corpus (``data``), the overrides every run shares
(``common``), named ``conditions`` (lists of ``key=value`` overrides), a per-run
wall-clock budget, the number of seeds, and optional plots. A decoding-only experiment
(``decode_only: true``) trains one ``base`` model per seed (or decodes the models another
experiment trained, ``base_from``, or one ``checkpoint``) and its conditions are search
settings (``decode.*``).

This module holds the checked form (:class:`ExperimentSpec`) and the names a file may
use; :mod:`mtkit.experiment.load` reads and checks the files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from mtkit.config import CONF_DIR, PROJECT_ROOT
from mtkit.errors import ConfigError
from mtkit.experiment.budget import Budget

EXPERIMENT_DIR = CONF_DIR / "experiment"
CORPORA = "${corpora}"
LENGTH_SPLIT = "${length_split}"  # in data: the folder the length_split key builds
LENGTH_SPLIT_DIR = Path("data") / "length-split"  # under the experiment's output folder
LENGTH_SPLIT_KEYS = ("from", "max_words", "concat")
TOP_KEYS = (
    "description",
    "paper",
    "data",
    "budget_minutes",
    "budget_steps",
    "converge",
    "patience",
    "seeds",
    "seed",
    "common",
    "conditions",
    "plots",
    "decode_only",
    "base",
    "base_from",
    "checkpoint",
    "length_buckets",
    "compare",
    "length_split",
    "extra_tests",
)
REQUIRED_KEYS = ("description", "paper", "data", "conditions")
PAPER_KEYS = ("citation", "claim", "effect")  # effect: the number the paper reports, short
PLOT_KEYS = ("name", "kind", "x", "y", "series", "log_x")
PLOT_KINDS = ("scatter", "sweep")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# Set by the runner for every run; an experiment may not set them itself.
RESERVED_KEYS = (
    "train.seed",
    "train.resume",
    "train.max_minutes",
    "train.max_steps",
    "train.overwrite",
)
# Keys that would give one condition another test set than the others.
TEST_SET_KEYS = (
    "data",
    "data.format",
    "data.dir",
    "data.name",
    "data.hf_config",
    "data.src_lang",
    "data.tgt_lang",
    "data.test_split",
    "data.test",
)

# Columns of results.csv: what a plot's ``x``/``y`` may name.
TRAIN_COLUMNS = (
    "experiment",
    "condition",
    "seed",
    "steps",
    "minutes",
    "stop_reason",
    "val_bleu",
    "test_bleu_greedy",
    "test_bleu_beam5",
    "chrf_beam5",
    "len_ratio",
    "distinct_pct",
    "tokens_per_s",
    "parameters",
    "padding_pct",
    "overrides",
)
DECODE_COLUMNS = (
    "experiment",
    "condition",
    "seed",
    "steps",
    "minutes",
    "val_bleu",
    "parameters",
    "test_bleu",
    "chrf",
    "len_ratio",
    "out_words",
    "distinct_pct",
    "decode_s",
    "overrides",
)


@dataclass
class PlotSpec:
    """An experiment-specific figure, written as ``<name>.png``.

    ``scatter``: one point per run at (``x``, ``y[0]``), results columns, a colour per
    condition. ``sweep``: ``x`` and ``series`` are override keys (``decode.beam_size``),
    one panel per column in ``y``, one line per value of ``series``, seeds averaged.
    """

    name: str
    kind: str
    x: str
    y: list[str]
    series: str | None = None
    log_x: bool = False


EXPECT_SIGNS = {"higher": 1, "lower": -1, "either": 0}
COMPARE_KEYS = ("condition", "baseline", "expect", "metric")


@dataclass(frozen=True)
class Comparison:
    """``condition`` against ``baseline`` on one metric, with the sign the paper reports.

    The difference is ``condition - baseline``; ``expect`` is +1 when the paper found the
    condition higher, -1 lower, 0 when it makes no directional claim.
    """

    condition: str
    baseline: str
    expect: int = 0
    metric: str | None = None  # a results.csv column; None: the experiment's key metric


@dataclass(frozen=True)
class LengthSplit:
    """``length_split: {from: DIR, max_words: 20, concat: 5}``: the runner builds
    :func:`mtkit.corpus.length_split.build_length_split` of ``source`` into
    ``<out>/data/length-split`` before anything runs; ``${length_split}`` in ``data``
    stands for that folder."""

    source: Path
    max_words: int = 20
    concat: int = 5


@dataclass(frozen=True)
class BaseFrom:
    """``base_from: {experiment: reversal, condition: attention_natural}``: a decoding-only
    experiment decodes the best.pt of that experiment's runs of that condition (seed k's
    for seed k) instead of training base models of its own. The runs are found in the
    other experiment's output folder beside this one's (``experiments/<experiment>``) and
    are trained there, by that experiment, under its own budget."""

    experiment: str
    condition: str


@dataclass
class ExperimentSpec:
    """A checked experiment file, with ``${corpora}`` already substituted."""

    name: str
    path: Path
    description: str
    citation: str
    claim: str
    data: list[str]
    data_display: list[str]  # as written in the file (``${corpora}`` kept), for reports
    conditions: dict[str, list[str]]
    budget: Budget = field(default_factory=lambda: Budget(steps=1000))
    seeds: int = 3
    seed: int = 1234
    common: list[str] = field(default_factory=list)
    plots: list[PlotSpec] = field(default_factory=list)
    decode_only: bool = False
    base: list[str] = field(default_factory=list)
    base_from: BaseFrom | None = None
    checkpoint: Path | None = None
    length_buckets: list[int] = field(default_factory=lambda: [5, 10, 15, 20, 30])
    compare: list[Comparison] = field(default_factory=list)
    corpora: str = ""  # what ``${corpora}`` stood for
    effect: str = ""  # the paper's effect in a few words (``+4.7 BLEU``), for summaries
    length_split: LengthSplit | None = None
    extra_tests: list[str] = field(default_factory=list)  # more splits of data, for figures
    length_split_dir: str = ""  # what ``${length_split}`` stands for, once built

    def with_length_split(self, folder: Path) -> ExperimentSpec:
        """This spec with ``${length_split}`` in ``data`` standing for ``folder``."""
        text = str(folder)
        data = [o.replace(LENGTH_SPLIT, text) for o in self.data]
        return replace(self, data=data, length_split_dir=text)

    @property
    def columns(self) -> tuple[str, ...]:
        return DECODE_COLUMNS if self.decode_only else TRAIN_COLUMNS

    def shown(self, override: str) -> str:
        """An override as a report shows it: ``${corpora}`` and ``${length_split}`` again."""
        if self.length_split_dir:
            override = override.replace(self.length_split_dir, LENGTH_SPLIT)
        return override.replace(self.corpora, CORPORA) if self.corpora else override

    def stages(self, extra: list[str]) -> list[tuple[str, list[str]]]:
        """The override lists in the order they apply, named for error messages."""
        stages = [("data", self.data), ("common", self.common), ("command line", extra)]
        if self.base:
            stages.append(("base", self.base))
        return stages + [(f"conditions.{n}", o) for n, o in self.conditions.items()]


def experiment_path(name: str) -> Path:
    """``NAME`` (a file in conf/experiment/) or a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or "/" in name:
        if not candidate.is_file():
            raise ConfigError(f"{name}: no such experiment file")
        return candidate
    path = EXPERIMENT_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_experiments()) or "none"
        raise ConfigError(f"unknown experiment '{name}'; available: {known}")
    return path


def available_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))


def corpora_dir(option: str | None) -> Path:
    """``--corpora``, else ``$MTKIT_SHARED_CORPORA``, else ``../shared/corpora`` of the repo."""
    chosen = option or os.environ.get("MTKIT_SHARED_CORPORA")
    path = Path(chosen) if chosen else PROJECT_ROOT.parent / "shared" / "corpora"
    return path.expanduser().absolute()


def display(path: Path) -> str:
    """A path as short as possible: relative to the working directory when inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
