#!/usr/bin/env python
"""Measure alert delivery: the cost per event, and what an outage of the receiver costs.

    python tools/bench_sinks.py overhead [--windows 2000] [--runs 5]
    python tools/bench_sinks.py outage [--participants 40] [--outage-s 3]

Both use a real receiver on loopback: ``dfmon verify-webhook --listen`` in a child process,
which checks every signature. ``overhead`` pushes one synthetic session (score events with
lip-sync and temporal evidence, a level change every 20 windows) through the event fan-out
three ways, interleaved, ``--runs`` times:

- ``baseline``: the JSONL file only (what ``dfmon replay --out`` always does);
- ``alerts``: plus a signed webhook, syslog CEF over UDP and a Teams report file, with the
  default policy (alert and summary, one alert per participant per 60 s);
- ``every-event``: the same sinks with every score, alert and summary delivered unthrottled.

It reports, as medians, the time the producer (the session's thread) spends in
``publish`` per event and the whole process's CPU per event (the delivery thread
included), each also as a ratio to the baseline of the same run.

``outage`` publishes alerts for ``--participants`` at a steady pace, stops the receiver for
``--outage-s`` seconds in the middle, restarts it, and counts: sent, retried, failed,
dropped, dead-lettered, received (unique), repeats, and lost (expected minus received
minus dead-lettered).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitor.config import load_config
from monitor.evaluation.machine import describe_machine, machine_line
from monitor.sinks.build import build_delivery
from monitor.sinks.fanout import EventFanout
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.notices import NoticePolicy
from monitor.synth.events import HOP_S, WINDOW_S, session_events

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_session(windows: int, participant: str = "bench", flip_every: int = 20) -> list[dict]:
    """``windows`` scores of one session whose level flips clear/alert every ``flip_every``."""
    changes = [
        (n * HOP_S + WINDOW_S, "alert" if (n // flip_every) % 2 else "clear")
        for n in range(flip_every, windows, flip_every)
    ]
    until_s = (windows - 1) * HOP_S + WINDOW_S
    return session_events(changes, until_s=until_s, participant=participant, session=participant)


class Receiver:
    """``dfmon verify-webhook --listen`` in a child process, on a fixed port."""

    def __init__(self, port: int, out: Path, env: dict[str, str]) -> None:
        self.port, self.out, self.env = port, out, env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        command = [sys.executable, "-m", "monitor", "verify-webhook"]
        command += ["--listen", f"127.0.0.1:{self.port}", "--out", str(self.out)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the receiver did not come up")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def ids(self) -> list[str]:
        if not self.out.exists():
            return []
        return [json.loads(line)["webhook_id"] for line in self.out.read_text().splitlines()]


def fanout_for(mode: str, workdir: Path, receiver: Receiver, udp_port: int) -> tuple[Any, Any]:
    jsonl = JsonlSink(workdir / f"{mode}.jsonl")
    fanout = EventFanout([("jsonl", jsonl.write)])
    delivery = None
    if mode != "baseline":
        sinks: dict[str, Any] = {
            "targets": [
                f"webhook:{receiver.url}",
                f"syslog:udp://127.0.0.1:{udp_port}",
                f"teams-report:{workdir / f'{mode}-teams.jsonl'}",
            ],
            "dead_letter": str(workdir / "dead-letter.jsonl"),
            "drain_s": 120,
            "queue_size": 100_000,  # measure the cost, not the drops of a burst
        }
        if mode == "every-event":
            sinks.update(events=["score", "alert", "summary"], throttle_s=0)
        delivery = build_delivery(load_config(sinks=sinks))
        assert delivery is not None
        delivery.start()
        for name, accept in delivery.receivers():
            fanout.add(name, accept)
    return fanout, (jsonl, delivery)


def run_once(
    mode: str, events: list[dict], workdir: Path, receiver: Receiver, udp_port: int
) -> dict:
    fanout, (jsonl, delivery) = fanout_for(mode, workdir, receiver, udp_port)
    cpu_started = time.process_time()
    in_publish = 0.0
    for event in events:
        started = time.perf_counter()
        fanout.publish(event)
        in_publish += time.perf_counter() - started
    drain_started = time.perf_counter()
    if delivery is not None:
        delivery.close()
    drain_s = time.perf_counter() - drain_started
    cpu_s = time.process_time() - cpu_started
    jsonl.close()
    stats = delivery.stats() if delivery is not None else {}
    return {
        "publish_us": 1e6 * in_publish / len(events),
        "cpu_us": 1e6 * cpu_s / len(events),
        "drain_s": drain_s,
        "sent": sum(s["sent"] for s in stats.values()),
        "not_sent": sum(s["failed"] + s["dropped"] for s in stats.values()),
    }


def overhead(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    events = bench_session(args.windows)
    receiver = Receiver(free_port(), workdir / "received.jsonl", env)
    receiver.start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
    udp.bind(("127.0.0.1", 0))
    modes = ("baseline", "alerts", "every-event")
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        for _ in range(args.runs):
            for mode in modes:
                runs[mode].append(run_once(mode, events, workdir, receiver, udp.getsockname()[1]))
    finally:
        receiver.stop()
        udp.close()
    result: dict[str, Any] = {"events_per_run": len(events), "runs": args.runs}
    for mode in modes:
        entry = {
            key: statistics.median(r[key] for r in runs[mode])
            for key in ("publish_us", "cpu_us", "drain_s")
        }
        entry["sent_per_run"] = runs[mode][0]["sent"]
        entry["not_sent"] = sum(r["not_sent"] for r in runs[mode])
        ratios = [
            (r["publish_us"] / b["publish_us"], r["cpu_us"] / b["cpu_us"])
            for r, b in zip(runs[mode], runs["baseline"], strict=True)
        ]
        entry["publish_ratio"] = statistics.median(p for p, _ in ratios)
        entry["cpu_ratio"] = statistics.median(c for _, c in ratios)
        result[mode] = entry
    return result


def outage(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    receiver = Receiver(free_port(), workdir / "received.jsonl", env)
    receiver.start()
    dead = workdir / "dead-letter.jsonl"
    sinks = {
        "targets": [f"webhook:{receiver.url}"],
        "throttle_s": 0,
        "max_attempts": 12,
        "backoff_s": 0.2,
        "backoff_max_s": 2.0,
        "timeout_s": 2.0,
        "drain_s": 60,
        "dead_letter": str(dead),
    }
    delivery = build_delivery(load_config(sinks=sinks))
    assert delivery is not None
    (worker,) = delivery.workers
    streams = [bench_session(60, participant=f"p{n}") for n in range(args.participants)]
    events = [event for stream in streams for event in stream]
    policy = NoticePolicy(["alert", "summary"], 0)
    expected = [notice["id"] for event in events for notice in policy.process(event)]
    pace_s = args.seconds / len(events)
    delivery.start()
    went_away = came_back = None
    started = time.monotonic()
    try:
        for n, event in enumerate(events):
            worker.accept(event)
            elapsed = time.monotonic() - started
            if went_away is None and elapsed >= args.seconds / 3:
                receiver.stop()
                went_away = elapsed
            if went_away is not None and came_back is None and elapsed >= went_away + args.outage_s:
                receiver.start()
                came_back = time.monotonic() - started
            time.sleep(max(0.0, started + (n + 1) * pace_s - time.monotonic()))
    finally:
        delivery.close()
        receiver.stop()
    received = receiver.ids()
    dead_lettered = (
        [json.loads(line)["payload"]["id"] for line in dead.read_text().splitlines()]
        if dead.exists()
        else []
    )
    lost = set(expected) - set(received) - set(dead_lettered)
    return {
        "notices_expected": len(expected),
        "receiver_away_s": [round(went_away or 0, 2), round(came_back or 0, 2)],
        **worker.stats(),
        "dead_lettered": len(dead_lettered),
        "received_unique": len(set(received)),
        "received_repeats": len(received) - len(set(received)),
        "in_order": received == [i for i in expected if i in set(received)],
        "lost": len(lost),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    over = sub.add_parser("overhead")
    over.add_argument("--windows", type=int, default=2000)
    over.add_argument("--runs", type=int, default=5)
    out = sub.add_parser("outage")
    out.add_argument("--participants", type=int, default=40)
    out.add_argument("--seconds", type=float, default=12.0, help="publishing lasts this long")
    out.add_argument("--outage-s", type=float, default=3.0)
    for mode in (over, out):
        mode.add_argument("--json", metavar="FILE", help="also write the result here")
    args = parser.parse_args()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    os.environ["DFMON_WEBHOOK_SECRET"] = secret
    env = {**os.environ, "DFMON_WEBHOOK_SECRET": secret}
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="dfmon-bench-sinks-") as tmp:
        result = (overhead if args.mode == "overhead" else outage)(args, Path(tmp), env)
    result = {"mode": args.mode, "machine": machine, **result}
    print(f"Machine: {machine_line(machine)}.")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
