#!/usr/bin/env python
"""Measure the live path on loopback: alert latency, capacity, and A/V alignment error.

    python tools/bench_live.py latency  [--participants 1] [--seconds 30]
    python tools/bench_live.py capacity [--counts 1,2,3,4,6,8] [--seconds 20] [--analysis none]
    python tools/bench_live.py align    [--runs 5] [--participants 1]

``latency`` and ``capacity`` run ``dfmon serve``'s parts (LiveServer, AlertServer, the
real SessionAnalyzer) in this process, and the publishers in a child process so that
they do not share this process's event loop and GIL. The publishers send pre-encoded
VP8 and Opus packets from a synthetic .webm call (looped, paced in real time), which
costs them almost no CPU: on a 2-core machine every cycle they spare is the server's.

Latency of a window = its delivery time on the /alerts websocket (the publisher
process's listener) - the wall time at which the publisher sent media time ``t_end``.

``capacity --analysis none`` serves the same sessions with an analyzer that takes the
frames and does nothing with them: what the WebRTC side alone costs (CPU, memory).

``align`` publishes a flash/beep probe clip (monitor/live/probe.py) through the full
encode/decode path and reports where audio lands relative to video.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitor.live.client import publish_packets

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench"
CACHE = Path(tempfile.gettempdir()) / "dfmon-bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bench_clip() -> Path:
    """A synthetic in-sync call as VP8 + Opus (.webm), 640x480 25 fps, made once."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "call-640x480.webm"
    if not path.exists():
        from monitor.synth.call import make_call

        make_call(path, seed=2)
    return path


# ----- publisher side (child process) ------------------------------------------------------


