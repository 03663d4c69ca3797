"""``dfmon replay INPUT``: score a recorded call and write explained events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import threading
from typing import Any

from monitor.commands import add_lip_sync_arguments, lip_sync_overrides
from monitor.errors import ConfigError, OutputError
from monitor.sinks.targets import add_sink_option, apply_sink_flags


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "replay",
        help="score a recorded call (any container PyAV opens) and write JSONL events",
        description="Replay a recorded call through the monitor; events go to --out or stdout.",
    )
    parser.add_argument("input", metavar="INPUT", help="recorded call with video and audio")
    parser.add_argument("--audio", metavar="FILE", help="separate audio for a video-only INPUT")
    parser.add_argument("--out", metavar="EVENTS.jsonl", help="write events here (default: stdout)")
    parser.add_argument("--realtime", action="store_true", help="pace input to the wall clock")
    parser.add_argument(
        "--window", type=float, metavar="SECONDS", help="window length (default 2.0)"
    )
    parser.add_argument("--hop", type=float, metavar="SECONDS", help="window hop (default 0.5)")
    parser.add_argument(
        "--serve-alerts", metavar="HOST:PORT", help="also broadcast events on ws://HOST:PORT/alerts"
    )
    parser.add_argument("--token", help="token alert clients must present (or DFMON_TOKEN)")
    parser.add_argument("--participant", help="participant name carried in every event")
    add_lip_sync_arguments(parser)
    parser.add_argument("--report", metavar="REPORT.html", help="also write an HTML report")
    add_sink_option(parser)
    parser.set_defaults(run=run)
    return parser


def parse_host_port(value: str, flag: str = "--serve-alerts") -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{flag} wants HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port_text)


def build_config(args: argparse.Namespace) -> Any:
    from monitor.config import load_config

    overrides: dict[str, Any] = {}
    window: dict[str, float] = {}
    if args.window is not None:
        window["window_s"] = args.window
    if args.hop is not None:
        window["hop_s"] = args.hop
    if window:
        overrides["window"] = window
    if lip_sync := lip_sync_overrides(args):
        overrides["lip_sync"] = lip_sync
    token = getattr(args, "token", None) or os.environ.get("DFMON_TOKEN") or None
    overrides["alerts"] = {"token": token}
    return apply_sink_flags(load_config(args.config, **overrides), getattr(args, "sink", []))


def run(args: argparse.Namespace) -> int:
    from monitor.replay import log_stage_timings, replay_file
    from monitor.sinks.build import build_delivery
    from monitor.sinks.fanout import EventFanout
    from monitor.sinks.jsonl import JsonlSink

    config = build_config(args)
    serve_at = parse_host_port(args.serve_alerts) if args.serve_alerts else None
    delivery = build_delivery(config)
    events: list[dict[str, Any]] = []  # kept for --report (--out may be stdout)
    fanout = EventFanout()
    with JsonlSink(args.out) as jsonl, delivery or contextlib.nullcontext():
        fanout.add("jsonl", jsonl.write)
        if args.report:
            fanout.add("report", events.append)
        for name, accept in delivery.receivers() if delivery else []:
            fanout.add(name, accept)
        if serve_at is None:
            result = replay_file(
                args.input,
                config,
                fanout.publish,
                audio_path=args.audio,
                realtime=args.realtime,
                participant=args.participant,
            )
        else:
            result = asyncio.run(_replay_serving(args, config, fanout, serve_at))
    log_stage_timings(result)
    if fanout.failed["jsonl"]:
        raise OutputError(f"{fanout.failed['jsonl']} events could not be written to {args.out}")
    if args.report:
        from monitor.report import write_report_for_replay

        write_report_for_replay(
            events, args.input, args.report, audio_path=args.audio, config=config
        )
    return 0


async def _replay_serving(
    args: argparse.Namespace, config: Any, fanout: Any, serve_at: tuple[str, int]
) -> Any:
    """Replay on a worker thread while the event loop serves the alert channel."""
    from monitor.replay import replay_file
    from monitor.sinks.websocket import AlertServer
    from monitor.web import dashboard_page

    host, port = serve_at
    pages = {"/": ("text/html; charset=utf-8", dashboard_page())}
    server = AlertServer(host, port, token=config.alerts.token, config=config.alerts, pages=pages)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve alerts on {host}:{port}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    fanout.add("websocket", server.publish_threadsafe)
    try:
        return await asyncio.to_thread(
            replay_file,
            args.input,
            config,
            fanout.publish,
            audio_path=args.audio,
            realtime=args.realtime,
            participant=args.participant,
            should_stop=stop.is_set,
        )
    finally:
        stop.set()
        await server.drain(timeout=2.0)
        await server.stop()
