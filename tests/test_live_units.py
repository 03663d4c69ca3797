"""Pieces of the live path without a network: clock alignment, audio conversion, metrics."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from monitor.config import load_config
from monitor.live.admission import Admission, BusyMeter, SessionLoad
from monitor.live.align import SessionClock, TrackClock
from monitor.live.convert import AudioConverter
from monitor.live.metrics import LiveMetrics
from monitor.live.session import Arrival, MediaIntake, TrackBuffer, _Feeder


def _arrivals(
    rng: np.random.Generator,
    *,
    period_s: float,
    lag: int,
    capture_origin_s: float,
    floor_s: float,
    n: int,
) -> list[tuple[float, float]]:
    """(pts, arrival) as aiortc's jitter buffer releases them: frame k leaves when the
    packet of frame k + lag arrives; each packet has the floor delay plus random jitter
    (exponential, mean 15 ms), and packets never overtake each other."""
    send = capture_origin_s + period_s * np.arange(n + lag)
    packet_arrival = np.maximum.accumulate(send + floor_s + rng.exponential(0.015, n + lag))
    return [(k * period_s, float(packet_arrival[k + lag])) for k in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clock_recovers_capture_offset_despite_jitter_and_release_lag(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true_video_after_audio = 0.137  # the camera's first frame came 137 ms after the mic's
    clock = SessionClock(("audio", "video"), warmup_s=1.0)
    audio = _arrivals(rng, period_s=0.02, lag=4, capture_origin_s=100.0, floor_s=0.03, n=100)
    video = _arrivals(
        rng, period_s=0.04, lag=1, capture_origin_s=100.0 + true_video_after_audio,
        floor_s=0.03, n=50,
    )  # fmt: skip
    for kind, series in (("audio", audio), ("video", video)):
        for pts, arrival in series:
            clock.observe(kind, pts, arrival)
    now = max(audio[-1][1], video[-1][1])
    assert clock.ready("audio", now) and clock.ready("video", now)
    estimated = clock.media_time("video", 0.0) - clock.media_time("audio", 0.0)
    # Two seconds of jitter with a 15 ms mean: the minima land within a few ms.
    assert abs(estimated - true_video_after_audio) < 0.006
    assert clock.media_time("audio", 0.0) == pytest.approx(0.0)


def test_naive_first_arrival_pairing_would_be_off_by_the_release_lag() -> None:
    """Why the release lag matters: without it, audio looks ~60 ms later than video."""
    rng = np.random.default_rng(3)
    naive = TrackClock("audio", warmup_s=0.5, release_lag=0)
    exact = TrackClock("audio", warmup_s=0.5)
    for pts, arrival in _arrivals(
        rng, period_s=0.02, lag=4, capture_origin_s=5.0, floor_s=0.01, n=60
    ):
        naive.observe(pts, arrival)
        exact.observe(pts, arrival)
    assert exact.offset_s == pytest.approx(5.01, abs=0.004)
    assert naive.offset_s - exact.offset_s > 0.07  # 4 frames of 20 ms held back


def test_clock_freezes_after_warmup() -> None:
    track = TrackClock("video", warmup_s=0.5)
    for k in range(10):
        track.observe(k * 0.04, 10.0 + k * 0.04 + 0.05)
    assert not track.maybe_freeze(10.2)
    assert track.maybe_freeze(10.6)
    frozen = track.offset_s
    track.observe(0.5, 10.0)  # a much earlier arrival after the freeze changes nothing
    assert track.offset_s == frozen


def _audio_frame(pts: int, value: float = 0.1, samples: int = 960) -> av.AudioFrame:
    data = np.full((1, samples * 2), int(value * 32767), dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = pts
    frame.time_base = Fraction(1, 48000)
    return frame


def test_audio_converter_keeps_time_and_fills_gaps() -> None:
    converter = AudioConverter()
    chunks = []
    for k in range(10):
        chunks += converter.convert(_audio_frame(k * 960), k * 0.02, 2.0 + k * 0.02)
    # Frames 10 and 11 lost: the next one comes 40 ms later than expected.
    chunks += converter.convert(_audio_frame(12 * 960), 12 * 0.02, 2.0 + 12 * 0.02)
    assert chunks[0].t == pytest.approx(2.0)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.t == pytest.approx(before.t_end)  # contiguous, on one clock
    total = sum(len(c.samples) for c in chunks)
    assert converter.filled_s == pytest.approx(0.04)
    # 13 frames of 20 ms at 16 kHz, less what the resampler still holds (< 1 ms).
    assert 13 * 320 - 16 <= total <= 13 * 320
    silence = next(c for c in chunks if not c.samples.any())
    assert len(silence.samples) == 640
    assert all(c.samples.dtype == np.float32 for c in chunks)


def test_audio_converter_restarts_when_the_clock_goes_back() -> None:
    converter = AudioConverter()
    converter.convert(_audio_frame(48000), 1.0, 3.0)
    chunks = converter.convert(_audio_frame(0), 0.0, 7.5)
    assert chunks and chunks[0].t == pytest.approx(7.5)


def test_track_buffer_drops_oldest_and_counts() -> None:
    buffer = TrackBuffer("video", maxlen=3)
    dropped = [buffer.push(Arrival(float(k), float(k), None)) for k in range(5)]  # type: ignore[arg-type]
    assert dropped == [False, False, False, True, True]
    assert (buffer.received, buffer.dropped, len(buffer)) == (5, 2, 3)
    assert buffer.pop().pts_s == 2.0  # the oldest two are gone


def test_metrics_text() -> None:
    metrics = LiveMetrics()
    metrics.sessions_active, metrics.sessions_total = 2, 3
    metrics.frames_in["video"] += 25
    metrics.frames_dropped["audio"] += 1
    for ms in (3.0, 40.0, 700.0):
        metrics.observe_event({"type": "score", "inference_ms": ms})
    metrics.observe_event({"type": "alert", "level": "suspicious"})
    text = metrics.render()
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert lines["dfmon_sessions_active"] == "2"
    assert lines['dfmon_frames_received_total{kind="video"}'] == "25"
    assert lines['dfmon_frames_dropped_total{kind="audio"}'] == "1"
    assert lines["dfmon_windows_scored_total"] == "3"
    assert lines['dfmon_inference_seconds_bucket{le="0.005"}'] == "1"
    assert lines['dfmon_inference_seconds_bucket{le="0.05"}'] == "2"
    assert lines['dfmon_inference_seconds_bucket{le="1"}'] == "3"
    assert lines['dfmon_inference_seconds_bucket{le="+Inf"}'] == "3"
    assert float(lines["dfmon_inference_seconds_sum"]) == pytest.approx(0.743)
    assert lines['dfmon_alerts_total{level="suspicious"}'] == "1"
    assert "# TYPE dfmon_inference_seconds histogram" in text


def test_busy_meter_measures_the_recent_fraction() -> None:
    meter = BusyMeter(now=0.0)
    for k in range(1, 21):  # 20 s: 0.3 s busy per second, then 0.8 s busy per second
        meter.add(0.3 if k <= 10 else 0.8, now=float(k))
    assert meter.fraction(now=1.0) is None  # too early to say
    assert meter.fraction(now=20.0) == pytest.approx(0.8, abs=0.05)  # the recent seconds
    assert meter.lifetime_fraction(now=20.0) == pytest.approx(0.55)


def _load(key: str = "a", busy: float | None = 0.3, media: bool = True, dropping: bool = False):
    return SessionLoad(key=key, has_media=media, busy=busy, dropped_recently=dropping)


def test_admission_decides_on_limits_quotas_and_measured_load() -> None:
    live = load_config(
        live={
            "max_sessions": 5,
            "max_sessions_per_token": 3,
            "max_pending_per_token": 1,
            "admission_cores": 2.0,
            "max_utilization": 0.8,
            "session_cost_cores": 0.5,
        }
    ).live
    admission = Admission(live)
    assert admission.decide("a", [], 0) is None  # the first session is always admitted
    assert admission.decide("a", [_load(), _load()], 0) is None  # 0.6 + 0.5 <= 1.6
    refusal = admission.decide("a", [_load(busy=0.6), _load(busy=0.6)], 0)
    assert refusal is not None and refusal.status == 503 and "at capacity" in refusal.detail
    # A session not measured yet counts at the configured cost, then at what was measured.
    assert admission.decide("b", [_load(busy=None), _load(busy=None)], 0) is None
    assert admission.decide("b", [_load(busy=None), _load(busy=None)], 1) is not None
    for _ in range(3):
        admission.learn(0.2)
    assert admission.session_cost == pytest.approx(0.2)
    assert admission.decide("b", [_load(busy=None)] * 3, 0) is None
    # Drops mean the analysis is already behind: no new session, whatever the sums say.
    refusal = admission.decide("b", [_load(busy=0.1, dropping=True)], 0)
    assert refusal is not None and "dropping frames" in refusal.detail
    # Quotas are per token (429); the hard limit counts offers being answered (503).
    refusal = admission.decide("a", [_load(busy=0.1)] * 3, 0)
    assert refusal is not None and refusal.status == 429 and "quota" in refusal.detail
    refusal = admission.decide("a", [_load(busy=0.1, media=False)], 0)
    assert refusal is not None and refusal.status == 429 and "no media" in refusal.detail
    refusal = admission.decide("c", [_load(key="x", busy=0.0)] * 4, 1)
    assert refusal is not None and refusal.status == 503 and "limit of 5" in refusal.detail
    assert refusal.retry_after_s == live.retry_after_s


class _OrderRecorder:
    """Keeps the media time of everything fed, in the order it was fed."""

    def __init__(self) -> None:
        self.fed: list[tuple[str, float]] = []

    def start(self, info: Any) -> None:
        pass

    def add_video(self, frame: Any) -> None:
        self.fed.append(("video", frame.t))

    def add_audio(self, chunk: Any) -> None:
        self.fed.append(("audio", chunk.t))

    def note_lost(self, item: Any) -> None:
        pass


def _video_frame(pts_s: float) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    frame.pts, frame.time_base = round(pts_s * 90000), Fraction(1, 90000)
    return frame


def _intake_with_video_ahead(video_lead_s: float) -> MediaIntake:
    """Audio (20 ms) and video (40 ms) frames arriving together in real time, the video
    track's capture starting ``video_lead_s`` earlier than the audio's."""
    intake = MediaIntake(("audio", "video"), load_config(live={"align_warmup_s": 0.0}).live)
    for k in range(20):
        pts = k * 0.02
        intake.push("audio", pts, 100.0 + pts, _audio_frame(round(pts * 48000)))
    for k in range(10):
        pts = k * 0.04
        intake.push("video", pts, 100.0 - video_lead_s + pts, _video_frame(pts))
    return intake


@pytest.mark.parametrize("video_lead_s", [0.2, -0.2])
def test_feeder_picks_the_earliest_frame_in_media_time(video_lead_s: float) -> None:
    intake = _intake_with_video_ahead(video_lead_s)
    feeder = _Feeder(intake, _OrderRecorder(), info=lambda: None, max_frame_age_s=1.5)
    assert intake.ready("audio", 200.0) and intake.ready("video", 200.0)
    # Both heads have pts 0; the track whose capture began first is earlier on the call.
    assert feeder.pick(200.0, stopping=True) == ("video" if video_lead_s > 0 else "audio")


def test_feeder_feeds_both_tracks_in_media_time_order() -> None:
    intake = _intake_with_video_ahead(0.1)
    recorder = _OrderRecorder()
    intake.stop.set()  # feed everything buffered, then return
    _Feeder(intake, recorder, info=lambda: None, max_frame_age_s=1.5).run()
    kinds = {kind for kind, _ in recorder.fed}
    times = [t for _, t in recorder.fed]
    assert kinds == {"audio", "video"} and len(times) > 20
    # Audio chunks come out of the resampler late by a few ms; nothing is out of order
    # by more than that.
    assert all(b >= a - 0.011 for a, b in zip(times, times[1:], strict=False))
    assert recorder.fed[0] == ("video", 0.0)


async def test_host_candidates_only_on_the_addresses_given() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    from monitor.live.ice import address_towards, host_candidates_on

    async def gathered(addresses: list[str] | None) -> set[str]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        offer = await pc.createOffer()
        if addresses is None:
            await pc.setLocalDescription(offer)
        else:
            with host_candidates_on(addresses):
                await pc.setLocalDescription(offer)
        sdp = pc.localDescription.sdp
        await pc.close()
        return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}

    assert await gathered(["127.0.0.1"]) == {"127.0.0.1"}
    # Outside the block aioice gathers as it always does: every interface but loopback.
    assert "127.0.0.1" not in await gathered(None)
    assert address_towards("127.0.0.1") == "127.0.0.1"
    with pytest.raises(ValueError), host_candidates_on([]):
        pass


def test_admission_refuses_when_memory_would_run_out() -> None:
    live = load_config(live={"max_memory_mb": 1000.0, "session_memory_mb": 100.0}).live
    admission = Admission(live)
    assert admission.decide("a", [], 0, rss_mb=850.0) is None
    refusal = admission.decide("a", [], 1, rss_mb=850.0)  # one offer already being answered
    assert refusal is not None and refusal.status == 503 and "memory" in refusal.detail


_FRAGMENT_AND_TRIM = """
from monitor.live.memory import release_free_memory, rss_mib
before = rss_mib()
# 250 MiB in blocks, each followed by a small one that stays, as a session's frames sit
# between the allocations of longer-lived objects: free() alone cannot shrink the heap.
blocks, kept = [], []
for _ in range(4000):
    blocks.append(bytearray(64 * 1024))
    kept.append(bytearray(1000))  # > 512 bytes: from malloc, not pymalloc
