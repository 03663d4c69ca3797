"""The event bus: workers, gateway and sinks over a real Redis (redis-server on loopback).

The deployment tests run what an operator runs: three ``dfmon serve --bus`` workers with
the real pipeline, ``dfmon gateway`` and ``dfmon sinks`` as separate processes, publishers
that are real WebRTC clients (monitor/live/client.py) sending synthetic calls. The faults
are real too: SIGKILL for a worker and a sinks process, a killed and restarted Redis.
Figures go to tests/artifacts/bus_figures.json.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import re
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.bus.connection import BusKeys, check_bus_url, connect
from monitor.bus.consumer import SessionNotices
from monitor.bus.gateway import LOST_REASON, WorkerDirectory
from monitor.bus.publisher import EventPublisher
from monitor.bus.ticket import TicketVerifier, issue_ticket
from monitor.config import load_config
from monitor.errors import ConfigError
from monitor.events import EventFactory, validate_event
from monitor.live.client import push_file
from monitor.sinks.notices import NoticePolicy, notice_level
from monitor.synth.events import FLAPPING, interleaved, session_events
from tests.browser import find_chromium
from tests.bus_util import (
    REDIS_SERVER,
    Deployment,
    RedisServer,
    arrivals_both_ways,
    stream_events,
    wait_until,
    wait_until_async,
    write_config,
)
from tests.live_util import AlertListener, RecordingAnalyzer, make_offer
from tests.sink_util import WebhookReceiver, check_syslog

TOKEN = "bus-s3cret"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TEXT = "Please send me the figures before our meeting on Monday morning."
# Short beats so a lost worker is noticed in about two seconds; no CPU gate (CI is busy).
# dfmon sinks: quick retries; which events, and their throttle, the tests say (bus_config).
FAST_BUS = """
[bus]
heartbeat_s = 0.5
worker_ttl_s = 2.0
max_worker_cpu = 1.01
claim_idle_s = 1.0

[sinks]
backoff_s = 0.05
backoff_max_s = 0.5
# The test's receiver answers late on a loaded machine: a retry would read as a repeat.
timeout_s = 30.0
"""
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


EVERY_EVENT_BUT_SCORES = """
events = ["session_started", "alert", "summary", "session_ended", "error"]
throttle_s = 0.0
"""


def bus_config(tmp_path: Path, sinks: str = EVERY_EVENT_BUT_SCORES) -> Path:
    """FAST_BUS, a dead-letter file in ``tmp_path``, and more ``[sinks]`` settings (by
    default: every event type but scores, unthrottled)."""
    dead_letter = f'dead_letter = "{tmp_path / "dead-letter.jsonl"}"\n'
    return write_config(tmp_path / "bus.toml", FAST_BUS + dead_letter + sinks)


def expected_notices(client: Any, config: Path) -> list[dict]:
    """What one NoticePolicy over the stream of every event, in order, gives: what the
    sinks must deliver, however their consumers shared the entries."""
    sinks = load_config(config).sinks
    policy = NoticePolicy(sinks.events, sinks.throttle_s)
    return [n for _, e in stream_events(client, BusKeys().events) for n in policy.process(e)]


def sink_stats(log_text: str, sink: str) -> dict[str, int]:
    """The counters a ``dfmon sinks`` process logs for ``sink`` when it stops."""
    match = re.search(rf"sink {re.escape(sink)}: (\{{.*\}})", log_text)
    assert match, log_text[-2000:]
    return ast.literal_eval(match.group(1))


def record_figures(name: str, figures: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "bus_figures.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(figures)}")


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from monitor.synth.call import make_call
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    out = tmp_path_factory.mktemp("bus-calls")
    return {
        "short": make_call(out / "short.mp4", text=TEXT, seed=3, size=(240, 320)).path,
        "long": make_call(
            out / "long.mp4", text=" ".join([TEXT] * 2), seed=4, size=(240, 320)
        ).path,
    }


def by_session(events: list[dict]) -> dict[str, list[dict]]:
    sessions: dict[str, list[dict]] = {}
    for event in events:
        sessions.setdefault(event["session"], []).append(event)
    return sessions


def check_session_record(events: list[dict]) -> None:
    """One session's events as the bus delivered them: complete, in order, one worker."""
    assert [e["seq"] for e in events] == list(range(len(events))), [e["type"] for e in events]
    assert events[0]["type"] == "session_started"
    assert len({e["worker"] for e in events}) == 1
    for event in events:
        validate_event(event)


