"""Real receivers on loopback for the alert-sink tests: a signature-checking webhook
server that can fail and go away, a server that never answers, and a parser of the
syslog CEF lines a listener reads back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from monitor.sinks.signing import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(b"dfmon-test-key-0123456789abcdef").decode()
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass
class Delivery:
    headers: dict[str, str]
    body: Any
    received_at: float  # time.monotonic()


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that verifies each POST as a receiver would.

    ``fail_first`` requests are answered ``fail_status``; :meth:`go_away` closes the
    listening socket (connections are refused) until :meth:`come_back` on the same port;
    after :meth:`hold`, requests wait unanswered (counted in ``waiting``) until :meth:`release`.
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
    waiting: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _answering: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._answering.set()

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

    def hold(self) -> None:
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if not self._answering.is_set():
            self.waiting += 1
            await self._answering.wait()
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


SYSLOG_5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)$",
    re.S,
)


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """CEF:0|vendor|product|version|signature|name|severity|extensions -> parts, fields."""
    assert text.startswith("CEF:0|")
    parts, current, i = [], "", 0
    while len(parts) < 7:
        ch = text[i]
        if ch == "\\" and text[i + 1] in "\\|":
            current, i = current + text[i + 1], i + 2
            continue
        if ch == "|":
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    extension = text[i:]
    fields: dict[str, str] = {}
    # A key is a word right before an unescaped "=", at the start or after a space.
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", extension))
    for this, after in zip(keys, [*keys[1:], None], strict=True):
        raw = extension[this.end() : after.start() if after else len(extension)]
        fields[this.group(1)] = re.sub(
            r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), raw
        )
    return parts[1:], fields


def check_syslog(datagram: bytes) -> tuple[dict[str, str], list[str], dict[str, str]]:
    match = SYSLOG_5424.match(datagram.decode())
    assert match, datagram
    header = match.groupdict()
    assert RFC3339.match(header["ts"]) and header["app"] == "dfmon"
    header_fields, extensions = parse_cef(header["msg"])
    return header, header_fields, extensions
