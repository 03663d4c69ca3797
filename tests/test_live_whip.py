"""WHIP endpoint contract (RFC 9725): status codes, headers, problem bodies, lifecycle.

Real aiohttp server on a free loopback port, real aiortc offers; no media flows here
(the end-to-end tests cover that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.config import load_config
from monitor.live.client import push_file
from monitor.live.probe import write_probe_clip
from monitor.live.whip import check_offer
from tests.live_util import (
    RecordingAnalyzer,
    check_events,
    live_config,
    make_offer,
    other_tasks,
    running_servers,
    thread_names,
)

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture
async def offer() -> str:
    return await make_offer()


async def _post(http: aiohttp.ClientSession, url: str, body: str, headers: dict) -> tuple:
    async with http.post(url, data=body.encode(), headers=headers) as response:
        return response.status, dict(response.headers), await response.text()


def _without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def _fingerprints(sdp: str, algorithm: str, value: str) -> str:
    """Each media section's fingerprints replaced by one ``a=fingerprint:ALGORITHM VALUE``."""
    lines = []
    for line in _without(sdp, "a=fingerprint:").splitlines(keepends=True):
        lines.append(line)
        if line.startswith("a=setup:"):
            lines.append(f"a=fingerprint:{algorithm} {value}\r\n")
    return "".join(lines)


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_whip_post_delete_lifecycle(offer: str) -> None:
    before = thread_names()
    config = live_config()
    async with (
        running_servers(config, analyzer_factory=RecordingAnalyzer) as (server, _, listener),
        aiohttp.ClientSession() as http,
    ):
        status, headers, answer = await _post(
            http, server.url + "?participant=Ada%20L", offer, {**AUTH, **SDP}
        )
        assert status == 201
        assert headers["Content-Type"].startswith("application/sdp")
        location = headers["Location"]
        assert re.fullmatch(r"/whip/[A-Za-z0-9_-]{32}", location), location
        assert answer.startswith("v=0")
        # Non-trickle: the answer already carries the server's candidates, and only on
        # the address the offer came in on (loopback), not on every interface.
        assert _candidate_addresses(answer) == {"127.0.0.1"}
        assert "a=recvonly" in answer
        assert len(server.sessions) == 1
        # A session URL is not guessable from another: ids differ every time.
        status2, headers2, _ = await _post(http, server.url, offer, {**AUTH, **SDP})
        assert status2 == 201 and headers2["Location"] != location

        base = server.url.removesuffix("/whip")
        async with http.delete(base + location) as response:
            assert response.status == 401  # DELETE needs the token as well
        async with http.delete(base + location, headers=AUTH) as response:
            assert response.status == 200
        async with http.delete(base + location, headers=AUTH) as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
        async with http.delete(base + headers2["Location"], headers=AUTH) as response:
            assert response.status == 200

        await listener.wait_for(
            lambda: len([e for e in listener.events if e["type"] == "summary"]) == 2, 5
        )
        await listener.wait_for(lambda: not server.sessions, 5)
        ended = listener.of("Ada L", "summary")
        kinds = [e["type"] for e in listener.of("Ada L")]
        assert kinds == ["session_started", "session_ended", "summary"]
        assert listener.of("Ada L", "session_ended")[0]["reason"] == "deleted"
        assert ended[0]["participant"] == "Ada L"
        # The other session had no name: its participant is its (short) session id.
        other = [e for e in listener.events if e["participant"] != "Ada L"]
        assert other and all(e["participant"] == e["session"] for e in other)
        check_events(listener.events)

        async with http.get(base + "/metrics") as response:
            text = await response.text()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "dfmon_sessions_total 2" in text
        assert "dfmon_sessions_active 0" in text
        assert 'dfmon_inference_seconds_bucket{le="+Inf"} 0' in text
        async with http.get(base + "/healthz") as response:
            assert (await response.json()) == {"status": "ok", "sessions": 0}
    assert not other_tasks()
    assert thread_names() <= before


