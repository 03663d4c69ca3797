#!/usr/bin/env python3
"""How fast the monitor is, against a baseline commit measured in the same run.

    .venv/bin/python tools/bench.py [--baseline main] [--runs 3] [--out /tmp/dfmon-bench]
                                    [--skip replay,capacity] [--include latency]

Two source trees are measured side by side with the same interpreter and packages: this
checkout ("current") and ``--baseline`` (a detached git worktree under /tmp, made once
per commit). Runs of the two alternate, so that load from other jobs on the machine
falls on both alike; every figure is the median of ``--runs`` runs, and the ratios are
current / baseline.

- **Replay on one core, process start included.** ``taskset -c 0`` on a fresh
  ``dfmon replay CLIP`` (``monitor.cli.main``) (one thread for numpy, torch and onnxruntime).
  x real time = media seconds / process wall seconds, from spawn to exit; beside it the
  same on the process's CPU seconds (what a core of its own would give, where other jobs
  share the machine). The same run
  also gives the replay loop alone, the time from spawn to the first analysed frame
  (the first frame through the face tracker), milliseconds per frame per stage from
  the session's stats (wall time), the CPU milliseconds per frame of each kind of thread
  during the replay loop (main, MediaPipe's, each detector's, the sync model's; each
  thread's own CPU time, so a stage's figure no longer holds the turns other threads
  took on the core while it waited), and peak RSS. Clips (made once, cached in
  /tmp/dfmon-bench):
  ``talking-head-512`` (24 s, 512x512, 25 fps: the three HDTF dev clips back to back,
  H.264 crf 23, AAC), ``real-720p`` (the HyperLips dev clip, 1278x720 H.264, 10.9 s,
  as it is), ``synthetic-720p`` (a 1280x720 synthetic call) and ``synthetic-480p``
  (640x480). Clips from ../shared/data/dev are skipped when it is absent.
- **Live sweep** (1 to 10 participants): each tree's own ``tools/bench_live.py capacity``
  (real WHIP sessions on loopback; the server in one process, publishers sending
  pre-encoded 640x480 25 fps VP8/Opus packets in another, so that encoding takes none of
  the server's CPU). Per count: the server's CPU share (cores), the frame drop fraction,
  latency median and p95 from window end to websocket. This script samples the server
  process's RSS: its peak per count, and the extra MiB per session (least-squares slope
  of peak RSS over the counts).
- ``--include latency``: ``dfmon replay --realtime --serve-alerts`` of the 720p clip with
  a websocket client here (window end to websocket, one participant, no WebRTC).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any


def thread_kind(name: str) -> str:
    """What a thread of a replay does, from its name: one kind per detector, the sync
    model's inference thread, the main thread, MediaPipe's own (native) threads."""
    if name.startswith("mediapipe/"):
        return "mediapipe"
    return "main" if name == "MainThread" else name.removeprefix("dfmon-")


class ThreadCpu:
    """CPU seconds of this process's threads by :func:`thread_kind` (Linux /proc).

    A thread that ends (each detector's runner ends with its session) takes its CPU time
    with it, so every Python thread started after :meth:`start` adds its own
    ``time.thread_time()`` when it ends; threads alive at a reading are read from
    /proc/self/task, Python's by ``native_id`` (the OS knows them by the process name),
    native ones (MediaPipe's calculator threads) by the name they gave themselves (those
    that gave none, such as the video decoder's: "other native").
    """

    def __init__(self) -> None:
        self.ended: dict[str, float] = {}
        # A thread past its run() is no longer Python's but may still be the OS's for a
        # moment: its id keeps /proc from counting it a second time, as a native thread.
        self._ended_ids: set[int] = set()
        self._ticks = os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        run, ended, ended_ids = threading.Thread.run, self.ended, self._ended_ids

        def counted_run(thread: threading.Thread) -> None:
            try:
                run(thread)
            finally:
                kind = thread_kind(thread.name)
                ended[kind] = ended.get(kind, 0.0) + time.thread_time()
                ended_ids.add(threading.get_native_id())

        threading.Thread.run = counted_run  # type: ignore[method-assign]

    def read(self) -> dict[str, float]:
        seconds = dict(self.ended)
        python_names = {t.native_id: t.name for t in threading.enumerate()}
        process_name = Path("/proc/self/comm").read_text().strip()
        for task in Path("/proc/self/task").iterdir():
            if task.name.isdigit() and int(task.name) in self._ended_ids:
                continue
            try:
                name = python_names.get(int(task.name)) or (task / "comm").read_text().strip()
                if name == process_name:  # a native thread that did not name itself
                    name = "other native"
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, ValueError):
                continue  # ended while read
            kind, cpu_s = thread_kind(name), (int(fields[11]) + int(fields[12])) / self._ticks
            seconds[kind] = seconds.get(kind, 0.0) + cpu_s
        return seconds


def worker_replay(clip: str, spawned: float, out: str) -> int:
    """``dfmon replay CLIP`` in the tree on ``PYTHONPATH``; write its stats, the CPU time of
    each kind of thread during the replay loop, when the first frame was analysed and the
    peak RSS to ``out``. Imports only what every tree has."""
    thread_cpu = ThreadCpu()
    thread_cpu.start()
    import monitor.pipeline
    import monitor.replay

    marks: dict[str, float] = {"imported": time.time() - spawned}
    results: list[Any] = []
    loop_cpu: dict[str, float] = {}
    add_video = monitor.pipeline.SessionAnalyzer.add_video

    def timed_add_video(self: Any, frame: Any) -> None:
        add_video(self, frame)
        marks.setdefault("first_frame", time.time() - spawned)

    replay_file = monitor.replay.replay_file

    def kept_replay_file(*args: Any, **kwargs: Any) -> Any:
        before = thread_cpu.read()
        result = replay_file(*args, **kwargs)
        after = thread_cpu.read()
        results.append(result)
        loop_cpu.update({k: v - before.get(k, 0.0) for k, v in after.items()})
        return result

    monitor.pipeline.SessionAnalyzer.add_video = timed_add_video  # type: ignore[method-assign]
    monitor.replay.replay_file = kept_replay_file
    from monitor.cli import main as dfmon

    status = dfmon(["replay", clip, "--out", os.devnull])
    if status != 0 or not results:
        return status or 1
    result = results[0]
    stats = result.stats
    record = {
        "media_seconds": result.media_seconds,
        "replay_seconds": result.wall_seconds,
        "video_frames": stats.video_frames,
        "windows": stats.windows_scored + stats.windows_insufficient,
        "level": result.summary.get("verdict", result.summary.get("level")),
        "stage_seconds": {"decode": result.decode_seconds, **stats.stage_seconds},
        "detector_seconds": stats.detector_seconds,
        "thread_cpu_seconds": loop_cpu,
        "marks": marks,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(out).write_text(json.dumps(record))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        kind, *rest = argv[1:]
        if kind == "replay":
            return worker_replay(rest[0], float(rest[1]), rest[2])
        raise SystemExit(f"unknown worker {kind}")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="commit to compare with (default main)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--out", default="/tmp/dfmon-bench", help="where bench.json/.md go")
    parser.add_argument("--clips", help="comma-separated subset of the clips")
    parser.add_argument("--skip", help="comma-separated: replay,capacity")
    parser.add_argument("--include", help="comma-separated extras: latency")
    parser.add_argument(
        "--live-counts", default="1,2,3,4,5,6,7,8,9,10", help="concurrent sessions to try"
    )
    parser.add_argument("--live-seconds", type=float, default=15.0, help="media seconds per count")
    args = parser.parse_args(argv)
    from monitor.evaluation import bench

    return bench.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
