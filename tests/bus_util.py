"""Shared pieces of the bus tests: a real redis-server on a free loopback port, dfmon
processes (workers, gateway, sinks) started and killed like a deployment's, and the
arrival matching of events seen on a worker's and on the gateway's websocket. The
webhook receiver is tests/sink_util.py's, which checks every signature."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.sink_util import SECRET

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``redis-server`` on loopback, append-only with fsync on every write, so a kill and
    a restart on the same port lose nothing that was acknowledged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)


@dataclass
class DfmonProcess:
    """One ``dfmon`` command in its own process group, its stderr in a file."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", *self.args,
            cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=self._log,
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **self.env}, start_new_session=True,
        )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        self._log.close()
        return code

    async def kill(self) -> None:
        """SIGKILL: no cleanup, as when a machine dies."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
            self._log.close()

    async def terminate(self, timeout_s: float = 20.0) -> int | None:
        if self.process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:  # hung: SIGABRT makes faulthandler log every thread's stack
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 2.0)
            await self.kill()
        self._log.close()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def wait_for_http(url: str, timeout_s: float, processes: list[DfmonProcess]) -> None:
    """Until ``url`` answers 200; fails early with the log of a process that died."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            for p in processes:
                if not p.alive:
                    raise AssertionError(f"{p.name} exited:\n{p.log_text()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not come up")
            await asyncio.sleep(0.1)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def stream_events(client: Any, key: str) -> list[tuple[str, dict]]:
    """Every entry of a stream as (id, event)."""
    return [(entry_id, json.loads(f["event"])) for entry_id, f in client.xrange(key)]


@dataclass
class Endpoint:
    process: DfmonProcess
    port: int
    alerts_port: int

    @property
    def whip_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/whip"

    @property
    def alerts_url(self) -> str:
        return f"ws://127.0.0.1:{self.alerts_port}/alerts"


class Deployment:
    """Workers (``dfmon serve --bus``), a gateway and optionally ``dfmon sinks`` on
    loopback, all real processes sharing one Redis, one token and one config file."""

    def __init__(self, redis: RedisServer, directory: Path, *, token: str, config: Path) -> None:
        self.redis = redis
        self.directory = directory
        self.token = token
        self.config = config
        self.workers: list[Endpoint] = []
        self.gateway: Endpoint | None = None
        self.sinks: list[DfmonProcess] = []

    def _common(self) -> list[str]:
        return ["--config", str(self.config)]

    def add_worker(self) -> Endpoint:
        port, alerts_port = free_port(), free_port()
        name = f"worker{len(self.workers) + 1}"
        process = DfmonProcess(
            name,
            [*self._common(), "serve", "--bus", self.redis.url, "--port", str(port),
             "--alerts-port", str(alerts_port), "--token", self.token],
            self.directory / f"{name}.log",
        )  # fmt: skip
        endpoint = Endpoint(process, port, alerts_port)
        self.workers.append(endpoint)
        return endpoint

    def add_gateway(self) -> Endpoint:
        port, alerts_port = free_port(), free_port()
        process = DfmonProcess(
            "gateway",
            [*self._common(), "gateway", "--bus", self.redis.url, "--port", str(port),
             "--alerts-port", str(alerts_port), "--token", self.token],
            self.directory / "gateway.log",
        )  # fmt: skip
        self.gateway = Endpoint(process, port, alerts_port)
        return self.gateway

    def sinks_process(self, targets: list[str], consumer: str) -> DfmonProcess:
        """``dfmon sinks`` delivering to ``targets`` (KIND:TARGET), signing webhooks with
        tests/sink_util.py's secret."""
        sinks = [arg for target in targets for arg in ("--sink", target)]
        process = DfmonProcess(
            f"sinks-{consumer}",
            [*self._common(), "sinks", "--bus", self.redis.url, *sinks, "--consumer", consumer],
            self.directory / f"sinks-{consumer}.log",
            env={"DFMON_WEBHOOK_SECRET": SECRET},
        )  # fmt: skip
        self.sinks.append(process)
        return process

    @property
    def processes(self) -> list[DfmonProcess]:
        endpoints = [*self.workers, *([self.gateway] if self.gateway else [])]
        return [e.process for e in endpoints] + self.sinks

    async def start(self, timeout_s: float = 120.0) -> None:
        """Start every process, then wait until each answers and the gateway sees all
        workers' heartbeats."""
        await asyncio.gather(*(p.start() for p in self.processes if p.process is None))
        for endpoint in [*self.workers, *([self.gateway] if self.gateway else [])]:
            url = f"http://127.0.0.1:{endpoint.port}/healthz"
            await wait_for_http(url, timeout_s, self.processes)
        if self.gateway is not None:
            await wait_until_async(
                lambda: self.live_workers_count(len(self.workers)), timeout_s, "heartbeats"
            )

    async def live_workers(self) -> list[dict]:
        import aiohttp

        assert self.gateway is not None
        url = f"http://127.0.0.1:{self.gateway.port}/workers"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Authorization": f"Bearer {self.token}"}) as response,
        ):
            return await response.json()

    async def live_workers_count(self, expected: int) -> bool:
        return len(await self.live_workers()) == expected

    async def stop(self) -> dict[str, int | None]:
        codes = {}
        for process in reversed(self.processes):
            if process.alive:
                codes[process.name] = await process.terminate()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.name}\n{p.log_text()[-4000:]}" for p in self.processes if p.log_path.exists()
        )


async def wait_until_async(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """As :func:`wait_until`, for a predicate that is a coroutine function."""
    deadline = time.monotonic() + timeout_s
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return value


def arrivals_both_ways(direct: list[Any], gateway: Any) -> list[tuple[dict, float, float]]:
    """(event, arrival on its worker's own /alerts, arrival on the gateway's /alerts) for
    every event both saw; the listeners are AlertListeners (tests/live_util.py). Events
    match by session, type, window and ``ts`` (worker and seq exist only on the bus)."""

    def key(e: dict) -> tuple:
        return (e["session"], e["type"], e.get("window"), e["ts"])

    through_bus = {key(e): t for e, t in zip(gateway.events, gateway.received_at, strict=True)}
    both = []
    for listener in direct:
        for event, t in zip(listener.events, listener.received_at, strict=True):
            if key(event) in through_bus:
                both.append((event, t, through_bus[key(event)]))
    return both
