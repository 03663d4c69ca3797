"""Alert delivery end to end, with real receivers on loopback: outages lose nothing, a full
queue and a dead endpoint end in the dead-letter file, a replayed desynced call and a live
session deliver signed, throttled alerts, and serve's /metrics counts them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.config import load_config
from monitor.sinks.build import build_delivery
from monitor.sinks.delivery import DeliveryService
from monitor.sinks.notices import NoticePolicy, idempotency_key
from monitor.synth.events import session_events
from tests.sink_util import SECRET, BlackHole, WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]
SELECTED = ("alert", "summary")


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFMON_WEBHOOK_SECRET", SECRET)


def delivery_for(tmp_path: Path, *targets: str, **sinks: Any) -> DeliveryService:
    settings = {
        "targets": list(targets),
        "throttle_s": 0,
        "backoff_s": 0.05,
        "backoff_max_s": 0.4,
        "dead_letter": str(tmp_path / "dead-letter.jsonl"),
        **sinks,
    }
    delivery = build_delivery(load_config(sinks=settings))
    assert delivery is not None
    return delivery


def expected_notices(events: list[dict], interval_s: float) -> list[dict]:
    policy = NoticePolicy(SELECTED, interval_s)
    return [notice for event in events for notice in policy.process(event)]


def dead_letters(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def calls_events(count: int, first: int = 0) -> list[dict]:
    """Each participant: alert at 3 s, back to clear at 4 s, summary: 3 notices each."""
    events: list[dict] = []
    for n in range(first, first + count):
        events += session_events(
            [(3.0, "alert"), (4.0, "clear")], participant=f"p{n}", session=f"s{n}"
        )
    return events


async def test_an_outage_delays_alerts_and_loses_none(tmp_path: Path) -> None:
    """The receiver fails its first 3 requests, then goes away for 1.5 s while more
    alerts arrive, then comes back: every alert arrives, once, in order, signed."""
    receiver = await WebhookReceiver(fail_first=3).start()
    delivery = delivery_for(tmp_path, f"webhook:{receiver.url}", max_attempts=40, timeout_s=2)
    before, during = calls_events(4), calls_events(4, first=4)
    expected = expected_notices(before + during, 0)
    delivery.start()
    (worker,) = delivery.workers
    try:
        for event in before:
            worker.accept(event)
        await receiver.wait_for(5, 20)
        await receiver.go_away()
        for event in during:
            worker.accept(event)
        await asyncio.sleep(1.5)
        assert len(receiver.deliveries) < len(expected)  # the outage held some back
        await receiver.come_back()
        await receiver.wait_for(len(expected), 30)
    finally:
        await delivery.aclose()
        await receiver.stop()
    assert receiver.ids == [n["id"] for n in expected]  # all, once each, in order
    assert [d.body for d in receiver.deliveries] == expected
    assert receiver.refused_signatures == []
    stats = worker.stats()
    assert stats["sent"] == len(expected) == 24
    assert stats["retried"] >= 4  # 3 answers of 503, at least one refused connection
    assert (stats["failed"], stats["dropped"], stats["queued"]) == (0, 0, 0)
    assert dead_letters(tmp_path / "dead-letter.jsonl") == []
    assert delivery.dead_letter.lost == 0


async def test_a_full_queue_drops_the_oldest_into_the_dead_letter_file(tmp_path: Path) -> None:
    hole = await BlackHole().start()
    delivery = delivery_for(tmp_path, f"webhook:{hole.url}", queue_size=3, timeout_s=30, drain_s=0)
    events = calls_events(3)  # 9 notices: 1 in flight, 3 queued, 5 dropped
    expected = expected_notices(events, 0)
    delivery.start()
    (worker,) = delivery.workers
    try:
        for event in events:
            worker.accept(event)
            deadline = time.monotonic() + 5
            while worker.queued and not hole.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # until the first notice is on its way
        assert worker.stats()["dropped"] == 5 and worker.stats()["queued"] == 4
    finally:
        await delivery.aclose()
        await hole.stop()
    records = dead_letters(tmp_path / "dead-letter.jsonl")
    assert sorted(r["payload"]["id"] for r in records) == sorted(n["id"] for n in expected)
    reasons = [r["reason"] for r in records]
    assert sum("queue full" in r for r in reasons) == 5
    assert sum("shutdown" in r for r in reasons) == 4
    stats = worker.stats()
    assert stats["sent"] + stats["failed"] + stats["dropped"] == len(expected)
    assert delivery.dead_letter.written == len(expected) and delivery.dead_letter.lost == 0


async def test_a_refused_alert_is_dead_lettered_without_retries(tmp_path: Path) -> None:
    receiver = await WebhookReceiver(fail_first=100, fail_status=400).start()
    delivery = delivery_for(tmp_path, f"webhook:{receiver.url}")
    delivery.start()
    try:
        for event in session_events([(3.0, "alert")]):
            delivery.workers[0].accept(event)
    finally:
        await delivery.aclose()
        await receiver.stop()
    assert receiver.requests == 2  # the alert and the summary, one attempt each
    records = dead_letters(tmp_path / "dead-letter.jsonl")
    assert [(r["attempts"], r["reason"]) for r in records] == [(1, "HTTP 400: try again later")] * 2
    assert delivery.workers[0].stats()["failed"] == 2


# --- a replayed desynced call -------------------------------------------------------------

FLAP_TEXT = (
    "Hello, can you hear me? I am calling about the budget for next year. "
    "Please send the figures before our meeting on Monday morning. "
    "We need to move the money today, so wire it to the new account I gave you. "
    "Thank you, and call me back when it is done."
)
# Audio 300 ms late here, in sync elsewhere: the in-sync stretch between is long enough for
# the accumulated evidence to fall back to clear (decision ceiling 6.5 nats in the test).
DESYNCED_S = ((3.0, 7.0), (12.5, 17.0))


@pytest.fixture(scope="module")
def flapping_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 16 s call whose audio drifts 300 ms late twice: alert, clear again, alert."""
    import soundfile as sf

    from monitor.media import AUDIO_RATE
    from monitor.synth.call import make_call
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    out = tmp_path_factory.mktemp("flapping")
    call = make_call(out / "flap.mp4", text=FLAP_TEXT, seed=3, size=(240, 320), video_only=True)
    audio, shift = call.audio.copy(), round(0.3 * AUDIO_RATE)
    for start_s, end_s in DESYNCED_S:
        i, j = round(start_s * AUDIO_RATE), min(round(end_s * AUDIO_RATE), len(audio))
        audio[i + shift : j] = call.audio[i : j - shift]
    sf.write(out / "flap.wav", audio, AUDIO_RATE)
    return call.path, out / "flap.wav"


