"""The evaluation harness: metrics against hand-computed cases, variants really made as asked
(decoded and cross-correlated), time to alert from event lists, and tools/eval.py end to end
on tiny clips generated here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from monitor.errors import ConfigError, MediaNotFoundError
from monitor.evaluation import metrics, report
from monitor.evaluation.dataset import genuine_clips, known_fakes, read_inputs
from monitor.evaluation.scoring import condense, plan_variants, session_offset
from monitor.evaluation.variants import (
    EncodeSettings,
    PreparedClip,
    VariantSpec,
    build_variant,
    fit_size,
    partial_shift,
    prepare_clip,
    shift_audio,
)
from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame
from monitor.sources.file import FileSource

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 48)
RATE = Fraction(25)
SECONDS = 3.0

# ----- metrics -------------------------------------------------------------------------------


def test_auc_counts_ties_as_half() -> None:
    # pos 0.5 beats 0.2 and ties twice (2 x 0.5); pos 0.9 beats all three: 5 of 6 pairs.
    assert metrics.roc_auc([0.2, 0.5, 0.5], [0.5, 0.9]) == pytest.approx(5 / 6)
    assert metrics.roc_auc([0.3, 0.3], [0.3]) == pytest.approx(0.5)
    assert metrics.roc_auc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert metrics.roc_auc([0.8, 0.9], [0.1, 0.2]) == 0.0


def test_auc_equals_area_under_the_roc_curve() -> None:
    rng = np.random.default_rng(3)
    neg = np.round(rng.random(40), 1)  # rounded: many ties
    pos = np.round(rng.random(30) * 0.8 + 0.2, 1)
    curve = metrics.roc_curve(neg, pos)
    area = float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))
    assert curve.fpr[0] == 0 and curve.tpr[0] == 0 and curve.fpr[-1] == 1 and curve.tpr[-1] == 1
    assert metrics.roc_auc(neg, pos) == pytest.approx(area)


def test_eer_at_a_threshold_and_interpolated_inside_a_tie() -> None:
    # Threshold 0.4: 1 of 4 genuine above (FPR 0.25), 0.35 missed (FNR 0.25).
    assert metrics.equal_error_rate([0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6, 0.7]) == pytest.approx(
        0.25
    )
    # The tie at 0.6 is a diagonal segment from (0, 0.5) to (0.5, 1): it crosses at 0.25.
    assert metrics.equal_error_rate([0.1, 0.6], [0.6, 0.9]) == pytest.approx(0.25)
    assert metrics.equal_error_rate([0.5], [0.5]) == pytest.approx(0.5)
    assert metrics.equal_error_rate([0.1, 0.2], [0.8, 0.9]) == 0.0


def test_tpr_at_1pct_fpr() -> None:
    negatives = np.arange(100) / 100  # 0.00 .. 0.99: threshold 0.99 lets exactly 1% through
    assert metrics.tpr_at_fpr(negatives, [0.995, 0.99, 0.5], 0.01) == pytest.approx(2 / 3)
    # Three negatives: 1% FPR means none; the 0.3 positive ties the top negative.
    assert metrics.tpr_at_fpr([0.1, 0.2, 0.3], [0.25, 0.35, 0.3], 0.01) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        metrics.tpr_at_fpr([], [0.3])


def _alert(level: str, t_end: float, previous: str = "clear") -> dict:
    return {
        "type": "alert",
        "level": level,
        "previous_level": previous,
        "t_end": t_end,
        "risk": 0.6,
    }


def test_time_to_alert_from_events() -> None:
    events = [
        {"type": "score", "t_end": 2.0, "level": "clear"},
        _alert("suspicious", 2.5),  # before the onset: a false alarm
        _alert("clear", 3.0, "suspicious"),  # going down is no alarm
        {"type": "score", "t_end": 4.0, "level": "clear"},
        _alert("alert", 5.5),
        _alert("suspicious", 6.0, "alert"),
    ]
    assert metrics.time_to_alert(events, onset_s=4.0) == pytest.approx(1.5)
    assert metrics.time_to_alert(events, onset_s=0.0) == pytest.approx(2.5)
    assert metrics.time_to_alert(events, onset_s=6.0) is None
    assert metrics.alarms_before(events, 4.0) == 1
    assert metrics.count_alarms(events) == 3
    assert metrics.per_hour(2, 1800.0) == pytest.approx(4.0)


def test_percentiles() -> None:
    assert metrics.median([3.0, 1.0, 2.0]) == 2.0
    assert metrics.percentile(np.arange(101.0), 95) == pytest.approx(95.0)
    assert metrics.median([]) is None


# ----- variants --------------------------------------------------------------------------------


def write_noise_clip(path: Path, seed: int, seconds: float = SECONDS, fps: Fraction = RATE) -> Path:
    """Random-noise frames (every frame different) and white-noise audio (a sharp
    cross-correlation peak), H.264 + AAC 44.1 kHz: another codec setting than the variants'."""
    rng = np.random.default_rng(seed)
    n_frames = int(seconds * fps)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = 1 / fps
        audio = out.add_stream("aac", rate=44100, layout="mono")
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = i, 1 / fps
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = (rng.standard_normal(int(seconds * 44100)) * 0.1).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = 44100, start, Fraction(1, 44100)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreparedClip]:
    root = tmp_path_factory.mktemp("eval-variants")
    settings = EncodeSettings()
    clips = {}
    for seed in (1, 2):
        source = write_noise_clip(root / f"noise{seed}.mp4", seed)
        clip = prepare_clip(source, root / "cache", settings)
        clips[clip.name] = clip
    return clips


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    frames, chunks = [], []
    with FileSource(path) as media:
        for item in media:
            if isinstance(item, VideoFrame):
                frames.append(item.image.astype(np.int16))
            elif isinstance(item, AudioChunk):
                chunks.append(item)
    assert chunks[0].t == pytest.approx(0.0, abs=1e-3)
    return frames, np.concatenate([c.samples for c in chunks])


