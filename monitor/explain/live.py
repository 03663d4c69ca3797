"""The compact explanation an ``alert`` event carries: why, without the media.

A websocket consumer (a dashboard, a SOC tool) gets the alert but not the video, so the
alert itself says what the evidence was:

* ``contributions``: each detector's log-likelihood ratio in the window (nats, from the
  calibrated decision) and its share of the window's evidence for manipulation;
* ``offset_curve``: a summary of the lip-sync distance-vs-lag curve (best lag, how far
  below the median and the zero-lag distance it sits, inside or outside the band
  genuine calls fall in);
* ``top_segments``: the stretches of the window where the evidence is clearest. When the
  curve says "offset", a segment's support is how much better lips and loudness agree at
  the detected offset than at zero lag; otherwise it is how badly they agree while
  someone speaks;
* ``boundary_map``: where on the face the artifact detector sees a blend seam (a 16x16
  grid over the aligned face crop with the face's key points, see
  :mod:`monitor.detectors.artifact.evidence`), its region and its strength in sigma.

Everything is computed from numbers the window and the evidence already hold (lip
aperture, loudness, the curve): microseconds per alert, no model call, so the pipeline
can afford it on every alert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monitor.detectors.base import GENUINE_OFFSET_MS, Evidence, format_media_time
from monitor.windows import AnalysisWindow

EXPLANATION_VERSION = 2
SEGMENT_S = 0.5
SEGMENT_HOP_S = 0.25
TOP_SEGMENTS = 3
# A curve whose minimum is this share of its range below its median has a clear minimum.
CLEAR_MINIMUM_SHARE = 0.3


def contributions(evidence: Sequence[Evidence], llrs: Mapping[str, float]) -> list[dict[str, Any]]:
    """Each detector's log-likelihood ratio (nats; ``llrs`` from the decision) and its
    share of the window's evidence for manipulation (the positive ratios' sum)."""
    positive = sum(v for v in llrs.values() if v > 0)
    out = [
        {
            "detector": e.detector,
            "score": None if e.score is None else round(e.score, 3),
            "llr": None if e.detector not in llrs else round(llrs[e.detector], 3),
            "share": round(max(llrs.get(e.detector, 0.0), 0.0) / positive, 3)
            if positive > 0
            else 0.0,
        }
        for e in evidence
    ]
    return sorted(out, key=lambda item: (-float(item["share"]), -(item["llr"] or 0.0)))


def summarize_curve(lags_ms: Sequence[float], distances: Sequence[float]) -> dict[str, Any] | None:
    """Best lag and shape of a distance-vs-lag curve (lower distance = better match)."""
    lags = np.asarray(lags_ms, dtype=np.float64)
    curve = np.asarray(distances, dtype=np.float64)
    if len(lags) < 3 or len(lags) != len(curve) or not np.all(np.isfinite(curve)):
        return None
    best = int(np.argmin(curve))
    low, high, median = float(curve.min()), float(curve.max()), float(np.median(curve))
    at_zero = float(np.interp(0.0, lags, curve))
    spread = high - low
    clear = spread > 1e-9 and (median - low) >= CLEAR_MINIMUM_SHARE * spread
    best_lag = float(lags[best])
    return {
        "best_lag_ms": round(best_lag, 1),
        "distance_at_best": round(low, 4),
        "distance_at_zero": round(at_zero, 4),
        "median_distance": round(median, 4),
        "confidence": round(median - low, 4),  # SyncNet's: median minus minimum
        "zero_lag_excess": round(at_zero - low, 4),
        "shape": "clear minimum" if clear else "flat",
        "genuine_band_ms": GENUINE_OFFSET_MS,
        "in_genuine_band": abs(best_lag) <= GENUINE_OFFSET_MS,
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-12 else 0.0


def top_segments(
    window: AnalysisWindow, offset_ms: float | None, k: int = TOP_SEGMENTS
) -> list[dict[str, Any]]:
    """The ``k`` stretches of the window where lips and speech show the problem most."""
    faces = window.face_frames
    if len(faces) < 2 or len(window.audio) == 0:
        return []
    frame_t = np.array([f.t for f in faces])
    aperture = np.array([f.face.aperture for f in faces])  # type: ignore[union-attr]
    audio_t = window.audio.times
    envelope = np.maximum(window.audio.loudness_db.astype(np.float64), -60.0)
    voiced = window.audio.voiced
    shifted = offset_ms is not None and abs(offset_ms) > GENUINE_OFFSET_MS
    lag_rows = int(round((offset_ms or 0.0) / 1000.0 / window.audio.hop_s))
    segments: list[dict[str, Any]] = []
    start = window.t_start
    while start + SEGMENT_S <= window.t_end + 1e-9:
        rows = np.flatnonzero((audio_t >= start) & (audio_t < start + SEGMENT_S))
        if len(rows) >= 5 and rows[-1] + lag_rows < len(envelope) and rows[0] + lag_rows >= 0:
            lips = np.interp(audio_t[rows], frame_t, aperture)
            at_zero = _corr(lips, envelope[rows])
            speech = float(voiced[rows].mean())
            if shifted:
                at_offset = _corr(lips, envelope[rows + lag_rows])
                support = at_offset - at_zero
                reason = (
                    f"lips match the audio {offset_ms:+.0f} ms later "
                    f"(correlation {at_offset:.2f} vs {at_zero:.2f} at 0 ms)"
                )
            else:
                support = speech * (1.0 - at_zero) / 2.0
                reason = (
                    "speech with little matching lip motion "
                    f"(lip-loudness correlation {at_zero:.2f})"
                )
            segments.append(
                {
                    "t": [round(start, 3), round(start + SEGMENT_S, 3)],
                    "support": round(float(support), 3),
                    "speech": round(speech, 2),
                    "reason": reason,
                }
            )
        start += SEGMENT_HOP_S
    ranked = sorted((s for s in segments if s["support"] > 0), key=lambda s: -s["support"])
    chosen: list[dict[str, Any]] = []
    for segment in ranked:  # no two overlapping segments
        if all(segment["t"][1] <= c["t"][0] or segment["t"][0] >= c["t"][1] for c in chosen):
            chosen.append(segment)
        if len(chosen) == k:
            break
    return sorted(chosen, key=lambda s: s["t"][0])


def compact_explanation(
    window: AnalysisWindow,
    evidence: Sequence[Evidence],
    llrs: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """A small JSON object (well under 2 kB) saying why this window changed the level;
    ``llrs``: each detector's log-likelihood ratio in it (the decision's contributions)."""
    llrs = llrs or {}
    lip_sync = next((e for e in evidence if e.detector == "lip_sync"), None)
    curve = None
    offset_ms = None
    if lip_sync is not None:
        fields = lip_sync.fields
        # A plugin may name itself lip_sync with other fields: explain what parses, never raise.
        try:
            if fields.get("lag_curve_ms") is not None and fields.get("lag_curve") is not None:
                curve = summarize_curve(fields["lag_curve_ms"], fields["lag_curve"])
            offset = fields.get("offset_ms")
            offset_ms = float(offset) if offset is not None else None
        except (TypeError, ValueError):
            curve, offset_ms = None, None
        if offset_ms is None and curve is not None:
            offset_ms = curve["best_lag_ms"]
    segments = top_segments(window, offset_ms)
    out: dict[str, Any] = {
        "version": EXPLANATION_VERSION,
        "window": [round(window.t_start, 3), round(window.t_end, 3)],
        "contributions": contributions(evidence, llrs),
        "speech_fraction": round(window.speech_fraction(), 2),
        "face_fraction": round(window.face_fraction, 2),
        "offset_curve": curve,
        "top_segments": segments,
        "boundary_map": boundary_map(evidence),
    }
    out["summary"] = _summary(out, lip_sync)
    return out


def boundary_map(evidence: Sequence[Evidence]) -> dict[str, Any] | None:
    """The artifact detector's seam map with its region and z, when it had evidence."""
    artifact = next((e for e in evidence if e.detector == "artifact"), None)
    if artifact is None or artifact.score is None:
        return None
    grid = artifact.fields.get("boundary_map")
    if not isinstance(grid, dict):
        return None
    return {"region": artifact.fields.get("region"), "z": artifact.fields.get("z"), **grid}


