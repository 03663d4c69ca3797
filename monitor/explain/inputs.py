"""What attribution looks at: one window's mouth crops and log-mel, cut into evidence units.

Attribution needs one shape of input whatever model is explained, so an
:class:`AVExample` holds the raw evidence of one window on two clocks: grayscale mouth
crops on the video grid (time, height, width), optional per-frame lip geometry that
travels with the frames, and log-mel rows at 100 Hz (time, band).

Removing evidence means replacing it with a *baseline* that carries no sync
information: the window's average mouth (a mouth that does not move) and each mel band's
quiet level (background noise instead of speech). Occlusion, integrated gradients and
the deletion test all use these same baselines, so their numbers are comparable.

Evidence comes in :class:`Unit` boxes an investigator can name: 0.2 s time segments of
the video or the audio ("what happened when"), and mouth regions or mel bands over the
whole window ("where in the picture, which frequencies").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from monitor.detectors.base import format_span
from monitor.errors import InputError
from monitor.features.audio import MEL_FMAX_HZ, MEL_FMIN_HZ

SEGMENT_S = 0.2  # time-unit length: one SyncNet stack (5 frames at 25 fps, 20 mel rows)
MOUTH_REGION_GRID = (3, 4)  # rows x columns of the mouth crop
MEL_BAND_GROUPS = 8  # mel bands are grouped into this many frequency ranges
# Quiet level of a band: this percentile of its log-mel over the window (its noise floor).
MEL_BASELINE_PERCENTILE = 5.0


class ExplanationInputError(InputError):
    """The evidence handed to attribution has inconsistent shapes or no usable content."""


@dataclass(frozen=True)
class Unit:
    """One box of evidence: a slice of the mouth array (video) or of the mel array (audio)."""

    label: str
    family: str  # "time" (a segment of one modality) or "region" (a place over all time)
    modality: str  # "video" or "audio"
    index: tuple[slice, ...]  # into mouth (T, H, W) or mel (A, F)
    lips_frames: slice | None = None  # video time units also remove the lip geometry
    t0: float | None = None
    t1: float | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"label": self.label, "family": self.family}
        out["modality"] = self.modality
        if self.t0 is not None and self.t1 is not None:
            out["t"] = [round(self.t0, 3), round(self.t1, 3)]
        return out


@dataclass(frozen=True)
class AVExample:
    """One window's evidence and the baselines that stand for "no evidence"."""

    mouth: np.ndarray  # (T, H, W) float32 grayscale 0..255, one per video step
    mel: np.ndarray  # (A, F) float32 natural-log mel power
    lips: np.ndarray | None  # (T, K) float32 per-frame lip geometry, or None
    video_t0: float
    video_step: float
    audio_t0: float
    audio_step: float
    mouth_baseline: np.ndarray = field(repr=False)  # (H, W)
    mel_baseline: np.ndarray = field(repr=False)  # (F,)
    lips_baseline: np.ndarray | None = field(default=None, repr=False)  # (K,)

    @classmethod
    def build(
        cls,
        mouth: np.ndarray,
        mel: np.ndarray,
        *,
        video_t0: float,
        video_step: float,
        audio_t0: float,
        audio_step: float,
        lips: np.ndarray | None = None,
        has_face: np.ndarray | None = None,
    ) -> AVExample:
        """Check shapes and derive the baselines (a still average mouth, band noise floors)."""
        mouth = np.asarray(mouth, dtype=np.float32)
        mel = np.asarray(mel, dtype=np.float32)
        if mouth.ndim != 3 or len(mouth) == 0:
            raise ExplanationInputError(
                f"mouth crops must be (T, H, W) with T > 0, got {mouth.shape}"
            )
        if mel.ndim != 2 or len(mel) == 0:
            raise ExplanationInputError(f"log-mel must be (A, F) with A > 0, got {mel.shape}")
        if lips is not None:
            lips = np.asarray(lips, dtype=np.float32)
            if lips.ndim != 2 or len(lips) != len(mouth):
                raise ExplanationInputError(
                    f"lip geometry must be (T, K) with T = {len(mouth)}, got {lips.shape}"
                )
        if not (video_step > 0 and audio_step > 0):
            raise ExplanationInputError("video and audio steps must be positive")
        if has_face is None:
            has_face = np.ones(len(mouth), bool)
        has_face = np.asarray(has_face, dtype=bool)
        if not has_face.any():
            raise ExplanationInputError("no frame of the window has a face")
        mouth_baseline = mouth[has_face].mean(axis=0)
        lips_baseline = None if lips is None else lips[has_face].mean(axis=0)
        mel_baseline = np.percentile(mel, MEL_BASELINE_PERCENTILE, axis=0).astype(np.float32)
        return cls(
            mouth=mouth,
            mel=mel,
            lips=lips,
            video_t0=float(video_t0),
            video_step=float(video_step),
            audio_t0=float(audio_t0),
            audio_step=float(audio_step),
            mouth_baseline=mouth_baseline.astype(np.float32),
            mel_baseline=mel_baseline,
            lips_baseline=None if lips_baseline is None else lips_baseline.astype(np.float32),
        )

    @property
    def n_video(self) -> int:
        return len(self.mouth)

    @property
    def n_audio(self) -> int:
        return len(self.mel)

    def baseline_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Full-size baseline inputs: every unit removed at once."""
        mouth = np.broadcast_to(self.mouth_baseline, self.mouth.shape).copy()
        mel = np.broadcast_to(self.mel_baseline, self.mel.shape).copy()
        lips = None
        if self.lips is not None and self.lips_baseline is not None:
            lips = np.broadcast_to(self.lips_baseline, self.lips.shape).copy()
        return mouth, mel, lips


def occluded(
    example: AVExample, units: Sequence[Unit]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Copies of the inputs with every unit in ``units`` replaced by its baseline."""
    mouth = example.mouth.copy()
    mel = example.mel.copy()
    lips = None if example.lips is None else example.lips.copy()
    base_mouth, base_mel, base_lips = example.baseline_arrays()
    for unit in units:
        if unit.modality == "video":
            mouth[unit.index] = base_mouth[unit.index]
            if unit.lips_frames is not None and lips is not None and base_lips is not None:
                lips[unit.lips_frames] = base_lips[unit.lips_frames]
        else:
            mel[unit.index] = base_mel[unit.index]
    return mouth, mel, lips