# ----- units: no Redis ------------------------------------------------------------------


def test_bus_url_must_be_redis() -> None:
    assert check_bus_url("redis://127.0.0.1:6379/0")
    for bad in ("http://x:1/0", "redis://", "redis://h:99999/0", "redis://h:1/db"):
        with pytest.raises(ConfigError):
            check_bus_url(bad)


def test_cli_refuses_bad_bus_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.cli import main

    assert main(["serve", "--bus", "localhost:6379"]) == 2
    assert "--bus must be redis://HOST:PORT/DB" in capsys.readouterr().err
    assert main(["serve", "--advertise", "http://h:1/whip"]) == 2
    assert "--advertise needs --bus" in capsys.readouterr().err
    # dfmon sinks builds its sinks as serve does, before it connects to anything.
    monkeypatch.delenv("DFMON_SPLUNK_TOKEN", raising=False)
    assert main(["sinks", "--bus", "redis://h:1/0", "--sink", "splunk:http://h"]) == 2
    assert "the splunk sink needs a HEC token" in capsys.readouterr().err
    assert main(["sinks", "--bus", "redis://h:1/0", "--sink", "fax:123"]) == 2
    assert "unknown sink kind 'fax'" in capsys.readouterr().err
    assert main(["sinks", "--bus", "redis://h:1/0"]) == 2
    assert "no sink: give --sink" in capsys.readouterr().err


def test_tickets_are_single_use_unexpired_and_for_one_worker() -> None:
    now = 1_000_000.0
    ticket = issue_ticket(TOKEN, "w1", 30, now=now)
    verifier = TicketVerifier(TOKEN, "w1")
    assert verifier.check(ticket, now=now + 1)
    assert not verifier.check(ticket, now=now + 2)  # replayed
    assert not TicketVerifier(TOKEN, "w2").check(issue_ticket(TOKEN, "w1", 30, now=now), now=now)
    assert not TicketVerifier("other", "w1").check(issue_ticket(TOKEN, "w1", 30, now=now), now=now)
    assert not verifier.check(issue_ticket(TOKEN, "w1", 30, now=now), now=now + 31)  # expired
    assert not verifier.check("1.2", now=now) and not verifier.check("x.y.z", now=now)


def _report(worker: str, sessions: int, accepted: int, cpu: float = 0.1, room: int = 4) -> dict:
    return {
        "worker": worker,
        "whip_url": f"http://{worker}/whip",
        "sessions": sessions,
        "max_sessions": room,
        "accepted_total": accepted,
        "cpu": cpu,
    }


def test_directory_spreads_offers_by_expected_load() -> None:
    directory = WorkerDirectory(max_cpu=0.9, hold_s=10.0)
    directory.update([_report("a", 1, 1), _report("b", 0, 0), _report("c", 0, 0)], now=0.0)
    # A burst between two heartbeats: each redirect counts until the worker reports it.
    chosen = [directory.choose(now=0.1).id for _ in range(5)]
    assert Counter(chosen) == {"b": 2, "c": 2, "a": 1}
    assert chosen[:2] == ["b", "c"]
    # b accepted both; c accepted one of its two; a none yet.
    directory.update([_report("a", 1, 1), _report("b", 2, 2), _report("c", 1, 1)], now=1.0)
    assert {w.id: w.expected_sessions for w in directory.workers.values()} == {
        "a": 2,
        "b": 2,
        "c": 2,
    }
    # Redirects never followed stop counting after hold_s.
    directory.update([_report("a", 1, 1), _report("b", 2, 2), _report("c", 1, 1)], now=20.0)
    assert directory.choose(now=20.0).id == "a"
    # Full workers and busy CPUs get nothing; none left means None (503).
    directory.update([_report("a", 4, 5), _report("b", 1, 2, cpu=0.95)], now=21.0)
    assert directory.choose(now=21.0) is None
    directory.update([_report("a", 3, 5), {"worker": "broken"}], now=22.0)
    assert directory.choose(now=22.0).id == "a"
    assert list(directory.workers) == ["a"]


