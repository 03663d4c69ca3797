"""``dfmon sinks --bus URL --sink webhook:URL``: deliver the bus's events to alert sinks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from typing import Any

from monitor.errors import ConfigError

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sinks",
        help="deliver every worker's events from the bus to alert sinks (consumer groups)",
        description=(
            "Each sink reads the stream of every event as its own Redis consumer group, "
            "acknowledges only what it delivered, and resumes after a crash where it "
            "stopped. Which event types go out: [bus] sink_events in the config "
            "(default alert and summary). Signing secret: env DFMON_WEBHOOK_SECRET."
        ),
    )
    parser.add_argument(
        "--bus", required=True, metavar="redis://HOST:PORT/DB", help="the workers' Redis"
    )
    parser.add_argument(
        "--sink",
        action="append",
        required=True,
        metavar="KIND:TARGET",
        help="where events go (repeatable): webhook:URL",
    )
    parser.add_argument(
        "--consumer",
        help="this process's name in the groups (default: the host name); a restarted "
        "process with the same name resumes its own pending entries at once",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.bus.connection import check_bus_url
    from monitor.bus.webhook import parse_sink
    from monitor.config import load_config

    check_bus_url(args.bus)
    config = load_config(args.config)
    sinks = [parse_sink(spec, events=config.bus.sink_events) for spec in args.sink]
    if len({s.name for s in sinks}) != len(sinks):
        raise ConfigError("the same --sink is given twice")
    asyncio.run(consume(args.bus, config, sinks, args.consumer or socket.gethostname()))
    return 0


async def consume(bus: str, config: Any, sinks: list[Any], consumer: str) -> None:
    from monitor.bus.connection import connect
    from monitor.bus.consumer import BLOCK_MS, SinkConsumer
    from monitor.commands import until_stopped

    redis = connect(bus, socket_timeout_s=BLOCK_MS / 1000 + 5.0)
    consumers = [SinkConsumer(redis, config.bus, sink, consumer=consumer) for sink in sinks]
    tasks = [asyncio.create_task(c.run(), name=f"sink {c.sink.name}") for c in consumers]
    log.info("delivering to %s as consumer %s", ", ".join(s.name for s in sinks), consumer)
    try:
        await until_stopped()
    finally:
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        if stuck:
            log.warning("%d sink(s) did not stop within %.0f s", len(stuck), STOP_TIMEOUT_S)
        for c in consumers:
            log.info("sink %s: %s", c.sink.name, dict(c.counts) or "nothing to do")
            await c.sink.aclose()
        await redis.aclose()
