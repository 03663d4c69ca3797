"""A ``dfmon serve --bus`` worker's side of the bus: its events out, its load heartbeat.

The heartbeat is a key that expires (``worker_ttl_s``) unless refreshed every
``heartbeat_s``, so a worker that dies drops out of the gateway's choice by itself; the
set of registered ids stays behind, which is how a gateway notices whom it lost. Load:
open sessions against ``live.max_sessions``, the process's CPU share of the machine
over the last beat, and dropped frames. A worker that stops cleanly deregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any

from monitor.bus.connection import REDIS_DOWN, BusKeys, connect, raise_if_cancelled
from monitor.bus.publisher import EventPublisher
from monitor.bus.ticket import TicketVerifier
from monitor.config import MonitorConfig
from monitor.events import utc_timestamp

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """``HOST-PID-XXXX``: readable, and never reused by a restarted process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class CpuShare:
    """This process's CPU time (all threads) over wall time times the machine's cores."""

    def __init__(self) -> None:
        self._cores = os.cpu_count() or 1
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def sample(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        elapsed = wall - self._wall
        share = (cpu - self._cpu) / (elapsed * self._cores) if elapsed > 0 else 0.0
        self._cpu, self._wall = cpu, wall
        return round(min(max(share, 0.0), 1.0), 3)


class BusWorker:
    """Connects a :class:`~monitor.live.whip.LiveServer` to the bus.

    Give :meth:`publish` to the server as a sink, and :attr:`tickets` ``.check`` as its
    redirect-ticket check (when there is a token); then :meth:`start` once the server
    listens and :meth:`stop` after the server has ended its sessions.
    """

    def __init__(
        self,
        url: str,
        config: MonitorConfig,
        *,
        token: str | None,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.id = worker_id or new_worker_id()
        self.keys = BusKeys(config.bus.prefix)
        self.redis = connect(url)
        self.publisher = EventPublisher(
            self.redis,
            config.bus,
            publisher_id=self.id,
            worker=self.id,
            open_sessions_key=self.keys.worker_sessions(self.id),
        )
        self.tickets = TicketVerifier(token, self.id) if token else None
        self.server: Any = None  # the LiveServer, set by start()
        self.whip_url: str | None = None
        self._cpu = CpuShare()
        self._heartbeat: asyncio.Task | None = None
        self._reachable = True
        self._declared_lost = False
        self.started = utc_timestamp()

    def publish(self, event: dict[str, Any]) -> None:
        self.publisher.publish(event)

    async def start(self, server: Any, whip_url: str | None = None) -> None:
        """Start publishing and heartbeating for ``server`` (reachable at ``whip_url``)."""
        self.server = server
        self.whip_url = whip_url or server.url
        await self.publisher.start()
        await self._beat()
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat_forever(), name=f"bus-heartbeat {self.id}"
        )
        log.info("bus worker %s: offers at %s", self.id, self.whip_url)

    def load(self) -> dict[str, Any]:
        server = self.server
        metrics = server.metrics
        return {
            "worker": self.id,
            "whip_url": self.whip_url,
            "sessions": len(server.sessions),
            "max_sessions": server.config.live.max_sessions,
            "accepted_total": metrics.sessions_total,
            "cpu": self._cpu.sample(),
            "frames_received": sum(metrics.frames_in.values()),
            "frames_dropped": sum(metrics.frames_dropped.values()),
            "bus": self.publisher.stats(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "ts": utc_timestamp(),
        }

    async def _beat(self) -> None:
        ttl_ms = int(self.config.bus.worker_ttl_s * 1000)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.worker(self.id), json.dumps(self.load()), px=ttl_ms)
                pipe.sadd(self.keys.workers, self.id)
                pipe.exists(self.keys.lost(self.id))
                *_, declared_lost = await pipe.execute()
        except REDIS_DOWN as exc:
            raise_if_cancelled()
            if self._reachable:
                log.warning("bus worker %s: heartbeat failed: %s", self.id, exc)
            self._reachable = False
            return
        if not self._reachable:
            log.info("bus worker %s: heartbeating again", self.id)
        self._reachable = True
        if declared_lost and not self._declared_lost:
            log.error(
                "bus worker %s: a gateway declared this worker lost (no heartbeat for "
                "%.1f s) and ended its open sessions; their events still follow",
                self.id,
                self.config.bus.worker_ttl_s,
            )
        self._declared_lost = bool(declared_lost)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.bus.heartbeat_s)
            await self._beat()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is left, deregister, disconnect.

        A worker that could not publish everything stays registered: its heartbeat
        expires and the gateway ends the sessions whose end never reached the bus.
        """
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if not await self.publisher.close(timeout_s):
            await self.redis.aclose()
            return
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.srem(self.keys.workers, self.id)
                pipe.delete(self.keys.worker(self.id), self.keys.worker_sessions(self.id))
                await pipe.execute()
        except REDIS_DOWN as exc:  # the gateway will see the heartbeat expire instead
            log.warning("bus worker %s: could not deregister: %s", self.id, exc)
        await self.redis.aclose()
