#!/usr/bin/env python3
"""False alarms on hours of genuine calls, before and after the sequential decision.

    .venv/bin/python tools/eval_calls.py [--jobs 2] [--out /tmp/dfmon-calls] [--attacks]

Every real clip of ``../shared/data/dev`` and ``../shared/data/train`` (DUPLICATE SOURCE
rows once) is a genuine call, as recorded and as a call carries it (``--calls-per-clip``
re-encodings: H.264 or VP8 at 300-1500 kb/s, Opus, 360p-720p, lost frames; see
``monitor.evaluation.calls``). Each is played once through the full pipeline with the
default detectors, and its per-window evidence cached (``monitor.evaluation.sessions``:
what is kept, and why a decision replayed on it is the decision the pipeline makes). Then,
on the same evidence, both decision rules, ``legacy`` (before) and ``sequential`` (after):

- per session: the share of genuine calls that ever reach suspicious / alert, that end in
  alert, and false raises per hour;
- long calls: sessions chained into ``--calls`` calls of ``--call-minutes`` each (hours of
  genuine speech made of the same clips; the decision's state carries across);
- with ``--attacks``: the dev clips no detector trained on, with audio shifted +-200 and
  +-400 ms and swapped, under every condition: AUC against the same condition's genuine
  sessions (with counts), time to the first alarm, offset error.

Writes results.json and results.md into ``--out``. A warm cache makes a rerun take seconds;
a cold one replays every clip (about half an hour of media per condition).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from monitor.evaluation import call_report
from monitor.evaluation.dataset import default_data_root

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("eval_calls")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_root(REPO))
    parser.add_argument("--pools", default="dev,train", help="comma-separated pools")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dfmon-calls-cache"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/dfmon-calls"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--calls-per-clip", type=int, default=1, help="call re-encodings")
    parser.add_argument("--calls", type=int, default=20, help="long calls to chain")
    parser.add_argument("--call-minutes", type=float, default=30.0)
    parser.add_argument("--attacks", action="store_true", help="also shifted and swapped audio")
    parser.add_argument("--max-seconds", type=float, help="cut clips here (default: whole clips)")
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument(
        "--before",
        type=Path,
        help="another dfmon checkout (e.g. a clone of main) whose own pipeline replays the "
        "genuine sessions too: the 'before' figures",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    missing = [p for p in pools if not (args.data / p / "MANIFEST.tsv").exists()]
    if missing:
        log.error("no MANIFEST.tsv for %s under %s", ", ".join(missing), args.data)
        return 2
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    results = call_report.evaluate(
        args.data,
        pools=pools,
        cache_dir=args.cache,
        jobs=args.jobs,
        calls_per_clip=args.calls_per_clip,
        calls=args.calls,
        call_minutes=args.call_minutes,
        attacks=args.attacks,
        max_seconds=args.max_seconds,
        config_path=args.config,
        log_path=args.out / "workers.log",
        before=args.before,
    )
    results["runtime_seconds"] = round(time.monotonic() - started, 1)
    results["command"] = " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = call_report.markdown(results)
    (args.out / "results.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
