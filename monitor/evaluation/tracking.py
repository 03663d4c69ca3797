"""Cheaper face tracking against full tracking, on real clips.

Every clip is tracked twice over the same decoded frames: with the landmark model on
every frame (``landmark_interval = 1``, the reference) and with a longer interval (the
frames between carried by optical flow). On frames where both found the primary face and
the carried tracker did not run the model itself (on the others both ran the same model
on the same region and agree to float rounding):

- lip landmarks: mean distance of the 40 lip points, in percent of the face height;
- aperture: absolute difference of the inner-lip gap / face height (what the baseline
  detector and the temporal cues read), beside the clip's aperture range (5th to 95th
  percentile) for scale;
- mouth crop: mean absolute difference of the 48x96 crops the sync model sees, in grey
  levels (0-255);
- CPU milliseconds per frame of each tracker, and the share of frames on the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from monitor.config import FaceConfig
from monitor.evaluation.dataset import manifest_rows
from monitor.features.face import LIP_INDICES, MediaPipeFaceTracker
from monitor.media import VideoFrame
from monitor.sources.file import FileSource


def real_clips(data: Path) -> list[Path]:
    return [data / row["file"] for row in manifest_rows(data) if row["label"] == "real"]


def decode(path: Path, seconds: float) -> list[VideoFrame]:
    frames = []
    with FileSource(path) as source:
        for item in source:
            if isinstance(item, VideoFrame):
                if item.t >= seconds:
                    break
                frames.append(item)
    return frames


def track(frames: list[VideoFrame], interval: int) -> tuple[list, float, float]:
    """Observations, CPU ms per frame, share of frames the landmark model ran on."""
    tracker = MediaPipeFaceTracker(FaceConfig(landmark_interval=interval))
    faces = []
    cpu_s = 0.0
    for frame in frames:
        started = time.process_time()
        face = tracker.track(frame)
        cpu_s += time.process_time() - started
        faces.append((face, tracker.last_by_model))
    tracker.close()
    model_share = tracker.landmark_frames / max(1, len(frames))
    return faces, 1000 * cpu_s / max(1, len(frames)), model_share


def compare(reference: list, carried: list) -> dict[str, float] | None:
    lips = list(LIP_INDICES)
    lip_err, aperture_err, crop_err, apertures = [], [], [], []
    for (ref, _), (face, by_model) in zip(reference, carried, strict=True):
        if ref is None:
            continue
        apertures.append(ref.aperture)
        if face is None or by_model:
            continue
        height = max(ref.face_box[3] - ref.face_box[1], 1.0)
        lip_err.append(
            100 * np.linalg.norm(face.landmarks[lips] - ref.landmarks[lips], axis=1).mean() / height
        )
        aperture_err.append(abs(face.aperture - ref.aperture))
        crop_err.append(
            np.abs(face.mouth_crop.astype(np.float32) - ref.mouth_crop.astype(np.float32)).mean()
        )
    if not lip_err:
        return None
    return {
        "frames_compared": len(lip_err),
        "lip_error_pct_median": float(np.median(lip_err)),
        "lip_error_pct_p95": float(np.percentile(lip_err, 95)),
        "aperture_error_median": float(np.median(aperture_err)),
        "aperture_error_p95": float(np.percentile(aperture_err, 95)),
        "aperture_range": float(np.percentile(apertures, 95) - np.percentile(apertures, 5)),
        "mouth_crop_error_median": float(np.median(crop_err)),
        "mouth_crop_error_p95": float(np.percentile(crop_err, 95)),
    }


def evaluate_clip(path: Path, interval: int, seconds: float) -> dict[str, object] | None:
    """One clip's figures (None when no frame had a face in both runs)."""
    frames = decode(path, seconds)
    reference, reference_ms, _ = track(frames, 1)
    carried, carried_ms, model_share = track(frames, interval)
    row: dict[str, object] | None = compare(reference, carried)
    if row is None:
        return None
    row.update(
        clip=path.name,
        frames=len(frames),
        reference_ms=reference_ms,
        carried_ms=carried_ms,
        model_share=model_share,
    )
    return row


def table(rows: list[dict], interval: int, source: str, seconds: float) -> str:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    overall = {k: float(np.median([r[k] for r in rows])) for k in keys}
    lines = [
        f"landmark_interval {interval} against 1, {len(rows)} real clips of {source} "
        f"(first {seconds:.0f} s each); medians over clips of per-clip figures",
        "",
        "| figure | median | p95 within clip (median over clips) |",
        "|---|---:|---:|",
        f"| lip landmark error, % of face height | {overall['lip_error_pct_median']:.2f} | "
        f"{overall['lip_error_pct_p95']:.2f} |",
        f"| aperture error (inner-lip gap / face height) | {overall['aperture_error_median']:.4f} "
        f"| {overall['aperture_error_p95']:.4f} |",
        f"| aperture range of the clips (p5-p95) | {overall['aperture_range']:.4f} | |",
        f"| mouth crop error, grey levels | {overall['mouth_crop_error_median']:.2f} | "
        f"{overall['mouth_crop_error_p95']:.2f} |",
        f"| CPU ms per frame, full tracking | {overall['reference_ms']:.2f} | |",
        f"| CPU ms per frame, interval {interval} | {overall['carried_ms']:.2f} | |",
        f"| share of frames on the landmark model | {overall['model_share']:.2f} | |",
    ]
    return "\n".join(lines) + "\n"
