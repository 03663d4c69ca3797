"""Sessions replayed by another checkout of dfmon: "before" figures from the code that was.

``tools/eval_calls.py --before CHECKOUT`` measures the product as it was (its sync model,
its fusion) on the very files the current product is measured on. Each job runs one
long-lived interpreter with ``PYTHONPATH=CHECKOUT``, so ``import monitor`` is that
checkout's package; it replays files with that package's own ``monitor.replay.replay_file``
(an API both versions share) and writes each session's events. Records are built from the
events (:func:`monitor.evaluation.sessions.record_from_events`) and cached by the
checkout's commit.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from monitor.evaluation.corpus import PreparedCondition
from monitor.evaluation.sessions import GENUINE, SessionRecord, record_from_events

# Runs inside the other checkout's interpreter: only APIs every version has.
_WORKER = r"""
import json, sys
from monitor.config import load_config
from monitor.replay import replay_file
config = load_config()
for line in sys.stdin:
    media, out = json.loads(line)
    events = []
    result = replay_file(media, config, events.append)
    with open(out, "w") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")
    print(json.dumps({"media_seconds": result.media_seconds}), flush=True)
"""


def checkout_commit(checkout: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()


class _Worker:
    """One interpreter of the other checkout, fed one file at a time."""

    def __init__(self, checkout: Path, log_path: Path | None) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(checkout),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "GLOG_minloglevel": "2",
        }
        stderr = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            cwd=checkout,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    def replay(self, media: str, out: Path) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([media, str(out)]) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline worker died on {media}")
        return float(json.loads(line)["media_seconds"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def baseline_records(
    prepared: Sequence[PreparedCondition],
    checkout: Path,
    cache_dir: Path,
    jobs: int,
    log_path: Path | None = None,
) -> list[SessionRecord]:
    """The genuine session of every prepared condition, as ``checkout`` replays it."""
    commit = checkout_commit(checkout)
    directory = cache_dir / "baseline" / commit[:12]
    directory.mkdir(parents=True, exist_ok=True)
    local = threading.local()
    workers: list[_Worker] = []
    lock = threading.Lock()

    def one(item: PreparedCondition) -> SessionRecord:
        key = hashlib.sha1(
            json.dumps([item.clip.key, item.condition, item.media_path]).encode()
        ).hexdigest()[:12]
        target = directory / f"{item.clip.stem[:60]}.{item.condition}.{key}.json.gz"
        if target.exists():
            with gzip.open(target, "rt") as handle:
                return SessionRecord.from_json(json.load(handle))
        worker = getattr(local, "worker", None)
        if worker is None:
            worker = local.worker = _Worker(checkout, log_path)
            with lock:
                workers.append(worker)
        events_path = target.with_suffix(".events.jsonl")
        media_seconds = worker.replay(item.media_path, events_path)
        events: list[dict[str, Any]] = [
            json.loads(line) for line in events_path.read_text().splitlines()
        ]
        events_path.unlink()
        record = record_from_events(
            events,
            clip=item.clip.key,
            condition=item.condition,
            variant=GENUINE,
            media_seconds=media_seconds,
        )
        tmp = target.with_name(f".{target.name}.tmp")
        with gzip.open(tmp, "wt") as handle:
            json.dump(record.to_json(), handle, separators=(",", ":"))
        os.replace(tmp, target)
        return record

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            return list(pool.map(one, prepared))
    finally:
        for worker in workers:
            worker.close()
