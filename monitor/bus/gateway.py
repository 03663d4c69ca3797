"""``dfmon gateway``: the one address a call platform and its dashboards are given.

- **WHIP entry point.** ``POST /whip`` is authenticated as ``dfmon serve`` does it,
  then answered ``307 Temporary Redirect`` to the least-loaded live worker that has room
  (RFC 9725 section 4.5), or ``503`` with ``Retry-After`` when none has. The redirect
  carries a single-use ticket (:mod:`monitor.bus.ticket`), since clients drop the
  bearer token on a redirect to another origin.
- **Every worker's events** on one ``/alerts`` websocket and dashboard, read from the
  stream of every event; a client that connects late first gets the recent history
  from the stream, then the live events, with nothing lost or repeated in between.
- **Workers that vanish.** A registered worker whose heartbeat expired is lost: each of
  its open sessions gets a ``session_ended`` with reason ``worker_lost`` from the gateway,
  so no dashboard shows a ghost call. Several gateways may run; a lock in Redis lets
  one of them do it. After the gateway's own Redis connection broke, it waits a whole
  heartbeat lifetime before judging, as the workers could not heartbeat either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from monitor.bus.connection import REDIS_DOWN, Backoff, BusKeys, connect, raise_if_cancelled
from monitor.bus.publisher import EventPublisher
from monitor.bus.ticket import issue_ticket
from monitor.config import MonitorConfig
from monitor.events import SCHEMA_VERSION, utc_timestamp
from monitor.live.whip import CORS_HEADERS, SDP_TYPE, LiveServer, problem
from monitor.sinks.websocket import AlertServer

log = logging.getLogger(__name__)

LOST_REASON = "worker_lost"
# A worker that was redirected to but never accepted the offer stops counting after this.
REDIRECT_HOLD_S = 10.0
STREAM_READ_COUNT = 500
STREAM_BLOCK_MS = 1000


# ----- choosing a worker ------------------------------------------------------------------


@dataclass
class WorkerLoad:
    """A worker as its last heartbeat described it, plus redirects it has not yet seen."""

    id: str
    whip_url: str
    sessions: int
    max_sessions: int
    accepted_total: int
    cpu: float
    report: dict[str, Any]
    redirected: deque[float] = field(default_factory=deque)  # monotonic times

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> WorkerLoad:
        return cls(
            id=str(report["worker"]),
            whip_url=str(report["whip_url"]),
            sessions=int(report["sessions"]),
            max_sessions=int(report["max_sessions"]),
            accepted_total=int(report["accepted_total"]),
            cpu=float(report["cpu"]),
            report=report,
        )

    @property
    def expected_sessions(self) -> int:
        return self.sessions + len(self.redirected)

    @property
    def fill(self) -> float:
        return self.expected_sessions / max(self.max_sessions, 1)


class WorkerDirectory:
    """The live workers and the choice among them; pure bookkeeping, no I/O.

    Heartbeats come every second while offers may come in bursts, so each redirect
    counts as a session on its worker until the worker's heartbeat shows it accepted
    one more offer (``accepted_total``), or until ``hold_s`` passed (the client gave up).
    """

    def __init__(self, *, max_cpu: float, hold_s: float = REDIRECT_HOLD_S) -> None:
        self.max_cpu = max_cpu
        self.hold_s = hold_s
        self.workers: dict[str, WorkerLoad] = {}

    def update(self, reports: list[dict[str, Any]], now: float) -> None:
        """Replace the live set with these heartbeats (the others expired)."""
        fresh: dict[str, WorkerLoad] = {}
        for report in reports:
            try:
                load = WorkerLoad.from_report(report)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring a malformed worker heartbeat: %.200r", report)
                continue
            known = self.workers.get(load.id)
            if known is not None:
                load.redirected = known.redirected
                for _ in range(max(0, load.accepted_total - known.accepted_total)):
                    if load.redirected:
                        load.redirected.popleft()
            fresh[load.id] = load
        for load in fresh.values():
            while load.redirected and now - load.redirected[0] > self.hold_s:
                load.redirected.popleft()
        self.workers = fresh

    def choose(self, now: float) -> WorkerLoad | None:
        """The least-filled worker with room and CPU to spare, counted as redirected to."""
        candidates = [
            w
            for w in self.workers.values()
            if w.expected_sessions < w.max_sessions and w.cpu < self.max_cpu
        ]
        if not candidates:
            return None
        chosen = min(candidates, key=lambda w: (w.fill, w.cpu, w.id))
        chosen.redirected.append(now)
        return chosen


# ----- the websocket ----------------------------------------------------------------------


class StreamAlertServer(AlertServer):
    """``/alerts`` fed from the stream of every event, its history read from the stream.

    The gateway's reader calls :meth:`relay` with each entry in stream order and keeps
    ``last_id``. :meth:`history` takes ``last_id`` in the step of the loop in which the
    client was registered, then reads the stream up to it: everything after it arrives
    live (see :meth:`AlertServer.history`).
    """

    def __init__(self, *args: Any, redis: Any, stream: str, history_events: int, **kwargs: Any):
        super().__init__(*args, history_size=0, **kwargs)
        self._redis = redis
        self._stream = stream
        self._history_events = history_events
        self.last_id: str | None = None  # None: the reader has not started yet
        self.relayed = 0

    def relay(self, entry_id: str, text: str) -> None:
        self.last_id = entry_id
        self.relayed += 1
        self.publish_text(text)

    async def history(self) -> list[str]:
        upto = self.last_id  # before any await: the cursor of this client's registration
        if upto is None or self._history_events <= 0:
            return []
        try:
            entries = await self._redis.xrevrange(
                self._stream, max=upto, min="-", count=self._history_events
            )
        except REDIS_DOWN as exc:
            log.warning("an alerts client gets no history: %s", exc)
            return []
        return [fields["event"] for _, fields in reversed(entries) if "event" in fields]


# ----- the HTTP side ----------------------------------------------------------------------


class WhipRedirector(LiveServer):
    """The WHIP surface of :class:`LiveServer` (auth, CORS, pages) whose POST redirects.

    It holds no sessions: DELETE and PATCH go to the worker the client was sent to.
    """

    def __init__(self, gateway: Gateway, config: MonitorConfig, **kwargs: Any) -> None:
        super().__init__(config, prewarm=False, **kwargs)
        self.gateway = gateway
        self.redirects: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.router.add_get("/workers", self.handle_workers)
        return app

    async def handle_post(self, request: web.Request) -> web.Response:
        refused = self._auth_problem(request)
        if refused is not None:
            self.refused["unauthorized"] += 1
            return refused
        if request.content_type != SDP_TYPE:
            self.refused["media_type"] += 1
            return problem(
                415,
                "Unsupported Media Type",
                f"the offer must be sent as {SDP_TYPE}, not {request.content_type or 'nothing'}",
                **{"Accept-Post": SDP_TYPE},
            )
        worker = self.gateway.directory.choose(time.monotonic())
        if worker is None:
            self.refused["no_capacity"] += 1
            retry_after = max(1, round(self.config.bus.heartbeat_s * 2))
            live = len(self.gateway.directory.workers)
            return problem(
                503,
                "Service Unavailable",
                f"no worker has room for another session ({live} live)",
                **{"Retry-After": str(retry_after)},
            )
        self.redirects[worker.id] += 1
        location = self._location(worker, request)
        log.info("offer for %r -> worker %s", request.query.get("participant", ""), worker.id)
        return web.Response(status=307, headers={**CORS_HEADERS, "Location": location})

    def _location(self, worker: WorkerLoad, request: web.Request) -> str:
        query = [(k, v) for k, v in request.query.items() if k != "ticket"]
        if self.token:
            ticket = issue_ticket(self.token, worker.id, self.config.bus.ticket_ttl_s)
            query.append(("ticket", ticket))
        parts = urlsplit(worker.whip_url)
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def handle_health(self, request: web.Request) -> web.Response:
        workers = self.gateway.directory.workers.values()
        return web.json_response(
            {
                "status": "ok" if self.gateway.reachable else "bus_unreachable",
                "workers": len(workers),
                "sessions": sum(w.sessions for w in workers),
            }
        )

    async def handle_workers(self, request: web.Request) -> web.Response:
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        return web.json_response(
            [w.report for w in sorted(self.gateway.directory.workers.values(), key=lambda w: w.id)]
        )

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.gateway.render_metrics().encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


# ----- the gateway ------------------------------------------------------------------------


class Gateway:
    """Runs the redirector, the websocket, the stream reader and the worker watch."""

    def __init__(self, url: str, config: MonitorConfig, *, token: str | None) -> None:
        self.config = config
        self.token = token
        self.id = f"gateway-{socket.gethostname()}-{secrets.token_hex(2)}"
        self.keys = BusKeys(config.bus.prefix)
        # Reads block up to STREAM_BLOCK_MS: the socket must wait longer than that.
        self.redis = connect(url, socket_timeout_s=STREAM_BLOCK_MS / 1000 + 5.0)
        self.directory = WorkerDirectory(max_cpu=config.bus.max_worker_cpu)
        self.publisher = EventPublisher(
            self.redis,
            config.bus,
            publisher_id=self.id,
            worker=None,
            open_sessions_key=self.keys.worker_sessions(self.id),
        )
        self.alerts: StreamAlertServer | None = None
        self.http: WhipRedirector | None = None
        self.reachable = False
        self._healthy_since: float | None = None
        self._ending: dict[str, asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []
        self.sessions_lost = 0

    async def start(self, host: str, port: int, alerts_port: int) -> None:
        """Bind both ports (``OSError`` if taken), then follow the bus."""
        self.alerts = StreamAlertServer(
            host,
            alerts_port,
            token=self.token,
            config=self.config.alerts,
            redis=self.redis,
            stream=self.keys.events,
            history_events=self.config.bus.history_events,
        )
        await self.alerts.start()
        self.http = WhipRedirector(
            self, self.config, token=self.token, alerts_port=self.alerts.port
        )
        try:
            await self.http.start(host, port)
        except OSError:
            await self.alerts.stop()
            raise
        await self.publisher.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_events(), name="gateway-read-events"),
            loop.create_task(self._watch_workers(), name="gateway-watch-workers"),
        ]
        log.info("gateway %s: WHIP %s, alerts %s", self.id, self.http.url, self.alerts.url)

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._ending.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=5.0)
            if stuck:
                log.warning("gateway: %d task(s) did not stop", len(stuck))
        await self.publisher.close(2.0)
        if self.http is not None:
            await self.http.stop()
        if self.alerts is not None:
            await self.alerts.drain(2.0)
            await self.alerts.stop()
        await self.redis.aclose()

    # ----- Redis health -----------------------------------------------------------------

    def _note_reachable(self, ok: bool) -> None:
        if ok and not self.reachable:
            self._healthy_since = time.monotonic()
            log.info("gateway: bus reachable")
        elif not ok and self.reachable:
            log.warning("gateway: bus unreachable; not judging workers until it is back")
        self.reachable = ok
        if not ok:
            self._healthy_since = None

    def _may_judge(self) -> bool:
        """Heartbeats are trusted once Redis has been reachable for a whole TTL."""
        return (
            self._healthy_since is not None
            and time.monotonic() - self._healthy_since >= self.config.bus.worker_ttl_s
        )

    # ----- the stream of every event ----------------------------------------------------

    async def _read_events(self) -> None:
        assert self.alerts is not None
        backoff = Backoff()
        last: str | None = None
        while True:
            try:
                if last is None:  # start at the end: older events are history
                    newest = await self.redis.xrevrange(self.keys.events, count=1)
                    last = newest[0][0] if newest else "0-0"
                    self.alerts.last_id = last
                reply = await self.redis.xread(
                    {self.keys.events: last}, count=STREAM_READ_COUNT, block=STREAM_BLOCK_MS
                )
            except REDIS_DOWN:
                raise_if_cancelled()
                self._note_reachable(False)
                await asyncio.sleep(backoff.next_delay())
                continue
            self._note_reachable(True)
            backoff.reset()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    text = fields.get("event")
                    if text is not None:
                        self.alerts.relay(entry_id, text)

    # ----- workers ----------------------------------------------------------------------

    async def _watch_workers(self) -> None:
        period = self.config.bus.heartbeat_s / 2
        while True:
            try:
                await self._refresh_workers()
            except REDIS_DOWN:
                raise_if_cancelled()
                self._note_reachable(False)
            await asyncio.sleep(period)

    async def _refresh_workers(self) -> None:
        registered = sorted(await self.redis.smembers(self.keys.workers))
        beats = []
        if registered:
            beats = await self.redis.mget([self.keys.worker(w) for w in registered])
        self._note_reachable(True)
        reports, missing = [], []
        for worker, beat in zip(registered, beats, strict=True):
            if beat is None:
                missing.append(worker)
                continue
            with contextlib.suppress(ValueError):
                reports.append(json.loads(beat))
        self.directory.update(reports, time.monotonic())
        if not self._may_judge():
            return
        for worker in missing:
            if worker not in self._ending:
                task = asyncio.get_running_loop().create_task(
                    self._end_lost_worker(worker), name=f"gateway-lost {worker}"
                )
                self._ending[worker] = task
                task.add_done_callback(lambda _, w=worker: self._ending.pop(w, None))

    async def _end_lost_worker(self, worker: str) -> None:
        """End the open sessions of a worker whose heartbeat expired, then forget it."""
        backoff = Backoff()
        while True:
            try:
                await self._end_sessions_of(worker)
                return
            except REDIS_DOWN:
                raise_if_cancelled()
                await asyncio.sleep(backoff.next_delay())

    async def _end_sessions_of(self, worker: str) -> None:
        lock = self.keys.lost(worker)
        taken = await self.redis.set(lock, self.id, nx=True, ex=60)
        if not taken and await self.redis.get(lock) != self.id:
            return  # another gateway is at it
        open_key = self.keys.worker_sessions(worker)
        sessions = await self.redis.hgetall(open_key)
        for session, started_text in sorted(sessions.items()):
            try:
                started = json.loads(started_text)
            except ValueError:
                started = {}
            newest = await self.redis.xrevrange(self.keys.session(session), count=1)
            seq = 0
            if newest:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    seq = int(json.loads(newest[0][1]["event"])["seq"]) + 1
            event = {
                "schema": SCHEMA_VERSION,
                "type": "session_ended",
                "session": session,
                "participant": started.get("participant") or session,
                "ts": utc_timestamp(),
                "reason": LOST_REASON,
                "detail": (
                    f"worker {worker} stopped heartbeating; this session's analysis "
                    "ended with it, without a summary"
                ),
                "worker": worker,
                "reported_by": self.id,
                "seq": seq,
            }
            if started.get("call"):
                event["call"] = started["call"]
            self.publisher.publish(event, open_sessions_key=open_key)
        await self.publisher.flush()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.workers, worker)
            pipe.delete(open_key)
            await pipe.execute()
        self.sessions_lost += len(sessions)
        log.warning("worker %s lost: ended its %d open session(s)", worker, len(sessions))

    # ----- metrics ----------------------------------------------------------------------

    def render_metrics(self) -> str:
        """Prometheus text: the gateway's counters and each live worker's last heartbeat."""
        assert self.http is not None and self.alerts is not None
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: dict[str, Any]) -> None:
            """``samples``: label text (``worker="w1"``, or "" for none) -> value."""
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            for labels, value in samples.items():
                lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")

        def by(label: str, counts: dict[str, Any]) -> dict[str, Any]:
            return {f'{label}="{key}"': value for key, value in sorted(counts.items())}

        workers = {w.id: w for w in self.directory.workers.values()}
        metric("dfmon_gateway_bus_up", "gauge", "1 while Redis answers.", {"": int(self.reachable)})
        metric(
            "dfmon_gateway_workers", "gauge", "Workers with a live heartbeat.", {"": len(workers)}
        )
        metric(
            "dfmon_gateway_redirects_total",
            "counter",
            "WHIP offers redirected, by worker.",
            by("worker", self.http.redirects),
        )
        metric(
            "dfmon_gateway_offers_refused_total",
            "counter",
            "WHIP offers refused, by reason.",
            by("reason", self.http.refused),
        )
        metric(
            "dfmon_gateway_sessions_lost_total",
            "counter",
            "Sessions ended because their worker stopped heartbeating.",
            {"": self.sessions_lost},
        )
        metric(
            "dfmon_gateway_events_relayed_total",
            "counter",
            "Events read from the stream and sent to /alerts clients.",
            {"": self.alerts.relayed},
        )
        reports = {worker: w.report for worker, w in workers.items()}
        metric(
            "dfmon_worker_sessions",
            "gauge",
            "Open sessions per worker (last heartbeat).",
            by("worker", {worker: w.sessions for worker, w in workers.items()}),
        )
        metric(
            "dfmon_worker_cpu_share",
            "gauge",
            "Worker CPU time over its machine's cores, last heartbeat interval.",
            by("worker", {worker: w.cpu for worker, w in workers.items()}),
        )
        metric(
            "dfmon_worker_frames_dropped_total",
            "counter",
            "Frames a worker dropped because its analysis fell behind.",
            by("worker", {k: r.get("frames_dropped", 0) for k, r in reports.items()}),
        )
        metric(
            "dfmon_worker_bus_dropped_total",
            "counter",
            "Events a worker dropped because its buffer filled while Redis was away.",
            by("worker", {k: r.get("bus", {}).get("dropped", 0) for k, r in reports.items()}),
        )
        return "\n".join(lines) + "\n"
