#!/usr/bin/env python3
"""Active-speaker choice on two real speakers side by side, from the training pool.

    .venv/bin/python tools/eval_speaker.py [../shared/data/train] [--pairs 12] [--seconds 8]

For each pair of real clips with audio (speaker A, another person B) four composites are
made in memory, as issue 16 describes (both scaled to 320 px high, side by side, A's
audio): A left of B, A right of B, and both again with B frozen on its first frame (a
still photo beside the speaker). Every composite goes through the face tracker, then
through 2 s windows 0.5 s apart, where :class:`~monitor.features.speaker.SpeakerSelector`
chooses the face to score. Reported: of the windows with speech, how many chose A (right),
B (wrong) or no face (insufficient evidence), and the per-window correlations of A's and
B's mouths with the speech that the thresholds in monitor/features/speaker.py are read
from. Nothing here is tuned on ../shared/data/dev.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.config import FaceConfig, MonitorConfig  # noqa: E402
from monitor.features.audio import compute_audio_features  # noqa: E402
from monitor.features.face import MediaPipeFaceTracker  # noqa: E402
from monitor.features.speaker import (  # noqa: E402
    SpeakerSelector,
    face_tracks,
    mouth_speech_correlation,
    window_of_speaker,
)
from monitor.features.types import FrameFeatures  # noqa: E402
from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame  # noqa: E402
from monitor.sources.file import FileSource  # noqa: E402
from monitor.windows import AnalysisWindow  # noqa: E402

HEIGHT = 320


def clips_with_audio(data: Path) -> list[Path]:
    with (data / "MANIFEST.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [data / r["file"] for r in rows if r["label"] == "real" and r["has_audio"] == "yes"]


def load(path: Path, seconds: float) -> tuple[list[VideoFrame], np.ndarray]:
    frames, chunks = [], []
    with FileSource(path) as source:
        for item in source:
            if isinstance(item, VideoFrame):
                if item.t < seconds:
                    frames.append(item)
            elif isinstance(item, AudioChunk) and item.t < seconds + 1:
                chunks.append(item)
    samples = np.zeros(int((seconds + 1) * AUDIO_RATE), np.float32)
    for chunk in chunks:
        start = int(round(chunk.t * AUDIO_RATE))
        if 0 <= start < len(samples):
            part = chunk.samples[: len(samples) - start]
            samples[start : start + len(part)] = part
    return frames, samples


def scaled(image: np.ndarray, width: int | None = None) -> np.ndarray:
    height, w = image.shape[:2]
    size = (width or max(2, round(w * HEIGHT / height)), HEIGHT)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def composite(
    a: list[VideoFrame], b: list[VideoFrame], a_left: bool, still: bool
) -> list[VideoFrame]:
    out = []
    b_times = np.array([f.t for f in b])
    for frame in a:
        other = b[0] if still else b[int(np.argmin(np.abs(b_times - frame.t % max(b[-1].t, 0.04))))]
        left, right = scaled(frame.image), scaled(other.image, HEIGHT)
        if not a_left:
            left, right = right, left
        out.append(VideoFrame(frame.t, frame.index, np.ascontiguousarray(np.hstack([left, right]))))
    return out


def evaluate(frames: list[VideoFrame], samples: np.ndarray, a_left: bool) -> list[dict]:
    tracker = MediaPipeFaceTracker(FaceConfig())
    features = []
    for frame in frames:
        faces = tracker.track_faces(frame)
        features.append(
            FrameFeatures(
                frame.t, frame.index, frame.image.shape[:2], faces[0] if faces else None, faces
            )
        )
    tracker.close()
    width = frames[0].image.shape[1]
    config = MonitorConfig()
    try:
        from monitor.detectors.lip_sync_learned import LearnedSyncDetector

        detector = LearnedSyncDetector(config)
    except Exception:  # the learned model is not installed: correlations only
        detector = None
    scorer = detector.speaker_scorer() if detector is not None else None
    selector = SpeakerSelector(scorer, config.window.min_face_fraction)
    rows = []
    end = frames[-1].t
    t_start = 0.0
    while t_start + config.window.window_s <= end:
        t_end = t_start + config.window.window_s
        context = config.window.max_lag_s
        lo = max(0, int(round((t_start - context) * AUDIO_RATE)))
        audio = compute_audio_features(
            samples[lo : int(round((t_end + context) * AUDIO_RATE))], lo / AUDIO_RATE
        )
        frames_in = tuple(f for f in features if t_start <= f.t < t_end)
        span = samples[lo : int(round((t_end + context) * AUDIO_RATE))]
        window = AnalysisWindow("eval", len(rows), t_start, t_end, context, frames_in, span, audio)
        inside = (audio.times >= t_start) & (audio.times < t_end)
        speech = bool(
            inside.any() and audio.voiced[inside].mean() >= config.window.min_speech_fraction
        )
        choice = selector.choose(window, speech)
        tracks = face_tracks(frames_in)
        row = {
            "t_start": t_start,
            "speech": speech,
            "faces": len(tracks),
            "chosen": None,
        }
        sides = {}
        for tid, obs in tracks.items():
            x0, _, x1, _ = obs[-1][1].face_box
            side = sides[tid] = "a" if ((x0 + x1) / 2 < width / 2) == a_left else "b"
            times = np.array([t for t, _ in obs])
            apertures = np.array([f.aperture for _, f in obs])
            row[f"corr_{side}"] = mouth_speech_correlation(times, apertures, audio)
            row[f"corr_near_{side}"] = mouth_speech_correlation(times, apertures, audio, 0.12)
            if scorer is not None:
                row[f"sync_{side}"] = scorer.score(window_of_speaker(window, tid))
        if choice.track_id is not None:
            row["chosen"] = sides.get(choice.track_id, "?").upper()
        rows.append(row)
        t_start += config.window.hop_s
    return rows


def _separation(results: list[dict], key: str, label: str) -> str:
    """How well a per-window figure tells speaker A from the other speaking face B."""
    rows = [r for x in results if not x["still"] for r in x["rows"] if r["speech"]]
    pairs = [
        (r[f"{key}_a"], r[f"{key}_b"])
        for r in rows
        if r.get(f"{key}_a") is not None and r.get(f"{key}_b") is not None
    ]
    if not pairs:
        return f"- {label}: not measured"
    a, b = np.array(pairs, dtype=float).T
    return (
        f"- {label}: A median {np.median(a):.2f} (p10 {np.percentile(a, 10):.2f}), "
        f"B median {np.median(b):.2f} (p90 {np.percentile(b, 90):.2f}); A above B in "
        f"{np.mean(a > b):.0%} of {len(pairs)} windows with both faces and speech"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", default="/tmp/dfmon-speaker")
    args = parser.parse_args()
    data = Path(args.data)
    clips = clips_with_audio(data)
    results = []
    step = max(1, len(clips) // 2)
    for i in range(min(args.pairs, len(clips))):
        a_path, b_path = clips[i], clips[(i + step) % len(clips)]
        a, samples = load(a_path, args.seconds)
        b, _ = load(b_path, args.seconds)
        if len(a) < 60 or len(b) < 10:
            continue
        for a_left in (True, False):
            for still in (False, True):
                rows = evaluate(composite(a, b, a_left, still), samples, a_left)
                speech = [r for r in rows if r["speech"]]
                counts = {k: sum(r["chosen"] == k for r in speech) for k in ("A", "B", None)}
                results.append(
                    {
                        "a": a_path.name, "b": b_path.name, "a_left": a_left, "still": still,
                        "windows": len(speech), "right": counts["A"], "wrong": counts["B"],
                        "none": counts[None], "rows": rows,
                    }
                )  # fmt: skip
                sys.stderr.write(
                    f"{a_path.name[:30]:30s} + {b_path.name[:30]:30s} "
                    f"{'A left ' if a_left else 'A right'} {'still' if still else 'moving'}: "
                    f"right {counts['A']}, wrong {counts['B']}, none {counts[None]} "
                    f"of {len(speech)}\n"
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speaker.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| composite | windows with speech | right | wrong | no face chosen |",
        "|---|---:|---:|---:|---:|",
    ]
    for still in (False, True):
        for a_left in (True, False):
            group = [r for r in results if r["still"] == still and r["a_left"] == a_left]
            if not group:
                continue
            total = sum(r["windows"] for r in group)
            label = f"A {'left' if a_left else 'right'}, B {'still' if still else 'speaking'}"
            lines.append(
                f"| {label} | {total} | {sum(r['right'] for r in group)} | "
                f"{sum(r['wrong'] for r in group)} | {sum(r['none'] for r in group)} |"
            )
    lines.append("")
    for key, label in (
        ("corr", "mouth-loudness correlation, lags +-0.6 s"),
        ("corr_near", "mouth-loudness correlation, lags +-0.12 s"),
        ("sync", "learned sync confidence"),
    ):
        lines.append(_separation(results, key, label))
    text = "\n".join(lines) + "\n"
    (out / "speaker.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