# ----- the publisher against a real Redis -----------------------------------------------


def _events(n: int, session: str = "sess1") -> list[dict]:
    factory = EventFactory(session, "alice")
    return [
        factory.make("error", message=f"event {i}") if i else factory.make("session_started")
        for i in range(n)
    ]


@needs_redis
async def test_publisher_buffer_is_bounded_and_counts_what_it_dropped(
    redis_server: RedisServer,
) -> None:
    """Redis down: the buffer keeps the newest ``buffer_events`` (plus the batch being
    retried), drops the oldest and counts them; once Redis is back, exactly the kept
    ones arrive, each once and in order."""
    config = load_config(bus={"buffer_events": 5, "batch_events": 5}).bus
    keys = BusKeys(config.prefix)
    redis = connect(redis_server.url, socket_timeout_s=1.0)
    publisher = EventPublisher(
        redis, config, publisher_id="w", worker="w", open_sessions_key=keys.worker_sessions("w")
    )
    await publisher.start()
    redis_server.kill()
    events = _events(30)
    for event in events[:20]:
        publisher.publish(event)
    await wait_until(lambda: publisher.failures >= 1, 10, "a failed write")
    for event in events[20:]:
        publisher.publish(event)
    assert publisher.dropped == 20 and publisher.buffered == 10
    redis_server.start()
    assert await publisher.flush(15), publisher.stats()
    stored = [e["seq"] for _, e in stream_events(redis_server.client(), keys.events)]
    assert stored == [15, 16, 17, 18, 19, 25, 26, 27, 28, 29]
    assert 30 - len(stored) == publisher.dropped
    await publisher.close(2)
    await redis.aclose()


@needs_redis
async def test_a_retried_batch_is_written_once(redis_server: RedisServer) -> None:
    config = load_config().bus
    keys = BusKeys(config.prefix)
    redis = connect(redis_server.url)
    publisher = EventPublisher(
        redis, config, publisher_id="w", worker="w", open_sessions_key=keys.worker_sessions("w")
    )
    for event in _events(3):  # not started: the events stay queued
        publisher.publish(event)
    batch = list(publisher._buffer)
    await publisher._write(batch)
    await publisher._write(batch)  # as after a lost reply
    client = redis_server.client()
    assert [e["seq"] for _, e in stream_events(client, keys.events)] == [0, 1, 2]
    assert [e["seq"] for _, e in stream_events(client, keys.session("sess1"))] == [0, 1, 2]
    assert [e["seq"] for _, e in stream_events(client, keys.participant("alice"))] == [0, 1, 2]
    assert list(client.hgetall(keys.worker_sessions("w"))) == ["sess1"]
    await redis.aclose()


@contextlib.asynccontextmanager
async def bus_publisher(redis_url: str) -> AsyncIterator[EventPublisher]:
    """A worker's publisher (it stamps ``worker`` and ``seq``); flushed at the end."""
    redis = connect(redis_url)
    publisher = EventPublisher(
        redis, load_config().bus, publisher_id="feed", worker="feed", open_sessions_key="unused"
    )
    await publisher.start()
    try:
        yield publisher
    finally:
        assert await publisher.close(10)
        await redis.aclose()


async def publish_all(publisher: EventPublisher, events: list[dict], pause_s: float) -> None:
    for event in events:
        publisher.publish(event)
        await asyncio.sleep(pause_s)


