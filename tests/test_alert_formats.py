"""Alert sinks, piece by piece: signatures, notices and throttling, the fan-out, targets,
and each wire format checked against its field rules, over real sockets where it has one."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from monitor.config import FusionConfig, load_config
from monitor.errors import ConfigError
from monitor.events import validate_event
from monitor.sinks.build import build_delivery, build_sink
from monitor.sinks.delivery import Outcome, RetryPolicy, deliver_with_retries, parse_retry_after
from monitor.sinks.fanout import EventFanout
from monitor.sinks.notices import NoticePolicy, idempotency_key, notice_level
from monitor.sinks.signing import (
    WebhookVerificationError,
    decode_secret,
    sign,
    signed_headers,
    verify_webhook,
)
from monitor.sinks.splunk import SplunkSink, hec_event
from monitor.sinks.syslog import SyslogSink, cef_severity, syslog_message
from monitor.sinks.targets import apply_sink_flags, parse_target
from monitor.sinks.teams import TeamsReportSink, synthetic_media_report
from monitor.sinks.webhook import WebhookSink, cloudevents_source, webhook_request
from monitor.synth.events import session_events
from tests.sink_util import RFC3339, SECRET, WebhookReceiver, check_syslog

# The Standard Webhooks specification's published test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def notices_of(
    events: list[dict[str, Any]],
    interval_s: float,
    selected: tuple[str, ...] = ("alert", "summary"),
) -> list[dict]:
    policy = NoticePolicy(selected, interval_s)
    return [notice for event in events for notice in policy.process(event)]


def first_notice() -> dict[str, Any]:
    return notices_of(session_events([(4.0, "alert")]), 60)[0]


# --- Standard Webhooks --------------------------------------------------------------------


def test_signature_matches_the_specification_vector() -> None:
    assert sign(decode_secret(SPEC_SECRET), SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    headers = {"Webhook-Id": SPEC_ID, "Webhook-Timestamp": str(SPEC_TS)}
    headers["Webhook-Signature"] = f"v1,bm90IGl0 {SPEC_SIGNATURE}"  # one of several matches
    assert verify_webhook(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TS + 10) == SPEC_ID


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b'{"test": 2432232315}'}, "no signature matches"),
        ({"secret": SECRET}, "no signature matches"),
        ({"now": SPEC_TS + 301}, "301 s old"),
        ({"now": SPEC_TS - 301}, "in the future"),
        ({"drop": "webhook-signature"}, "missing header webhook-signature"),
        ({"timestamp": "soon"}, "not Unix seconds"),
    ],
)
def test_bad_deliveries_are_rejected_with_the_reason(change: dict, message: str) -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": change.get("timestamp", str(SPEC_TS)),
        "webhook-signature": SPEC_SIGNATURE,
    }
    headers.pop(change.get("drop", ""), None)
    with pytest.raises(WebhookVerificationError, match=message):
        verify_webhook(
            change.get("secret", SPEC_SECRET),
            headers,
            change.get("body", SPEC_BODY),
            now=change.get("now", SPEC_TS + 299),
        )


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64", "whsec_AAAA"]
)
def test_malformed_secrets_are_config_errors(secret: str) -> None:
    with pytest.raises(ConfigError):
        decode_secret(secret)


def test_verify_webhook_command(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(SPEC_BODY)
    headers = signed_headers(decode_secret(SECRET), "msg_1", SPEC_BODY)

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "monitor", "verify-webhook", str(body)]
        command += ["--id", "msg_1", "--timestamp", headers["webhook-timestamp"], *extra]
        env = {"DFMON_WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    valid = run("--signature", headers["webhook-signature"])
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip() == "valid: webhook-id msg_1"
    forged = run("--signature", "v1," + base64.b64encode(b"x" * 32).decode())
    assert forged.returncode == 1
    assert "invalid: no signature matches" in forged.stderr


# --- notices: selection, throttling, keys ------------------------------------------------


def test_first_alert_goes_out_at_once_and_carries_reasons_and_key() -> None:
    events = session_events([(4.0, "suspicious")])
    for event in events:
        validate_event(event)
    notices = notices_of(events, 60)
    assert [n["type"] for n in notices] == ["alert", "summary"]
    alert = notices[0]
    assert alert["level"] == "suspicious" and alert["t_end"] == 4.0
    assert alert["notice"] == {
        "previous_level": "clear",
        "held_back": 0,
        "at_s": 4.0,
        "interval_s": 60,
    }
    assert "audio lags lips by 280 ms" in alert["rationale"]
    assert alert["evidence"][0]["offset_ms"] == 280.0
    assert alert["stream"]["fps"] == 25.0 and alert["stream"]["live"] is False
    original = next(e for e in events if e["type"] == "alert")
    assert alert["id"] == idempotency_key(original)
    validate_event(alert)


def test_one_notice_per_interval_holding_the_most_severe_then_clear_again() -> None:
    levels = [(3.0, "suspicious"), (4.0, "alert"), (5.0, "suspicious"), (9.0, "clear")]
    notices = [n for n in notices_of(session_events(levels), 4) if n["type"] == "alert"]
    # 3.0 at once; 4.0 (alert) held and sent when the interval ends at 7.0, although the
    # level is back to suspicious by then; the return to clear at 9.0 waits until 11.0.
    assert [(n["level"], n["t_end"], n["notice"]["at_s"]) for n in notices] == [
        ("suspicious", 3.0, 3.0),
        ("alert", 4.0, 7.0),
        ("clear", 9.0, 11.0),
    ]
    assert [n["notice"]["previous_level"] for n in notices] == ["clear", "suspicious", "alert"]
    assert notices[1]["notice"]["held_back"] == 1  # the 5.0 change folded into it


def test_flapping_within_the_interval_gives_one_notice_and_unknown_is_not_news() -> None:
    levels = [(3.0, "alert"), (4.0, "clear"), (5.0, "alert"), (6.0, "unknown"), (7.0, "alert")]
    policy = NoticePolicy(["alert", "summary"], 60)
    notices = [n for e in session_events(levels) for n in policy.process(e)]
    assert [(n["type"], notice_level(n)) for n in notices] == [
        ("alert", "alert"),
        ("summary", "alert"),  # the summary's verdict
    ]
    assert policy.throttled == 3  # clear, alert, alert (unknown is not counted)


def test_no_throttle_passes_every_change_and_keys_are_unique_and_stable() -> None:
    levels = [(3.0, "alert"), (4.0, "clear"), (5.0, "alert")]
    events = session_events(levels)
    first, again = notices_of(events, 0), notices_of(events, 0)
    assert [notice_level(n) for n in first] == ["alert", "clear", "alert", "alert"]
    assert [n["id"] for n in first] == [n["id"] for n in again]
    assert len({n["id"] for n in first}) == 4


def test_participants_are_throttled_independently_and_scores_only_when_selected() -> None:
    events = session_events([(3.0, "alert")], participant="alice")
    events += session_events([(3.5, "alert")], participant="bob", session="s-2")
    notices = notices_of(events, 60)
    assert [(n["participant"], n["type"]) for n in notices if n["type"] == "alert"] == [
        ("alice", "alert"),
        ("bob", "alert"),
    ]
    with_scores = notices_of(events, 60, ("score",))
    assert with_scores and {n["type"] for n in with_scores} == {"score"}


# --- the fan-out ---------------------------------------------------------------------------


def test_fanout_isolates_and_counts_a_failing_receiver(caplog: pytest.LogCaptureFixture) -> None:
    received: list[dict] = []

    def broken(event: dict) -> None:
        raise OSError("disk full")

    fanout = EventFanout([("broken", broken), ("kept", received.append)])
    events = session_events([(3.0, "alert")])
    with caplog.at_level(logging.ERROR, logger="monitor.sinks.fanout"):
        for event in events:
            fanout.publish(event)
    assert received == events
    assert fanout.stats() == {
        "broken": {"sent": 0, "failed": len(events)},
        "kept": {"sent": len(events), "failed": 0},
    }
    logged = [r for r in caplog.records if "sink broken failed" in r.getMessage()]
    assert len(logged) == (2 if len(events) >= 10 else 1)  # the 1st and the 10th
    with pytest.raises(ValueError):
        fanout.add("kept", received.append)


def test_sink_names_in_logs_and_metrics_leave_out_url_queries() -> None:
    sink = WebhookSink("https://hooks.example/dfmon?key=abc#x", b"k" * 16, timeout_s=1)
    assert sink.name == "webhook:https://hooks.example/dfmon"


def test_replay_keeps_going_when_a_sink_fails(synthetic_calls: dict[str, Path]) -> None:
    from monitor.replay import replay_file

    calls = 0

    def fails_sometimes(event: dict) -> None:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("receiver bug")

    received: list[dict] = []
    fanout = EventFanout([("flaky", fails_sometimes), ("kept", received.append)])
    result = replay_file(synthetic_calls["short"], load_config(), fanout.publish)
    assert received[-1] == result.summary
    assert fanout.failed["flaky"] == (len(received) + 1) // 2
    assert fanout.published["kept"] == len(received)


# --- targets and configuration -------------------------------------------------------------


def test_targets_and_config_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "dfmon.toml"
    config_file.write_text(
        '[sinks]\ntargets = ["syslog:tcp://127.0.0.1:6514"]\nthrottle_s = 30\n'
        f'webhook_secret = "{SECRET}"\nsplunk_token = "from-file"\n'
    )
    config = apply_sink_flags(
        load_config(config_file),
        ["webhook:https://hooks.example/dfmon", "splunk:https://splunk.example:8088"],
    )
    assert config.sinks.throttle_s == 30
    monkeypatch.setenv("DFMON_SPLUNK_TOKEN", "from-env")
    delivery = build_delivery(config)
    assert delivery is not None
    assert [w.name for w in delivery.workers] == [
        "syslog:tcp://127.0.0.1:6514",
        "webhook:https://hooks.example/dfmon",
        "splunk:https://splunk.example:8088/services/collector/event",
    ]
    splunk = delivery.workers[2].sink
    assert isinstance(splunk, SplunkSink)
    assert splunk._headers["Authorization"] == "Splunk from-env"  # the environment wins
    assert {w.policy.interval_s for w in delivery.workers} == {30}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("pager:https://x", "unknown sink kind"),
        ("webhook", "KIND:TARGET"),
        ("webhook:ftp://x/y", "http:// or https://"),
        ("webhook:https://user:pw@x/y", "no credentials in URLs"),
        ("syslog:udp://127.0.0.1", "udp://HOST:PORT"),
        ("syslog:tls://127.0.0.1:6514", "udp://HOST:PORT"),
        ("teams-report:/no/such/dir/reports.jsonl", "cannot write"),
    ],
)
def test_bad_targets_are_refused(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_target(target)


def test_missing_secrets_and_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DFMON_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("DFMON_SPLUNK_TOKEN", raising=False)
    config = load_config()
    for kind in ("webhook", "splunk"):
        with pytest.raises(ConfigError, match="DFMON_"):
            build_sink(parse_target(f"{kind}:https://x.example/"), config)
    with pytest.raises(ConfigError, match="unknown event types"):
        load_config(sinks={"events": ["alert", "everything"]})
    with pytest.raises(ConfigError, match="throttle_s"):
        load_config(sinks={"throttle_s": -1})
    config = load_config(sinks={"targets": ["webhook:https://x/", "webhook:https://x/"]})
    monkeypatch.setenv("DFMON_WEBHOOK_SECRET", SECRET)
    with pytest.raises(ConfigError, match="twice"):
        build_delivery(config)


# --- retries ---------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    import random

    policy = RetryPolicy(max_attempts=6, backoff_s=0.5, backoff_max_s=4.0)
    rng = random.Random(1)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0)):
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed
    assert policy.delay(1, 3.0, rng) >= 3.0
    assert policy.delay(1, 60.0, rng) <= 4.0  # capped
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None


async def test_retries_stop_at_a_permanent_failure_and_at_the_limit() -> None:
    class Scripted:
        name = "scripted"

        def __init__(self, outcomes: list[Outcome]) -> None:
            self.outcomes = outcomes
            self.calls = 0

        async def deliver(self, payload: dict) -> Outcome:
            self.calls += 1
            return self.outcomes.pop(0)

        async def aclose(self) -> None:
            pass

    policy = RetryPolicy(max_attempts=3, backoff_s=0.01, backoff_max_s=0.02, timeout_s=1)
    sink = Scripted([Outcome.retry("503"), Outcome.reject("HTTP 400"), Outcome.ok()])
    outcome, attempts = await deliver_with_retries(sink, {}, policy)
    assert (outcome.detail, attempts) == ("HTTP 400", 2)
    sink = Scripted([Outcome.retry("a"), Outcome.retry("b"), Outcome.retry("c")])
    retried: list[int] = []
    outcome, attempts = await deliver_with_retries(
        sink, {}, policy, on_retry=lambda n, o, d: retried.append(n)
    )
    assert (outcome.retryable, outcome.detail, attempts, retried) == (True, "c", 3, [1, 2])


# --- webhook and CloudEvents -----------------------------------------------------------------


CLOUDEVENTS_REQUIRED = ("id", "source", "specversion", "type")
CLOUDEVENTS_NAME = re.compile(r"^[a-z0-9]{1,20}$")


def check_cloudevent(event: dict[str, Any]) -> None:
    """CloudEvents 1.0 structured JSON: required attributes, their types, name rules."""
    for name in CLOUDEVENTS_REQUIRED:
        assert isinstance(event.get(name), str) and event[name], name
    assert event["specversion"] == "1.0"
    assert urlsplit(event["source"]).scheme or event["source"].startswith("/")  # URI-reference
    assert all(CLOUDEVENTS_NAME.match(name) for name in event if name != "data")
    assert RFC3339.match(event["time"])
    assert isinstance(event.get("subject"), str) and event["subject"]
    assert event["datacontenttype"] == "application/json"


async def test_signed_webhooks_plain_and_cloudevents_to_a_real_receiver() -> None:
    receiver = await WebhookReceiver().start()
    key = decode_secret(SECRET)
    plain = WebhookSink(receiver.url, key, timeout_s=5)
    structured = WebhookSink(
        receiver.url, key, timeout_s=5, cloudevents_source=cloudevents_source("mon 1")
    )
    try:
        notices = notices_of(session_events([(3.0, "alert")]), 60)
        assert (await plain.deliver(notices[0])).delivered
        assert (await structured.deliver(notices[1])).delivered
    finally:
        await plain.aclose()
        await structured.aclose()
        await receiver.stop()
    assert receiver.refused_signatures == []
    first, second = receiver.deliveries
    assert first.headers["content-type"] == "application/json"
    assert first.headers["webhook-id"] == notices[0]["id"] and first.body == notices[0]
    assert second.headers["content-type"] == "application/cloudevents+json"
    check_cloudevent(second.body)
    assert second.body["id"] == second.headers["webhook-id"] == notices[1]["id"]
    assert second.body["type"] == "dev.dfmon.summary" and second.body["subject"] == "alice"
    assert second.body["source"] == "urn:dfmon:mon%201"
    assert second.body["data"] == notices[1]


def test_each_attempt_is_signed_with_its_own_timestamp() -> None:
    notice = first_notice()
    key = decode_secret(SECRET)
    body, early = webhook_request(notice, key, now=1000.0)
    body_again, late = webhook_request(notice, key, now=1060.0)
    assert body == body_again and early["webhook-id"] == late["webhook-id"] == notice["id"]
    assert early["webhook-signature"] != late["webhook-signature"]
    assert verify_webhook(SECRET, late, body, now=1070.0) == notice["id"]


# --- Splunk HEC ----------------------------------------------------------------------------

HEC_KEYS = {"time", "host", "source", "sourcetype", "index", "event", "fields"}


def check_hec(body: dict[str, Any]) -> None:
    """The HEC event endpoint's field rules."""
    assert set(body) <= HEC_KEYS and "event" in body
    assert isinstance(body["time"], int | float) and body["time"] > 1.5e9
    for name in ("host", "source", "sourcetype", "index"):
        assert name not in body or (isinstance(body[name], str) and body[name])
    fields = body.get("fields", {})
    assert isinstance(fields, dict)
    assert all(isinstance(v, str | int | float) for v in fields.values())  # flat only


