"""``dfmon serve``: live ingest over WebRTC (WHIP) with the websocket alert channel."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from monitor.commands import add_lip_sync_arguments, lip_sync_overrides, until_stopped
from monitor.errors import ConfigError
from monitor.sinks.targets import add_sink_option, apply_sink_flags

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="accept live calls over WebRTC (WHIP) and broadcast events on a websocket",
        description=(
            "Serve POST /whip (RFC 9725) for each participant, /publish (a browser page "
            "that publishes camera and microphone), /metrics and /healthz; events go to "
            "ws://HOST:ALERTS_PORT/alerts."
        ),
    )
    add_server_flags(parser)
    parser.add_argument(
        "--ice-address",
        action="append",
        metavar="ADDR",
        help=(
            "offer WebRTC host candidates only on this address (repeatable; default: the "
            "address each WHIP request arrives on, so loopback only on 127.0.0.1)"
        ),
    )
    parser.add_argument("--out", metavar="EVENTS.jsonl", help="also append every event here")
    add_lip_sync_arguments(parser)
    add_sink_option(parser)
    parser.add_argument(
        "--bus",
        metavar="redis://HOST:PORT/DB",
        help="also publish every event and this worker's load to Redis, for dfmon gateway",
    )
    parser.add_argument(
        "--advertise",
        metavar="URL",
        help="with --bus: the WHIP URL the gateway redirects to (default: the bound address)",
    )
    parser.set_defaults(run=run)
    return parser


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """--host, --port, --alerts-port and --token: the same for serve and gateway."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="WHIP/HTTP port (default 8080)")
    parser.add_argument(
        "--alerts-port", type=int, default=8765, help="alert websocket port (default 8765)"
    )
    parser.add_argument(
        "--token", help="bearer token for WHIP and the alert channel (or env DFMON_TOKEN)"
    )


def token_of(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("DFMON_TOKEN") or None


def check_port(value: int, flag: str) -> None:
    if not 0 <= value < 65536:
        raise ConfigError(f"{flag} must be a port number (0-65535), got {value}")


def build_config(args: argparse.Namespace) -> Any:
    from monitor.config import load_config

    token = token_of(args)
    overrides: dict[str, Any] = {"alerts": {"token": token}}
    if lip_sync := lip_sync_overrides(args):
        overrides["lip_sync"] = lip_sync
    if args.ice_address:
        overrides["live"] = {"ice_addresses": args.ice_address}
    return apply_sink_flags(load_config(args.config, **overrides), args.sink)


def run(args: argparse.Namespace) -> int:
    if not args.verbose:  # aioice logs every ICE check at INFO
        logging.getLogger("aioice").setLevel(logging.WARNING)
    check_port(args.port, "--port")
    check_port(args.alerts_port, "--alerts-port")
    config = build_config(args)
    from monitor.live.memory import limit_arenas

    limit_arenas(config.live.malloc_arena_max)  # before any thread starts
    if args.bus:
        from monitor.bus.connection import check_bus_url

        check_bus_url(args.bus)
    elif args.advertise:
        raise ConfigError("--advertise needs --bus")
    if args.advertise and urlsplit(args.advertise).scheme not in ("http", "https"):
        raise ConfigError(f"--advertise must be http(s)://HOST:PORT/whip, not {args.advertise!r}")
    asyncio.run(
        serve(
            config,
            args.host,
            args.port,
            args.alerts_port,
            out=args.out,
            bus=args.bus,
            advertise=args.advertise,
        )
    )
    return 0


async def serve(
    config: Any,
    host: str,
    port: int,
    alerts_port: int,
    *,
    out: str | None = None,
    bus: str | None = None,
    advertise: str | None = None,
) -> None:
    """Run until SIGINT/SIGTERM; every open session then ends with ``server_shutdown``.

    With ``bus`` (a Redis URL) the server is also a worker of ``dfmon gateway``.
    """
    from monitor.live.whip import LiveServer
    from monitor.sinks.build import build_delivery, sink_stats
    from monitor.sinks.fanout import EventFanout
    from monitor.sinks.websocket import AlertServer

    token = config.alerts.token
    delivery = build_delivery(config)  # a bad sink or a missing secret fails here, first
    sink = None
    if out:
        from monitor.sinks.jsonl import JsonlSink

        sink = JsonlSink(out, append=True)
    worker = None
    if bus:
        from monitor.bus.worker import BusWorker

        worker = BusWorker(bus, config, token=token)
    alerts = AlertServer(host, alerts_port, token=token, config=config.alerts)
    try:
        await alerts.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve alerts on {host}:{alerts_port}: {exc.strerror}") from exc
    fanout = EventFanout([("websocket", alerts.publish)])
    if sink is not None:
        fanout.add("jsonl", sink.write)
    if worker is not None:
        fanout.add("bus", worker.publish)
    if delivery is not None:
        delivery.start()
        for name, accept in delivery.receivers():
            fanout.add(name, accept)
    server = LiveServer(
        config,
        token=token,
        fanout=fanout,
        alerts_port=alerts.port,
        ticket_check=worker.tickets.check if worker and worker.tickets else None,
    )
    server.metrics.sink_stats = lambda: sink_stats(fanout, delivery)
    try:
        await server.start(host, port)
    except OSError as exc:
        await alerts.stop()
        if delivery is not None:
            await delivery.aclose()
        raise ConfigError(f"cannot serve WHIP on {host}:{port}: {exc.strerror}") from exc
    if worker is not None:
        await worker.start(server, advertise)
    log.info(
        "publish page http://%s:%s/publish, dashboard http://%s:%s/, alerts %s",
        host, server.port, host, server.port, alerts.url,
    )  # fmt: skip
    try:
        await until_stopped()
    finally:
        log.info("shutting down: ending %d session(s)", len(server.sessions))
        await server.stop()
        if worker is not None:
            await worker.stop()
        if delivery is not None:
            await delivery.aclose()  # the sessions' summaries are queued by now
        await alerts.drain(2.0)
        await alerts.stop()
        if sink is not None:
            sink.close()
