"""``python -m mtkit.export CKPT [CKPT ...] -o DIR``: a checkpoint (or an ensemble) as an
ONNX export folder for :mod:`mtkit.onnx_runtime` (docs/deploying.md).

Everything that can be checked is checked before torch loads: the options, that the
exporter's libraries are installed and that ``-o`` names a new folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mtkit.errors import DataError, MtkitError, run_cli

PROG = "mtkit-export"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export an mtkit checkpoint (or an ensemble) to ONNX: encoder.onnx, "
        "step.onnx, the sentencepiece models and model.json, for mtkit.onnx_runtime.",
    )
    add = parser.add_argument
    add("checkpoints", nargs="+", metavar="CHECKPOINT", help="best.pt; several: an ensemble")
    add("-o", "--output", required=True, metavar="DIR", help="the export folder (must be new)")
    add("--weights", type=float, nargs="+", help="ensemble weights, one per checkpoint")
    add("--int8", action="store_true", help="also write each member's int8 step graph")
    args = parser.parse_args(argv)
    if args.weights is not None and len(args.weights) != len(args.checkpoints):
        parser.error("--weights needs one number per checkpoint")
    return args


def check_libraries(int8: bool) -> None:
    """The exporter's libraries, before anything loads (a one-line error naming the extra)."""
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if int8 else [])
    for name in needed:
        try:
            __import__(name)
        except ImportError:
            raise MtkitError(f"export needs {name}: pip install 'mtkit[export]'") from None


def run(args: argparse.Namespace) -> int:
    target = Path(args.output).expanduser()
    if target.exists():
        raise DataError(f"{target}: already exists; exports go to a new folder (-o)")
    check_libraries(args.int8)
    from mtkit.export.writer import export_loaded
    from mtkit.search.load import load

    weights = None if args.weights is None else tuple(args.weights)
    loaded = load(args.checkpoints, weights)
    export_loaded(loaded, target, int8=args.int8)
    print(f"{PROG}: wrote {target}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    args = parse_args(argv)
    raise SystemExit(run_cli(lambda: run(args), PROG))


if __name__ == "__main__":
    main()
