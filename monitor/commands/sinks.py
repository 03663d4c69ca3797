"""``dfmon sinks --bus URL --sink KIND:TARGET``: the bus's events to the alert sinks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from typing import Any

from monitor.errors import ConfigError
from monitor.sinks.targets import add_sink_option, apply_sink_flags

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sinks",
        help="deliver every worker's events from the bus to alert sinks (consumer groups)",
        description=(
            "The alert sinks of dfmon serve --sink (webhook, splunk, syslog, teams-report), "
            "with the same [sinks] settings, secrets and throttling, fed from the bus: each "
            "sink reads the stream of every event as its own Redis consumer group, "
            "acknowledges only what it delivered, and resumes after a crash where it "
            "stopped (docs/SCALE.md, docs/ALERTS.md)."
        ),
    )
    parser.add_argument(
        "--bus", required=True, metavar="redis://HOST:PORT/DB", help="the workers' Redis"
    )
    add_sink_option(parser)
    parser.add_argument(
        "--consumer",
        help="this process's name in the groups (default: the host name); a restarted "
        "process with the same name resumes its own pending entries at once",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.bus.connection import check_bus_url
    from monitor.config import load_config
    from monitor.sinks.build import build_sinks
    from monitor.sinks.delivery import DeadLetter

    check_bus_url(args.bus)
    config = apply_sink_flags(load_config(args.config), args.sink)
    sinks = build_sinks(config)  # a bad target or a missing secret fails here, first
    if not sinks:
        raise ConfigError("no sink: give --sink KIND:TARGET or [sinks] targets in the config")
    dead_letter = DeadLetter(config.sinks.dead_letter)
    consumer = args.consumer or socket.gethostname()
    return asyncio.run(consume(args.bus, config, sinks, consumer, dead_letter))


async def consume(bus: str, config: Any, sinks: list[Any], consumer: str, dead_letter: Any) -> int:
    """Until SIGINT or SIGTERM (0), or until a consumer fails (1)."""
    from monitor.bus.connection import connect
    from monitor.bus.consumer import BLOCK_MS, SinkConsumer
    from monitor.commands import until_stopped

    redis = connect(bus, socket_timeout_s=BLOCK_MS / 1000 + 5.0)
    consumers = [
        SinkConsumer(redis, config, sink, consumer=consumer, dead_letter=dead_letter)
        for sink in sinks
    ]
    tasks = [asyncio.create_task(c.run(), name=f"sink {c.sink.name}") for c in consumers]
    stop = asyncio.create_task(until_stopped())
    log.info("delivering to %s as consumer %s", ", ".join(s.name for s in sinks), consumer)
    try:
        await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [stop, *tasks]:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        if stuck:
            log.warning("%d sink(s) did not stop within %.0f s", len(stuck), STOP_TIMEOUT_S)
        for c in consumers:
            log.info("sink %s: %s", c.sink.name, c.stats())
            await c.sink.aclose()
        dead_letter.close()
        await redis.aclose()
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    for task in failed:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())
    return 1 if failed else 0
