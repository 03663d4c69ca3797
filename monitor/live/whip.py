"""The live ingest HTTP server: WHIP (RFC 9725) endpoints, health, metrics and pages.

One WHIP session per participant. ``POST /whip`` takes an SDP offer and answers with
all ICE candidates in the SDP (non-trickle: PATCH is refused with 405), so the client
needs nothing else. Errors are RFC 9457 ``application/problem+json``. The session URL
(``Location``) carries a random id from :func:`secrets.token_urlsafe`; the id used in
events is a different, short one, so that alert subscribers cannot end sessions.

Before an offer is answered, :class:`~monitor.live.admission.Admission` decides whether
the server can serve one more session without dropping everyone's frames (503 +
``Retry-After`` otherwise) and whether the token is within its quotas (429). The offer
must arrive within ``body_timeout_s`` (408) and carry a DTLS fingerprint and ICE
candidates (400). Host candidates are offered only on the address the request came in
on, or on the configured ``ice_addresses``.
The query may name the ``participant`` and the ``call`` it belongs to; events carry both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
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
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS

from monitor.auth import bearer_challenge, bearer_token, matching_token
from monitor.config import MonitorConfig
from monitor.errors import SdpError
from monitor.events import EventSink
from monitor.live.admission import Admission, Refusal
from monitor.live.ice import host_candidates_on, normalize_address
from monitor.live.memory import release_free_memory, rss_mib
from monitor.live.metrics import LiveMetrics
from monitor.live.session import AnalyzerFactory, LiveSession, default_analyzer_factory
from monitor.sinks.fanout import EventFanout

log = logging.getLogger(__name__)

WHIP_PATH = "/whip"
SDP_TYPE = "application/sdp"
PROBLEM_TYPE = "application/problem+json"
MAX_OFFER_BYTES = 64 * 1024
# DTLS fingerprint algorithm -> digest size in bytes, for the algorithms aiortc verifies.
FINGERPRINT_BYTES = {name: h.digest_size for name, h in X509_DIGEST_ALGORITHMS.items()}
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


@web.middleware
async def problem_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error aiohttp raises itself (404, 405, 413...) as problem+json too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else ""
        return problem(exc.status, exc.reason, detail or exc.reason, **kept)


def check_offer(text: str) -> dict[str, str]:
    """Validate a WHIP offer; returns ``{mid: kind}`` of the media it sends.

    Raises :class:`SdpError` (400) when it is not SDP, has no usable DTLS fingerprint or
    no ICE candidates; :class:`UnprocessableOffer` (422) when it sends no media or more
    than one audio or video track.
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
        _check_fingerprints(media.kind, media.dtls.fingerprints if media.dtls else [])
    if not sending:
        raise UnprocessableOffer("the offer sends no audio or video")
    too_many = [kind for kind, n in counts.items() if n > 1]
    if too_many:
        raise UnprocessableOffer(
            f"the offer sends {counts[too_many[0]]} {too_many[0]} tracks; "
            "WHIP allows one audio and one video track per session"
        )
    if not any(media.ice_candidates for media in description.media):
        raise SdpError(
            "the offer carries no ICE candidates (a=candidate): this server does not take "
            "trickled candidates (PATCH), so gather them before sending the offer"
        )
    return sending