async def run_publishers(args: argparse.Namespace) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    clip = Path(args.clip)
    names = [f"p{i}" for i in range(args.n)]
    received: list[tuple[float, dict]] = []
    ws = await connect(args.alerts, additional_headers={"Authorization": f"Bearer {TOKEN}"})

    async def listen() -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                received.append((time.time(), json.loads(message)))

    listener = asyncio.create_task(listen())
    pushes = await asyncio.gather(
        *(
            publish_packets(clip, args.url, seconds=args.seconds, token=TOKEN, participant=name)
            for name in names
        )
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = {e["participant"] for _, e in received if e["type"] == "summary"}
        if done >= set(names):
            break
        await asyncio.sleep(0.1)
    await ws.close()
    await listener
    result: dict[str, Any] = {}
    for name, stats in zip(names, pushes, strict=True):
        mine = [(t, e) for t, e in received if e["participant"] == name]
        scores = [(t, e) for t, e in mine if e["type"] == "score"]
        latencies = [t - (stats.start_wall + e["t_end"]) for t, e in scores]
        summary = next((e for _, e in mine if e["type"] == "summary"), {})
        result[name] = {
            "latencies": latencies,
            "windows": len(scores),
            "dropped": summary.get("dropped_by_kind", {}),
            "level": summary.get("verdict", summary.get("level")),
            "video_sent": stats.video_frames,
            "late_frames": stats.late_frames,
        }
    return result


# ----- server side (this process) ----------------------------------------------------------


async def serve_and_publish(
    n: int, seconds: float, clip: Path, analysis: bool = True
) -> dict[str, Any]:
    from monitor.config import load_config
    from monitor.evaluation.bench import RssSampler
    from monitor.live.session import MediaOnlyAnalyzer, default_analyzer_factory
    from monitor.live.whip import LiveServer
    from monitor.sinks.websocket import AlertServer

    config = load_config()
    alerts = AlertServer("127.0.0.1", 0, token=TOKEN, config=config.alerts)
    await alerts.start()
    server = LiveServer(
        config,
        token=TOKEN,
        sinks=[alerts.publish],
        alerts_port=alerts.port,
        analyzer_factory=default_analyzer_factory if analysis else MediaOnlyAnalyzer,
    )
    await server.start("127.0.0.1", 0)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.monotonic()
    command = [
        sys.executable, __file__, "_publish", "--url", server.url, "--alerts", alerts.url,
        "--n", str(n), "--seconds", str(seconds), "--clip", str(clip),
    ]  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    sampler = RssSampler(os.getpid())
    sampler.start()
    out, _ = await child.communicate()
    sampler.stop()
    wall = time.monotonic() - wall_before
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    metrics = server.metrics
    frames = dict(metrics.frames_in)
    dropped = dict(metrics.frames_dropped)
    await server.stop()
    await alerts.stop()
    publishers = json.loads(out)
    latencies = [x for p in publishers.values() for x in p["latencies"]]
    # Lag growth: does the last third of the call come out later than the first third?
    growth = []
    for p in publishers.values():
        lat = p["latencies"]
        third = max(1, len(lat) // 3)
        if len(lat) >= 3:
            growth.append(statistics.median(lat[-third:]) - statistics.median(lat[:third]))
    return {
        "participants": n,
        "seconds": seconds,
        "server_cpu_cores": round(cpu / wall, 2),
        "frames_in": frames,
        "frames_dropped": dropped,
        "drop_fraction": round(sum(dropped.values()) / max(1, sum(frames.values())), 4),
        "windows": sum(p["windows"] for p in publishers.values()),
        "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
        "lag_growth_s": round(max(growth), 3) if growth else None,
        "levels": [p["level"] for p in publishers.values()],
        "server_peak_rss_mib": (
            round(max(mib for _, mib in sampler.samples), 1) if sampler.samples else None
        ),
    }


async def measure_alignment(runs: int, participants: int) -> dict[str, Any]:
    from monitor.config import load_config
    from monitor.live.client import push_file
    from monitor.live.probe import measure_probe, write_probe_clip
    from monitor.live.whip import LiveServer
    from tests.live_util import RecordingAnalyzer

    CACHE.mkdir(exist_ok=True)
    clip = CACHE / "probe.mkv"
    write_probe_clip(clip, duration_s=6.2, events_s=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    server = LiveServer(load_config(), token=TOKEN, analyzer_factory=RecordingAnalyzer)
    await server.start("127.0.0.1", 0)
    errors: list[float] = []
    pts_errors: list[float] = []
    for _ in range(runs):
        RecordingAnalyzer.instances.clear()
        await asyncio.gather(
            *(push_file(clip, server.url, token=TOKEN) for _ in range(participants))
        )
        for analyzer in RecordingAnalyzer.instances:
            result = measure_probe(analyzer.video, analyzer.audio)
            errors.extend(result.av_errors_ms)
            # Both tracks' first frames are media time 0 at the sender.
            pts_errors.append(1000 * (analyzer.video[0].t - analyzer.audio[0].t))
    await server.stop()
    return {
        "runs": runs,
        "participants": participants,
        "content_error_ms": {
            "mean": round(statistics.mean(errors), 2),
            "min": round(min(errors), 2),
            "max": round(max(errors), 2),
            "n": len(errors),
        },
        "clock_error_ms": {
            "mean": round(statistics.mean(pts_errors), 2),
            "min": round(min(pts_errors), 2),
            "max": round(max(pts_errors), 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    latency = sub.add_parser("latency")
    latency.add_argument("--participants", type=int, default=1)
    latency.add_argument("--seconds", type=float, default=30.0)
    capacity = sub.add_parser("capacity")
    capacity.add_argument("--counts", default="1,2,3,4,6")
    capacity.add_argument("--seconds", type=float, default=20.0)
    capacity.add_argument(
        "--analysis", choices=("full", "none"), default="full",
        help="none: frames taken and not analysed (the WebRTC side alone)",
    )  # fmt: skip
    align = sub.add_parser("align")
    align.add_argument("--runs", type=int, default=5)
    align.add_argument("--participants", type=int, default=1)
    publish = sub.add_parser("_publish")  # the child process
    for flag in ("--url", "--alerts", "--clip"):
        publish.add_argument(flag, required=True)
    publish.add_argument("--n", type=int, required=True)
    publish.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()

    if args.mode == "_publish":
        print(json.dumps(asyncio.run(run_publishers(args))))
        return 0
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    # The server here is `dfmon serve`'s, memory settings included (before any thread).
    from monitor.config import load_config
    from monitor.live.memory import limit_arenas

    limit_arenas(load_config().live.malloc_arena_max)
    if args.mode == "align":
        print(json.dumps(asyncio.run(measure_alignment(args.runs, args.participants)), indent=2))
        return 0
    clip = bench_clip()
    counts = (
        [args.participants] if args.mode == "latency" else [int(c) for c in args.counts.split(",")]
    )
    analysis = getattr(args, "analysis", "full") == "full"  # latency mode has no flag
    for n in counts:
        result = asyncio.run(serve_and_publish(n, args.seconds, clip, analysis))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
