"""Attribution of one alert with the learned sync model, and its part of the report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.detectors.base import format_span
from monitor.errors import InputError
from monitor.explain.inputs import MOUTH_REGION_GRID
from monitor.report import html, plots
from monitor.report.events import lip_sync_evidence

if TYPE_CHECKING:
    from monitor.explain.explainer import Explanation
    from monitor.explain.sync_target import SyncTarget
    from monitor.report.confidence import LearnedSync
    from monitor.windows import AnalysisWindow

log = logging.getLogger(__name__)


@dataclass
class AttributionOptions:
    """How much attribution work the report does (each alert costs seconds on a CPU)."""

    max_alerts: int = 3
    ig_steps: int = 16
    n_random: int = 8


@dataclass
class AlertAttribution:
    alert: dict[str, Any]
    explanation: Explanation | None = None
    target: SyncTarget | None = None
    error: str | None = None
    figures: dict[str, bytes] = field(default_factory=dict)

    @property
    def span(self) -> str:
        return format_span(self.alert["t_start"], self.alert["t_end"])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t_start": self.alert["t_start"],
            "t_end": self.alert["t_end"],
            "level": self.alert["level"],
        }
        if self.error is not None:
            out["error"] = self.error
        if self.explanation is not None and self.target is not None:
            out["mode"] = self.target.mode
            out["offset_ms"] = self.target.offset_ms
            out.update(self.explanation.to_json())
        return out

    def html(self) -> str:
        title = (
            f"<h3>Alert {html.esc(self.span)}: {html.esc(self.alert['previous_level'])} -> "
            f"{html.esc(self.alert['level'])}</h3>"
        )
        if self.explanation is None or self.target is None:
            return title + f"<p class='note'>Not attributed: {html.esc(self.error)}</p>"
        ex = self.explanation
        parts = [
            title,
            f"<p>Explained score: {html.esc(ex.target)} = <b>{ex.score:.3f}</b>.</p>",
        ]
        captions = {
            "attribution-time": (
                "Attribution per 0.2 s segment of the lips (top) and of the audio (bottom), "
                "in the explained score's units: how much of the score each segment carries. "
                "The window is shaded; the audio spans 0.6 s more on each side, where the "
                "matching audio of a delayed track lies."
            ),
            "attribution-maps": (
                "Where the evidence sits: white-box attribution per mel bin over time and per "
                "mouth pixel (summed over the window; red raises the mismatch score, blue "
                "lowers it); black-box score drop when a mouth region or a frequency range is "
                "replaced by the baseline."
            ),
            "deletion": (
                "Deletion test: share of the score removed when the top-ranked units are "
                "replaced by the baseline, against the same number of random units (mean of "
                "several random orders). Higher than random = faithful."
            ),
        }
        for name, caption in captions.items():
            if name in self.figures:
                parts.append(html.figure(name, self.figures[name], name, caption))
        rows = []
        for method in ex.methods:
            time_del = method.deletion["time"]
            top = time_del.removed_by_method
            rand = time_del.removed_by_random
            gap = "-" if method.maps is None else f"{method.maps.completeness_gap:.4f}"
            rows.append(
                (
                    f"{method.kind}: {method.name}",
                    _fmt(method.faithfulness("time")),
                    _fmt(method.faithfulness("time-swap")),
                    _fmt(method.faithfulness("region")),
                    "-" if top is None else f"{top[1]:.0%}",
                    "-" if rand is None else f"{rand[1]:.0%}",
                    f"{method.seconds:.1f} s",
                    gap,
                )
            )
        parts.append(
            html.table(
                [
                    "method",
                    "faithfulness: time segments",
                    "time segments, swapped",
                    "faithfulness: regions",
                    "score removed by top 20 % of segments",
                    "by 20 % random segments",
                    "time",
                    "IG completeness gap",
                ],
                rows,
                numeric=(1, 2, 3, 4, 5, 6, 7),
            )
        )
        tops = []
        for method in ex.methods:
            units = ", ".join(
                f"{unit.label} ({value:+.3f})" for unit, value in ex.top_units(method.kind, "time")
            )
            regions = ", ".join(
                f"{unit.label} ({value:+.3f})"
                for unit, value in ex.top_units(method.kind, "region", 2)
            )
            tops.append(
                f"<li><b>{html.esc(method.kind)}</b>: segments {html.esc(units)}; "
                f"regions {html.esc(regions)}</li>"
            )
        agreement = ex.agreement("time")
        parts.append(
            f"<ul>{''.join(tops)}</ul><p>Rank agreement of the two methods (Spearman) over "
            f"time segments: {_fmt(agreement)}; over regions: {_fmt(ex.agreement('region'))}.</p>"
        )
        return "".join(parts)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def attribute_alert(
    alert: dict[str, Any],
    window: AnalysisWindow | None,
    learned: LearnedSync,
    method: str,
    options: AttributionOptions,
) -> AlertAttribution:
    """Explain the learned model on the alert's window (the session's, re-cut from the
    media; None when the media has no such window); errors become a stated reason."""
    from monitor.explain.explainer import explain_example
    from monitor.explain.sync_target import (
        SyncMismatchScorer,
        distance_curve_fn,
        prepare_target,
        sync_mismatch_module,
    )
    from monitor.sync.features import GRID_STEP_S, MAX_LAG_FRAMES, track_from_frames

    result = AlertAttribution(alert)
    if window is None:
        result.error = "the media has no analysis window at this alert's time"
        return result
    if not window.frames or not window.has_audio_stream:
        result.error = "the media has no frames or no audio in this window"
        return result
    evidence = lip_sync_evidence(alert) or {}
    offset = evidence.get("offset_ms") if method == "learned" else None
    t0, t1 = window.t_start, window.t_end
    max_lag = min(MAX_LAG_FRAMES, int(np.floor(window.context_s / GRID_STEP_S + 1e-6)))
    try:
        target = prepare_target(
            track_from_frames(window.frames),
            window.audio,
            t0,
            t1,
            distance_curve_fn(learned.embed),
            offset_ms=offset,
            max_lag=max_lag,
        )
        scorer = SyncMismatchScorer(target, learned.embed)
        module = None if learned.model is None else sync_mismatch_module(learned.model, target)
        explanation = explain_example(
            target.example,
            scorer,
            white_box=module,  # type: ignore[arg-type]
            target=target.describe(),
            ig_steps=options.ig_steps,
            n_random=options.n_random,
        )
    except InputError as exc:
        result.error = str(exc)
        return result
    result.target, result.explanation = target, explanation
    try:
        result.figures = _figures(explanation, target, (t0, t1))
    except Exception:  # a figure must not cost the numbers
        log.exception("attribution figures failed for %s", result.span)
    return result


def _figures(ex: Explanation, target: SyncTarget, window: tuple[float, float]) -> dict[str, bytes]:
    white, black = ex.method("white-box"), ex.method("black-box")
    assert black is not None
    time_units = ex.units["time"]
    white_time = white.units["time"] if white is not None else np.full(len(time_units), np.nan)
    rows = {"video": [], "audio": []}  # type: dict[str, list[tuple[float, float, float, float]]]
    for unit, w, b in zip(time_units, white_time, black.units["time"], strict=True):
        rows[unit.modality].append((unit.t0 or 0.0, unit.t1 or 0.0, float(w), float(b)))
    figures = {
        "attribution-time": plots.attribution_time(
            rows["video"],
            rows["audio"],
            window,
            target.offset_ms if target.mode == "offset" else None,
        )
    }
    regions = ex.units["region"]
    region_values = black.units["region"]
    video_regions = np.array(
        [v for u, v in zip(regions, region_values, strict=True) if u.modality == "video"]
    )
    bands = [
        (u.label, v) for u, v in zip(regions, region_values, strict=True) if u.modality == "audio"
    ]
    maps = None if white is None else white.maps
    figures["attribution-maps"] = plots.attribution_maps(
        None if maps is None else maps.mel,
        ex.example.audio_t0,
        ex.example.audio_step,
        None if maps is None else maps.mouth.sum(axis=0),
        ex.example.mouth_baseline,
        video_regions.reshape(MOUTH_REGION_GRID),
        np.array([v for _, v in bands]),
        [label.removeprefix("audio ") for label, _ in bands],
    )
    curves = []
    for method in ex.methods:
        for family in ("time", "region", "time-swap"):
            deletion = method.deletion[family]
            removed, random = deletion.removed_by_method, deletion.removed_by_random
            if removed is None or random is None:
                continue
            curves.append(
                (family, f"{method.kind}: {method.name}", deletion.fractions, removed, random)
            )
    if curves:
        figures["deletion"] = plots.deletion_curves(curves)
    return figures
