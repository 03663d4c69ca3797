#!/usr/bin/env python3
"""Two real speakers side by side from the training pool: which face is scored, and does
any genuine session end in alert? What is measured: :mod:`monitor.evaluation.speaker`.

    .venv/bin/python tools/eval_speaker.py [../shared/data/train] [--pairs 16] [--seconds 8]
                                           [--out /tmp/dfmon-speaker]

Nothing here is tuned on ../shared/data/dev.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitor.evaluation.speaker import evaluate_pair, pairs, real_clips_with_audio, table

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="each composite's length")
    parser.add_argument("--out", default="/tmp/dfmon-speaker")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "MANIFEST.tsv").exists():
        sys.stderr.write(f"eval_speaker: error: no MANIFEST.tsv in {data}\n")
        return 2
    results = []
    for speaker, other in pairs(real_clips_with_audio(data), args.pairs):
        for result in evaluate_pair(speaker, other, args.seconds):
            results.append(result)
            sys.stderr.write(
                f"{speaker.name[:32]:32s} + {other.name[:32]:32s} "
                f"speaker {'left ' if result.speaker_left else 'right'} "
                f"{'still' if result.still else 'moving'}: right {result.right}, wrong "
                f"{result.wrong}, none {result.none} of {result.windows}; {result.level}\n"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speaker.json").write_text(json.dumps([r.to_json() for r in results], indent=1))
    text = table(results)
    (out / "speaker.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
