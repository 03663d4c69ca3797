"""The detector plugin contract.

A detector is created once per session (so it may keep per-session state) and is
called with one :class:`~monitor.windows.AnalysisWindow` at a time. It returns
:class:`Evidence`; ``score=None`` means "insufficient evidence" for this window and
must never be read as "clear".

Optional, for streaming: ``observe(frame: FrameFeatures) -> None`` is called with every
frame as it arrives, before any window holding it is analysed (on the detector's own
thread, in order). A detector computes there what depends on that frame alone and keeps
it in a :class:`~monitor.features.store.FrameStore` for the overlapping windows to read.

``companion_versions: dict[str, str]`` (an attribute or property): the names and versions
of the evidence a detector also returns in :attr:`Evidence.companions` (read from the same
measurement, so nothing is computed twice); each is decided and reported as a detector of
its own.

``reads_window_face_crops: ClassVar[bool]`` (True when absent): whether ``analyze`` reads
``face_crop`` of frames an earlier window held. When no detector of a session does, the
session lets a frame drop its face crop once the first window holding it is analysed
(about 190 KiB a frame, 7 MiB a session); such a frame's ``face.face_crop`` is None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from monitor.errors import DetectorError

if TYPE_CHECKING:
    from monitor.config import MonitorConfig
    from monitor.windows import AnalysisWindow


@dataclass(slots=True)
class Evidence:
    detector: str
    score: float | None  # in [0, 1]; None: insufficient evidence
    rationale: str
    spans: list[tuple[float, float]] = field(default_factory=list)  # media seconds
    fields: dict[str, Any] = field(default_factory=dict)  # detector-specific numbers
    # Evidence of other names read from the same measurement (the lip-sync detector's
    # lip_timing): the session files each as its own detector's; never in this one's JSON.
    companions: list[Evidence] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.score is not None:
            self.score = float(min(1.0, max(0.0, self.score)))

    @property
    def sufficient(self) -> bool:
        return self.score is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "score": None if self.score is None else round(self.score, 4),
            "rationale": self.rationale,
            "spans": [[round(a, 3), round(b, 3)] for a, b in self.spans],
            **self.fields,
        }


@runtime_checkable
class Detector(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]

    def analyze(self, window: AnalysisWindow) -> Evidence: ...


DetectorFactory = Callable[["MonitorConfig"], Detector]


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    version: str
    source: str  # "builtin", "plugins/<file>", "entry point <dist>"
    factory: DetectorFactory
    error: str | None = None  # set for a plugin that failed to load (listed, never run)


# Offsets genuine calls show (codec and jitter-buffer delays, tracker smoothing). The
# session offsets of genuine speech on the real dev clips lie within +-80 ms
# (monitor/models/MODEL_CARD.md); the band adds one 40 ms frame. Every stage that calls an
# offset "in sync" reads this one value: detectors, explanations, the report.
GENUINE_OFFSET_MS = 120.0


# Windows scoring at least this are listed as spans in a session summary.
SPAN_SCORE = 0.5
# Fewer scored windows than this: a session summary is insufficient evidence.
MIN_SESSION_WINDOWS = 2


def too_few_windows(detector: str, scored_windows: int) -> Evidence | None:
    """The insufficient-evidence summary of a session with too few scored windows, else None."""
    if scored_windows >= MIN_SESSION_WINDOWS:
        return None
    return Evidence(detector, None, f"insufficient evidence: only {scored_windows} scored window")


def format_media_time(t: float) -> str:
    """00:41.5 style media time for rationales."""
    t = max(0.0, t)
    minutes, seconds = divmod(t, 60.0)
    return f"{int(minutes):02d}:{seconds:04.1f}"


def format_span(t_start: float, t_end: float) -> str:
    return f"{format_media_time(t_start)}-{format_media_time(t_end)}"


def read_calibration_json(path: Path, what: str, remedy: str) -> Any:
    """A detector's committed calibration file as JSON; :class:`DetectorError` (naming
    ``what`` and the ``remedy``) when it is missing or not JSON, so the session disables
    that detector instead of crashing."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DetectorError(f"{what} calibration {path} not found; {remedy}") from exc
    except json.JSONDecodeError as exc:
        raise DetectorError(f"{what} calibration {path} is not valid JSON: {exc}") from exc


def merge_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching (start, end) spans joined, in time order."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def describe_offset(offset_ms: float, aligned_within_ms: float) -> str:
    """Plain words for a lag, in the sign convention of ``offset_ms`` (audio later: > 0)."""
    if abs(offset_ms) <= aligned_within_ms:
        return f"lips and speech aligned within {abs(offset_ms):.0f} ms"
    if offset_ms > 0:
        return f"audio lags lips by {offset_ms:.0f} ms"
    return f"speech leads lips by {-offset_ms:.0f} ms"
