"""The ``dfmon`` sub-commands, one module each (see :mod:`monitor.cli`), and what several share."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from monitor.config import BACKEND_NAMES, LIP_SYNC_MODELS


def add_lip_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """``--lip-sync`` and ``--backend``: which sync model, run by which backend."""
    parser.add_argument(
        "--lip-sync", choices=LIP_SYNC_MODELS, help="lip-sync model (default: learned)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        help="inference backend for the learned model (default: auto)",
    )


def lip_sync_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[lip_sync]`` config overrides those flags ask for; none for flags not given."""
    chosen = {"model": getattr(args, "lip_sync", None), "backend": getattr(args, "backend", None)}
    return {key: value for key, value in chosen.items() if value}


async def until_stopped() -> None:
    """Return on the first SIGINT or SIGTERM: how long-running commands serve."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
