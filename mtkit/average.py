"""``python -m mtkit.average``: average the parameters of checkpoints into one checkpoint.

python -m mtkit.average CKPT [CKPT ...] -o avg.pt
python -m mtkit.average --last N RUN_DIR -o avg.pt

Averaging the weights of the last few checkpoints of one run (Junczys-Dowmunt et al.
2016; OpenNMT-py's ``average_models``) smooths out the noise of the final updates and
usually gains a little BLEU at no decoding cost, unlike an ensemble. Every floating-point
weight is averaged (in float64, then stored in its own dtype); integer buffers such as the
output vocabulary (``output_ids``) must be equal and are copied. The inputs must share the
architecture (model settings, weight names and shapes) and the text processing
(sentencepiece models, ``reverse_source``); the result is a normal checkpoint without
training state, whose ``data`` section lists the averaged files under ``averaged``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtkit.cli.io import check_output, exit_on_signals, write_checkpoint
from mtkit.errors import CheckpointError, ConfigError, run_cli
from mtkit.model.checkpoint import load_checkpoint, step_checkpoints

log = logging.getLogger(__name__)


def last_checkpoints(run_dir: Path, count: int) -> list[Path]:
    """The ``count`` latest ``step-XXXXXX.pt`` files of a run directory, oldest first."""
    if not run_dir.is_dir():
        raise ConfigError(f"--last {count} {run_dir}: no such run directory")
    steps = step_checkpoints(run_dir)
    if len(steps) < count:
        raise ConfigError(
            f"--last {count} {run_dir}: the run directory has {len(steps)} step-XXXXXX.pt "
            f"checkpoint(s); keep more with train.keep_checkpoints={count}"
        )
    return steps[-count:]


def _architecture_difference(reference: dict[str, Any], payload: dict[str, Any]) -> str | None:
    """What keeps ``payload`` from being averaged with ``reference``, or None."""
    ref_model, model = reference["model_config"], payload["model_config"]
    for key in sorted(set(ref_model) | set(model)):
        if ref_model.get(key) != model.get(key):
            return f"model.{key}={model.get(key)!r} (the first has {ref_model.get(key)!r})"
    ref_codec, codec = reference["codec"], payload["codec"]
    for key, name in (
        ("src_model", "sentencepiece model"),
        ("tgt_model", "target sentencepiece model"),
        ("reverse_source", "data.reverse_source"),
    ):
        if ref_codec.get(key) != codec.get(key):
            return f"a different {name}"
    ref_weights, weights = reference["weights"], payload["weights"]
    if set(ref_weights) != set(weights):
        names = sorted(set(ref_weights) ^ set(weights))
        return f"different weight names ({', '.join(names[:3])})"
    for name, tensor in weights.items():
        ref = ref_weights[name]
        if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
            return (
                f"weight {name} of shape {tuple(tensor.shape)} {tensor.dtype} "
                f"(the first has {tuple(ref.shape)} {ref.dtype})"
            )
        if not tensor.is_floating_point() and not torch.equal(tensor, ref):
            return f"different values of the integer buffer {name}"
    return None


def average_checkpoints(paths: Sequence[Path]) -> dict[str, Any]:
    """A checkpoint payload whose floating weights are the mean of those of ``paths``.

    Checkpoints are read one at a time, so memory holds two models' weights, not N.
    """
    if not paths:
        raise ConfigError("no checkpoints to average")
    reference = load_checkpoint(paths[0])
    sums = {
        name: tensor.double()
        for name, tensor in reference["weights"].items()
        if tensor.is_floating_point()
    }
    for path in paths[1:]:
        payload = load_checkpoint(path)
        difference = _architecture_difference(reference, payload)
        if difference is not None:
            raise CheckpointError(
                f"{path}: cannot be averaged with {paths[0]}: it has {difference}"
            )
        for name, total in sums.items():
            total += payload["weights"][name].double()
    weights = {
        name: (sums[name] / len(paths)).to(tensor.dtype) if name in sums else tensor.clone()
        for name, tensor in reference["weights"].items()
    }
    data = dict(reference["data"])
    data["averaged"] = [str(path) for path in paths]
    return {
        "format": reference["format"],
        "version": reference["version"],
        "model_config": reference["model_config"],
        "decode_config": reference["decode_config"],
        "data": data,
        "codec": reference["codec"],
        "weights": weights,
    }


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def run(args: argparse.Namespace) -> int:
    if args.last is not None:
        paths = last_checkpoints(Path(args.checkpoints[0]), args.last)
    else:
        paths = [Path(p) for p in args.checkpoints]
    output = check_output(args.output, "-o")  # a folder or a device is refused before the work
    for path in paths:
        if _same_file(output, path):
            raise ConfigError(
                f"-o {args.output}: is one of the input checkpoints; choose another file"
            )
    payload = average_checkpoints(paths)
    write_checkpoint(output, payload, "-o")
    names = ", ".join(path.name for path in paths)
    print(
        f"mtkit-average: {args.output}: the average of {len(paths)} checkpoint(s): {names}",
        file=sys.stderr,
    )
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mtkit-average",
        description="Average the weights of checkpoints of one architecture into a new "
        "checkpoint (for translation; it holds no training state).",
        epilog="Example: mtkit-average --last 5 runs/x -o runs/x/avg5.pt",
    )
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CKPT",
        help="checkpoints to average (or RUN_DIR with --last)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="the averaged checkpoint to write: a new name or a regular file, replaced "
        "only once complete (a folder, a device or a named pipe is refused)",
    )
    parser.add_argument(
        "--last",
        type=int,
        metavar="N",
        help="average the last N step-XXXXXX.pt checkpoints of the run directory given",
    )
    args = parser.parse_args(argv)
    if args.last is not None:
        if args.last < 1:
            parser.error("--last must be >= 1")
        if len(args.checkpoints) != 1:
            parser.error("--last N takes one run directory, not checkpoint files")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    with exit_on_signals("mtkit-average"):  # the temp file of a write under way goes too
        logging.basicConfig(level=logging.WARNING, format="mtkit-average: %(message)s")
        args = parse_args(argv)
        raise SystemExit(run_cli(lambda: run(args), "mtkit-average"))


if __name__ == "__main__":
    main()