async def test_whip_refuses_bad_requests(offer: str) -> None:
    two_videos = await make_offer(audio=1, video=2)
    no_media = await make_offer(audio=0, video=0)
    receive_only = await make_offer(direction="recvonly")
    config = live_config()
    async with (
        running_servers(config, analyzer_factory=RecordingAnalyzer) as (server, _, _listener),
        aiohttp.ClientSession() as http,
    ):
        url = server.url

        status, headers, body = await _post(http, url, offer, SDP)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert headers["Content-Type"].startswith("application/problem+json")
        assert '"status": 401' in body

        status, headers, _ = await _post(http, url, offer, {"Authorization": "Bearer nope", **SDP})
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]

        status, headers, body = await _post(
            http, url, offer, {**AUTH, "Content-Type": "application/json"}
        )
        assert status == 415
        assert headers["Accept-Post"] == "application/sdp"
        assert "application/json" in body

        cases = [
            ("hello, not sdp", 400, "not an SDP"),
            ("v=0\r\nm=video\r\n", 400, "malformed SDP"),
            (offer.replace("a=ice-ufrag", "a=x-ufrag"), 400, "ICE"),
            (no_media, 422, "no audio or video"),
            (two_videos, 422, "one audio and one video"),
            (receive_only, 422, "no audio or video"),
            # DTLS-SRTP cannot start without a fingerprint it can check (was: 201, then an
            # aiortc traceback on DELETE), nor ICE without candidates (no trickle here).
            (_without(offer, "a=fingerprint:"), 400, "no DTLS fingerprint"),
            (_fingerprints(offer, "md5", "AB:CD"), 400, "this server verifies sha-256"),
            (_fingerprints(offer, "sha-256", "AB:CD:EF"), 400, "32 colon-separated hex bytes"),
            (_fingerprints(offer, "sha-256", ":".join(["ZZ"] * 32)), 400, "malformed"),
            (_without(offer, "a=candidate:"), 400, "no ICE candidates"),
        ]
        for body_sent, expected, phrase in cases:
            status, headers, body = await _post(http, url, body_sent, {**AUTH, **SDP})
            assert status == expected, (phrase, body)
            assert headers["Content-Type"].startswith("application/problem+json")
            assert phrase in body

        async with http.options(url) as response:
            assert response.status == 204
            assert response.headers["Accept-Post"] == "application/sdp"
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        async with http.patch(url + "/anything", headers=AUTH) as response:
            assert response.status == 405
            assert response.content_type == "application/problem+json"
        assert not server.sessions
        assert server.metrics.sessions_rejected == 2 + 1 + len(cases)

        base = url.removesuffix("/whip")
        async with http.get(base + "/publish") as response:
            page = await response.text()
            assert response.status == 200
        assert "getUserMedia" in page and "echoCancellation: false" in page


async def test_whip_session_limit(offer: str) -> None:
    config = live_config(max_sessions=1)
    async with (
        running_servers(config, analyzer_factory=RecordingAnalyzer) as (server, _, _listener),
        aiohttp.ClientSession() as http,
    ):
        first, *_ = await _post(http, server.url, offer, {**AUTH, **SDP})
        second, headers, _ = await _post(http, server.url, offer, {**AUTH, **SDP})
    assert (first, second) == (201, 503)
    assert headers["Retry-After"]


async def test_session_without_media_times_out() -> None:
    """A client that posts an offer and never connects is ended by the watchdog."""
    config = live_config(no_media_timeout_s=0.5, connect_timeout_s=0.6)
    offer = await make_offer()
    async with (
        running_servers(config, analyzer_factory=RecordingAnalyzer) as (server, _, listener),
        aiohttp.ClientSession() as http,
    ):
        status, *_ = await _post(http, server.url, offer, {**AUTH, **SDP})
        assert status == 201
        ended = await listener.wait_for(
            lambda: [e for e in listener.events if e["type"] == "session_ended"], 5
        )
        assert ended[0]["reason"] == "no_media"
        await listener.wait_for(lambda: not server.sessions, 2)
        assert server.metrics.sessions_active == 0


def test_check_offer_counts_media() -> None:
    offer = asyncio.run(make_offer(audio=1, video=0))
    assert sorted(check_offer(offer).values()) == ["audio"]


async def test_every_error_is_problem_json(offer: str) -> None:
    """Errors aiohttp raises itself (413, 404, 405) are problem+json like ours."""
    async with (
        running_servers(live_config(), analyzer_factory=RecordingAnalyzer) as (server, _, _l),
        aiohttp.ClientSession() as http,
    ):
        base = server.url.removesuffix("/whip")
        huge = offer + "a=x-padding:" + "x" * (70 * 1024) + "\r\n"
        status, headers, body = await _post(http, server.url, huge, {**AUTH, **SDP})
        assert status == 413, body
        assert headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(body)["status"] == 413
        for method, path, expected in [
            ("GET", "/nowhere", 404),
            ("GET", "/whip", 405),
            ("PUT", "/whip/x", 405),
        ]:
            async with http.request(method, base + path) as response:
                assert response.status == expected
                assert response.content_type == "application/problem+json"
                assert (await response.json())["status"] == expected


