"""WHIP endpoint contract (RFC 9725): status codes, headers, problem bodies, lifecycle.

Real aiohttp server on a free loopback port, real aiortc offers; no media flows here
(the end-to-end tests cover that).
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

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
        # Non-trickle: the answer already carries the server's candidates.
        assert "a=candidate:" in answer
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


async def test_session_without_media_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that posts an offer and never connects is ended by the watchdog."""
    import monitor.live.session as session_module

    monkeypatch.setattr(session_module, "CONNECT_TIMEOUT_S", 0.6)
    config = live_config(no_media_timeout_s=0.5)
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
