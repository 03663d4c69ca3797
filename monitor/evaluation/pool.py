"""The evaluation tools' worker pool: spawned processes, one thread each, progress on stderr."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any


def open_pool(jobs: int, log_path: Path | None) -> ProcessPoolExecutor | None:
    """Spawned workers (MediaPipe and torch do not survive fork well); none for one job."""
    from monitor.evaluation import scoring

    if jobs <= 1:
        scoring.init_worker()
        return None
    os.environ.update({k: v for k, v in scoring.WORKER_ENVIRONMENT.items() if k not in os.environ})
    return ProcessPoolExecutor(
        jobs,
        mp_context=get_context("spawn"),
        initializer=scoring.init_worker,
        initargs=(None if log_path is None else str(log_path),),
    )


def run_all(
    pool: ProcessPoolExecutor | None, fn: Callable[[Any], Any], tasks: Sequence[Any], what: str
) -> list[Any]:
    """``fn`` over ``tasks`` in order (in the pool when there is one), with progress on stderr."""
    results: list[Any] = []
    iterator = map(fn, tasks) if pool is None else pool.map(fn, tasks)
    started = time.monotonic()
    for i, result in enumerate(iterator, start=1):
        results.append(result)
        sys.stderr.write(f"\r{what}: {i}/{len(tasks)} ({time.monotonic() - started:.0f} s)")
        sys.stderr.flush()
    if tasks:
        sys.stderr.write("\n")
    return results
