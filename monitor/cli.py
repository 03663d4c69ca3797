"""``dfmon`` command line: one sub-command per module in :mod:`monitor.commands`.

Bad input (:class:`~monitor.errors.InputError`) and bad flags end with a one-line
message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.errors import InputError
from monitor.native_log import show_native_logs

# Each module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and sets
# ``run=callable(args) -> int`` as a default on its parser. Heavy imports stay inside run.
COMMAND_MODULES = (
    "replay",
    "serve",
    "gateway",
    "sinks",
    "push",
    "demo",
    "detectors",
    "build_engine",
    "report",
    "verify_webhook",
)


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad flags: one line on stderr, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="dfmon", description="Real-time deepfake monitor for video calls."
    )
    parser.add_argument("--version", action="version", version=f"dfmon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--config", metavar="FILE", help="TOML file overriding defaults")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser
    )
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"monitor.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"monitor.commands.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    show_native_logs(args.verbose)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        sys.stderr.write(f"dfmon {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