def wall(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


@pytest.mark.slow
async def test_replay_of_a_desynced_call_delivers_throttled_signed_alerts(
    flapping_call: tuple[Path, Path], tmp_path: Path
) -> None:
    video, audio = flapping_call
    good = await WebhookReceiver().start()
    hole = await BlackHole().start()
    dead = tmp_path / "dead-letter.jsonl"
    config = tmp_path / "dfmon.toml"
    # The decision before 2026-12-03 (the joint rule, no lip_timing, no drift allowance)
    # makes this desync flap between levels often enough to exercise the throttle; what is
    # tested is the delivery.
    config.write_text(
        '[decision]\nceiling_nats = 6.5\nattack_model = "joint"\ndrift_allowance_nats = 0.0\n'
        "[detectors.weights]\nlip_timing = 0.0\n"
        "[sinks]\nthrottle_s = 4\ntimeout_s = 1\nmax_attempts = 2\ndrain_s = 2\n"
        f'dead_letter = "{dead}"\n'
    )
    out = tmp_path / "events.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "--config", str(config), "replay", str(video),
        "--audio", str(audio), "--out", str(out), "--participant", "mallory",
        "--sink", f"webhook:{good.url}", "--sink", f"webhook:{hole.url}",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await good.stop()
        await hole.stop()
    log = stderr.decode()
    assert process.returncode == 0, log[-3000:]
    events = [json.loads(line) for line in out.read_text().splitlines()]
    raw_alerts = [e for e in events if e["type"] == "alert"]
    expected = expected_notices(events, 4)

    # The good receiver got exactly the throttled notices, signed, in order.
    assert good.refused_signatures == [] and good.repeats == 0
    assert [d.body for d in good.deliveries] == expected
    notices = [n for n in expected if n["type"] == "alert"]
    levels = [n["level"] for n in notices]
    assert len(raw_alerts) > len(notices) >= 3, [(e["t_end"], e["level"]) for e in raw_alerts]
    assert levels[0] in ("suspicious", "alert") and "clear" in levels  # ... and clear again
    at = [n["notice"]["at_s"] for n in notices]
    assert all(later - earlier >= 4 for earlier, later in zip(at, at[1:], strict=False))
    assert f"sink webhook:{good.url}: {len(expected)} sent, 0 retried, 0 failed" in log

    # The receiver that never answers cost only its own notices: all dead-lettered, none
    # lost, and the analysis went on while it held the first one.
    records = dead_letters(dead)
    assert [r["payload"]["id"] for r in records] == [n["id"] for n in expected]
    assert {r["sink"] for r in records} == {f"webhook:{hole.url}"}
    assert hole.connections >= 1 and "LOST" not in log
    first_given_up = wall(records[0]["dead_lettered_at"])
    first_sent = wall(expected[0]["ts"])
    assert any(first_sent < wall(e["ts"]) < first_given_up for e in events)

    # Other intervals over the same events (the policy is a pure function of the events,
    # which is also what lets a restarted consumer repeat it exactly).
    changes = [e for e in raw_alerts if e["level"] != "unknown"]
    first_elevated = next(e for e in changes if e["level"] in ("suspicious", "alert"))
    (only,) = [n for n in expected_notices(events, 60) if n["type"] == "alert"]
    assert only["id"] == idempotency_key(first_elevated)
    every = [n for n in expected_notices(events, 0) if n["type"] == "alert"]
    assert [n["id"] for n in every] == [idempotency_key(e) for e in changes]
    for interval_s in (2, 3, 5):
        notices = [n for n in expected_notices(events, interval_s) if n["type"] == "alert"]
        at = [n["notice"]["at_s"] for n in notices]
        assert all(b - a >= interval_s for a, b in zip(at, at[1:], strict=False)), at
        assert at[0] == first_elevated["t_end"]  # the first one is not delayed
        assert {n["id"] for n in notices} <= {n["id"] for n in every}


# --- a live session -----------------------------------------------------------------------

# Long enough (about 8 s) for a 300 ms shift to accumulate the evidence of an alert.
LIVE_TEXT = (
    "Please send me the figures before our meeting on Monday morning, and approve the "
    "transfer to the new supplier before the bank closes today."
)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
async def test_live_session_delivers_signed_alerts_and_counts_them(tmp_path: Path) -> None:
    """``dfmon serve --sink webhook:...`` with a participant whose audio is 300 ms early,
    published over WHIP on loopback: signed alert and summary, and /metrics counts them."""
    from monitor.live.client import push_file
    from monitor.synth.call import make_call
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    call = make_call(
        tmp_path / "early.mp4", text=LIVE_TEXT, seed=1, size=(240, 320), audio_shift_s=-0.3
    )
    receiver = await WebhookReceiver().start()
    port, alerts_port = free_ports(2)
    config = tmp_path / "dfmon.toml"
    config.write_text(f'[sinks]\ndead_letter = "{tmp_path / "dead.jsonl"}"\n')
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "--config", str(config), "serve",
        "--port", str(port), "--alerts-port", str(alerts_port), "--token", "s3cret",
        "--sink", f"webhook:{receiver.url}",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    assert time.monotonic() < deadline, "dfmon serve never came up"
                    await asyncio.sleep(0.5)
            stats = await push_file(call.path, f"{base}/whip", token="s3cret", participant="bob")
            await receiver.wait_for(2, 30)
            deadline = time.monotonic() + 30
            while not any(d.body["type"] == "summary" for d in receiver.deliveries):
                assert time.monotonic() < deadline, [d.body["type"] for d in receiver.deliveries]
                await asyncio.sleep(0.2)
            # The receiver keeps a delivery before it answers: the sender counts it after.
            idle = f'dfmon_sink_queue_depth{{sink="webhook:{receiver.url}"}} 0'
            while True:
                async with http.get(f"{base}/metrics") as response:
                    metrics = await response.text()
                if idle in metrics or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            serve.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(serve.communicate(), 60)
        await receiver.stop()
    assert serve.returncode == 0, stderr.decode()[-3000:]
    assert stats.ended_by == "end_of_file"
    assert receiver.refused_signatures == []
    bodies = [d.body for d in receiver.deliveries]
    assert [b["participant"] for b in bodies] == ["bob"] * len(bodies)
    alerts = [b for b in bodies if b["type"] == "alert"]
    assert alerts and alerts[0]["level"] in ("suspicious", "alert")
    assert alerts[0]["stream"]["live"] is True and alerts[0]["stream"]["video_codec"] == "vp8"
    assert "lip_sync" in alerts[0]["rationale"] and alerts[0]["evidence"]
    name = f"webhook:{receiver.url}"
    sent = f'dfmon_sink_events_total{{sink="{name}",outcome="sent"}} {len(bodies)}'
    assert sent in metrics, metrics[-1500:]
    assert f'dfmon_sink_events_total{{sink="{name}",outcome="failed"}} 0' in metrics
    assert 'dfmon_sink_events_total{sink="websocket",outcome="failed"} 0' in metrics
    assert f'dfmon_sink_queue_depth{{sink="{name}"}} 0' in metrics
