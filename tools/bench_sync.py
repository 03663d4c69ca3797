"""Size, compute and speed of the learned sync model against SyncNet's architecture.

What is measured and how: :mod:`monitor.evaluation.sync_speed`.

    .venv/bin/python tools/bench_sync.py [--threads 2] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monitor.evaluation.sync_speed import benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--syncnet-repeats", type=int, default=3)
    parser.add_argument("--no-onnx-syncnet", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    result = benchmark(args.threads, args.repeats, args.syncnet_repeats, not args.no_onnx_syncnet)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
