"""``dfmon push INPUT --url http://HOST:PORT/whip``: publish a recorded call live over WHIP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "push",
        help="publish a recorded call in real time to a WHIP endpoint (e.g. dfmon serve)",
        description=(
            "Replay INPUT through the live path: a WebRTC (aiortc) WHIP client paces its "
            "frames to the wall clock, then DELETEs its session (also on Ctrl-C)."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="recorded call (any container PyAV opens)")
    parser.add_argument(
        "--url", required=True, help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip"
    )
    parser.add_argument("--token", help="bearer token (or env DFMON_TOKEN)")
    parser.add_argument("--participant", help="participant name carried in every event")
    parser.add_argument("--call", help="the call this participant is in, carried in every event")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.live.client import PublishError, push_file

    if not args.verbose:  # aioice logs every ICE check at INFO
        logging.getLogger("aioice").setLevel(logging.WARNING)
    token = args.token or os.environ.get("DFMON_TOKEN") or None
    try:
        stats = asyncio.run(
            push_file(
                args.input, args.url, token=token, participant=args.participant, call=args.call
            )
        )
    except PublishError as exc:
        sys.stderr.write(f"dfmon push: error: {exc}\n")
        return 1
    sys.stderr.write(
        f"published {stats.video_frames} video and {stats.audio_frames} audio frames "
        f"({stats.ended_by}); session {stats.location or '-'} deleted\n"
    )
    return 0
