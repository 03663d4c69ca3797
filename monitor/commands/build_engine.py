"""``dfmon build-engine [--precision fp16|fp32]``: TensorRT engine for the sync model.

Builds from monitor/models/sync_v2.onnx into trt_engines/ (or ``--out``), keyed by the
ONNX hash, TensorRT version, GPU name and compute capability, and precision; an engine
with the same key is reused unless ``--force``. Needs TensorRT and a CUDA GPU.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build-engine",
        help="build (or reuse) the TensorRT engine of the learned lip-sync model",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    parser.add_argument("--out", metavar="DIR", help="engine directory (default: trt_engines/)")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a cached engine matches"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.errors import BackendUnavailableError
    from monitor.sync.engine import build_engine, import_tensorrt

    try:
        trt = import_tensorrt()
        path, built = build_engine(
            args.precision,
            trt=trt,
            cache_dir=Path(args.out) if args.out else None,
            force=args.force,
        )
    except BackendUnavailableError as exc:
        # Not bad input, but a missing capability: say so in one line, exit 1.
        log.error("cannot build a TensorRT engine here: %s", exc)
        return 1
    action = "built" if built else "reused cached"
    print(f"{action} TensorRT {trt.__version__} {args.precision} engine: {path}")
    return 0
