"""The synthetic call generator: speech timings, real files, true shifts, visible lips."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from monitor.errors import ConfigError, SynthesisError
from monitor.media import AUDIO_RATE
from monitor.synth import speech
from monitor.synth.call import derive_call, make_call
from monitor.synth.examples import EXAMPLE_NAMES, SYNC_AUDIO_NAME, make_example_set
from monitor.synth.speech import PhonemeSegment, synthesize
from monitor.synth.visemes import mouth_tracks

pytestmark = pytest.mark.skipif(
    not speech.espeak_available(), reason="libespeak-ng is not installed"
)

SHORT_TEXT = "Hello, can you hear me?"

# Measured on 3 s clips (25 fps, seed 0): MediaPipe's inner-lip gap vs the rendered
# aperture correlates at 0.95-0.97 (0.96 on the default 7.6 s clip at 25, 29.97 and
# 30 fps). 0.8 leaves room for codec and MediaPipe version noise, while a mouth that
# moved out of step (one 300 ms shift) falls far below it.
MIN_LIP_CORRELATION = 0.8
LIP_POINTS = (10, 13, 14, 152)  # forehead, inner upper lip, inner lower lip, chin


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray | None]:
    """All frames (RGB) and the audio resampled to 16 kHz mono, as the file source does."""
    frames: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                chunks.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
    return frames, (np.concatenate(chunks) if chunks else None)


def best_lag(signal: np.ndarray, reference: np.ndarray, max_lag: int) -> int:
    """Lag (samples) by which ``signal`` is later than ``reference``, by cross-correlation."""
    n = min(len(signal), len(reference))
    signal, reference = signal[:n], reference[:n]
    scores = [
        float(
            np.dot(signal[max(lag, 0) : n + min(lag, 0)], reference[max(-lag, 0) : n - max(lag, 0)])
        )
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def lagged_correlation(lips: np.ndarray, sound: np.ndarray, lag: int) -> float:
    """Correlation of lips(t) with sound(t + lag), lag in frames."""
    if lag >= 0:
        a, b = lips[: len(lips) - lag], sound[lag:]
    else:
        a, b = lips[-lag:], sound[: len(sound) + lag]
    return float(np.corrcoef(a, b)[0, 1])


def loudness_envelope(audio: np.ndarray, times: np.ndarray, window_s: float = 0.04) -> np.ndarray:
    """Log RMS level in a window centred on each frame time."""
    half = round(window_s / 2 * AUDIO_RATE)
    centres = np.round(times * AUDIO_RATE).astype(int)
    levels = [np.mean(audio[max(c - half, 0) : c + half] ** 2) for c in centres]
    return np.log(np.asarray(levels) + 1e-8)


def measured_apertures(frames: list[np.ndarray]) -> np.ndarray:
    """Inner-lip gap (landmarks 13-14) / face height (10-152) by FaceMesh in tracking mode."""
    import mediapipe as mp

    apertures = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=False
    ) as mesh:
        for image in frames:
            result = mesh.process(image)
            if not result.multi_face_landmarks:
                apertures.append(np.nan)
                continue
            height, width = image.shape[:2]
            marks = result.multi_face_landmarks[0].landmark
            point = {
                i: np.array([marks[i].x * width, marks[i].y * height]) for i in (10, 13, 14, 152)
            }
            gap = np.linalg.norm(point[14] - point[13])
            apertures.append(gap / np.linalg.norm(point[152] - point[10]))
    return np.asarray(apertures)


@pytest.fixture(scope="module")
def example_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_example_set(tmp_path_factory.mktemp("synth"), seconds=3.0, seed=1)


def test_phoneme_timings_are_ordered_and_inside_the_audio() -> None:
    spoken = synthesize("Please send the figures before our meeting.", voice="en", rate=170)
    phonemes = spoken.phonemes
    assert len([p for p in phonemes if not p.is_pause]) >= 20
    starts = np.array([p.t_start for p in phonemes])
    ends = np.array([p.t_end for p in phonemes])
    assert np.all(ends > starts)
    assert np.all(np.diff(starts) > 0)
    assert np.allclose(starts[1:], ends[:-1])  # segments tile the utterance
    assert starts[0] >= 0 and ends[-1] <= spoken.duration + 1e-6
    assert spoken.samples.dtype == np.float32
    # Trimming keeps 50 ms before the first spoken phoneme; vowels are loud.
    trimmed = spoken.trimmed(0.05)
    first = next(p for p in trimmed.phonemes if not p.is_pause)
    assert first.t_start == pytest.approx(min(0.05, phonemes[0].t_start), abs=1e-3)
    assert trimmed.duration <= spoken.duration
    vowel = next(p for p in trimmed.phonemes if p.phoneme in ("E", "i:", "I", "@"))
    middle = trimmed.samples[round(vowel.t_start * AUDIO_RATE) : round(vowel.t_end * AUDIO_RATE)]
    assert np.sqrt(np.mean(middle**2)) > 0.02


@pytest.mark.parametrize("voice", ["en-us", "de", "fr", "es"])
def test_other_voices_speak_with_phonemes(voice: str) -> None:
    spoken = synthesize("Hola, bonjour, guten Tag.", voice=voice)
    assert spoken.duration > 0.8
    assert len(spoken.phonemes) > 8


def test_bad_speech_requests_raise_specific_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError):
        synthesize("hello", voice="no-such-voice")
    with pytest.raises(ConfigError):
        synthesize("   ")
    with pytest.raises(ConfigError):
        synthesize("hello", rate=10)
    monkeypatch.setattr(speech, "LIBRARY_NAME", "libespeak-ng-absent.so.9")
    with pytest.raises(SynthesisError):
        speech._Espeak()


def test_visemes_close_on_bilabials_and_do_not_lag() -> None:
    segments = [
        PhonemeSegment(0.0, 0.2, "_"),
        PhonemeSegment(0.2, 0.4, "a"),
        PhonemeSegment(0.4, 0.46, "p"),
        PhonemeSegment(0.46, 0.66, "a"),
        PhonemeSegment(0.66, 1.0, "_"),
    ]
    times = np.arange(0.0, 1.0, 0.001)
    aperture, width = mouth_tracks(segments, times)
    at = lambda t: aperture[round(t * 1000)]  # noqa: E731
    assert at(0.3) > 0.7 and at(0.56) > 0.7  # open vowels
    assert at(0.43) < 0.35 * at(0.3)  # the short /p/ still nearly closes the lips
    assert at(0.05) < 0.05 and at(0.95) < 0.05  # rest before and after
    # A symmetric blend: the opening of the first vowel peaks inside its own segment.
    first_peak = times[np.argmax(np.where(times < 0.43, aperture, 0))]
    assert 0.2 < first_peak < 0.4
    assert np.all((width > 0.7) & (width < 1.2))


def test_example_set_files_have_the_right_streams(example_set: dict) -> None:
    assert set(example_set) == set(EXAMPLE_NAMES)
    for name, call in example_set.items():
        assert call.path.name == f"{name}.mp4"
        with av.open(str(call.path)) as container:
            video = container.streams.video[0]
            assert video.codec_context.name == "h264"
            assert video.codec_context.pix_fmt == "yuv420p"
            assert (video.codec_context.height, video.codec_context.width) == (480, 640)
            assert video.average_rate == 25
            assert video.frames == call.n_frames
            assert abs(float(container.duration / 1e6) - call.duration) < 0.07
            if call.has_audio:
                (audio,) = container.streams.audio
                assert audio.codec_context.name == "aac"
                assert audio.rate == AUDIO_RATE
                assert audio.codec_context.layout.name == "mono"
            else:
                assert not container.streams.audio
    # Speech fills most of the clip.
    sync = example_set["sync"]
    spoken = sum(p.t_end - p.t_start for p in sync.phonemes if not p.is_pause)
    assert 2.9 < sync.duration < 4.0
    assert spoken > 0.6 * sync.duration


def test_shifted_files_move_the_audio_by_the_shift(example_set: dict) -> None:
    _, reference = decode(example_set["sync"].path)
    assert reference is not None
    # The decoded in-sync audio is where the ground truth says (no codec priming offset).
    assert abs(best_lag(reference, example_set["sync"].audio, 800)) <= AUDIO_RATE // 1000
    for name, expected in (("shift_plus300", 0.3), ("shift_minus300", -0.3)):
        call = example_set[name]
        assert call.audio_shift_s == pytest.approx(expected)
        _, shifted = decode(call.path)
        lag_s = best_lag(shifted, reference, round(0.5 * AUDIO_RATE)) / AUDIO_RATE
        assert abs(lag_s - expected) <= 0.010, (name, lag_s)
        assert call.audio_phonemes[0].t_start == pytest.approx(
            call.phonemes[0].t_start + expected, abs=1e-3
        )


def test_derived_calls_carry_the_same_video(example_set: dict) -> None:
    sync_frames, _ = decode(example_set["sync"].path)
    shifted_frames, _ = decode(example_set["shift_minus300"].path)
    assert len(shifted_frames) == len(sync_frames) == example_set["sync"].n_frames
    assert all(np.array_equal(a, b) for a, b in zip(sync_frames, shifted_frames, strict=True))
    with pytest.raises(ConfigError):
        derive_call(example_set["sync"], example_set["sync"].path.with_suffix(".webm"))


def test_swap_says_something_else(example_set: dict) -> None:
    sync, swap = example_set["sync"], example_set["swap"]
    assert swap.audio_text != swap.text == sync.text
    assert not swap.in_sync and sync.in_sync
    assert np.array_equal(swap.aperture, sync.aperture)  # same lips
    assert [p.phoneme for p in swap.audio_phonemes] != [p.phoneme for p in sync.audio_phonemes]
    _, heard = decode(swap.path)
    assert heard is not None and np.sqrt(np.mean(heard**2)) > 0.01


def test_video_only_has_no_audio_stream_and_a_wav(example_set: dict) -> None:
    call = example_set["video_only"]
    assert not call.has_audio
    with av.open(str(call.path)) as container:
        assert not container.streams.audio
        assert len(container.streams.video) == 1
    assert call.audio_path is not None and call.audio_path.name == SYNC_AUDIO_NAME
    samples, rate = sf.read(call.audio_path, dtype="float32")
    assert rate == AUDIO_RATE
    assert len(samples) == round(call.duration * AUDIO_RATE)
    assert np.max(np.abs(samples - example_set["sync"].audio)) < 1e-3  # 16-bit rounding


def test_mediapipe_sees_the_mouth_move_in_step_with_speech(example_set: dict) -> None:
    call = example_set["sync"]
    frames, audio = decode(call.path)
    assert audio is not None and len(frames) == call.n_frames
    measured = measured_apertures(frames)
    found = ~np.isnan(measured)
    assert found.mean() > 0.95
    correlation = np.corrcoef(measured[found], call.aperture[found])[0, 1]
    assert correlation > MIN_LIP_CORRELATION, correlation
    # The lips move with the loudness: more at lag 0 than 300 ms either way.
    lips = np.where(found, measured, np.nanmean(measured))
    loudness = loudness_envelope(audio, call.frame_times)
    lag = round(0.3 * call.fps)
    at_zero = lagged_correlation(lips, loudness, 0)
    assert at_zero > 0.2
    assert at_zero > lagged_correlation(lips, loudness, lag) + 0.1
    assert at_zero > lagged_correlation(lips, loudness, -lag) + 0.1


@pytest.mark.parametrize(("fps", "frames_per_second"), [(29.97, 30000 / 1001), (30.0, 30.0)])
def test_frame_rates(tmp_path: Path, fps: float, frames_per_second: float) -> None:
    call = make_call(tmp_path / "call.mp4", text=SHORT_TEXT, fps=fps, size=(240, 320))
    assert call.fps == pytest.approx(frames_per_second)
    with av.open(str(call.path)) as container:
        video = container.streams.video[0]
        assert float(video.average_rate) == pytest.approx(frames_per_second)
        times = [float(frame.time) for frame in container.decode(video=0)]
    assert len(times) == call.n_frames
    assert np.allclose(times, call.frame_times, atol=1e-3)


@pytest.mark.parametrize("name", ["call.webm", "call.mkv"])
def test_webm_and_mkv_use_vp8_and_opus(tmp_path: Path, name: str) -> None:
    call = make_call(tmp_path / name, text=SHORT_TEXT, size=(240, 320))
    with av.open(str(call.path)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        assert container.streams.audio[0].codec_context.name == "opus"
    _, audio = decode(call.path)
    assert audio is not None
    assert abs(best_lag(audio, call.audio, 800)) <= 2 * AUDIO_RATE // 1000


def test_bad_call_requests_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_call(tmp_path / "call.avi", text=SHORT_TEXT)
    with pytest.raises(ConfigError):
        make_call(tmp_path / "call.mp4", text=SHORT_TEXT, size=(241, 320))
    with pytest.raises(ConfigError):
        make_call(tmp_path / "call.mp4", text=SHORT_TEXT, fps=0.0)
    with pytest.raises(ConfigError):
        make_call(tmp_path / "call.mp4", text=SHORT_TEXT, audio_shift_s=30.0)


def test_stored_astronaut_mouth_matches_mediapipe() -> None:
    from monitor.synth.face import astronaut_portrait, measure_portrait

    stored = astronaut_portrait()
    measured = measure_portrait(stored.image)
    for field in ("upper_lip", "lower_lip", "corners", "forehead", "chin"):
        assert np.max(np.abs(getattr(measured, field) - getattr(stored, field))) < 1.5, field


def test_another_portrait_is_measured_and_animated() -> None:
    from monitor.synth.face import FaceAnimator, astronaut_portrait, measure_portrait

    mirrored = measure_portrait(np.ascontiguousarray(astronaut_portrait().image[:, ::-1]))
    animator = FaceAnimator(mirrored, size=(240, 320))
    closed, wide = animator.render(0.0), animator.render(1.0)
    mouth = animator.crop @ np.array([*mirrored.mouth_center, 1.0])
    x, y = round(mouth[0]), round(mouth[1])
    region = (slice(y - 20, y + 30), slice(x - 25, x + 25))
    difference = np.abs(closed[region].astype(int) - wide[region].astype(int)).mean()
    assert difference > 10  # the mouth opened
    far = (slice(0, 40), slice(0, 40))  # background
    assert np.abs(closed[far].astype(int) - wide[far].astype(int)).max() == 0