def lag_ms(reference: np.ndarray, shifted: np.ndarray, max_lag_ms: int = 500) -> float:
    """Where ``shifted`` best matches ``reference``: positive when it comes later."""
    max_lag = max_lag_ms * AUDIO_RATE // 1000
    core = reference[max_lag : len(reference) - max_lag]
    scores = np.correlate(shifted[: len(reference)], core, mode="valid")
    return float((np.argmax(scores) - max_lag) * 1000 / AUDIO_RATE)


def test_prepared_clip_is_cached_and_aligned(
    prepared: dict[str, PreparedClip], tmp_path: Path
) -> None:
    clip = prepared["noise1"]
    assert clip.n_frames == int(SECONDS * RATE) and clip.fps == RATE
    assert len(clip.audio()) == clip.n_samples == int(SECONDS * AUDIO_RATE)
    again = prepare_clip(Path(clip.source), clip.directory.parent, EncodeSettings())
    assert again == clip  # read back from clip.json, nothing re-encoded
    # The re-encoded genuine audio sits where the original's did (AAC priming handled).
    _, original = decode(Path(clip.source))
    assert lag_ms(original, clip.audio()) == pytest.approx(0.0, abs=1.0)


@pytest.mark.parametrize("shift_ms", [200, -400])
def test_shifted_variant_audio_really_moves(
    prepared: dict[str, PreparedClip], shift_ms: int
) -> None:
    settings = EncodeSettings()
    genuine = build_variant(VariantSpec("genuine", "noise1", manipulated=False), prepared, settings)
    spec = VariantSpec(f"shift{shift_ms:+d}ms", "noise1", audio="shift", shift_ms=shift_ms)
    shifted = build_variant(spec, prepared, settings)
    frames_a, audio_a = decode(genuine)
    frames_b, audio_b = decode(shifted)
    assert lag_ms(audio_a, audio_b) == pytest.approx(shift_ms, abs=1.0)
    # Same video bits: the frames decode identically.
    assert len(frames_a) == len(frames_b) and all(
        np.array_equal(a, b) for a, b in zip(frames_a, frames_b, strict=True)
    )
    assert spec.true_offset_ms == shift_ms


