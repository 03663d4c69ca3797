"""``dfmon gateway --bus URL``: one WHIP address and one alert channel for many workers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from monitor.commands.serve import check_port, wait_for_signal
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
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="WHIP/HTTP port (default 8080)")
    parser.add_argument(
        "--alerts-port", type=int, default=8765, help="alert websocket port (default 8765)"
    )
    parser.add_argument(
        "--token", help="bearer token for WHIP and the alert channel (or env DFMON_TOKEN)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.bus.connection import check_bus_url

    check_port(args.port, "--port")
    check_port(args.alerts_port, "--alerts-port")
    check_bus_url(args.bus)
    token = args.token or os.environ.get("DFMON_TOKEN") or None
    config = load_config(args.config, alerts={"token": token})
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
        await wait_for_signal()
    finally:
        await gw.stop()
