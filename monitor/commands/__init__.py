"""One module per sub-command (see monitor/cli.py), and what several of them share."""

from __future__ import annotations

import asyncio
import signal


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