@needs_redis
async def test_notices_from_the_stream_match_one_policy_over_each_session(
    redis_server: RedisServer,
) -> None:
    """However a group's consumers share the entries (in turn, across a restart, one taken
    over late), each entry gives exactly the notices of one NoticePolicy over its session:
    the throttling state comes from the session's stream."""
    sessions = [session_events(FLAPPING, participant=f"p{i}", session=f"f{i}") for i in range(3)]
    async with bus_publisher(redis_server.url) as publisher:
        await publish_all(publisher, interleaved(sessions), 0)
    entries = stream_events(redis_server.client(), BusKeys().events)
    policy = NoticePolicy(["alert", "summary"], 4.0)
    expected = {entry_id: policy.process(event) for entry_id, event in entries}
    assert sum(len(n) for n in expected.values()) > 3 * 3  # several notices each ...
    assert policy.throttled > 0  # ... and some changes held back
    redis = connect(redis_server.url)

    def reader() -> SessionNotices:
        return SessionNotices(redis, BusKeys(), ["alert", "summary"], 4.0)

    async def notices_of(notices: SessionNotices, part: list[tuple[str, dict]]) -> dict:
        return {entry_id: await notices.notices(entry_id, event) for entry_id, event in part}

    try:
        alone = reader()
        assert await notices_of(alone, entries) == expected
        assert alone.caught_up == 0  # in order: nothing to read again

        first, second = reader(), reader()  # two consumers, entries in turn
        got = {}
        for i, entry in enumerate(entries):
            got |= await notices_of(first if i % 2 else second, [entry])
        assert got == expected and first.caught_up > 0 and second.caught_up > 0

        half = len(entries) // 2  # a crash half-way; the restarted one knows nothing
        got = await notices_of(reader(), entries[:half]) | await notices_of(
            reader(), entries[half:]
        )
        assert got == expected

        late = entries[10:14]  # pending for a dead consumer, taken over after the rest
        claimer = reader()
        got = await notices_of(claimer, entries[:10] + entries[14:])
        got |= await notices_of(claimer, late)
        assert got == expected
        assert claimer.incomplete == 0
    finally:
        await redis.aclose()


# ----- gateway and worker in this process: redirects, tickets, capacity ------------------


@needs_redis
async def test_gateway_redirects_with_a_ticket_and_refuses_when_full(
    redis_server: RedisServer,
) -> None:
    from monitor.bus.gateway import Gateway
    from monitor.bus.worker import BusWorker
    from monitor.live.whip import LiveServer

    config = load_config(live={"max_sessions": 1}, bus={"heartbeat_s": 0.2, "worker_ttl_s": 1.0})
    worker = BusWorker(redis_server.url, config, token=TOKEN)
    server = LiveServer(
        config,
        token=TOKEN,
        sinks=[worker.publish],
        analyzer_factory=RecordingAnalyzer,
        ticket_check=worker.tickets.check,
    )
    await server.start("127.0.0.1", 0)
    await worker.start(server)
    gateway = Gateway(redis_server.url, config, token=TOKEN)
    await gateway.start("127.0.0.1", 0, 0)
    assert gateway.http is not None
    offer = await make_offer()
    post = {"data": offer, "headers": {"Content-Type": "application/sdp"}}
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
    try:
        await wait_until(lambda: gateway.directory.workers, 5, "the worker's heartbeat")
        async with aiohttp.ClientSession() as http:
            url = gateway.http.url + "?participant=alice&call=c9"
            async with http.post(url, **post) as response:
                assert response.status == 401
            async with http.post(url, data=offer, headers=auth, allow_redirects=False) as r:
                assert r.status == 307
                location = r.headers["Location"]
            assert location.startswith(server.url + "?") and "ticket=" in location
            assert "participant=alice" in location and "call=c9" in location
            # No Authorization on the redirected POST (clients drop it): the ticket admits.
            async with http.post(location, **post) as response:
                assert response.status == 201, await response.text()
            async with http.post(location, **post) as response:
                assert response.status == 401  # a ticket works once
            # The one session fills the worker: once its heartbeat says so, 503.
            await wait_until(
                lambda: gateway.directory.workers[worker.id].sessions == 1, 5, "a heartbeat"
            )
            async with http.post(url, data=offer, headers=auth, allow_redirects=False) as r:
                assert r.status == 503
                assert int(r.headers["Retry-After"]) >= 1
            async with http.get(gateway.http.url.removesuffix("/whip") + "/metrics") as r:
                metrics = await r.text()
        assert f'dfmon_gateway_redirects_total{{worker="{worker.id}"}} 1' in metrics
        assert 'dfmon_gateway_offers_refused_total{reason="no_capacity"} 1' in metrics
        assert 'dfmon_gateway_offers_refused_total{reason="unauthorized"} 1' in metrics
    finally:
        await server.stop()
        await worker.stop()
        await gateway.stop()
    stored = [e for _, e in stream_events(redis_server.client(), BusKeys().call("c9"))]
    assert [e["type"] for e in stored][0] == "session_started"
    assert {e["call"] for e in stored} == {"c9"} and {e["worker"] for e in stored} == {worker.id}
    assert not redis_server.client().sismember(BusKeys().workers, worker.id)  # deregistered