async def test_half_sent_offer_times_out() -> None:
    """A client that announces a body and stops sending gets 408 after body_timeout_s."""
    config = live_config(body_timeout_s=0.5)
    async with running_servers(config, analyzer_factory=RecordingAnalyzer) as (server, _, _l):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST /whip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/sdp\r\nContent-Length: 5000\r\n\r\nv=0\r\n".encode()
        )
        await writer.drain()
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        waited = time.monotonic() - started
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 408
    assert 0.4 < waited < 3.0
    assert not server.sessions


async def test_token_quotas_and_offers_without_media(offer: str) -> None:
    """One token cannot take every slot: open sessions per token are capped (429), and so
    are its sessions that never send media, which end after connect_timeout_s."""
    config = load_config(
        live={
            "max_sessions": 6,
            "max_sessions_per_token": 3,
            "max_pending_per_token": 2,
            "connect_timeout_s": 1.0,
            "publisher_tokens": ["other-publisher"],
            "retry_after_s": 7,
        }
    )
    other = {"Authorization": "Bearer other-publisher", **SDP}
    async with (
        running_servers(config, analyzer_factory=RecordingAnalyzer) as (server, _, listener),
        aiohttp.ClientSession() as http,
    ):
        # Offers whose client never connects: two are held, the rest refused.
        statuses = [(await _post(http, server.url, offer, {**AUTH, **SDP}))[:2] for _ in range(5)]
        assert [s for s, _ in statuses] == [201, 201, 429, 429, 429]
        refused_headers = statuses[2][1]
        assert refused_headers["Retry-After"] == "7"
        assert refused_headers["Content-Type"].startswith("application/problem+json")
        # Another publisher's token has its own quota.
        assert (await _post(http, server.url, offer, other))[0] == 201
        # The empty sessions end by themselves and free the quota.
        await listener.wait_for(
            lambda: len([e for e in listener.events if e["type"] == "session_ended"]) == 3, 5
        )
        assert all(
            e["reason"] == "no_media" for e in listener.events if e["type"] == "session_ended"
        )
        await listener.wait_for(lambda: not server.sessions, 2)
        assert (await _post(http, server.url, offer, {**AUTH, **SDP}))[0] == 201
        assert server.metrics.rejected_by_status[429] == 3
        assert server.metrics.sessions_rejected == 3


class BusyAnalyzer(RecordingAnalyzer):
    """Spends 22 ms on every video frame: 55% of the wall time at 25 fps."""

    def add_video(self, frame: Any) -> None:
        time.sleep(0.022)
        super().add_video(frame)


@pytest.mark.slow
async def test_whip_refuses_sessions_beyond_the_measured_capacity(tmp_path: Path) -> None:
    """With one session's analysis busy 55% of the time and one core to use at most 80%,
    a second offer gets 503 + Retry-After instead of a session served by dropping frames."""
    config = load_config(
        live={"admission_cores": 1.0, "max_utilization": 0.8, "session_cost_cores": 0.3}
    )
    clip = tmp_path / "probe.mkv"
    write_probe_clip(clip, duration_s=10.0, events_s=(1.0,))
    async with running_servers(config, token=TOKEN, analyzer_factory=BusyAnalyzer) as (
        server,
        _,
        listener,
    ):
        publishing = asyncio.create_task(
            push_file(clip, server.url, token=TOKEN, participant="busy")
        )
        # Until the first session is measured it counts at session_cost_cores: admitted.
        await listener.wait_for(lambda: listener.of("busy", "session_started"), 10)
        offer = await make_offer()
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 8
            while True:
                status, headers, body = await _post(http, server.url, offer, {**AUTH, **SDP})
                if status != 201 or time.monotonic() > deadline:
                    break
                async with http.delete(
                    server.url.removesuffix("/whip") + headers["Location"], headers=AUTH
                ):
                    pass
                await asyncio.sleep(0.5)
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await publishing
    assert status == 503, body
    assert headers["Retry-After"] == "10"
    # Measured busy (~0.55) plus one more session (0.3) is over 0.8 of the core.
    assert re.search("at capacity|dropping frames", json.loads(body)["detail"])
