"""FileSource on media made here by PyAV with known A/V events (a white flash frame, a
1 kHz click) at known times, plus broken inputs and, when present, the dev clips."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from monitor.errors import CorruptMediaError, MediaNotFoundError, MissingStreamError
from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame
from monitor.sources.file import FileSource

SHARED_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
SIZE = (64, 48)  # width, height
CLICK_S = 0.02


def click_track(duration_s: float, rate: int, click_t: float) -> np.ndarray:
    """Silence with one 20 ms 1 kHz burst starting at ``click_t``."""
    samples = np.zeros(int(duration_s * rate), np.float32)
    start, length = round(click_t * rate), round(CLICK_S * rate)
    samples[start : start + length] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(length) / rate)
    return samples


def write_video(
    path: Path,
    *,
    container_format: str | None = None,
    video_codec: str = "libx264",
    audio_codec: str | None = "aac",
    rate: Fraction = Fraction(25),
    audio_rate: int = 48000,
    n_frames: int = 50,
    flash_index: int = 25,
    click_t: float = 1.0,
    pts_ms: list[int] | None = None,
) -> Path:
    """A dark clip whose frame ``flash_index`` is white, with a click at ``click_t``."""
    out = av.open(str(path), "w", format=container_format)
    video = out.add_stream(video_codec, rate=rate)
    video.width, video.height = SIZE
    video.pix_fmt = "yuv420p"
    time_base = Fraction(1, 1000) if pts_ms is not None else 1 / rate
    video.codec_context.time_base = time_base
    audio = None
    if audio_codec is not None:
        audio = out.add_stream(audio_codec, rate=audio_rate)
        audio.layout = "mono"
    for i in range(n_frames):
        level = 255 if i == flash_index else 20
        frame = av.VideoFrame.from_ndarray(
            np.full((SIZE[1], SIZE[0], 3), level, np.uint8), format="rgb24"
        )
        frame.pts = pts_ms[i] if pts_ms is not None else i
        frame.time_base = time_base
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    if audio is not None:
        duration = (pts_ms[-1] / 1000 + 0.04) if pts_ms is not None else float(n_frames / rate)
        write_audio_frames(out, audio, click_track(duration, audio_rate, click_t), audio_rate)
    out.close()
    return path


def write_audio_frames(out: av.container.OutputContainer, stream, samples, rate) -> None:
    block = 1000
    for start in range(0, len(samples), block):
        frame = av.AudioFrame.from_ndarray(
            samples[None, start : start + block].copy(), format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def decode(source: FileSource) -> tuple[list[VideoFrame], list[AudioChunk], list[float]]:
    video, audio, order = [], [], []
    with source:
        for item in source:
            order.append(item.t)
            (video if isinstance(item, VideoFrame) else audio).append(item)
    return video, audio, order


def flash_time(frames: list[VideoFrame]) -> float:
    bright = [f.t for f in frames if f.image.mean() > 128]
    assert len(bright) == 1, bright
    return bright[0]


def click_time(chunks: list[AudioChunk]) -> float:
    samples = np.concatenate([c.samples for c in chunks])
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert len(loud), "no click decoded"
    return chunks[0].t + loud[0] / AUDIO_RATE


def assert_contiguous(chunks: list[AudioChunk]) -> None:
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.t == pytest.approx(previous.t_end, abs=1e-9)
        assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1


def test_mp4_h264_aac_events_align(tmp_path: Path) -> None:
    rate = Fraction(30000, 1001)
    flash_t = 30 / rate
    path = write_video(
        tmp_path / "av.mp4", rate=rate, n_frames=60, flash_index=30, click_t=float(flash_t)
    )
    source = FileSource(path)
    info = source.info
    assert (info.width, info.height) == SIZE
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.sample_rate == 48000 and info.has_audio
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    video, audio, _ = decode(source)
    assert len(video) == 60 and [f.index for f in video] == list(range(60))
    assert video[0].image.shape == (SIZE[1], SIZE[0], 3) and video[0].image.dtype == np.uint8
    assert flash_time(video) == pytest.approx(float(flash_t), abs=1 / 29.97)
    assert click_time(audio) == pytest.approx(float(flash_t), abs=0.010)
    assert abs(video[0].t) < 0.05 and abs(audio[0].t) < 0.05
    assert_contiguous(audio)
    total = sum(len(c.samples) for c in audio) / AUDIO_RATE
    assert total == pytest.approx(2.0, abs=0.05)
    assert source.decode_errors == 0


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(30)])
def test_frame_times_follow_the_native_rate(tmp_path: Path, rate: Fraction) -> None:
    path = write_video(tmp_path / "rate.mp4", rate=rate, n_frames=40, audio_codec=None)
    video, audio, _ = decode(FileSource(path))
    assert not audio
    expected = np.arange(40) / float(rate)
    np.testing.assert_allclose([f.t for f in video], expected, atol=1e-4)


def test_variable_frame_rate(tmp_path: Path) -> None:
    pts_ms = [0, 33, 66, 150, 183, 300, 333, 366, 500, 533, 600, 700, 733, 766, 900]
    path = write_video(
        tmp_path / "vfr.mp4", n_frames=len(pts_ms), flash_index=8, pts_ms=pts_ms, click_t=0.5
    )
    video, audio, _ = decode(FileSource(path))
    np.testing.assert_allclose([f.t for f in video], np.array(pts_ms) / 1000, atol=1e-3)
    assert flash_time(video) == pytest.approx(0.5, abs=1e-3)
    assert click_time(audio) == pytest.approx(0.5, abs=0.010)


def test_mpeg_ps_start_offset_is_removed_but_av_offset_kept(tmp_path: Path) -> None:
    """The MPEG-PS muxer starts streams near 0.5 s; media time must start near 0."""
    path = write_video(
        tmp_path / "ps.mpg",
        container_format="mpeg",
        video_codec="mpeg1video",
        audio_codec="mp2",
        audio_rate=44100,
    )
    with av.open(str(path)) as raw:
        assert float(raw.streams.video[0].start_time * raw.streams.video[0].time_base) > 0.3
    video, audio, _ = decode(FileSource(path))
    assert min(video[0].t, audio[0].t) == pytest.approx(0.0, abs=1e-6)
    assert max(video[0].t, audio[0].t) < 0.1
    assert click_time(audio) == pytest.approx(flash_time(video), abs=1 / 25)


def test_separate_wav_replaces_container_audio_and_interleaves(tmp_path: Path) -> None:
    video_path = write_video(tmp_path / "v.mp4", click_t=0.4)  # its own audio must be ignored
    wav = tmp_path / "a.wav"
    stereo = np.stack([click_track(2.0, 44100, 1.0)] * 2, axis=1)
    soundfile.write(wav, stereo, 44100, subtype="PCM_16")
    source = FileSource(video_path, audio_path=wav)
    assert source.info.sample_rate == 44100
    video, audio, order = decode(source)
    assert len(video) == 50
    assert order == sorted(order), "audio and video must interleave by time"
    assert click_time(audio) == pytest.approx(1.0, abs=0.010)
    assert_contiguous(audio)
    assert sum(len(c.samples) for c in audio) == pytest.approx(2.0 * AUDIO_RATE, abs=2)


def test_separate_compressed_audio_via_pyav(tmp_path: Path) -> None:
    video_path = write_video(tmp_path / "v.mp4", audio_codec=None)
    m4a = tmp_path / "a.m4a"
    with av.open(str(m4a), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        write_audio_frames(out, stream, click_track(2.0, 48000, 1.2), 48000)
    source = FileSource(video_path, audio_path=m4a)
    assert source.info.audio_codec == "aac"
    video, audio, order = decode(source)
    assert order == sorted(order)
    assert click_time(audio) == pytest.approx(1.2, abs=0.010)


def test_file_without_audio_yields_only_video(tmp_path: Path) -> None:
    source = FileSource(write_video(tmp_path / "mute.mp4", audio_codec=None))
    assert source.info.sample_rate is None and not source.info.has_audio
    video, audio, _ = decode(source)
    assert len(video) == 50 and not audio


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError, match="not found"):
        FileSource(tmp_path / "nope.mp4")
    with pytest.raises(MediaNotFoundError, match="directory"):
        FileSource(tmp_path)
    video_path = write_video(tmp_path / "v.mp4", audio_codec=None, n_frames=5, flash_index=0)
    with pytest.raises(MediaNotFoundError):
        FileSource(video_path, audio_path=tmp_path / "nope.wav")


@pytest.mark.parametrize("kind", ["random", "empty", "truncated"])
def test_corrupt_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    if kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(20000))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        whole = write_video(tmp_path / "whole.mp4").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # moov (at the end) is gone
    with pytest.raises(CorruptMediaError, match=kind):
        decode(FileSource(path))


def test_damaged_middle_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "ts.mpg",
        container_format="mpeg",
        video_codec="mpeg1video",
        audio_codec="mp2",
        audio_rate=44100,
        n_frames=100,
    )
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(2).bytes(3000)
    path.write_bytes(bytes(data))
    source = FileSource(path)
    video, audio, _ = decode(source)
    assert 50 <= len(video) <= 100 and audio
    assert source.decode_errors >= 1  # the damaged packet was counted and skipped


def test_audio_only_file_is_missing_video(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, click_track(1.0, 16000, 0.5), 16000)
    with pytest.raises(MissingStreamError, match="no video"):
        FileSource(wav)


def test_bad_separate_audio(tmp_path: Path) -> None:
    video_path = write_video(tmp_path / "v.mp4", audio_codec=None, n_frames=5, flash_index=0)
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"RIFF not really")
    with pytest.raises(CorruptMediaError, match="bogus.wav"):
        FileSource(video_path, audio_path=bogus)
    silent_video = write_video(tmp_path / "v2.mp4", audio_codec=None, n_frames=5, flash_index=0)
    with pytest.raises(MissingStreamError):
        FileSource(video_path, audio_path=silent_video)


def test_iterates_once_and_closes(tmp_path: Path) -> None:
    source = FileSource(write_video(tmp_path / "v.mp4", audio_codec=None, n_frames=5))
    with source:
        assert sum(1 for _ in source) == 5
        with pytest.raises(ValueError):
            iter(source).__next__()
    source.close()  # idempotent


@pytest.mark.shared_data
def test_dev_grid_clips_start_together() -> None:
    clips = sorted(SHARED_DEV.glob("real/*GRID*.mpg"))
    if not clips:
        pytest.skip("shared dev data not present")
    for clip in clips[:2]:
        source = FileSource(clip)
        assert source.info.fps == pytest.approx(25.0)
        video, audio, _ = decode(source)
        assert abs(video[0].t - audio[0].t) < 0.05, clip.name
        audio_end = audio[-1].t_end
        assert audio_end == pytest.approx(video[-1].t + 0.04, abs=0.1), clip.name


def test_raw_stream_without_timestamps_uses_the_frame_rate(tmp_path: Path) -> None:
    """A raw H.264 elementary stream carries no pts: times step by 1/fps from 0."""
    path = write_video(
        tmp_path / "raw.h264", container_format="h264", audio_codec=None, n_frames=10
    )
    with av.open(str(path)) as raw:
        assert all(f.pts is None for f in raw.decode(video=0))
    source = FileSource(path)
    video, _, _ = decode(source)
    assert source.info.fps
    np.testing.assert_allclose([f.t for f in video], np.arange(10) / source.info.fps, atol=1e-9)


def test_audio_clock_survives_a_mid_stream_format_change() -> None:
    """Some streams switch sample rate or layout; the clock keeps counting samples."""
    from monitor.sources.file import _AudioClock

    clock = _AudioClock()
    chunks: list[AudioChunk] = []
    t = 0.0
    for rate, layout, channels in [(44100, "mono", 1), (48000, "stereo", 2), (22050, "mono", 1)]:
        frame = av.AudioFrame.from_ndarray(
            np.full((1, rate * channels), 0.25, np.float32), format="flt", layout=layout
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        chunks += clock.feed(frame, t)
        t += 1.0
    chunks += clock.feed(None, None)
    assert_contiguous(chunks)
    assert sum(len(c.samples) for c in chunks) == pytest.approx(3 * AUDIO_RATE, abs=64)


def test_audio_clock_fills_a_gap_in_the_input_with_silence() -> None:
    from monitor.sources.file import _AudioClock

    clock = _AudioClock()
    chunks: list[AudioChunk] = []
    for start in (0.0, 1.5):  # one second of audio, half a second missing, one more
        frame = av.AudioFrame.from_ndarray(
            np.full((1, 48000), 0.25, np.float32), format="flt", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = (
            48000,
            int(start * 48000),
            Fraction(1, 48000),
        )
        chunks += clock.feed(frame, start)
    chunks += clock.feed(None, None)
    assert_contiguous(chunks)
    samples = np.concatenate([c.samples for c in chunks])
    assert len(samples) == pytest.approx(2.5 * AUDIO_RATE, abs=64)
    resumed = np.flatnonzero(np.abs(samples[AUDIO_RATE + 100 :]) > 0.1)[0] + AUDIO_RATE + 100
    assert resumed / AUDIO_RATE == pytest.approx(1.5, abs=0.005)


def test_audio_clock_fills_a_lost_frame_but_not_timestamp_jitter() -> None:
    """One lost 64 ms AAC frame is filled (unfilled it would pull later audio early);
    timestamps that wander by +-20 ms (some recorders) are not, or the audio would drift."""
    from monitor.sources.file import _AudioClock

    def frame(start: float, seconds: float = 0.064) -> av.AudioFrame:
        n = round(seconds * 16000)
        out = av.AudioFrame.from_ndarray(
            np.full((1, n), 0.25, np.float32), format="flt", layout="mono"
        )
        out.sample_rate, out.pts, out.time_base = 16000, round(start * 16000), Fraction(1, 16000)
        return out

    def samples(starts: list[float], lost_before: int | None = None) -> int:
        clock, chunks = _AudioClock(), []
        for k, t in enumerate(starts):
            chunks += clock.feed(frame(t), t, lost_s=0.064 if k == lost_before else 0.0)
        chunks += clock.feed(None, None)
        assert_contiguous(chunks)
        return sum(len(c.samples) for c in chunks)

    steady = samples([k * 0.064 for k in range(10)])
    # Frame 5 did not decode: the next one comes 64 ms later than the count says.
    with_loss = [k * 0.064 for k in range(11) if k != 5]
    assert samples(with_loss, lost_before=5) == steady + 1024  # the hole, in silence
    jitter = [k * 0.064 + (0.02 if k % 2 else -0.015) for k in range(10)]
    assert samples(jitter) == steady  # no silence added: no drift
