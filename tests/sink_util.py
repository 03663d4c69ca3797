"""Real receivers on loopback for the alert-sink tests: a signature-checking webhook
server that can fail and go away, and a server that never answers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from monitor.sinks.signing import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(b"dfmon-test-key-0123456789abcdef").decode()


@dataclass
class Delivery:
    headers: dict[str, str]
    body: Any
    received_at: float  # time.monotonic()


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that verifies each POST as a receiver would.

    ``fail_first`` requests are answered ``fail_status``; :meth:`go_away` closes the
    listening socket (connections are refused) until :meth:`come_back` on the same port.
    Valid deliveries are kept once per ``webhook-id``; repeats are counted.
    """

    secret: str = SECRET
    fail_first: int = 0
    fail_status: int = 503
    status: int = 204
    port: int = 0
    requests: int = 0
    refused_signatures: list[str] = field(default_factory=list)
    repeats: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/dfmon"

    @property
    def ids(self) -> list[str]:
        return [d.headers["webhook-id"] for d in self.deliveries]

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def go_away(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def come_back(self) -> None:
        await self.start()

    stop = go_away

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.requests <= self.fail_first:
            return web.Response(status=self.fail_status, text="try again later")
        try:
            msg_id = verify_webhook(self.secret, request.headers, body)
        except WebhookVerificationError as exc:
            self.refused_signatures.append(str(exc))
            return web.Response(status=401, text=str(exc))
        if msg_id in self.ids:
            self.repeats += 1
        else:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.deliveries.append(Delivery(headers, json.loads(body), time.monotonic()))
            self._arrived.set()
        return web.Response(status=self.status)

    async def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.deliveries) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(self.deliveries)} of {count} deliveries arrived")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.2))


class BlackHole:
    """Accepts TCP connections and reads requests, but never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/never"

    async def start(self) -> BlackHole:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