# ----- a deployment: three workers, a gateway, a sinks process ---------------------------


@needs_redis
@pytest.mark.slow
async def test_deployment_spreads_calls_and_ends_a_killed_workers_sessions(
    redis_server: RedisServer, calls: dict[str, Path], tmp_path: Path
) -> None:
    config = bus_config(tmp_path)
    deployment = Deployment(redis_server, tmp_path, token=TOKEN, config=config)
    workers = [deployment.add_worker() for _ in range(3)]
    gateway = deployment.add_gateway()
    receiver = await WebhookReceiver().start()
    deployment.sinks_process([f"webhook:{receiver.url}"], "sinks1")
    listeners: list[AlertListener] = []
    try:
        await deployment.start()
        await wait_until(
            lambda: redis_server.client().exists(BusKeys().events), 30, "the sinks' group"
        )
        bus = AlertListener(gateway.alerts_url, TOKEN)
        direct = [AlertListener(w.alerts_url, TOKEN) for w in workers]
        listeners = [bus, *direct]
        for listener in listeners:
            await listener.start()

        # Six participants of two calls publish at once through the gateway.
        names = [f"p{i}" for i in range(6)]
        pushes = await asyncio.gather(
            *(
                push_file(
                    calls["short"],
                    gateway.whip_url,
                    token=TOKEN,
                    participant=name,
                    call="call-a" if i < 3 else "call-b",
                )
                for i, name in enumerate(names)
            )
        )
        await bus.wait_for(lambda: all(bus.of(n, "summary") for n in names), 60)
        sessions = by_session(bus.events)
        assert len(sessions) == 6
        for events in sessions.values():
            check_session_record(events)
            assert events[-1]["type"] == "summary"
            assert events[-2]["type"] == "session_ended" and events[-2]["reason"] == "deleted"
        per_worker = Counter(events[0]["worker"] for events in sessions.values())
        assert sorted(per_worker.values()) == [2, 2, 2], per_worker
        ports = {w.port for w in workers}
        assert {int(p.location.split(":")[2].split("/")[0]) for p in pushes} == ports
        for push in pushes:
            assert push.ended_by == "end_of_file"

        # A call's stream holds its three participants' sessions and nothing else.
        client = redis_server.client()
        call_a = [e for _, e in stream_events(client, BusKeys().call("call-a"))]
        assert {e["participant"] for e in call_a} == {"p0", "p1", "p2"}
        assert len(call_a) == sum(len(v) for v in sessions.values() if v[0]["call"] == "call-a")

        added_ms = [(bus_t - t) * 1000 for _, t, bus_t in arrivals_both_ways(direct, bus)]
        assert len(added_ms) == len(bus.events)  # every event seen both ways
        short_call_events = len(bus.events)

        # The sinks process delivered each notice of these events once, signed.
        sinks = load_config(config).sinks
        policy = NoticePolicy(sinks.events, sinks.throttle_s)
        expected = {n["id"] for e in bus.events for n in policy.process(e)}
        await wait_until(lambda: set(receiver.ids) >= expected, 20, "webhook deliveries")
        assert receiver.repeats == 0 and receiver.refused_signatures == []

        # A late dashboard gets the same history, from the stream.
        late = AlertListener(gateway.alerts_url, TOKEN)
        await late.start()
        listeners.append(late)
        await late.wait_for(lambda: len(late.events) >= len(bus.events), 10)
        assert late.events == bus.events

        # Two long calls go to two idle workers; one of those is killed mid-call.
        long_pushes = [
            asyncio.create_task(
                push_file(calls["long"], gateway.whip_url, token=TOKEN, participant=name)
            )
            for name in ("victim", "survivor")
        ]
        await bus.wait_for(
            lambda: bus.of("victim", "score") and bus.of("survivor", "session_started"), 60
        )
        victim_events = bus.of("victim")
        victim_worker = victim_events[0]["worker"]
        assert bus.of("survivor")[0]["worker"] != victim_worker
        victim_url = await _location_of(deployment, victim_worker)
        killed = next(w for w in workers if victim_url == w.whip_url)
        await killed.process.kill()
        killed_at = time.monotonic()
        ended = await bus.wait_for(lambda: bus.of("victim", "session_ended"), 15)
        noticed_s = time.monotonic() - killed_at
        assert ended[0]["reason"] == LOST_REASON and ended[0]["worker"] == victim_worker
        victim = bus.of("victim")
        check_session_record(victim)
        survivor = await long_pushes[1]
        assert survivor.ended_by == "end_of_file"
        await bus.wait_for(lambda: bus.of("survivor", "summary"), 30)
        check_session_record(bus.of("survivor"))
        long_pushes[0].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await long_pushes[0]
        live = await deployment.live_workers()
        assert victim_worker not in {w["worker"] for w in live} and len(live) == 2
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        for listener in listeners:
            with contextlib.suppress(Exception):
                await listener.stop()
        codes = await deployment.stop()
        await receiver.stop()
    assert set(codes.values()) == {0}, codes
    record_figures(
        "deployment",
        {
            "sessions_per_worker": sorted(per_worker.values()),
            "short_call_events": short_call_events,
            "bus_added_latency_ms": {
                "median": round(statistics.median(added_ms), 2),
                "p95": round(statistics.quantiles(added_ms, n=20)[-1], 2),
                "events": len(added_ms),
            },
            "webhook_deliveries_of_them": len(expected),
            "worker_kill_to_session_ended_s": round(noticed_s, 2),
            "worker_ttl_s": 2.0,
        },
    )


