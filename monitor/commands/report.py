"""``dfmon report EVENTS.jsonl --media INPUT -o report.html``: explain recorded events."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from monitor.config import BACKEND_NAMES


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report for recorded events and their media",
        description=(
            "Build an investigator's report (risk timeline, detector contributions, lip-sync "
            "evidence, mouth filmstrip, rationale, attribution) from a session's events "
            "and the media they were recorded from. The HTML embeds everything it shows."
        ),
    )
    parser.add_argument("events", metavar="EVENTS.jsonl", help="events of one session")
    parser.add_argument("--media", metavar="INPUT", required=True, help="the recorded call")
    parser.add_argument("--audio", metavar="FILE", help="separate audio for a video-only INPUT")
    parser.add_argument("-o", "--out", metavar="REPORT.html", required=True, help="report path")
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        help="backend of the learned model for re-scoring (default: auto)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.report import write_report_for_replay

    overrides = {"lip_sync": {"backend": args.backend}} if args.backend else {}
    config = load_config(args.config, **overrides)
    path = write_report_for_replay(
        args.events, args.media, args.out, audio_path=args.audio, config=config
    )
    sys.stderr.write(f"report written to {path}\n")
    return 0
