#!/usr/bin/env python3
"""Calibrate the sequential decision on the training pool: decision_calibration.json.

    .venv/bin/python tools/calibrate_decision.py [--jobs 2] [--report /tmp/dfmon-calibration]

Clips: the training pool's real clips that the sync model never trained on and its fake
clips that the temporal detector's calibration never saw (``../shared/data/train``; the dev
pool is never used). Each is replayed through the full pipeline as recorded and under one
call condition (``monitor.evaluation.calls``); real clips also with their audio shifted by
+-200 and +-400 ms and swapped for another source's speech. Then, per detector, a map from
window score to log-likelihood ratio (``monitor.evaluation.calibrate``), judged out of fold
(folds by source), and the level thresholds for the config's false-alarm targets, chosen on
the out-of-fold evidence of the genuine sessions. Prints the thresholds to put in
``monitor/config.py``; the report has every figure. See docs/CALIBRATION.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from monitor.evaluation import calibration_run
from monitor.evaluation.dataset import default_data_root

log = logging.getLogger("calibrate_decision")
REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_root(REPO))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dfmon-calls-cache"))
    parser.add_argument("--report", type=Path, default=Path("/tmp/dfmon-calibration"))
    parser.add_argument(
        "--out", type=Path, default=REPO / "monitor" / "models" / "decision_calibration.json"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--calls-per-clip", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cut clips here")
    parser.add_argument("--config", help="TOML config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.data / "train" / "MANIFEST.tsv").exists():
        log.error("no training pool at %s", args.data / "train")
        return 2
    started = time.monotonic()
    args.report.mkdir(parents=True, exist_ok=True)
    result = calibration_run.run(
        args.data,
        cache_dir=args.cache,
        jobs=args.jobs,
        folds=args.folds,
        calls_per_clip=args.calls_per_clip,
        max_seconds=args.max_seconds,
        config_path=args.config,
        log_path=args.report / "workers.log",
    )
    result.calibration.save(args.out)
    report = {**result.report, "runtime_seconds": round(time.monotonic() - started, 1)}
    (args.report / "calibration.json").write_text(json.dumps(report, indent=1))
    (args.report / "calibration.md").write_text(calibration_run.markdown(report))
    sys.stdout.write(calibration_run.markdown(report))
    log.info("wrote %s and %s", args.out, args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