grown = rss_mib()
del blocks
held = rss_mib()
release_free_memory()
print(before, grown, held, rss_mib())
"""


def test_freed_memory_goes_back_to_the_system() -> None:
    """In a fresh process, so that other tests' heaps do not blur the figures."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _FRAGMENT_AND_TRIM], capture_output=True, text=True, timeout=60
    )
    before, grown, held, after = map(float, result.stdout.split())
    assert grown - before > 200 and held - before > 200
    assert after - before < 50  # given back, not kept in the heap


def test_feeder_analyses_the_tail_when_the_session_ends_during_a_slow_frame() -> None:
    """Frames buffered when the session ends are the call's last seconds: analysed, never
    dropped as stale, even when the end comes while the analysis was stuck on a frame
    (under load, whole windows at the end of every session were lost that way)."""
    import threading
    import time

    intake = MediaIntake(
        ("video",), load_config(live={"align_warmup_s": 0.0, "max_frame_age_s": 0.2}).live
    )

    class Slow(_OrderRecorder):
        def add_video(self, frame: Any) -> None:
            super().add_video(frame)
            if len(self.fed) == 1:
                now = time.monotonic()
                for k in range(2, 22):  # the tail arrives while this frame is analysed
                    intake.push("video", k * 0.04, now, _video_frame(k * 0.04))
                time.sleep(0.5)  # longer than max_frame_age_s: the tail is "stale" now
                intake.stop.set()  # and the session ends (DELETE)

    recorder = Slow()
    now = time.monotonic()
    for k in range(2):
        intake.push("video", k * 0.04, now + k * 0.04, _video_frame(k * 0.04))
    feeder = _Feeder(intake, recorder, info=lambda: None, max_frame_age_s=0.2)
    worker = threading.Thread(target=feeder.run)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert len(recorder.fed) == 22 and intake.buffers["video"].dropped == 0


def test_feeder_reports_drops_with_their_media_times() -> None:
    """The analysis places dropped frames in their windows (quality: frames_dropped)."""
    live = load_config(live={"align_warmup_s": 0.0, "video_buffer_frames": 5}).live
    intake = MediaIntake(("video",), live)

    class Keeping(_OrderRecorder):
        lost: list = []

        def note_lost(self, item: Any) -> None:
            self.lost.append(item)

    recorder = Keeping()
    for k in range(12):  # 7 more than the buffer holds: the oldest 7 are dropped
        intake.push("video", k * 0.04, 100.0 + k * 0.04, _video_frame(k * 0.04))
    intake.stop.set()
    _Feeder(intake, recorder, info=lambda: None, max_frame_age_s=1.5).run()
    assert [round(item.t, 2) for item in recorder.lost] == [round(k * 0.04, 2) for k in range(7)]
    assert {item.reason for item in recorder.lost} == {"dropped"}
    assert [round(t, 2) for _, t in recorder.fed] == [round(k * 0.04, 2) for k in range(7, 12)]
