"""The ``/alerts`` websocket: live events for dashboards and integrations.

Broadcasting follows the websockets docs (topics/broadcast): each client has a bounded
queue and one relay task that drains it. ``publish`` only appends to queues, so it never
waits; when a client falls behind, its queue drops the *oldest* message (the freshest risk
matters most) and counts the drop. A slow or dead client costs only its own messages.

History: the server keeps the last ``history_size`` events. A client that connects late
first receives them, then the live stream, with nothing lost or repeated in between, so a
dashboard opened mid-call still sees ``session_started`` and the earlier scores. Replayed
events are byte-identical to the originals (their ``ts`` tells when they happened).
:meth:`AlertServer.history` is the hook for a server whose history lives elsewhere (the
gateway's, in a Redis stream).

Auth: with a token, the handshake must carry ``Authorization: Bearer TOKEN`` or
``?token=TOKEN`` (browsers cannot set headers on a websocket); otherwise HTTP 401.
Other paths serve static ``pages`` (e.g. the dashboard) without a token: the page holds
no secret, and it presents the token when it opens the websocket.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from monitor.auth import bearer_challenge, bearer_token, matching_token
from monitor.config import AlertsConfig
from monitor.errors import ConfigError
from monitor.events import dumps

log = logging.getLogger(__name__)

ALERTS_PATH = "/alerts"


class _Client:
    """One connected client: its replay backlog, its bounded queue and its counters."""

    def __init__(self, connection: ServerConnection, backlog: list[str], queue_size: int) -> None:
        self.connection = connection
        host, port = connection.remote_address[:2]
        self.name = f"{host}:{port}"
        self.backlog = backlog
        self.pending: deque[str] = deque(maxlen=queue_size)
        self.wakeup = asyncio.Event()
        self.sent = 0  # handed to the connection (written or buffered), not acknowledged
        self.dropped = 0

    def put(self, text: str) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1  # the deque discards the oldest message on append
        self.pending.append(text)
        self.wakeup.set()

    async def relay(self) -> None:
        """Send the history, then live messages, until the connection closes."""
        try:
            for text in self.backlog:
                await self.connection.send(text)
                self.sent += 1
            self.backlog = []
            while True:
                while self.pending:
                    # send() waits while the write buffer is above write_limit: that is
                    # where a slow client's backpressure lands, and its queue overflows.
                    await self.connection.send(self.pending.popleft())
                    self.sent += 1
                self.wakeup.clear()
                await self.wakeup.wait()
        except ConnectionClosed:
            pass


def _page_response(content_type: str, body: bytes) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
        ]
    )
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)


class AlertServer:
    """Websocket server that broadcasts event dicts to every client of ``/alerts``.

    ``token`` overrides ``config.token``; when both are None anyone may connect.
    Call :meth:`publish` on the server's event loop, :meth:`publish_threadsafe` elsewhere.

    A client's queue only fills once its kernel send buffer and ``write_limit`` bytes are
    full. The kernel buffer autotunes up to megabytes; ``send_buffer`` (SO_SNDBUF, bytes)
    caps it, so a slow client gets fresh events sooner instead of a long stale backlog.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None,
        config: AlertsConfig,
        pages: Mapping[str, tuple[str, bytes]] | None = None,
        history_size: int = 1000,
        write_limit: int = 2**15,
        send_buffer: int | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self._token = token if token is not None else config.token
        if self._token == "":
            raise ConfigError("the alerts token must not be empty (leave it unset for no auth)")
        if config.client_queue_size < 1:
            raise ConfigError("alerts client_queue_size must be at least 1")
        self._config = config
        self._pages = dict(pages or {})
        self._history: deque[str] = deque(maxlen=history_size)
        self._write_limit = write_limit
        self._send_buffer = send_buffer
        self._close_timeout = close_timeout
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[_Client] = set()
        # Counters of clients that have left; live clients keep their own.
        self._sent_gone = 0
        self._dropped_gone = 0
        self._refused = 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{ALERTS_PATH}"

    async def start(self) -> None:
        """Bind and start serving; with port 0 the OS picks a free port, see ``.port``."""
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=self._config.ping_interval_s,
            ping_timeout=self._config.ping_timeout_s,
            close_timeout=self._close_timeout,
            write_limit=self._write_limit,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("alerts websocket on %s", self.url)

    async def stop(self) -> None:
        """Close every client (1001 going away) and wait until their tasks have ended."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        log.info("alerts websocket stopped")

    async def __aenter__(self) -> AlertServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def publish(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every client; never waits. Call on the server's loop."""
        self.publish_text(dumps(event))

    def publish_threadsafe(self, event: dict[str, Any]) -> None:
        """Like :meth:`publish`, from any thread; serialising here reports bad events here."""
        if self._loop is None:
            raise RuntimeError("AlertServer.start() has not been called")
        self._loop.call_soon_threadsafe(self.publish_text, dumps(event))

    def publish_text(self, text: str) -> None:
        """Queue an event already serialised as JSON (as read from a bus); on the loop."""
        self._history.append(text)
        for client in self._clients:
            client.put(text)

    async def history(self) -> list[str]:
        """What a client that has just connected receives before the live events.

        Called right after the client is registered for live events, in the same step
        of the loop: a subclass that reads its history from elsewhere takes its cursor
        before its first ``await``, and what was published since then arrives live, so
        nothing is lost or sent twice. This one returns the last ``history_size`` events.
        """
        return list(self._history)

    async def drain(self, timeout: float) -> None:
        """Give connected clients up to ``timeout`` seconds to receive what is queued.

        Used before :meth:`stop` when a replay ends, so consumers see the summary.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while any(c.pending or c.backlog for c in self._clients):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.02)

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self._clients),
            "messages_sent": self._sent_gone + sum(c.sent for c in self._clients),
            "messages_dropped": self._dropped_gone + sum(c.dropped for c in self._clients),
            "dropped_per_client": {c.name: c.dropped for c in self._clients},
            "handshakes_refused": self._refused,
        }

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != ALERTS_PATH:
            page = self._pages.get(url.path)
            if page is None:
                return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
            return _page_response(*page)
        if self._token is None:
            return None
        presented = self._presented_tokens(request, url.query)
        if matching_token(presented, [self._token]) is not None:
            return None
        self._refused += 1
        log.info(
            "refused alerts client %s: %s token",
            connection.remote_address[0],
            "wrong" if presented else "no",
        )
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "Missing or wrong token\n")
        response.headers["WWW-Authenticate"] = bearer_challenge(invalid=bool(presented))
        return response

    @staticmethod
    def _presented_tokens(request: Request, query: str) -> list[str]:
        tokens = parse_qs(query).get("token", [])
        for value in request.headers.get_all("Authorization"):
            token = bearer_token(value)
            if token is not None:
                tokens.append(token)
        return tokens

    async def _handler(self, connection: ServerConnection) -> None:
        if self._send_buffer is not None:
            sock = connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
        client = _Client(connection, [], self._config.client_queue_size)
        self._clients.add(client)
        relay: asyncio.Task | None = None
        try:
            # Registration and the history's cursor share one step of the loop.
            client.backlog = await self.history()
            log.info(
                "alerts client %s connected (%d events replayed)", client.name, len(client.backlog)
            )
            relay = asyncio.create_task(client.relay(), name=f"alerts-relay {client.name}")
            # Clients have nothing to say; reading lets us see the close promptly.
            async for _ in connection:
                pass
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            if relay is not None:
                relay.cancel()
                await asyncio.wait([relay])
                if not relay.cancelled() and relay.exception() is not None:
                    log.error("alerts relay to %s failed", client.name, exc_info=relay.exception())
            self._sent_gone += client.sent
            self._dropped_gone += client.dropped
            log.info(
                "alerts client %s disconnected (%d sent, %d dropped)",
                client.name,
                client.sent,
                client.dropped,
            )