def _dashboard_card(port: int, participant: str) -> dict[str, Any]:
    """The participant's card on the gateway's dashboard in Chromium: its history comes
    from the stream, as the page connects after the call."""
    from tests.browser import Chromium

    card = f"document.querySelector('.card[data-participant=\"{participant}\"]')"
    with Chromium() as browser:
        page = browser.page(f"http://127.0.0.1:{port}/?token={TOKEN}")
        page.wait_for(f"{card}?.dataset.ended === 'true'", 20)
        state = page.evaluate(
            f"""(() => {{ const c = {card};
              return {{ ended: c.dataset.ended, text: c.querySelector('.session').textContent,
                        windows: Number(/(\\d+) windows/.exec(
                          c.querySelector('.session').textContent)[1]) }}; }})()"""
        )
        assert page.exceptions == []
    return state


async def _location_of(deployment: Deployment, worker_id: str) -> str:
    workers = {w["worker"]: w for w in await deployment.live_workers()}
    return workers[worker_id]["whip_url"]


# ----- faults: a killed sinks process, Redis going away ----------------------------------


@needs_redis
@pytest.mark.slow
async def test_killed_sinks_process_loses_and_repeats_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two SIGKILLs while 400 events flow to a receiver that fails its first 3 requests:
    one restart under another name (its pending entries are taken over with XAUTOCLAIM),
    one under the same name (it re-reads its own pending entries). Every notice arrives,
    signed; a repeat, if any, is the one in flight at a kill, under the same id."""
    config = bus_config(tmp_path)
    deployment = Deployment(redis_server, tmp_path, token=TOKEN, config=config)
    receiver = await WebhookReceiver(fail_first=3).start()
    target = f"webhook:{receiver.url}"
    client = redis_server.client()
    total = 400
    events = interleaved([_events(total // 4, session=f"s{s}") for s in range(4)])
    first = deployment.sinks_process([target], "a")
    kills = []
    try:
        await first.start()
        await wait_until(lambda: group_pending(client) is not None, 30, "the consumer group")
        feeding = asyncio.create_task(feed(redis_server.url, events))
        await wait_until(lambda: len(receiver.deliveries) >= 100, 30, "100 deliveries")
        receiver.hold()  # killed mid-delivery, so it surely leaves entries pending
        await wait_until(lambda: receiver.waiting > 0, 30, "a delivery in flight")
        await first.kill()
        kills.append(len(receiver.deliveries))
        receiver.release()
        second = deployment.sinks_process([target], "b")
        await second.start()
        await wait_until(lambda: "took over" in second.log_text(), 30, "the takeover")
        await wait_until(lambda: len(receiver.deliveries) >= 250, 30, "250 deliveries")
        await second.kill()
        kills.append(len(receiver.deliveries))
        third = deployment.sinks_process([target], "b")
        await third.start()
        await feeding
        expected = {n["id"] for n in expected_notices(client, config)}
        await wait_until(lambda: set(receiver.ids) >= expected, 30, "every delivery")
        await wait_until(lambda: group_pending(client) == 0, 10, "all acknowledged")
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        await deployment.stop()
        await receiver.stop()
    stats = sink_stats(third.log_text(), target)
    lost = expected - set(receiver.ids)
    assert len(expected) == total and not lost
    assert len(receiver.ids) == total and receiver.refused_signatures == []
    assert receiver.repeats <= len(kills)  # at most the one in flight at each kill
    retried = receiver.requests - total - receiver.repeats  # answered 503, then sent again
    assert retried >= 3
    record_figures(
        "sinks_kill",
        {
            "events": total,
            "delivered_distinct": len(receiver.ids),
            "retried": retried,
            "repeated": receiver.repeats,
            "lost": len(lost),
            "kills_at_deliveries": kills,
            "last_process": stats,
        },
    )


@needs_redis
@pytest.mark.slow
async def test_sinks_deliver_signed_webhooks_and_cef_throttled_across_the_group(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two ``dfmon sinks`` processes share the groups of a webhook and a syslog UDP sink;
    one is SIGKILLed half-way. Three flapping participants, throttled to one alert per 4 s:
    each receiver gets exactly the notices of one policy over each whole session (nothing
    missing, no alert the throttle holds back), signed, or as parseable CEF lines."""
    config = bus_config(tmp_path, 'events = ["alert", "summary"]\nthrottle_s = 4.0\n')
    deployment = Deployment(redis_server, tmp_path, token=TOKEN, config=config)
    receiver = await WebhookReceiver(fail_first=2).start()
    datagrams: list[bytes] = []

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            datagrams.append(data)

    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(Collect, local_addr=("127.0.0.1", 0))
    targets = [
        f"webhook:{receiver.url}",
        f"syslog:udp://127.0.0.1:{udp.get_extra_info('sockname')[1]}",
    ]
    a, b = deployment.sinks_process(targets, "a"), deployment.sinks_process(targets, "b")
    client = redis_server.client()
    sessions = [session_events(FLAPPING, participant=f"p{i}", session=f"f{i}") for i in range(3)]
    events = interleaved(sessions)

    def cef_ids() -> list[str]:
        return [check_syslog(d)[2]["externalId"] for d in datagrams]

    try:
        await asyncio.gather(a.start(), b.start())
        await wait_until(lambda: len(sink_groups(client)) == 2, 30, "two consumer groups")
        async with bus_publisher(redis_server.url) as publisher:
            await publish_all(publisher, events[: len(events) // 2], 0.01)
            await a.kill()
            await publish_all(publisher, events[len(events) // 2 :], 0.01)
        expected = expected_notices(client, config)
        ids = {n["id"] for n in expected}
        await wait_until(lambda: set(receiver.ids) >= ids, 30, "every webhook notice")
        await wait_until(lambda: set(cef_ids()) >= ids, 30, "every CEF line")
        await asyncio.sleep(1.5)  # a notice the throttle should have held would come now
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        await deployment.stop()
        await receiver.stop()
        udp.close()
    # (Not in order: what the killed consumer held arrives once it is taken over.)
    assert set(receiver.ids) == ids and receiver.refused_signatures == []
    assert receiver.repeats <= 1 and len(cef_ids()) - len(ids) <= 1  # the one in flight
    kinds = Counter(n["type"] for n in expected)
    assert kinds["summary"] == 3 and kinds["alert"] >= 3 * 3
    by_id = {n["id"]: n for n in expected}
    for delivery in receiver.deliveries:  # the notice itself, reasons and numbers included
        assert delivery.body == by_id[delivery.headers["webhook-id"]]
    for datagram in datagrams:
        _, cef, ext = check_syslog(datagram)
        notice = by_id[ext["externalId"]]
        assert (
            cef[3] == f"{notice['type']}-{notice_level(notice)}"
            and ext["suser"] == notice["participant"]
        )
    alerts = [n for n in expected if n["type"] == "alert"]
    for participant in {n["participant"] for n in alerts}:
        times = [n["notice"]["at_s"] for n in alerts if n["participant"] == participant]
        assert all(t2 - t1 >= 4.0 for t1, t2 in zip(times, times[1:], strict=False))
    stats = {t: sink_stats(b.log_text(), t) for t in targets}
    record_figures(
        "sinks_group",
        {
            "events": len(events),
            "notices_per_sink": len(ids),
            "alert_events": sum(e["type"] == "alert" for e in events),
            "webhook": {"delivered": len(receiver.ids), "repeated": receiver.repeats,
                        "answered_503": receiver.requests - len(receiver.ids) - receiver.repeats,
                        "lost": len(ids - set(receiver.ids))},
            "syslog": {"delivered": len(set(cef_ids())), "repeated": len(cef_ids()) - len(ids),
                       "lost": len(ids - set(cef_ids()))},
            "surviving_process": stats,
        },
    )  # fmt: skip


def sink_groups(client: Any) -> list[dict]:
    """The consumer groups on the stream of every event (none before it exists)."""
    return client.xinfo_groups(BusKeys().events) if client.exists(BusKeys().events) else []


async def feed(redis_url: str, events: list[dict]) -> None:
    async with bus_publisher(redis_url) as publisher:
        await publish_all(publisher, events, 0.005)


def group_pending(client: Any) -> int | None:
    """Entries pending in the sink groups; None before there is one."""
    groups = sink_groups(client)
    return sum(g["pending"] for g in groups) if groups else None


@needs_redis
@pytest.mark.slow
async def test_worker_rides_out_redis_going_away(
    redis_server: RedisServer, calls: dict[str, Path], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "bus.toml", FAST_BUS)
    deployment = Deployment(redis_server, tmp_path, token=TOKEN, config=config)
    worker = deployment.add_worker()
    gateway = deployment.add_gateway()
    listener = AlertListener(gateway.alerts_url, TOKEN)
    outage_s = 3.0
    try:
        await deployment.start()
        await listener.start()
        push = asyncio.create_task(
            push_file(calls["long"], gateway.whip_url, token=TOKEN, participant="carol")
        )
        await listener.wait_for(lambda: listener.of("carol", "score"), 60)
        redis_server.kill()
        before_outage = len(listener.events)
        await asyncio.sleep(outage_s)
        assert worker.process.alive
        redis_server.start()
        stats = await push
        assert stats.ended_by == "end_of_file"
        await listener.wait_for(lambda: listener.of("carol", "summary"), 30)
        assert worker.process.alive and gateway.process.alive
        await wait_until_async(lambda: deployment.live_workers_count(1), 10, "a heartbeat")
        report = (await deployment.live_workers())[0]
        if find_chromium() is not None:  # the gateway's dashboard, opened after the call
            card = _dashboard_card(gateway.port, "carol")
            assert card["ended"] == "true" and card["windows"] == len(listener.of("carol", "score"))
            assert f"worker {report['worker']}" in card["text"], card
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        await listener.stop()
        codes = await deployment.stop()
    assert set(codes.values()) == {0}, codes
    events = listener.of("carol")
    check_session_record(events)
    assert events[-1]["type"] == "summary" and events[-2]["reason"] == "deleted"
    assert not [e for e in listener.events if e.get("reason") == LOST_REASON]
    session = events[0]["session"]
    stored = [e for _, e in stream_events(redis_server.client(), BusKeys().session(session))]
    assert stored == events
    assert report["bus"]["dropped"] == 0 and report["bus"]["failures"] >= 1
    record_figures(
        "redis_outage",
        {
            "outage_s": outage_s,
            "session_events": len(events),
            "events_after_redis_went_away": len(events) - before_outage,
            "write_failures_retried": report["bus"]["failures"],
            "dropped": report["bus"]["dropped"],
            "lost": events[-1]["seq"] + 1 - len(events),
        },
    )
