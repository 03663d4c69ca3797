"""``dfmon gateway --bus URL``: one WHIP address and one alert channel for many workers."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from monitor.commands import until_stopped
from monitor.commands.serve import add_server_flags, check_port, token_of
from monitor.config import load_config
from monitor.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "gateway",
        help="redirect WHIP offers to the least-loaded dfmon serve --bus worker; all events",
        description=(
            "POST /whip is answered 307 to the least-loaded live worker with room (503 "
            "with Retry-After when none has); the dashboard at / and "
            "ws://HOST:ALERTS_PORT/alerts show every worker's sessions, read from the "
            "bus; sessions of a worker that stopped heartbeating end with reason "
            "worker_lost. GET /workers lists the workers' load."
        ),
    )
    parser.add_argument(
        "--bus", required=True, metavar="redis://HOST:PORT/DB", help="the workers' Redis"
    )
    add_server_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.bus.connection import check_bus_url

    check_port(args.port, "--port")
    check_port(args.alerts_port, "--alerts-port")
    check_bus_url(args.bus)
    config = load_config(args.config, alerts={"token": token_of(args)})
    asyncio.run(gateway(config, args.bus, args.host, args.port, args.alerts_port))
    return 0


async def gateway(config: Any, bus: str, host: str, port: int, alerts_port: int) -> None:
    from monitor.bus.gateway import Gateway

    gw = Gateway(bus, config, token=config.alerts.token)
    try:
        await gw.start(host, port, alerts_port)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}/{alerts_port}: {exc.strerror}") from exc
    assert gw.http is not None and gw.alerts is not None
    log.info("dashboard http://%s:%s/, alerts %s", host, gw.http.port, gw.alerts.url)
    try:
        await until_stopped()
    finally:
        await gw.stop()
