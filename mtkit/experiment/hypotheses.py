"""The test-set outputs an experiment keeps beside its report: ``hypotheses/``.

A paired test (sacreBLEU's bootstrap or approximate randomization) needs every run's
outputs and the references. The outputs are small and go with results.csv into the
repository, so anyone can rerun the tests of table.md; the references belong to a corpus
and are never copied: ``hypotheses/README.md`` names their file (``${corpora}/...``) and
the ``mtkit-evaluate`` command that reruns one test.

File names: ``<condition>-seed<k>.beam5.txt`` for a training experiment (run k's beam-5
output of its best.pt), ``<condition>-seed<k>.txt`` for a decoding-only one (seed k's
model decoded under the condition; ``<condition>.txt`` for a given checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mtkit.cli.io import check_output, write_text
from mtkit.config import PROJECT_ROOT, RunConfig
from mtkit.experiment.overrides import compose, merge
from mtkit.experiment.spec import ExperimentSpec

FOLDER = "hypotheses"


def file_name(run: str, decode_only: bool) -> str:
    """The file of run ``run`` (``<condition>-seed<k>``) in hypotheses/."""
    return f"{run}.txt" if decode_only else f"{run}.beam5.txt"


def shared_config(spec: ExperimentSpec) -> RunConfig:
    """The configuration every run shares (``data`` and ``common``): the test split's source."""
    return compose(merge(spec.data, spec.common))


def reference_file(spec: ExperimentSpec) -> str:
    """The test references as a report shows them: ``${corpora}/multi30k/test.en``, a
    path inside the project relative to it, or the dataset's name and split."""
    data = shared_config(spec).data
    if data.format == "hf":
        return f"the {data.test_split} split of {data.name} ({data.tgt_lang} side)"
    if data.format == "dir":
        path = f"{data.dir}/{data.test_split}.{data.tgt_lang}"
    else:  # files: [source, target]; tsv and jsonl: one file holding both sides
        path = data.test[-1] if data.test else "(no test file)"
    shown = spec.shown(path)
    try:
        return str(Path(shown).relative_to(PROJECT_ROOT))
    except ValueError:
        return shown


def write_hypotheses(
    folder: Path,
    spec: ExperimentSpec,
    outputs: Mapping[str, Sequence[str]],
    example: tuple[str, str] | None,
) -> None:
    """``outputs`` (run name -> lines) as files in ``folder``, and README.md with the
    references' file and a paired test of ``example`` (condition run, baseline run);
    nothing without outputs. Output files of runs no longer reported (an earlier stage
    of a run trained further, a condition renamed) are removed: the folder holds what
    results.csv reports, no more."""
    if not outputs:
        return
    references = reference_file(spec)
    folder.mkdir(parents=True, exist_ok=True)
    names = {file_name(run, spec.decode_only) for run in outputs}
    for stale in sorted(folder.glob("*.txt")):
        if stale.name not in names and stale.is_file():
            stale.unlink()
    for run, lines in outputs.items():
        text = "".join(line + "\n" for line in lines)
        write_text(check_output(folder / file_name(run, spec.decode_only), ""), text, "")
    lengths = sorted({len(lines) for lines in outputs.values()})
    write_text(
        check_output(folder / "README.md", ""), _readme(spec, lengths, example, references), ""
    )


def _readme(
    spec: ExperimentSpec, lengths: list[int], example: tuple[str, str] | None, references: str
) -> str:
    what = "beam-5 output of the run's best.pt"
    pattern = file_name("<condition>-seed<k>", spec.decode_only)
    if spec.decode_only:
        what = "seed k's base model decoded under the condition's search settings"
    if spec.checkpoint is not None:
        what, pattern = (
            "the checkpoint decoded under the condition's search settings",
            "<condition>.txt",
        )
    lines = [
        f"# Test-set outputs of experiment `{spec.name}`",
        "",
        f"`{pattern}`: {what}, one line per test sentence "
        f"({' or '.join(map(str, lengths)) or 'no'} lines).",
        f"References (not copied here): `{references}`, the test split as training reads it "
        "(a pair with an empty side is left out; drop such lines from the file first).",
    ]
    if example is not None:
        condition, baseline = (f"hypotheses/{file_name(r, spec.decode_only)}" for r in example)
        lines += [
            "",
            "A paired test of seed k of a condition against seed k of its baseline, from the "
            "folder holding results.csv (`--paired-test randomization` or `both` for "
            "approximate randomization; sacreBLEU seeds its resampling, so the p-value of "
            "comparisons.csv comes back):",
            "",
            f"    mtkit-evaluate --hyp {condition} --baseline {baseline} --ref {references} \\",
            "        --metrics bleu --paired-test bootstrap --paired-samples 1000",
        ]
    return "\n".join(lines) + "\n"