def _summary(explanation: dict[str, Any], lip_sync: Evidence | None) -> str:
    parts: list[str] = []
    top = explanation["contributions"][0] if explanation["contributions"] else None
    if top is not None and top["share"] > 0:
        parts.append(
            f"{top['detector']} carries {top['share']:.0%} of the evidence ({top['llr']:+.1f} nats)"
        )
    curve = explanation["offset_curve"]
    if curve is not None:
        where = "inside" if curve["in_genuine_band"] else "outside"
        parts.append(
            f"lips match the audio best at {curve['best_lag_ms']:+.0f} ms ({curve['shape']}, "
            f"{where} the +-{GENUINE_OFFSET_MS:.0f} ms band of genuine calls)"
        )
    elif lip_sync is not None and lip_sync.fields.get("note"):
        parts.append(f"lip-sync: {lip_sync.fields['note']}")
    seam = explanation["boundary_map"]
    if seam is not None and isinstance(seam.get("z"), int | float) and seam["z"] >= 2:
        region = str(seam.get("region") or "face").replace("_", " ").replace("none", "face")
        parts.append(f"blend seam at the {region}, {seam['z']:.1f} sigma above genuine video")
    if explanation["top_segments"]:
        spans = ", ".join(
            f"{format_media_time(s['t'][0])}-{format_media_time(s['t'][1])}"
            for s in explanation["top_segments"]
        )
        parts.append(f"clearest at {spans}")
    return "; ".join(parts) or "no detector had sufficient evidence"