def _check_fingerprints(kind: str, fingerprints: list[Any]) -> None:
    """WebRTC media is DTLS-SRTP: without a usable fingerprint no handshake can succeed."""
    if not fingerprints:
        raise SdpError(f"the offer's {kind} has no DTLS fingerprint (a=fingerprint)")
    usable = [f for f in fingerprints if f.algorithm.lower() in FINGERPRINT_BYTES]
    if not usable:
        algorithms = ", ".join(sorted({f.algorithm for f in fingerprints}))
        raise SdpError(
            f"the offer's DTLS fingerprint uses {algorithms}; this server verifies "
            + ", ".join(FINGERPRINT_BYTES)
        )
    for fingerprint in usable:
        size = FINGERPRINT_BYTES[fingerprint.algorithm.lower()]
        octets = fingerprint.value.split(":")
        if len(octets) != size or not all(re.fullmatch("[0-9A-Fa-f]{2}", o) for o in octets):
            raise SdpError(
                f"the offer's {fingerprint.algorithm} DTLS fingerprint is malformed: it must be "
                f"{size} colon-separated hex bytes"
            )


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
        # Publishing accepts the shared token and each publisher's own (own quotas).
        self.tokens = [*([token] if token is not None else []), *config.live.publisher_tokens]
        self.admission = Admission(config.live)
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
        app = web.Application(client_max_size=MAX_OFFER_BYTES, middlewares=[problem_errors])
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
        """The 401 problem for a request without a valid token or ticket, else None."""
        return self._authorize(request)[0]

    def _authorize(self, request: web.Request) -> tuple[web.Response | None, str]:
        """(a 401 problem or None, the quota key: the token, or the client's address)."""
        if not self.tokens:
            return None, f"address:{request.remote or '?'}"
        ticket = request.query.get("ticket")
        if ticket and self.ticket_check is not None and self.ticket_check(ticket):
            # Authenticated by the gateway, which redirected here: one quota per client.
            return None, f"ticket:{request.remote or '?'}"
        presented = bearer_token(request.headers.get("Authorization"))
        token = matching_token([presented], self.tokens)
        if token is not None:
            return None, f"token:{self.tokens.index(token)}"
        detail = (
            "the bearer token is not valid"
            if presented
            else "this server requires Authorization: Bearer TOKEN"
        )
        challenge = bearer_challenge(invalid=presented is not None)
        return problem(401, "Unauthorized", detail, **{"WWW-Authenticate": challenge}), ""

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
        response = await self._post(request)
        if response.status >= 400:
            self.metrics.sessions_rejected += 1
            self.metrics.rejected_by_status[response.status] += 1
        return response

    async def _post(self, request: web.Request) -> web.Response:
        refused, quota_key = self._authorize(request)
        if refused is not None:
            return refused
        if request.content_type != SDP_TYPE:
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
                return problem(
                    400,
                    "Bad Request",
                    f"{name} must be printable and at most {PARTICIPANT_MAX_LEN} characters",
                )
        refusal = self._admit(quota_key)
        if refusal is not None:
            return problem(
                refusal.status,
                refusal.title,
                refusal.detail,
                **{"Retry-After": str(refusal.retry_after_s)},
            )
        self._pending_offers += 1
        try:
            offer = await self._read_offer(request)
            if isinstance(offer, web.Response):
                return offer
            return await self._accept(
                offer, participant, call, quota_key, self._ice_addresses(request)
            )
        finally:
            self._pending_offers -= 1

    def _admit(self, quota_key: str) -> Refusal | None:
        now = time.monotonic()
        loads = [s.load(now) for s in self.sessions.values() if not s.closed]
        refusal = self.admission.decide(quota_key, loads, self._pending_offers, rss_mib())
        if refusal is not None:
            log.info("refused a WHIP offer (%d): %s", refusal.status, refusal.detail)
        return refusal

    async def _read_offer(self, request: web.Request) -> str | web.Response:
        """The body, read under ``body_timeout_s`` and at most ``MAX_OFFER_BYTES``."""
        too_large = problem(
            413, "Content Too Large", f"an offer may have at most {MAX_OFFER_BYTES} bytes"
        )
        if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
            too_large.force_close()
            return too_large
        timeout = self.config.live.body_timeout_s

        async def read() -> bytes:
            body = bytearray()
            while len(body) <= MAX_OFFER_BYTES:
                chunk = await request.content.read(MAX_OFFER_BYTES + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            return bytes(body)

        try:
            body = await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            late = problem(408, "Request Timeout", f"the offer did not arrive within {timeout:g} s")
            late.force_close()
            return late
        if len(body) > MAX_OFFER_BYTES:
            too_large.force_close()
            return too_large
        try:
            return body.decode()
        except UnicodeDecodeError:
            return ""  # check_offer answers 400: not SDP

    def _ice_addresses(self, request: web.Request) -> list[str]:
        """Configured addresses, else the one this request arrived on."""
        if self.config.live.ice_addresses:
            return list(self.config.live.ice_addresses)
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname:
            return [normalize_address(sockname[0])]
        return [normalize_address(self.host or "127.0.0.1")]

    async def _accept(
        self, offer: str, participant: str, call: str, quota_key: str, ice_addresses: list[str]
    ) -> web.Response:
        try:
            sending = check_offer(offer)
        except UnprocessableOffer as exc:
            return problem(422, "Unprocessable Offer", str(exc))
        except SdpError as exc:
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
            with host_candidates_on(ice_addresses):
                await pc.setLocalDescription(answer)  # gathers every candidate first
        except (ValueError, OperationError) as exc:
            await pc.close()
            if isinstance(exc, ValueError):
                return problem(400, "Bad Request", f"cannot use this offer: {exc}")
            return problem(422, "Unprocessable Offer", f"cannot use this offer: {exc}")
        except Exception as exc:
            log.exception("setting up a peer connection failed")
            await pc.close()
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
            quota_key=quota_key,
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
            self.admission.learn(session.busy.lifetime_fraction())
            # The session's threads are gone: hand their freed memory back (off the loop).
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    async def handle_delete(self, request: web.Request) -> web.Response:
        refused, _ = self._authorize(request)
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
        self.metrics.rss_mib = rss_mib()
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