def swapped(
    example: AVExample, units: Sequence[Unit]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Copies of the inputs with every time unit's content replaced by real content of the
    same modality from half the span away (read from the intact input).

    The in-distribution alternative to baselines: the model sees real lips and real
    speech, just not the ones that belong there, so a score change cannot come from an
    input unlike anything it was trained on.
    """
    mouth = example.mouth.copy()
    mel = example.mel.copy()
    lips = None if example.lips is None else example.lips.copy()
    for unit in units:
        if unit.family != "time":
            raise ValueError(f"only time units can be swapped, not {unit.label}")
        source, target = (example.mouth, mouth) if unit.modality == "video" else (example.mel, mel)
        lo, hi = unit.index[0].start, unit.index[0].stop
        n = len(source)
        partner = (np.arange(lo, hi) + n // 2) % n
        target[lo:hi] = source[partner]
        if unit.lips_frames is not None and lips is not None and example.lips is not None:
            lips[lo:hi] = example.lips[partner]
    return mouth, mel, lips


def _segments(n: int, step_s: float) -> list[tuple[int, int]]:
    per_segment = max(1, int(round(SEGMENT_S / step_s)))
    return [(start, min(start + per_segment, n)) for start in range(0, n, per_segment)]


def time_units(example: AVExample) -> list[Unit]:
    """0.2 s segments of the video (crops and lip geometry) and of the audio."""
    units: list[Unit] = []
    for lo, hi in _segments(example.n_video, example.video_step):
        t0 = example.video_t0 + lo * example.video_step
        t1 = example.video_t0 + hi * example.video_step
        units.append(
            Unit(
                label=f"lips {format_span(t0, t1)}",
                family="time",
                modality="video",
                index=(slice(lo, hi), slice(None), slice(None)),
                lips_frames=slice(lo, hi),
                t0=t0,
                t1=t1,
            )
        )
    for lo, hi in _segments(example.n_audio, example.audio_step):
        t0 = example.audio_t0 + lo * example.audio_step
        t1 = example.audio_t0 + hi * example.audio_step
        units.append(
            Unit(
                label=f"audio {format_span(t0, t1)}",
                family="time",
                modality="audio",
                index=(slice(lo, hi), slice(None)),
                t0=t0,
                t1=t1,
            )
        )
    return units


def mel_band_edges_hz(n_mels: int, groups: int = MEL_BAND_GROUPS) -> list[tuple[float, float]]:
    """Frequency range of each group of mel bands (HTK mel scale, as the features use)."""
    mel_lo = 2595.0 * np.log10(1.0 + MEL_FMIN_HZ / 700.0)
    mel_hi = 2595.0 * np.log10(1.0 + MEL_FMAX_HZ / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(mel_lo, mel_hi, n_mels + 2) / 2595.0) - 1.0)
    bounds = np.linspace(0, n_mels, groups + 1).round().astype(int)
    return [
        (float(edges[lo]), float(edges[hi + 1]))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def region_units(example: AVExample) -> list[Unit]:
    """Mouth-crop regions over all frames, and mel frequency ranges over all audio."""
    units: list[Unit] = []
    height, width = example.mouth.shape[1:]
    rows, cols = MOUTH_REGION_GRID
    row_edges = np.linspace(0, height, rows + 1).round().astype(int)
    col_edges = np.linspace(0, width, cols + 1).round().astype(int)
    names = {0: "upper", rows - 1: "lower"}
    for r in range(rows):
        for c in range(cols):
            units.append(
                Unit(
                    label=f"mouth {names.get(r, 'middle')} row, column {c + 1}/{cols}",
                    family="region",
                    modality="video",
                    index=(
                        slice(None),
                        slice(row_edges[r], row_edges[r + 1]),
                        slice(col_edges[c], col_edges[c + 1]),
                    ),
                )
            )
    n_mels = example.mel.shape[1]
    bounds = np.linspace(0, n_mels, MEL_BAND_GROUPS + 1).round().astype(int)
    for (lo, hi), (f_lo, f_hi) in zip(
        zip(bounds[:-1], bounds[1:], strict=True), mel_band_edges_hz(n_mels), strict=True
    ):
        units.append(
            Unit(
                label=f"audio {f_lo:.0f}-{f_hi:.0f} Hz",
                family="region",
                modality="audio",
                index=(slice(None), slice(lo, hi)),
            )
        )
    return units
