#!/usr/bin/env python
"""Measure the bus on loopback: how calls spread over workers, and what latency it adds.

    python tools/bench_bus.py [--workers 3] [--publishers 6] [--runs 3] [--out FILE.json]
    python tools/bench_bus.py --hop [--events 2000]
    python tools/bench_bus.py --sinks [--participants 12] [--runs 3]

Each run starts a fresh redis-server, ``--workers`` real ``dfmon serve --bus`` processes
(the real pipeline), ``dfmon gateway`` and ``dfmon sinks`` (to a loopback webhook), then
``--publishers`` ``dfmon push`` processes publish a synthetic call through the gateway at
once. The publishers are child processes, so that their encoding does not delay this
process's websocket listeners (one loop, one GIL) and with it the measured arrivals.

Per event, with the wall clock of this one machine:
- baseline: its arrival on its worker's own /alerts websocket - its ``ts`` (when the
  analyzer made it; millisecond resolution);
- through the bus: its arrival on the gateway's /alerts - the same ``ts``;
- added by the bus: the difference of the two arrivals.
Reported per run and as the median over runs, with the machine named.

``--hop`` measures the bus alone, without media or analysis: one process publishes
events at 100/s with the worker's publisher and reads them back with a blocking XREAD,
as the gateway does; latency = read time - publish() time.

``--sinks`` runs ``dfmon sinks`` with a signed webhook to ``dfmon verify-webhook
--listen`` and syslog to a UDP listener of this process, while ``--participants``
flapping participants (throttled to one alert per 4 s) are published: the sinks process
is SIGKILLed and restarted after a third of the events, the receiver stopped for 3 s
after two thirds. Per sink: notices delivered, attempts retried, repeats (same id),
lost, and extras (a notice one policy over each whole session would not send).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.evaluation.machine import describe_machine, machine_line  # noqa: E402
from tests.bus_util import (  # noqa: E402
    Deployment,
    DfmonProcess,
    RedisServer,
    arrivals_both_ways,
    write_config,
)
from tests.live_util import AlertListener  # noqa: E402
from tests.sink_util import WebhookReceiver  # noqa: E402

TOKEN = "bench"
TEXT = "Please send me the figures before our meeting on Monday morning."
CONFIG = """
[bus]
max_worker_cpu = 1.01

