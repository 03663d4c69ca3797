"""``dfmon demo``: make synthetic example calls and score them, end to end, with no downloads.

The calls are a public-domain portrait (scikit-image's astronaut) animated by espeak-ng
speech: one in sync, two with the audio shifted by +-300 ms, one with the audio of another
utterance, and one without audio. Each call's events land in ``OUT_DIR/<name>.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monitor.config import BACKEND_NAMES, LIP_SYNC_MODELS

# What a working monitor should conclude for each example call.
EXPECTED = {
    "sync": "clear",
    "shift_plus300": "suspicious or alert",
    "shift_minus300": "suspicious or alert",
    "swap": "suspicious or alert",
    "video_only": "unknown",
}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="synthesize example calls (in sync, shifted, swapped) and score them"
    )
    parser.add_argument("--out-dir", default="dfmon-demo", help="where calls and events go")
    parser.add_argument("--lip-sync", choices=LIP_SYNC_MODELS, help="lip-sync model")
    parser.add_argument("--backend", choices=BACKEND_NAMES)
    parser.set_defaults(run=run, window=None, hop=None, token=None)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.commands.replay import build_config
    from monitor.replay import replay_file
    from monitor.sinks.jsonl import JsonlSink
    from monitor.synth import make_example_set

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"synthesizing example calls into {out_dir}/ ...", flush=True)
    calls = make_example_set(out_dir)
    config = build_config(args)
    print(f"\n{'call':<16} {'expected':<20} {'verdict':<11} {'risk':>5} {'offset':>8}  rationale")
    for name, call in calls.items():
        events_path = out_dir / f"{name}.jsonl"
        with JsonlSink(events_path) as sink:
            result = replay_file(call.path, config, sink.write, audio_path=None, participant=name)
        summary = result.summary
        offset = _session_offset(summary)
        print(
            f"{name:<16} {EXPECTED.get(name, '?'):<20} {summary['verdict']:<11} "
            f"{summary['risk']:>5.2f} {offset:>8}  {summary['rationale']}"
        )
    print(f"\nevents: {out_dir}/<call>.jsonl (one JSON object per line)")
    return 0


def _session_offset(summary: dict[str, Any]) -> str:
    for item in summary.get("evidence", []):
        if item.get("detector") == "lip_sync" and item.get("offset_ms") is not None:
            return f"{item['offset_ms']:+.0f}ms"
    return "-"
