"""Event sinks: JSONL files and the /alerts websocket, with a real server and real clients."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from monitor.config import AlertsConfig
from monitor.errors import ConfigError, InputError
from monitor.events import EventFactory, validate_event
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.websocket import AlertServer

TOKEN = "s3cret-token"


def make_events(n: int, pad: int = 0) -> list[dict]:
    """Score events (schema 2), numbered by ``window``; ``pad`` bytes make them heavier."""
    factory = EventFactory(session="sess-1", participant="alice")
    events = []
    for i in range(n):
        event = factory.make(
            "score",
            window=i,
            t_start=i * 0.5,
            t_end=i * 0.5 + 2.0,
            risk=0.25,
            level="clear",
            evidence_nats=0.0,
            window_llr=-1.0,
            evidence=[],
            rationale="x" * pad or "ok",
        )
        events.append(event)
    return events


async def receive(client: ClientConnection, n: int, timeout: float = 5.0) -> list[dict]:
    async with asyncio.timeout(timeout):
        return [json.loads(await client.recv()) for _ in range(n)]


def server(**kwargs) -> AlertServer:
    config = AlertsConfig(
        client_queue_size=kwargs.pop("queue", 256), ping_interval_s=None, ping_timeout_s=None
    )
    return AlertServer("127.0.0.1", 0, token=kwargs.pop("token", None), config=config, **kwargs)


# --- JSONL -------------------------------------------------------------------------------


def test_jsonl_writes_one_compact_line_per_event(tmp_path: Path) -> None:
    events = make_events(3)
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.write(events[0])
        # Flushed at once: a reader sees the line before the sink is closed.
        assert json.loads(path.read_text()) == events[0]
        for event in events[1:]:
            sink.write(event)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == events
    assert all(": " not in line and ", " not in line for line in lines)
    for line in lines:
        validate_event(json.loads(line))


def test_jsonl_append_keeps_earlier_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first, second = make_events(2)
    with JsonlSink(path) as sink:
        sink.write(first)
    with JsonlSink(path, append=True) as sink:
        sink.write(second)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [first, second]


@pytest.mark.parametrize("target", [None, "-"])
def test_jsonl_stdout(target: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    events = make_events(2)
    with JsonlSink(target) as sink:
        for event in events:
            sink.write(event)
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == events


def test_jsonl_rejects_nan_without_writing_half_a_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    event = make_events(1)[0]
    with JsonlSink(path) as sink:
        with pytest.raises(ValueError):
            sink.write({**event, "risk": float("nan")})
        sink.write(event)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [event]


def test_jsonl_unwritable_paths_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        JsonlSink(tmp_path / "missing" / "events.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        JsonlSink(tmp_path)
    # A file where a directory should be: open() itself fails.
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError):
        JsonlSink(tmp_path / "file" / "events.jsonl")


# --- websocket: auth and HTTP ------------------------------------------------------------


async def test_no_token_configured_accepts_anyone() -> None:
    async with server() as alerts:
        assert alerts.url == f"ws://127.0.0.1:{alerts.port}/alerts"
        async with connect(alerts.url) as client:
            await client.ping()
            assert alerts.stats()["clients"] == 1


async def test_token_required_missing_or_wrong_gets_401() -> None:
    async with server(token=TOKEN) as alerts:
        with pytest.raises(InvalidStatus) as missing:
            await connect(alerts.url)
        assert missing.value.response.status_code == 401
        assert missing.value.response.headers["WWW-Authenticate"].startswith("Bearer")

        with pytest.raises(InvalidStatus) as wrong_header:
            await connect(alerts.url, additional_headers={"Authorization": "Bearer nope"})
        assert wrong_header.value.response.status_code == 401
        assert "invalid_token" in wrong_header.value.response.headers["WWW-Authenticate"]

        with pytest.raises(InvalidStatus) as wrong_query:
            await connect(alerts.url + "?token=" + TOKEN[:-1])
        assert wrong_query.value.response.status_code == 401

        assert alerts.stats()["handshakes_refused"] == 3
        assert alerts.stats()["clients"] == 0


async def test_token_in_header_or_query_is_accepted() -> None:
    async with server(token=TOKEN) as alerts:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            connect(alerts.url, additional_headers=headers) as by_header,
            connect(f"{alerts.url}?token={TOKEN}") as by_query,
        ):
            alerts.publish(make_events(1)[0])
            assert (await receive(by_header, 1)) == (await receive(by_query, 1))
        assert alerts.stats()["handshakes_refused"] == 0


def test_token_from_config_applies_and_empty_token_is_rejected() -> None:
    with pytest.raises(ConfigError):
        AlertServer("127.0.0.1", 0, token="", config=AlertsConfig())
    with pytest.raises(ConfigError):
        AlertServer("127.0.0.1", 0, token=None, config=AlertsConfig(client_queue_size=0))


async def test_config_token_is_enforced_when_no_token_argument() -> None:
    config = AlertsConfig(token=TOKEN, ping_interval_s=None, ping_timeout_s=None)
    async with AlertServer("127.0.0.1", 0, token=None, config=config) as alerts:
        with pytest.raises(InvalidStatus) as refused:
            await connect(alerts.url)
        assert refused.value.response.status_code == 401


async def test_pages_served_without_token_and_unknown_paths_404() -> None:
    html = b"<!doctype html><title>dfmon</title>"
    pages = {"/": ("text/html; charset=utf-8", html)}
    async with server(token=TOKEN, pages=pages) as alerts:
        base = f"http://127.0.0.1:{alerts.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                assert await response.read() == html
            async with session.get(base + "/nothing-here") as response:
                assert response.status == 404
        with pytest.raises(InvalidStatus) as unknown:
            await connect(f"ws://127.0.0.1:{alerts.port}/elsewhere?token={TOKEN}")
        assert unknown.value.response.status_code == 404


# --- websocket: delivery -----------------------------------------------------------------


async def test_events_arrive_in_order_and_unchanged() -> None:
    events = make_events(50)
    async with server() as alerts, connect(alerts.url) as client:
        for event in events:
            alerts.publish(event)
        assert await receive(client, len(events)) == events
        assert alerts.stats()["messages_sent"] == len(events)
        assert alerts.stats()["messages_dropped"] == 0


async def test_history_is_replayed_to_a_late_client_then_live_events_follow() -> None:
    events = make_events(8)
    async with server(history_size=5) as alerts:
        for event in events[:6]:
            alerts.publish(event)
        async with connect(alerts.url) as late:
            alerts.publish(events[6])
            alerts.publish(events[7])
            # The last 5 of the 6 earlier events, then the live ones, nothing twice.
            assert await receive(late, 7) == events[1:8]


async def test_publish_threadsafe_from_another_thread() -> None:
    events = make_events(20)
    async with server() as alerts, connect(alerts.url) as client:

        def produce() -> None:
            for event in events:
                alerts.publish_threadsafe(event)

        thread = threading.Thread(target=produce)
        thread.start()
        assert await receive(client, len(events)) == events
        thread.join()


async def test_slow_client_drops_oldest_while_fast_client_gets_everything() -> None:
    n_events = 2000
    events = make_events(n_events, pad=1000)  # ~1.2 kB each
    # Tiny per-client queue, write buffer and kernel send buffer: a client that never
    # reads backs up after a few dozen events instead of megabytes.
    async with server(queue=8, write_limit=1024, send_buffer=4096, history_size=0) as alerts:
        # max_queue=1: the slow client's library stops reading its socket after one message;
        # a small receive buffer keeps its kernel from absorbing much either.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", alerts.port))
        slow = await connect(alerts.url, sock=sock, max_queue=1, ping_interval=None)
        fast = await connect(alerts.url, ping_interval=None)

        slowest_publish_s = total_publish_s = 0.0
        async with asyncio.timeout(20):
            for event in events:
                started = time.perf_counter()
                alerts.publish(event)
                elapsed = time.perf_counter() - started
                slowest_publish_s = max(slowest_publish_s, elapsed)
                total_publish_s += elapsed
                # The fast client keeps up: each event arrives, whole and in order.
                assert json.loads(await fast.recv()) == event

        stats = alerts.stats()
        print(
            f"\npublish x{n_events}: total {total_publish_s * 1e3:.1f} ms, "
            f"slowest {slowest_publish_s * 1e6:.0f} us; stats {stats}"
        )
        assert total_publish_s < 0.5
        assert slowest_publish_s < 0.05
        assert stats["clients"] == 2
        slow_name = "{}:{}".format(*slow.local_address[:2])
        fast_name = "{}:{}".format(*fast.local_address[:2])
        assert stats["dropped_per_client"][fast_name] == 0
        assert stats["dropped_per_client"][slow_name] == stats["messages_dropped"] > 0

        # When the slow client reads at last, it gets what its buffers held, then the
        # newest events: the queue dropped the oldest ones, and order is kept.
        windows: list[int] = []
        async with asyncio.timeout(10):
            while not windows or windows[-1] != n_events - 1:
                windows.append(json.loads(await slow.recv())["window"])
        assert windows == sorted(set(windows))
        assert windows[-8:] == list(range(n_events - 8, n_events))
        assert len(windows) + stats["messages_dropped"] == n_events
        await slow.close()
        await fast.close()


async def test_stop_closes_clients_and_leaves_no_tasks() -> None:
    before = asyncio.all_tasks()
    alerts = server()
    await alerts.start()
    clients = [await connect(alerts.url, ping_interval=None) for _ in range(3)]
    alerts.publish(make_events(1)[0])
    for client in clients:
        await receive(client, 1)
    dead = await connect(alerts.url, ping_interval=None)
    dead.transport.abort()  # a client that vanished: stop() must not trip over it
    await alerts.stop()
    for client in clients:
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.close_code == 1001  # going away
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    assert alerts.stats()["clients"] == 0
    assert alerts.stats()["messages_sent"] == 4  # 3 live, and 1 replayed to the dead one


async def test_connections_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="monitor.sinks.websocket")
    async with server() as alerts:
        async with connect(alerts.url):
            pass
        await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records if r.name == "monitor.sinks.websocket"]
    assert any("connected" in m for m in messages)
    assert any("disconnected" in m for m in messages)


_SINKS_WITHOUT_HTTP = """
import sys
from monitor.config import MonitorConfig
from monitor.sinks.build import build_delivery
assert build_delivery(MonitorConfig()) is None
print("aiohttp" in sys.modules)
"""


def test_sinks_load_aiohttp_only_to_post() -> None:
    """A replay or server without HTTP sinks never pays aiohttp's import (about 0.1 s of
    every start-up); the HTTP sinks import it on their first POST."""
    done = subprocess.run(
        [sys.executable, "-c", _SINKS_WITHOUT_HTTP],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["False"]
