"""The live ingest HTTP server: WHIP (RFC 9725) endpoints, health, metrics and pages.

One WHIP session per participant. ``POST /whip`` takes an SDP offer and answers with
all ICE candidates in the SDP (non-trickle: PATCH is refused with 405), so the client
needs nothing else. Errors are RFC 9457 ``application/problem+json``. The session URL
(``Location``) carries a random id from :func:`secrets.token_urlsafe`; the id used in
events is a different, short one, so that alert subscribers cannot end sessions.
The query may name the ``participant`` and the ``call`` it belongs to; events carry both.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import OperationError

from monitor.config import MonitorConfig
from monitor.errors import SdpError
from monitor.events import EventSink
from monitor.live.metrics import LiveMetrics
from monitor.live.session import AnalyzerFactory, LiveSession, default_analyzer_factory
from monitor.sinks.fanout import EventFanout

log = logging.getLogger(__name__)

WHIP_PATH = "/whip"
SDP_TYPE = "application/sdp"
PROBLEM_TYPE = "application/problem+json"
MAX_OFFER_BYTES = 64 * 1024
PARTICIPANT_MAX_LEN = 64
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Accept-Post, Link",
}


class UnprocessableOffer(SdpError):
    """An SDP offer that parses but cannot be served (no media, too many tracks, codecs)."""


def problem(status: int, title: str, detail: str, **headers: str) -> web.Response:
    """An RFC 9457 problem response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_TYPE,
        headers={**CORS_HEADERS, **headers},
    )


def check_offer(text: str) -> dict[str, str]:
    """Validate a WHIP offer; returns ``{mid: kind}`` of the media it sends.

    Raises :class:`SdpError` (400) when it is not SDP, :class:`UnprocessableOffer` (422)
    when it sends no media or more than one audio or video track.
    """
    if not text.lstrip().startswith("v=0"):
        raise SdpError("the body is not an SDP session description (it must start with v=0)")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise SdpError(f"malformed SDP: {exc}") from exc
    sending: dict[str, str] = {}
    counts = {"audio": 0, "video": 0}
    for index, media in enumerate(description.media):
        if media.kind not in counts or media.port == 0:
            continue
        if media.direction not in (None, "sendonly", "sendrecv"):
            continue
        counts[media.kind] += 1
        sending[media.rtp.muxId or str(index)] = media.kind
    if not sending:
        raise UnprocessableOffer("the offer sends no audio or video")
    too_many = [kind for kind, n in counts.items() if n > 1]
    if too_many:
        raise UnprocessableOffer(
            f"the offer sends {counts[too_many[0]]} {too_many[0]} tracks; "
            "WHIP allows one audio and one video track per session"
        )
    return sending


def _negotiated_codecs(answer_sdp: str) -> dict[str, str]:
    """``{kind: codec}`` as agreed in our answer (first codec of each accepted m-line)."""
    codecs: dict[str, str] = {}
    for media in aiortc_sdp.SessionDescription.parse(answer_sdp).media:
        if media.kind in ("audio", "video") and media.port != 0 and media.rtp.codecs:
            codecs[media.kind] = media.rtp.codecs[0].name.lower()
    return codecs


def _page(name: str) -> bytes | None:
    try:
        return resources.files("monitor.web").joinpath(name).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return None