async def test_splunk_hec_events_and_a_bad_token() -> None:
    received: list[dict] = []

    async def collector(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Splunk hec-token":
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        body = await request.json()
        try:
            check_hec(body)
        except AssertionError:
            return web.json_response({"text": "Invalid data format", "code": 6}, status=400)
        received.append(body)
        return web.json_response({"text": "Success", "code": 0})

    app = web.Application()
    app.router.add_post("/services/collector/event", collector)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/services/collector/event"
    good = SplunkSink(
        url, "hec-token", host="mon-1", sourcetype="dfmon:event", index="fraud", timeout_s=5
    )
    bad = SplunkSink(url, "wrong", host="mon-1", sourcetype="dfmon:event", index=None, timeout_s=5)
    notice = first_notice()
    try:
        assert (await good.deliver(notice)).delivered
        refused = await bad.deliver(notice)
    finally:
        await good.aclose()
        await bad.aclose()
        await runner.cleanup()
    assert not refused.delivered and not refused.retryable and "HTTP 403" in refused.detail
    (body,) = received
    assert body["event"] == notice and body["index"] == "fraud" and body["host"] == "mon-1"
    assert body["fields"] == {
        "type": "alert",
        "session": "s-1",
        "participant": "alice",
        "level": "alert",
    }
    assert abs(body["time"] - time.time()) < 60
    assert hec_event(notice, host="h", sourcetype="s")["time"] == body["time"]


# --- syslog CEF ------------------------------------------------------------------------------


def tricky_notice() -> dict[str, Any]:
    """An alert whose rationale holds every character CEF must escape."""
    notice = first_notice()
    notice["rationale"] = "risk=0.90 | audio lags lips\nby 280 ms \\ (a|b)"
    return notice


async def test_syslog_cef_over_udp_and_tcp_read_back_and_parsed() -> None:
    loop = asyncio.get_running_loop()
    datagrams: asyncio.Queue[bytes] = asyncio.Queue()

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            datagrams.put_nowait(data)

    udp, _ = await loop.create_datagram_endpoint(Collect, local_addr=("127.0.0.1", 0))
    udp_port = udp.get_extra_info("sockname")[1]
    tcp_messages: asyncio.Queue[bytes] = asyncio.Queue()

    async def octet_counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # RFC 6587 octet counting: "LENGTH SP MESSAGE"
                length = await reader.readuntil(b" ")
                tcp_messages.put_nowait(await reader.readexactly(int(length[:-1])))
        except asyncio.IncompleteReadError:
            writer.close()

    tcp = await asyncio.start_server(octet_counted, "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]
    fusion = FusionConfig()
    sinks = [
        SyslogSink("udp", "127.0.0.1", udp_port, facility=16, monitor_name="mon 1", fusion=fusion),
        SyslogSink("tcp", "127.0.0.1", tcp_port, facility=16, monitor_name="mon 1", fusion=fusion),
    ]
    notice = tricky_notice()
    summary = notices_of(session_events([(3.0, "alert")]), 60)[-1]
    try:
        for sink in sinks:
            for payload in (notice, summary):
                assert (await sink.deliver(payload)).delivered
        received = [
            await asyncio.wait_for(q.get(), 5) for q in (datagrams, tcp_messages) for _ in "12"
        ]
    finally:
        for sink in sinks:
            await sink.aclose()
        udp.close()
        tcp.close()
        await tcp.wait_closed()
    assert received[0] == received[2] and received[1] == received[3]  # same bytes both ways
    header, cef, ext = check_syslog(received[0])
    assert header["host"] == "mon-1" and header["msgid"] == "alert"
    severity = cef_severity("alert", 0.9, fusion)
    assert int(header["pri"]) == 16 * 8 + 2  # local0, critical (CEF 9-10)
    assert cef == ["dfmon", "dfmon", "0.1.0", "alert-alert", "Deepfake risk alert", str(severity)]
    assert severity == 9
    assert ext["msg"] == notice["rationale"]  # escaped on the wire, intact after parsing
    assert ext["suser"] == "alice" and ext["cs1"] == "s-1" and ext["externalId"] == notice["id"]
    assert (ext["cfp1Label"], float(ext["cfp1"])) == ("risk", 0.9)
    assert (ext["cfp2Label"], float(ext["cfp2"])) == ("offsetMs", 280.0)
    assert (ext["cs4Label"], ext["cs4"]) == ("evidence", "lip_sync 0.90")
    assert abs(int(ext["rt"]) / 1000 - time.time()) < 60
    header, cef, ext = check_syslog(received[1])
    assert header["msgid"] == "summary" and cef[3] == "summary-alert"


def test_cef_severity_follows_level_and_risk() -> None:
    fusion = FusionConfig()
    assert [cef_severity("alert", r, fusion) for r in (0.7, 0.8, 0.9, 1.0)] == [7, 8, 9, 10]
    assert [cef_severity("suspicious", r, fusion) for r in (0.5, 0.6, 0.69)] == [4, 5, 6]
    assert cef_severity("clear", 0.1, fusion) == 1 and cef_severity("unknown", 0, fusion) == 3
    message = syslog_message(first_notice(), facility=4, host="h", fusion=fusion)
    assert message.startswith(b"<34>1 ")  # auth (4) * 8 + critical (2)


async def test_tcp_syslog_reconnects_after_the_receiver_restarts() -> None:
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(65536))
        writer.close()  # one message per connection: the sender must notice and reconnect

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = SyslogSink(
        "tcp", "127.0.0.1", port, facility=16, monitor_name="m", fusion=FusionConfig()
    )
    try:
        for n in range(1, 4):
            assert (await sink.deliver(first_notice())).delivered
            deadline = time.monotonic() + 5
            # until the receiver has it and our side has seen it hang up
            while not (len(got) == n and sink._tcp[0].at_eof()) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
    finally:
        await sink.aclose()
        server.close()
    assert len(got) == 3 and all(b"CEF:0|dfmon" in g for g in got)


# --- Teams report ------------------------------------------------------------------------------


def check_graph_report(body: dict[str, Any]) -> None:
    """The reportSyntheticMedia parameters' types and ranges (Graph beta)."""
    assert set(body) == {
        "id",
        "detectionDateTime",
        "severity",
        "overallConfidence",
        "isMalicious",
        "contentMetadata",
        "detections",
    }
    assert re.match(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", body["id"]
    )
    assert RFC3339.match(body["detectionDateTime"])
    assert body["severity"] in ("low", "medium", "high")
    assert 0 <= body["overallConfidence"] <= 1 and isinstance(body["isMalicious"], bool)
    meta = body["contentMetadata"]
    assert meta["modality"] in ("audio", "video", "image", "text", "multimodal")
    assert isinstance(meta["isRealTime"], bool) and re.match(r"^PT[\d.]+S$", meta["duration"])
    assert isinstance(meta["byteSize"], int) and "/" in meta["mimeType"]
    for detection in body["detections"]:
        assert detection["modelName"] and 0 <= detection["confidence"] <= 1
        assert detection["modelTasks"] and all(isinstance(t, str) for t in detection["modelTasks"])
        segment = detection["segment"]
        assert all(isinstance(segment[k], int) for k in ("startTimeSec", "endTimeSec"))
        assert all(isinstance(i, int) for i in segment["frameIndices"])


def test_teams_report_mapping_recorded_and_live() -> None:
    notice = first_notice()
    report = synthetic_media_report(notice)
    check_graph_report(report)
    assert report["id"] == notice["id"] and report["severity"] == "high"
    assert report["isMalicious"] is True and report["overallConfidence"] == 0.9
    (lip_sync,) = report["detections"]
    assert lip_sync["modelTasks"] == ["lipSync"] and lip_sync["confidence"] == 0.9
    # A recording: segment times 0 as Graph asks, frames of the window (2.0-4.0 s at 25 fps).
    assert lip_sync["segment"]["startTimeSec"] == lip_sync["segment"]["endTimeSec"] == 0
    assert lip_sync["segment"]["frameIndices"] == list(range(50, 100))
    assert report["contentMetadata"]["isRealTime"] is False
    assert "streamingMetadata" not in report["contentMetadata"]
    live = {**notice, "stream": {**notice["stream"], "live": True, "video_codec": "vp8"}}
    live["stream"]["dropped_frames"] = 10
    meta = synthetic_media_report(live)["contentMetadata"]
    assert meta["isRealTime"] is True and meta["mimeType"] == "video/VP8"
    assert meta["streamingMetadata"]["frameDropRate"] == 0.1  # 10 of 4 s at 25 fps
    segment = synthetic_media_report(live)["detections"][0]["segment"]
    assert (segment["startTimeSec"], segment["endTimeSec"]) == (2, 4)
    clear = synthetic_media_report({**notice, "level": "clear", "risk": 0.2})
    assert clear["severity"] == "low" and clear["isMalicious"] is False


async def test_teams_report_to_a_file_and_to_an_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notice = first_notice()
    path = tmp_path / "reports.jsonl"
    to_file = TeamsReportSink(str(path), token=None, timeout_s=5)
    assert (await to_file.deliver(notice)).delivered
    await to_file.aclose()
    (line,) = path.read_text().splitlines()
    record = json.loads(line)
    check_graph_report(record["body"])
    assert record["rationale"] == notice["rationale"] and record["participant"] == "alice"
    assert record["request"].endswith("/reportSyntheticMedia")

    seen: list[tuple[str, str | None, dict]] = []

    async def graph(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization"), await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{path:.*}", graph)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setenv("DFMON_TEAMS_TOKEN", "graph-token")
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    target = f"teams-report:{base}/calls/CALL/participants/{{participant}}/reportSyntheticMedia"
    sink = build_sink(parse_target(target), load_config())
    try:
        assert (await sink.deliver(notice)).delivered
    finally:
        await sink.aclose()
        await runner.cleanup()
    ((path_seen, auth, body),) = seen
    assert path_seen == "/calls/CALL/participants/alice/reportSyntheticMedia"
    assert auth == "Bearer graph-token"
    check_graph_report(body)