[sinks]
events = ["session_started", "score", "alert", "summary", "session_ended", "error"]
throttle_s = 0.0
"""


def _seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "p95": round(statistics.quantiles(values, n=20)[-1], 2) if len(values) > 1 else values[0],
        "n": len(values),
    }


async def one_run(args: argparse.Namespace, call: Path, directory: Path) -> dict[str, Any]:
    redis = RedisServer(directory)
    redis.start()
    dead_letter = f'dead_letter = "{directory / "dead-letter.jsonl"}"\n'
    config = write_config(directory / "bus.toml", CONFIG + dead_letter)
    deployment = Deployment(redis, directory, token=TOKEN, config=config)
    workers = [deployment.add_worker() for _ in range(args.workers)]
    gateway = deployment.add_gateway()
    receiver = await WebhookReceiver().start()
    deployment.sinks_process([f"webhook:{receiver.url}"], "bench")
    listeners: list[AlertListener] = []
    try:
        await deployment.start()
        bus = AlertListener(gateway.alerts_url, TOKEN)
        direct = [AlertListener(w.alerts_url, TOKEN) for w in workers]
        listeners = [bus, *direct]
        for listener in listeners:
            await listener.start()
        names = [f"p{i}" for i in range(args.publishers)]
        pushes = [
            DfmonProcess(
                name,
                ["push", str(call), "--url", gateway.whip_url, "--token", TOKEN,
                 "--participant", name],
                directory / f"push-{name}.log",
            )
            for name in names
        ]  # fmt: skip
        await asyncio.gather(*(p.start() for p in pushes))
        await asyncio.gather(*(p.wait() for p in pushes))
        await bus.wait_for(lambda: all(bus.of(n, "summary") for n in names), 120)
        await asyncio.sleep(1.0)
    finally:
        for listener in listeners:
            with contextlib.suppress(Exception):
                await listener.stop()
        await deployment.stop()
        await receiver.stop()
        redis.kill()
    baseline, via_bus, added = [], [], []
    for event, direct_t, bus_t in arrivals_both_ways(direct, bus):
        made = _seconds(event["ts"])
        baseline.append((direct_t - made) * 1000)
        via_bus.append((bus_t - made) * 1000)
        added.append((bus_t - direct_t) * 1000)
    per_worker = Counter(e["worker"] for e in bus.events if e["type"] == "session_started")
    return {
        "sessions_per_worker": sorted(per_worker.values()),
        "events": len(bus.events),
        "events_matched": len(added),
        "webhook_deliveries": len(receiver.deliveries),
        "baseline_ms": _stats(baseline),
        "through_bus_ms": _stats(via_bus),
        "added_by_bus_ms": _stats(added),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from monitor.synth.call import make_call

    machine = describe_machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="dfmon-bench-bus-") as tmp:
        text = " ".join([TEXT] * args.sentences)
        call = make_call(Path(tmp) / "call.mp4", text=text, seed=3, size=(240, 320)).path
        for index in range(args.runs):
            directory = Path(tmp) / f"run{index}"
            directory.mkdir()
            result = await one_run(args, call, directory)
            print(json.dumps(result), file=sys.stderr)
            runs.append(result)
    summary = {
        name: statistics.median(r[name]["median"] for r in runs)
        for name in ("baseline_ms", "through_bus_ms", "added_by_bus_ms")
    }
    summary["added_by_bus_p95_ms"] = statistics.median(r["added_by_bus_ms"]["p95"] for r in runs)
    summary["through_bus_over_baseline"] = round(
        summary["through_bus_ms"] / summary["baseline_ms"], 3
    )
    return {
        "machine": machine,
        "machine_line": machine_line(machine),
        "workers": args.workers,
        "publishers": args.publishers,
        "runs": runs,
        "median_of_runs": summary,
    }


async def hop(args: argparse.Namespace) -> dict[str, Any]:
    import time

    from monitor.bus.connection import BusKeys, connect
    from monitor.bus.publisher import EventPublisher
    from monitor.config import load_config
    from monitor.events import EventFactory

    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="dfmon-bench-bus-") as tmp:
        redis_server = RedisServer(Path(tmp))
        redis_server.start()
        config = load_config().bus
        keys = BusKeys(config.prefix)
        writer, reader = connect(redis_server.url), connect(redis_server.url)
        publisher = EventPublisher(
            writer, config, publisher_id="hop", worker="hop", open_sessions_key="hop"
        )
        await publisher.start()
        factory = EventFactory("hop-session", "hop")
        published: dict[int, float] = {}
        latencies: list[float] = []

        async def read() -> None:
            last = "0-0"
            while len(latencies) < args.events:
                reply = await reader.xread({keys.events: last}, count=100, block=1000)
                now = time.perf_counter()
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        seq = json.loads(fields["event"])["seq"]
                        latencies.append((now - published[seq]) * 1000)

        reading = asyncio.create_task(read())
        for seq in range(args.events):
            published[seq] = time.perf_counter()
            publisher.publish(factory.make("error", message=f"hop {seq}"))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(reading, 30)
        await publisher.close(5)
        await writer.aclose()
        await reader.aclose()
        redis_server.kill()
    return {"machine": machine, "machine_line": machine_line(machine), "hop_ms": _stats(latencies)}


async def sinks_run(participants: int, directory: Path) -> dict[str, Any]:
    import ast
    import re
    import time

    from monitor.bus.connection import BusKeys, connect
    from monitor.bus.publisher import EventPublisher
    from monitor.config import load_config
    from monitor.sinks.notices import NoticePolicy
    from monitor.synth.events import FLAPPING, interleaved, session_events
    from tests.bus_util import free_port, stream_events, wait_until
    from tests.sink_util import SECRET, check_syslog

    redis = RedisServer(directory)
    redis.start()
    config = write_config(
        directory / "bus.toml",
        f'[sinks]\nevents = ["alert", "summary"]\nthrottle_s = 4.0\nbackoff_s = 0.1\n'
        f'backoff_max_s = 1.0\ndead_letter = "{directory / "dead-letter.jsonl"}"\n',
    )
    env = {"DFMON_WEBHOOK_SECRET": SECRET}
    received = directory / "received.jsonl"
    listen = ["verify-webhook", "--listen", f"127.0.0.1:{free_port()}", "--out", str(received)]
    datagrams: list[bytes] = []

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            datagrams.append(data)

    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Collect, local_addr=("127.0.0.1", 0)
    )
    webhook = f"webhook:http://{listen[2]}/hooks/dfmon"
    syslog = f"syslog:udp://127.0.0.1:{udp.get_extra_info('sockname')[1]}"
    sinks_args = ["--config", str(config), "sinks", "--bus", redis.url,
                  "--sink", webhook, "--sink", syslog, "--consumer", "bench"]  # fmt: skip
    processes = {
        name: DfmonProcess(name, args, directory / f"{name}.log", env=env)
        for name, args in [("receiver", listen), ("receiver-again", listen),
                           ("sinks", sinks_args), ("sinks-again", sinks_args)]
    }  # fmt: skip
    client = redis.client()
    sessions = [
        session_events(FLAPPING, participant=f"p{i}", session=f"s{i}") for i in range(participants)
    ]
    events = interleaved(sessions)
    writer = connect(redis.url)
    publisher = EventPublisher(
        writer, load_config().bus, publisher_id="bench", worker="bench", open_sessions_key="-"
    )

    def ids_received() -> list[str]:
        lines = received.read_text().splitlines() if received.exists() else []
        return [json.loads(line)["webhook_id"] for line in lines]

    def ids_in_cef() -> list[str]:
        return [check_syslog(datagram)[2]["externalId"] for datagram in datagrams]

    try:
        await processes["receiver"].start()
        await processes["sinks"].start()
        await wait_until(
            lambda: (
                client.exists(BusKeys().events) and len(client.xinfo_groups(BusKeys().events)) == 2
            ),
            60,
            "the sinks' groups",
        )
        await publisher.start()
        started = time.monotonic()
        away_since = None
        for n, event in enumerate(events):
            publisher.publish(event)
            await asyncio.sleep(0.01)
            if n == len(events) // 3:
                await processes["sinks"].kill()
                await processes["sinks-again"].start()
            if n == 2 * len(events) // 3:
                await processes["receiver"].terminate()
                away_since = time.monotonic()
        assert await publisher.close(10) and away_since is not None
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - away_since)))
        await processes["receiver-again"].start()
        policy = NoticePolicy(["alert", "summary"], 4.0)
        expected = {
            notice["id"]
            for _, event in stream_events(client, BusKeys().events)
            for notice in policy.process(event)
        }
        await wait_until(
            lambda: set(ids_received()) >= expected and set(ids_in_cef()) >= expected,
            120,
            "every notice",
        )
        all_in_s = time.monotonic() - started
        await asyncio.sleep(1.0)  # anything a throttle should have held would come now
    finally:
        for process in processes.values():
            if process.alive:
                await process.terminate()
        await writer.aclose()
        udp.close()
        redis.kill()
    log_text = processes["sinks-again"].log_text()
    counters = {
        match.group(1): ast.literal_eval(match.group(2))
        for match in re.finditer(r"sink (\S+): (\{.*\})", log_text)
    }
    receiver_logs = processes["receiver"].log_text() + processes["receiver-again"].log_text()

    def outcome(ids: list[str]) -> dict[str, int]:
        return {
            "delivered": len(set(ids) & expected),
            "repeated": len(ids) - len(set(ids)),
            "lost": len(expected - set(ids)),
            "extra": len(set(ids) - expected),
        }

    webhook_ids = ids_received()
    return {
        "events": len(events),
        "level_changes": sum(e["type"] == "alert" for e in events),
        "notices_per_sink": len(expected),
        "webhook": {
            **outcome(webhook_ids),
            # verify-webhook logs a repeat; a restarted one writes a repeat of before again
            "repeated": receiver_logs.count("repeat of") + len(webhook_ids) - len(set(webhook_ids)),
            "refused_signatures": receiver_logs.count("refused a delivery"),
            "retried": counters.get(webhook, {}).get("retried", 0),
        },
        "syslog": outcome(ids_in_cef()),
        "restarted_process": counters,
        "all_delivered_after_s": round(all_in_s, 1),
    }


async def sinks_bench(args: argparse.Namespace) -> dict[str, Any]:
    machine = describe_machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="dfmon-bench-sinks-") as tmp:
        for index in range(args.runs):
            directory = Path(tmp) / f"run{index}"
            directory.mkdir()
            result = await sinks_run(args.participants, directory)
            print(json.dumps(result), file=sys.stderr)
            runs.append(result)
    return {"machine": machine, "machine_line": machine_line(machine), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--sentences", type=int, default=2, help="call length, in sentences (~3.5 s each)"
    )
    parser.add_argument("--hop", action="store_true", help="the bus alone (see above)")
    parser.add_argument("--events", type=int, default=2000, help="events for --hop")
    parser.add_argument("--sinks", action="store_true", help="dfmon sinks (see above)")
    parser.add_argument("--participants", type=int, default=12, help="for --sinks")
    parser.add_argument("--out", type=Path, help="also write the result here as JSON")
    args = parser.parse_args()
    if args.hop:
        result = asyncio.run(hop(args))
    else:
        result = asyncio.run(sinks_bench(args) if args.sinks else bench(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
