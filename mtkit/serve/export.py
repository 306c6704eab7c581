"""Which served path is an ONNX export folder, and what an export cannot serve.

``mtkit-serve DIR`` on a folder written by ``mtkit-export`` serves it with the
onnxruntime runtime (:mod:`mtkit.serve.onnx`). The runtime does not do everything the
PyTorch path does, and what it does not do is refused, never ignored: the command line
refuses the options it cannot honour (:func:`export_option_problem`) before anything
loads, and a request that asks for attention weights or gives a target prefix gets a 422
(:data:`NO_ATTENTION`, :data:`NO_PREFIX`).
This module imports neither torch nor onnxruntime: the ``--worker inline --workers N``
supervisor checks its options here too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NO_ATTENTION = (
    "attention: not available when serving an ONNX export (its runtime returns no "
    "attention weights); expected false or no attention field"
)

NO_PREFIX = (
    "target_prefix: not available when serving an ONNX export (its runtime has no "
    "prefix-forced decoding); expected null or no target_prefix field"
)


def is_export(path: str | Path) -> bool:
    """Whether ``path`` names an export folder: a checkpoint is one file, an export a
    folder (whose ``model.json`` :func:`~mtkit.onnx_runtime.folder.read_meta` checks)."""
    return Path(path).expanduser().is_dir()


def export_option_problem(args: argparse.Namespace) -> str | None:
    """What in ``mtkit-serve``'s options an export cannot serve, as a one-line message;
    None when the options suit an export (or no export is served)."""
    paths = list(args.checkpoints)
    exports = [p for p in paths if is_export(p)]
    if not exports:
        return None
    if len(paths) > 1:
        return (
            f"{exports[0]} is an ONNX export folder, served alone; export an ensemble "
            "as one folder (mtkit-export CKPT CKPT -o DIR)"
        )
    refused = [
        (args.weights is not None, "--weights: an export's ensemble weights are in its model.json"),
        (args.shortlist, "--shortlist: an ONNX export has no shortlist"),
        (
            args.device not in ("cpu", "auto"),
            f"--device {args.device}: an ONNX export runs on the CPU",
        ),
        (args.precision == "bf16", "--precision bf16: an ONNX export runs in fp32 or int8"),
        (
            args.worker == "inline",
            "--worker inline: not available for an ONNX export (it steps PyTorch's greedy "
            "stream); use --worker process or thread",
        ),
    ]
    return next((message for bad, message in refused if bad), None)