class LiveServer:
    """Owns the WHIP sessions, their metrics and the sinks their events go to.

    Every event of every session passes, on the event loop, through ``fanout`` (the one
    :class:`EventFanout`, which isolates failing sinks); plain ``sinks`` callables (e.g.
    ``AlertServer.publish``) are added to it. ``alerts_port`` lets ``GET /`` point the
    dashboard at the alert websocket.
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        token: str | None = None,
        analyzer_factory: AnalyzerFactory = default_analyzer_factory,
        sinks: list[EventSink] | None = None,
        fanout: EventFanout | None = None,
        alerts_port: int | None = None,
        prewarm: bool | None = None,
        ticket_check: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.token = token
        # With a bus, the gateway authenticates and redirects with a ?ticket= the worker
        # accepts in place of the token (monitor/bus/ticket.py).
        self.ticket_check = ticket_check
        self.analyzer_factory = analyzer_factory
        self.fanout = fanout if fanout is not None else EventFanout()
        for sink in sinks or []:
            self.fanout.add(getattr(sink, "__qualname__", repr(sink)), sink)
        self.alerts_port = alerts_port
        # Build one analyzer at start (imports torch, MediaPipe, models: seconds), so the
        # first participant's frames are not queued behind that.
        self.prewarm = analyzer_factory is default_analyzer_factory if prewarm is None else prewarm
        self.metrics = LiveMetrics()
        self.sessions: dict[str, LiveSession] = {}  # by resource id (the unguessable one)
        self.calls: dict[str, str] = {}  # session id -> the call it belongs to (?call=)
        self._pending_offers = 0
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.host: str | None = None

    # ----- app and lifecycle --------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_OFFER_BYTES)
        app.router.add_post(WHIP_PATH, self.handle_post)
        app.router.add_route("OPTIONS", WHIP_PATH, self.handle_options)
        app.router.add_route("PATCH", WHIP_PATH, self.handle_patch)
        app.router.add_delete(WHIP_PATH + "/{resource}", self.handle_delete)
        app.router.add_route("OPTIONS", WHIP_PATH + "/{resource}", self.handle_options)
        app.router.add_route("PATCH", WHIP_PATH + "/{resource}", self.handle_patch)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/publish", self.handle_publish)
        # Hook for the dashboard page (monitor/web/dashboard.html), served when installed.
        app.router.add_get("/", self.handle_dashboard)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        """Warm up, then bind; with port 0 the OS picks a free port, see ``.port``."""
        if self.prewarm:
            await self._prewarm()
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.host = host
        self.port = server.sockets[0].getsockname()[1]
        log.info("WHIP ingest on %s", self.url)

    async def _prewarm(self) -> None:
        """Create and finish one throw-away analyzer on a short-lived thread."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def build() -> None:
            error: BaseException | None = None
            try:
                analyzer = self.analyzer_factory(
                    self.config, session="prewarm", participant="prewarm", emit=lambda e: None
                )
                analyzer.finish()
            except Exception as exc:  # the real sessions will report it
                error = exc
            loop.call_soon_threadsafe(done.set_result, None)
            if error is not None:
                log.warning("warming up the analysis failed: %s", error)

        started = time.perf_counter()
        thread = threading.Thread(target=build, name="dfmon-prewarm", daemon=True)
        thread.start()
        await done
        thread.join()
        log.info("analysis warmed up in %.1f s", time.perf_counter() - started)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in (None, "", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{WHIP_PATH}"

    async def stop(self) -> None:
        """End every session (``server_shutdown``), then stop serving."""
        sessions = list(self.sessions.values())
        await asyncio.gather(
            *(s.close("server_shutdown") for s in sessions), return_exceptions=True
        )
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----- events -------------------------------------------------------------------------

    def dispatch(self, event: dict) -> None:
        """Every session's events pass here, on the loop: metrics, then the sinks."""
        call = self.calls.get(event.get("session", ""))
        if call:
            event["call"] = call
        self.metrics.observe_event(event)
        self.fanout.publish(event)

    # ----- auth ---------------------------------------------------------------------------

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        if self.token is None:
            return None
        ticket = request.query.get("ticket")
        if ticket and self.ticket_check is not None and self.ticket_check(ticket):
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return problem(
                401,
                "Unauthorized",
                "this server requires Authorization: Bearer TOKEN",
                **{"WWW-Authenticate": 'Bearer realm="dfmon"'},
            )
        if not hmac.compare_digest(presented.strip().encode(), self.token.encode()):
            return problem(
                401,
                "Unauthorized",
                "the bearer token is not valid",
                **{"WWW-Authenticate": 'Bearer realm="dfmon", error="invalid_token"'},
            )
        return None

    # ----- handlers -----------------------------------------------------------------------

    async def handle_options(self, request: web.Request) -> web.Response:
        headers = {
            **CORS_HEADERS,
            "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS, PATCH",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Max-Age": "600",
        }
        if "resource" not in request.match_info:
            headers["Accept-Post"] = SDP_TYPE
        return web.Response(status=204, headers=headers)

    async def handle_patch(self, request: web.Request) -> web.Response:
        return problem(
            405,
            "Method Not Allowed",
            "trickle ICE and ICE restarts are not supported: all candidates are in the answer",
            Allow="POST, OPTIONS" if "resource" not in request.match_info else "DELETE, OPTIONS",
        )

    async def handle_post(self, request: web.Request) -> web.Response:
        refused = self._auth_problem(request)
        if refused is not None:
            self.metrics.sessions_rejected += 1
            return refused
        if request.content_type != SDP_TYPE:
            self.metrics.sessions_rejected += 1
            return problem(
                415,
                "Unsupported Media Type",
                f"the offer must be sent as {SDP_TYPE}, not {request.content_type or 'nothing'}",
                **{"Accept-Post": SDP_TYPE},
            )
        participant = request.query.get("participant", "").strip()
        call = request.query.get("call", "").strip()
        for name, value in (("participant", participant), ("call", call)):
            if len(value) > PARTICIPANT_MAX_LEN or not value.isprintable():
                self.metrics.sessions_rejected += 1
                return problem(
                    400,
                    "Bad Request",
                    f"{name} must be printable and at most {PARTICIPANT_MAX_LEN} characters",
                )
        if len(self.sessions) + self._pending_offers >= self.config.live.max_sessions:
            self.metrics.sessions_rejected += 1
            return problem(
                503,
                "Service Unavailable",
                f"the server is at its limit of {self.config.live.max_sessions} sessions",
                **{"Retry-After": "10"},
            )
        try:
            offer = await request.text()
        except UnicodeDecodeError:
            offer = ""
        self._pending_offers += 1
        try:
            return await self._accept(offer, participant, call)
        finally:
            self._pending_offers -= 1

    async def _accept(self, offer: str, participant: str, call: str = "") -> web.Response:
        try:
            sending = check_offer(offer)
        except UnprocessableOffer as exc:
            self.metrics.sessions_rejected += 1
            return problem(422, "Unprocessable Offer", str(exc))
        except SdpError as exc:
            self.metrics.sessions_rejected += 1
            return problem(400, "Bad Request", str(exc))
        session_id = uuid.uuid4().hex[:12]
        resource = secrets.token_urlsafe(24)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tracks: list[Any] = []

        def collect(track: Any) -> None:
            tracks.append(track)

        pc.on("track", collect)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)  # gathers every candidate first
        except (ValueError, OperationError) as exc:
            await pc.close()
            self.metrics.sessions_rejected += 1
            if isinstance(exc, ValueError):
                return problem(400, "Bad Request", f"cannot use this offer: {exc}")
            return problem(422, "Unprocessable Offer", f"cannot use this offer: {exc}")
        except Exception as exc:
            log.exception("setting up a peer connection failed")
            await pc.close()
            self.metrics.sessions_rejected += 1
            return problem(500, "Internal Server Error", f"cannot set up the session: {exc}")
        answer_sdp = pc.localDescription.sdp
        kinds = tuple(sorted(set(sending.values())))
        session = LiveSession(
            config=self.config,
            session_id=session_id,
            participant=participant or session_id,
            pc=pc,
            kinds=kinds,
            codecs=_negotiated_codecs(answer_sdp),
            dispatch=self.dispatch,
            metrics=self.metrics,
            analyzer_factory=self.analyzer_factory,
            on_closed=lambda s, key=resource: self._forget(key),
        )
        self.sessions[resource] = session
        if call:
            self.calls[session_id] = call
        self.metrics.sessions_total += 1
        self.metrics.sessions_active += 1
        pc.remove_listener("track", collect)
        for track in tracks:  # fired during setRemoteDescription
            session.add_track(track)
        pc.on("track", session.add_track)
        session.start()
        log.info("session %s for %r: %s", session_id, session.participant, "+".join(kinds))
        location = f"{WHIP_PATH}/{resource}"
        return web.Response(
            status=201,
            text=answer_sdp,
            content_type=SDP_TYPE,
            headers={**CORS_HEADERS, "Location": location, "ETag": f'"{session_id}"'},
        )

    def _forget(self, resource: str) -> None:
        session = self.sessions.pop(resource, None)
        if session is not None:
            self.calls.pop(session.id, None)
            self.metrics.sessions_active -= 1

    async def handle_delete(self, request: web.Request) -> web.Response:
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        session = self.sessions.get(request.match_info["resource"])
        if session is None or session.closed:
            return problem(404, "Not Found", "no such session (it may have ended already)")
        # Answer once the peer connection is closed; the analysis of what was already
        # received finishes in the background (summary on the alert channel).
        await session.request_disconnect("deleted")
        return web.Response(status=200, headers=CORS_HEADERS)

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions)})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render().encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def handle_publish(self, request: web.Request) -> web.Response:
        body = _page("publish.html")
        if body is None:
            return problem(404, "Not Found", "the publish page is not installed")
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def handle_dashboard(self, request: web.Request) -> web.Response:
        try:
            from monitor.web import dashboard_page
        except ImportError:
            return problem(404, "Not Found", "the dashboard is not installed")
        alerts_url = None
        if self.alerts_port is not None:
            host = request.url.host or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            alerts_url = f"ws://{host}:{self.alerts_port}/alerts"
        return web.Response(body=dashboard_page(alerts_url), content_type="text/html")
