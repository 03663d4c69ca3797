"""``dfmon detectors``: list the detectors this installation loads, with versions."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("detectors", help="list loaded detectors with versions")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.detectors.registry import discover

    config = load_config(args.config)
    enabled = set(config.detectors.enabled) - set(config.detectors.disabled)
    specs = discover(config)
    print(f"{'detector':<16} {'version':<14} {'enabled':<8} {'weight':<7} source")
    for name, spec in sorted(specs.items()):
        weight = config.detectors.weights.get(name, 1.0)
        state = "yes" if name in enabled else "no"
        source = spec.source if spec.error is None else f"{spec.source} BROKEN: {spec.error}"
        print(f"{name:<16} {spec.version:<14} {state:<8} {weight:<7g} {source}")
        for companion, version in _companions(name, config).items():
            weight = config.detectors.weights.get(companion, 1.0)
            print(f"{companion:<16} {version:<14} {state:<8} {weight:<7g} with {name}")
    return 0


def _companions(name: str, config: Any) -> dict[str, str]:
    """The evidence a built-in detector returns beside its own (name -> version)."""
    if name != "lip_sync" or config.lip_sync.model != "learned":
        return {}
    from monitor.detectors.lip_sync_learned import LearnedSyncDetector

    return dict(LearnedSyncDetector.COMPANIONS)
