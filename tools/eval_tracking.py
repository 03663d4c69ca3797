#!/usr/bin/env python3
"""Cheaper face tracking (``--interval``) against full tracking on the training pool's real
clips: lip-aperture and mouth-crop error, CPU per frame. What is measured:
:mod:`monitor.evaluation.tracking`.

    .venv/bin/python tools/eval_tracking.py [../shared/data/train] [--interval 2] [--limit 20]
                                            [--seconds 10] [--out /tmp/dfmon-tracking]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitor.evaluation.tracking import evaluate_clip, real_clips, table

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--limit", type=int, default=20, help="clips (manifest order)")
    parser.add_argument("--seconds", type=float, default=10.0, help="frames per clip")
    parser.add_argument("--out", default="/tmp/dfmon-tracking")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "MANIFEST.tsv").exists():
        sys.stderr.write(f"eval_tracking: error: no MANIFEST.tsv in {data}\n")
        return 2
    rows = []
    for path in real_clips(data)[: args.limit]:
        row = evaluate_clip(path, args.interval, args.seconds)
        if row is None:
            continue
        rows.append(row)
        sys.stderr.write(
            f"{path.name[:50]:50s} lips {row['lip_error_pct_median']:.2f}% "
            f"aperture {row['aperture_error_median']:.4f} crop {row['mouth_crop_error_median']:.1f}"
            f" ms {row['reference_ms']:.1f} -> {row['carried_ms']:.1f}\n"
        )
    if not rows:
        sys.stderr.write("eval_tracking: no clip with a tracked face\n")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking.json").write_text(
        json.dumps({"interval": args.interval, "clips": rows}, indent=1)
    )
    text = table(rows, args.interval, str(data), args.seconds)
    (out / "tracking.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