def test_partial_desync_starts_at_its_onset(prepared: dict[str, PreparedClip]) -> None:
    settings = EncodeSettings()
    onset = 1.5
    spec = VariantSpec("partial+400ms", "noise1", audio="partial", shift_ms=400, onset_s=onset)
    _, genuine = decode(build_variant(VariantSpec("genuine", "noise1"), prepared, settings))
    _, partial = decode(build_variant(spec, prepared, settings))
    split = int(onset * AUDIO_RATE)
    before = slice(0, split - AUDIO_RATE // 10)
    assert lag_ms(genuine[before], partial[before], 200) == pytest.approx(0.0, abs=1.0)
    # After the onset the audio is the genuine audio 400 ms later.
    after = partial[split : split + AUDIO_RATE // 2]
    source = genuine[split - 6400 : split - 6400 + AUDIO_RATE // 2]
    assert np.corrcoef(after, source)[0, 1] > 0.9
    with pytest.raises(ConfigError):
        partial_shift(np.zeros(100, np.float32), 400, 1.0)


def test_shift_helpers_keep_length() -> None:
    samples = np.arange(10, dtype=np.float32) + 1
    two_samples_ms = 2 * 1000 / AUDIO_RATE
    assert shift_audio(samples, 0).tolist() == samples.tolist()
    assert shift_audio(samples, two_samples_ms).tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert shift_audio(samples, -two_samples_ms).tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 0, 0]


def test_frozen_and_looped_video(prepared: dict[str, PreparedClip]) -> None:
    settings = EncodeSettings()
    original, _ = decode(build_variant(VariantSpec("genuine", "noise1"), prepared, settings))
    frozen, _ = decode(
        build_variant(VariantSpec("frozen", "noise1", video="frozen"), prepared, settings)
    )
    looped, _ = decode(
        build_variant(VariantSpec("looped", "noise1", video="looped"), prepared, settings)
    )
    assert len(frozen) == len(looped) == len(original)
    # Noise frames differ by ~85 levels; a held frame by at most encoder refinement.
    assert np.abs(original[1] - original[0]).mean() > 40
    assert max(np.abs(f - frozen[0]).mean() for f in frozen) < 3
    # The loop is the clip's first third (25 frames of 75), played three times.
    period = len(original) // 3
    assert np.abs(looped[period + 3] - looped[3]).mean() < 3
    assert np.abs(looped[2 * period + 7] - original[7]).mean() < 6
    assert np.abs(looped[period + 3] - original[period + 3]).mean() > 40


def _x264_options(path: Path) -> str:
    """The encoder settings x264 writes into the stream (SEI user data)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        data = bytes(stream.codec_context.extradata or b"")
        for packet in container.demux(stream):
            data += bytes(packet)
            break
    start = data.find(b"x264 - core")
    assert start >= 0, "no x264 settings in the stream"
    return data[start : data.find(b"\0", start)].decode()


def _stream_settings(path: Path) -> tuple:
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        return (
            container.format.name,
            v.codec_context.name,
            v.codec_context.width,
            v.codec_context.height,
            v.codec_context.pix_fmt,
            v.average_rate,
            a.codec_context.name,
            a.codec_context.sample_rate,
            a.codec_context.layout.name,
            _x264_options(path).split("options:")[1],
        )


def test_every_variant_has_the_same_codecs_and_settings(prepared: dict[str, PreparedClip]) -> None:
    from monitor.synth.speech import espeak_available

    settings = EncodeSettings()
    specs = [
        VariantSpec("genuine", "noise1", manipulated=False),
        VariantSpec("shift+100ms", "noise1", audio="shift", shift_ms=100),
        VariantSpec("swap", "noise1", audio="swap", donor="noise2"),
        VariantSpec("frozen", "noise1", video="frozen"),
        VariantSpec("looped", "noise1", video="looped"),
        VariantSpec("partial+400ms", "noise1", audio="partial", shift_ms=400, onset_s=1.5),
    ]
    if espeak_available():
        specs.append(VariantSpec("tts", "noise1", audio="tts"))
    paths = [build_variant(spec, prepared, settings) for spec in specs]
    reference = _stream_settings(paths[0])
    assert reference[1] == "h264" and reference[6] == "aac" and reference[7] == 48000
    assert "crf=23.0" in reference[-1]
    for path in paths[1:]:
        assert _stream_settings(path) == reference, path.name
    # The swapped audio is the donor's, not the clip's own.
    _, own = decode(paths[0])
    _, swapped = decode(paths[2])
    assert abs(np.corrcoef(own[: len(swapped)], swapped[: len(own)])[0, 1]) < 0.1


def test_fit_size_keeps_even_sides_within_the_box() -> None:
    settings = EncodeSettings()
    assert fit_size(1920, 1080, settings) == (960, 540)
    assert fit_size(1080, 1920, settings) == (540, 960)  # portrait: long side 960 too
    assert fit_size(1278, 720, settings) == (958, 540)
    assert fit_size(360, 288, settings) == (360, 288)


def test_plan_variants_covers_every_category(prepared: dict[str, PreparedClip]) -> None:
    clips = list(prepared.values())
    specs = plan_variants(clips, [], (100, 400))
    categories = {s.category for s in specs}
    assert categories == {
        "genuine", "shift+100ms", "shift-100ms", "shift+400ms", "shift-400ms",
        "swap", "tts", "frozen", "looped",
    }  # fmt: skip
    # 3 s clips are too short for a partial desync; swaps take another clip's audio.
    assert all(s.donor != s.clip for s in specs if s.audio == "swap")
    assert len(specs) == 2 * 9


# ----- dataset, condensing and the report ------------------------------------------------------


def test_manifest_selection(tmp_path: Path) -> None:
    rows = [
        ("real/a.mp4", "real", "yes", "GRID sample"),
        ("real/b.mp4", "real", "yes", "DUPLICATE SOURCE: same as a"),
        ("real/c.mp4", "real", "no", "no audio"),
        ("real/g.mp4", "real", "yes", "Same man as a, longer; DUPLICATE SOURCE of a"),
        ("fake/d.mp4", "fake", "yes", "LIPSYNC-FAKE (Wav2Lip): re-lipped"),
        ("fake/e.mp4", "fake", "yes", "face swap"),
        ("fake/f.mp4", "fake", "no", "no audio"),
    ]
    lines = ["file\tlabel\thas_audio\tnotes"]
    for file, label, has_audio, notes in rows:
        (tmp_path / file).parent.mkdir(exist_ok=True)
        (tmp_path / file).write_bytes(b"")
        lines.append(f"{file}\t{label}\t{has_audio}\t{notes}")
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    entries = read_inputs(tmp_path)
    assert [e.name for e in genuine_clips(entries)] == ["a"]
    fakes = known_fakes(entries)
    assert [(e.name, e.lipsync_fake) for e in fakes] == [("d", True), ("e", False)]
    (tmp_path / "bad.tsv").write_text("file\tlabel\nreal/a.mp4\treal\n")
    with pytest.raises(ConfigError):
        read_inputs(tmp_path / "bad.tsv")
    (tmp_path / "missing.tsv").write_text("file\tlabel\thas_audio\nreal/zz.mp4\treal\tyes\n")
    with pytest.raises(MediaNotFoundError):
        read_inputs(tmp_path / "missing.tsv")
    with pytest.raises(MediaNotFoundError):
        read_inputs(tmp_path / "nowhere")


def _events(offset: float | None, alarms: list[dict]) -> list[dict]:
    evidence = [{"detector": "lip_sync", "score": 0.7, "offset_ms": offset, "confidence": 0.3}]
    return [
        {"type": "session_started", "config": {"detectors": {"lip_sync": "baseline-1"}}},
        {"type": "score", "t_end": 2.0, "evidence": [{**evidence[0], "offset_ms": 380.0}]},
        {"type": "score", "t_end": 2.5, "evidence": [{**evidence[0], "offset_ms": 420.0}]},
        *alarms,
        {"type": "summary", "risk": 0.7, "level": "alert", "windows_scored": 2,
         "windows_insufficient": 0, "evidence": evidence if offset is not None else []},
    ]  # fmt: skip


def test_condense_and_session_offset() -> None:
    spec = VariantSpec("partial+400ms", "c", audio="partial", shift_ms=400, onset_s=2.0)
    events = _events(400.0, [_alert("suspicious", 1.5), _alert("alert", 3.0)])
    row = condense(events, spec, 4.0, 1.0)
    assert row["offset_ms"] == 400.0 and row["offset_source"] == "summary"
    assert row["time_to_alert_s"] == pytest.approx(1.0) and row["alarms_before_onset"] == 1
    assert row["detectors"] == {"lip_sync": "baseline-1"} and row["true_offset_ms"] is None
    assert session_offset(_events(None, [])) == (400.0, "window median")


def _row(category: str, risk: float, level: str = "clear", **extra: object) -> dict:
    return {
        "category": category, "clip": "c", "risk": risk, "level": level, "alarms": [],
        "time_to_alert_s": None, "alarms_before_onset": 0, "offset_ms": None,
        "true_offset_ms": None, "media_seconds": 900.0, "peak_risk": risk, **extra,
    }  # fmt: skip


def test_report_figures_and_outputs(tmp_path: Path) -> None:
    rows = [
        _row("genuine", 0.2),
        _row("genuine", 0.5, "suspicious", alarms=[{"t_end": 3.0}]),
        _row(
            "shift+400ms",
            0.5,
            "suspicious",
            time_to_alert_s=2.0,
            offset_ms=390.0,
            true_offset_ms=400,
        ),
        _row("shift+400ms", 0.9, "alert", time_to_alert_s=4.0, offset_ms=300.0, true_offset_ms=400),
        _row("lipsync_fake", 0.1),
        _row("known_fake", 0.6, "suspicious", time_to_alert_s=1.0),
    ]
    summary = report.summarize(rows)
    shift = summary["categories"]["shift+400ms"]
    assert shift["auc"] == pytest.approx(0.875) and shift["offset_within_40ms"] == 0.5
    assert (
        shift["time_to_alert_median_s"] == pytest.approx(3.0) and shift["flagged_fraction"] == 1.0
    )
    assert summary["categories"]["known_fake"]["n"] == 2  # lip-sync fakes count as known fakes
    assert summary["categories"]["lipsync_fake"]["auc"] == 0.0
    genuine = summary["genuine"]
    assert genuine["alarms"] == 1 and genuine["false_alarms_per_hour"] == pytest.approx(2.0)
    assert list(summary["categories"]) == ["shift+400ms", "known_fake", "lipsync_fake"]
    table = report.markdown_table(summary)
    assert "| shift+400ms | 2 | 0.88 |" in table and "2 false alarms per hour" in table
    assert summary["categories"]["lipsync_fake"]["auc_peak_risk"] == 0.0
    report.roc_plot(rows, summary, tmp_path / "roc.png", "test")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----- tools/eval.py end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_eval_tool_end_to_end(tmp_path: Path) -> None:
    """Two tiny clips without a face: every window is insufficient evidence, so every risk
    is 0; what is checked is that every category is built, replayed and reported."""
    from monitor.synth.speech import espeak_available

    clips = tmp_path / "clips"
    clips.mkdir()
    for seed in (5, 6):
        write_noise_clip(clips / f"clip{seed}.mp4", seed, seconds=2.0)
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "tools" / "eval.py"), str(clips), "--out", str(out),
        "--cache", str(tmp_path / "cache"), "--jobs", "1", "--shifts", "200",
        "--lip-sync", "baseline", "--detectors", "lip_sync",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    expected = {"shift+200ms", "shift-200ms", "swap", "frozen", "looped"}
    expected |= {"tts"} if espeak_available() else set()
    assert set(result["categories"]) == expected
    assert result["genuine"]["n"] == 2 and len(result["variants"]) == 2 * (len(expected) + 1)
    assert all(r["risk"] == 0.0 and r["windows_scored"] == 0 for r in result["variants"])
    assert result["detectors"] == ["lip_sync baseline-1"]
    assert (out / "roc.png").exists() and "| swap | 2 |" in (out / "results.md").read_text()
    assert len(list((out / "events").glob("*.jsonl"))) == len(result["variants"])
    bad = subprocess.run([*command[:2], str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


# ----- tools/bench.py parts -------------------------------------------------------------------


def test_bench_replay_worker_reports_stage_costs(tmp_path: Path) -> None:
    """The one-core worker runs ``dfmon replay`` and reports what the bench tabulates."""
    clip = write_noise_clip(tmp_path / "bench.mp4", 9, seconds=2.0)
    command = [
        sys.executable,
        str(ROOT / "tools" / "bench.py"),
        "--worker",
        "replay",
        str(clip),
        repr(time.time()),
        str(tmp_path / "result.json"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["video_frames"] == 50 and result["media_seconds"] == pytest.approx(2.0, abs=0.05)
    assert set(result["stage_seconds"]) >= {
        "decode",
        "landmarks",
        "audio_features",
        "detectors",
        "fusion",
    }
    assert result["stage_seconds"]["landmarks"] > 0 and result["replay_seconds"] > 0
    # From the process's spawn: imports first, then the first frame through the tracker.
    assert 0 < result["marks"]["imported"] < result["marks"]["first_frame"] < 120
    assert result["peak_rss_mib"] > 50  # the interpreter, MediaPipe and numpy at least
