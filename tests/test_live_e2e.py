"""Live ingest end to end on loopback: push (aiortc WHIP client) -> serve -> /alerts.

Real time, real codecs (VP8, Opus), the real pipeline and detectors. Two participants
publish at once, one in sync and one with its audio 300 ms early; each must end at the
expected level, with its own events, and the server must free everything afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from monitor.config import MonitorConfig
from monitor.live.client import (
    FileAudioTrack,
    FileVideoTrack,
    PacingClock,
    PushStats,
    WhipClient,
    push_file,
)
from monitor.live.probe import measure_probe, write_probe_clip
from monitor.media import VideoFrame
from tests.live_util import (
    RecordingAnalyzer,
    check_events,
    live_config,
    other_tasks,
    running_servers,
    thread_names,
)

pytestmark = pytest.mark.slow

TOKEN = "s3cret"
TEXT = "Please send me the figures before our meeting on Monday morning."


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from monitor.synth.call import make_call
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    out = tmp_path_factory.mktemp("live-calls")
    paths = {}
    # Two sentences: the calibrated decision needs several seconds of a 300 ms shift to
    # reach suspicious (docs/CALIBRATION.md), more than one sentence holds.
    for name, shift in (("sync", 0.0), ("early", -0.3)):
        call = make_call(
            out / f"{name}.mp4", text=f"{TEXT} {TEXT}", seed=1, size=(240, 320), audio_shift_s=shift
        )
        paths[name] = call.path
    # Long enough that a loaded machine cannot finish publishing it before a test interrupts.
    paths["long"] = make_call(
        out / "long.mp4", text=" ".join([TEXT] * 3), seed=2, size=(240, 320)
    ).path
    return paths


async def test_two_participants_in_sync_and_desynced(calls: dict[str, Path]) -> None:
    before = thread_names()
    config = live_config()
    async with running_servers(config, token=TOKEN) as (server, _, listener):
        pushes = await asyncio.gather(
            push_file(calls["sync"], server.url, token=TOKEN, participant="alice"),
            push_file(calls["early"], server.url, token=TOKEN, participant="bob"),
        )
        await listener.wait_for(
            lambda: listener.of("alice", "summary") and listener.of("bob", "summary"), 10
        )
        await listener.wait_for(lambda: not server.sessions, 5)
        metrics = server.metrics.render()
    assert not other_tasks()
    assert thread_names() <= before, thread_names() - before

    check_events(listener.events)
    for stats in pushes:
        assert stats.ended_by == "end_of_file" and stats.video_frames > 80
    levels, dropped = {}, {}
    for name in ("alice", "bob"):
        events = listener.of(name)
        assert events[0]["type"] == "session_started"
        assert events[0]["video_codec"] == "vp8" and events[0]["audio_codec"] == "opus"
        assert (events[0]["width"], events[0]["height"]) == (320, 240)
        assert events[-2]["type"] == "session_ended" and events[-2]["reason"] == "deleted"
        scores = listener.of(name, "score")
        assert len(scores) >= 3, [e["type"] for e in events]
        assert len({e["session"] for e in events}) == 1
        summary = listener.of(name, "summary")[0]
        dropped[name] = summary["frames_dropped"]
        levels[name] = summary["verdict"]
    assert levels["alice"] == "clear", listener.of("alice", "score")
    assert levels["bob"] in ("suspicious", "alert"), listener.of("bob", "score")
    assert listener.of("bob", "alert")
    assert "dfmon_sessions_total 2" in metrics
    assert "dfmon_sessions_active 0" in metrics
    # Drops happen only when the machine cannot keep up; both places count the same ones.
    in_metrics = sum(server.metrics.frames_dropped.values())
    assert in_metrics == dropped["alice"] + dropped["bob"]


class BrokenAnalyzer(RecordingAnalyzer):
    """Fails on its 10th video frame, as a detector bug or bad media might."""

    def add_video(self, frame: VideoFrame) -> None:
        super().add_video(frame)
        if len(self.video) == 10:
            raise RuntimeError("simulated analysis failure")


def analyzer_by_participant(config: MonitorConfig, **kwargs: Any) -> RecordingAnalyzer:
    cls = BrokenAnalyzer if kwargs["participant"] == "broken" else RecordingAnalyzer
    return cls(config, **kwargs)


async def test_alignment_error_and_failure_isolation(tmp_path: Path) -> None:
    """Flashes and tone bursts sent together arrive together (content, not timestamps),
    while another session fails next to it without disturbing it."""
    clip = tmp_path / "probe.mkv"
    events = write_probe_clip(clip, duration_s=3.2, events_s=(1.0, 2.0, 3.0))
    RecordingAnalyzer.instances.clear()
    async with running_servers(
        live_config(), token=TOKEN, analyzer_factory=analyzer_by_participant
    ) as (server, _, listener):
        good, bad = await asyncio.gather(
            push_file(clip, server.url, token=TOKEN, participant="probe"),
            push_file(clip, server.url, token=TOKEN, participant="broken"),
        )
        await listener.wait_for(lambda: listener.of("probe", "summary"), 5)
    analyzer = next(a for a in RecordingAnalyzer.instances if type(a) is RecordingAnalyzer)
    assert analyzer.thread.startswith("dfmon-session-")  # never the event loop's thread
    result = measure_probe(analyzer.video, analyzer.audio)
    assert len(result.flashes_s) == len(events) and len(result.bursts_s) == len(events)
    # Media time 0 is the call's start: each flash is where the file put it.
    for flash, expected in zip(result.flashes_s, events, strict=True):
        assert abs(flash - expected) < 0.021
    # One video frame is 40 ms; the measured error here is ~5 ms (Opus look-ahead).
    assert all(abs(err) < 20.0 for err in result.av_errors_ms), result.av_errors_ms

    # The failing session reported its error and ended; the probe ran to the end.
    assert good.ended_by == "end_of_file"
    assert "analysis failed" in listener.of("broken", "error")[0]["message"]
    assert listener.of("broken", "session_ended")[0]["reason"] == "error"
    assert listener.of("broken", "summary")
    assert bad.ended_by.startswith("connection_") or bad.ended_by == "end_of_file"
    assert listener.of("probe", "session_ended")[0]["reason"] == "deleted"


async def test_client_that_closes_without_delete(calls: dict[str, Path]) -> None:
    """Closing the peer connection abruptly (no DELETE) ends the session."""
    config = live_config(no_media_timeout_s=2.0)
    RecordingAnalyzer.instances.clear()
    async with running_servers(config, token=TOKEN, analyzer_factory=RecordingAnalyzer) as (
        server,
        _,
        listener,
    ):
        stats = PushStats()
        clock = PacingClock(stats)
        tracks = [FileVideoTrack(calls["sync"], 0.0, clock, stats)]
        tracks.append(FileAudioTrack(calls["sync"], 0.0, clock, stats))
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        async with WhipClient(server.url, token=TOKEN, participant="carol") as whip:
            await whip.negotiate(pc)
            # The client offered host candidates only on the route to the server.
            offered = {
                line.split()[4]
                for line in pc.localDescription.sdp.splitlines()
                if line.startswith("a=candidate:")
            }
            assert offered == {"127.0.0.1"}
            await listener.wait_for(lambda: listener.of("carol", "session_started"), 10)
            await pc.close()  # gone, without DELETE
            started = time.monotonic()
            ended = await listener.wait_for(lambda: listener.of("carol", "session_ended"), 5)
            elapsed = time.monotonic() - started
            for track in tracks:
                track._end()
        assert ended[0]["reason"] in ("connection_closed", "media_ended")
        assert elapsed < 2.0  # detected from the transport, not the media timeout
        await listener.wait_for(lambda: listener.of("carol", "summary"), 5)
        assert not server.sessions
    assert RecordingAnalyzer.instances[0].video


async def test_publisher_processes_interrupted_and_killed(calls: dict[str, Path]) -> None:
    """``dfmon push`` on Ctrl-C DELETEs its session; one killed with SIGKILL sends
    nothing more, so the media timeout ends its session."""
    config = live_config(no_media_timeout_s=1.0)
    async with running_servers(config, token=TOKEN, analyzer_factory=RecordingAnalyzer) as (
        server,
        _,
        listener,
    ):
        root = Path(__file__).resolve().parents[1]
        # A test run started as a background job inherits SIGINT ignored, and so would the
        # publishers: give them Ctrl-C back, as in a terminal.
        as_in_a_terminal = (
            "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from monitor.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        processes = {}
        for name in ("erin", "dave"):
            processes[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-c", as_in_a_terminal, "push", str(calls["long"]),
                "--url", server.url, "--token", TOKEN, "--participant", name,
                cwd=root, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
        try:
            await listener.wait_for(
                lambda: (
                    listener.of("erin", "session_started")
                    and listener.of("dave", "session_started")
                ),
                20,
            )
            await asyncio.sleep(0.3)
            processes["erin"].send_signal(signal.SIGINT)
            os.killpg(processes["dave"].pid, signal.SIGKILL)
            _, erin_err = await asyncio.wait_for(processes["erin"].communicate(), 10)
        finally:
            for process in processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        ended = await listener.wait_for(lambda: listener.of("dave", "session_ended"), 5)
        assert ended[0]["reason"] == "no_media"
        assert listener.of("erin", "session_ended")[0]["reason"] == "deleted"
        assert processes["erin"].returncode == 130, erin_err
        assert erin_err.decode().strip().endswith("interrupted")
        await listener.wait_for(lambda: listener.of("dave", "summary"), 5)
        await listener.wait_for(lambda: not server.sessions, 5)
