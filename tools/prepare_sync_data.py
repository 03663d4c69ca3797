"""Extract (and cache) the learned sync model's training, calibration and evaluation data.

What is extracted, how, and the splits: :mod:`monitor.training.sync_data`.

Run: ``.venv/bin/python tools/prepare_sync_data.py [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import logging

from monitor.training.sync_data import (
    DATA_ROOT,
    calibration_jobs,
    evaluation_jobs,
    run_jobs,
    training_jobs,
)

log = logging.getLogger("prepare_sync_data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="parallel extraction processes")
    parser.add_argument("--variants", type=int, default=2, help="call re-encodings per clip")
    parser.add_argument("--synth", type=int, default=24, help="synthetic calls to render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not DATA_ROOT.exists():
        log.error("no data at %s", DATA_ROOT)
        return 2
    jobs = evaluation_jobs()
    if not args.eval_only:
        jobs = (
            training_jobs(args.variants, args.synth, args.seed) + calibration_jobs(args.seed) + jobs
        )
    run_jobs(jobs, args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
