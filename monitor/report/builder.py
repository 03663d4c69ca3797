"""Build the investigator's report from a session's events and its media.

What is drawn from the events alone: the risk timeline, each detector's contribution,
the lag curves of flagged windows, the rationales. What needs the media again (see
:mod:`monitor.report.media`): per-frame sync confidence, waveform / spectrogram / lip
aperture, the mouth filmstrip, and attribution of each alert with the learned model.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from monitor import __version__
from monitor.config import MonitorConfig
from monitor.detectors.base import GENUINE_OFFSET_MS, format_media_time, format_span
from monitor.detectors.baseline_sync import STRONG_COUPLING
from monitor.errors import EventsError, OutputError
from monitor.levels import ALARM_LEVELS
from monitor.report import html, plots
from monitor.report.attribution import AlertAttribution, AttributionOptions, attribute_alert
from monitor.report.confidence import LearnedSync, load_learned_sync
from monitor.report.events import EventLog, artifact_evidence, lip_sync_evidence, load_events
from monitor.report.media import ROW_S, MediaTrace, trace_media

log = logging.getLogger(__name__)

# Baseline curves are 1 - correlation: coupled speech stays below this distance.
BASELINE_GENUINE_DISTANCE = 1.0 - STRONG_COUPLING
# A window looks genuine when its best lag is in the band and its lip-sync score below this.
GENUINE_LOOKING_SCORE = 0.5
MAX_LAG_CURVES = 6
MAX_MOMENTS = 3
STILLS_PER_MOMENT = 6
MIN_BAND_WINDOWS = 3
MAX_RATIONALES = 12


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"cannot write the report to {path}: it is a directory")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write the report to {path}: {path.parent} does not exist")


def _flagged(log_: EventLog) -> list[dict[str, Any]]:
    return [e for e in log_.scores if e.get("level") in ALARM_LEVELS]


def _alert_targets(log_: EventLog, limit: int) -> list[dict[str, Any]]:
    """Alerts worth explaining: raises to ``alert`` first, then to ``suspicious``."""
    raised = [a for a in log_.alerts if a.get("level") == "alert"]
    raised += [a for a in log_.alerts if a.get("level") == "suspicious"]
    return raised[:limit]


def _moments(log_: EventLog, targets: Sequence[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """Flagged moments for the filmstrip: the explained alerts, else the riskiest windows."""
    moments = [
        (f"{a['previous_level']} -> {a['level']}", float(a["t_start"]), float(a["t_end"]))
        for a in targets
    ]
    if moments:
        return moments[:MAX_MOMENTS]
    ranked = sorted(_flagged(log_), key=lambda e: -(e.get("window_risk") or 0.0))
    for event in ranked:
        span = (float(event["t_start"]), float(event["t_end"]))
        if all(span[1] <= m[1] or span[0] >= m[2] for m in moments):
            moments.append((f"{event['level']} window", *span))
        if len(moments) == MAX_MOMENTS:
            break
    return sorted(moments, key=lambda m: m[1])


def _curve(evidence: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    if not evidence or evidence.get("lag_curve") is None or evidence.get("lag_curve_ms") is None:
        return None
    lags = np.asarray(evidence["lag_curve_ms"], dtype=float)
    curve = np.asarray(evidence["lag_curve"], dtype=float)
    if len(lags) < 3 or len(lags) != len(curve):
        return None
    return lags, curve


def _lag_curve_windows(
    log_: EventLog, targets: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    chosen: list[tuple[dict[str, Any], np.ndarray, np.ndarray]] = []
    starts: set[float] = set()
    candidates = [s for a in targets for s in log_.scores if s["t_start"] == a["t_start"]] + sorted(
        _flagged(log_), key=lambda e: -(e.get("window_risk") or 0.0)
    )
    for event in candidates:
        curve = _curve(lip_sync_evidence(event))
        if curve is None or event["t_start"] in starts:
            continue
        starts.add(event["t_start"])
        chosen.append((event, *curve))
        if len(chosen) == MAX_LAG_CURVES:
            break
    return sorted(chosen, key=lambda item: item[0]["t_start"])


def _genuine_band(
    log_: EventLog, n_lags: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray] | None, int]:
    """10-90 % envelope of the curves of windows that look genuine (in band, low score)."""
    curves = []
    lags = None
    for event in log_.scores:
        evidence = lip_sync_evidence(event)
        curve = _curve(evidence)
        if curve is None or evidence is None or len(curve[0]) != n_lags:
            continue
        offset = evidence.get("offset_ms")
        score = evidence.get("score")
        if offset is None or abs(offset) > GENUINE_OFFSET_MS or score is None:
            continue
        if score >= GENUINE_LOOKING_SCORE:
            continue
        lags = curve[0]
        curves.append(curve[1])
    if len(curves) < MIN_BAND_WINDOWS or lags is None:
        return None, len(curves)
    stacked = np.array(curves)
    return (lags, np.percentile(stacked, 10, axis=0), np.percentile(stacked, 90, axis=0)), len(
        curves
    )


def _method(log_: EventLog) -> str:
    for event in log_.scores:
        evidence = lip_sync_evidence(event)
        if evidence and evidence.get("method"):
            return str(evidence["method"])
    version = log_.detector_versions.get("lip_sync", "")
    return "learned" if version.startswith("learned") else "baseline"


def _probe_duration(media_path: str | Path, audio_path: str | Path | None) -> float | None:
    from monitor.sources.file import FileSource

    with FileSource(media_path, audio_path=audio_path) as source:
        return source.info.duration_s


def write_report(
    events: str | Path | Iterable[dict[str, Any]],
    media_path: str | Path,
    out_html: str | Path,
    audio_path: str | Path | None = None,
    *,
    config: MonitorConfig | None = None,
    learned: LearnedSync | None | str = "auto",
    attribution: AttributionOptions | None = None,
) -> Path:
    """Write one self-contained HTML report; returns its path.

    ``learned``: the learned sync model to re-run and explain ("auto": the installed one;
    None: none, the baseline re-runs and attribution is skipped with the reason stated).
    """
    started = time.perf_counter()
    out = Path(out_html)
    _check_output(out)
    log_ = load_events(events)
    config = copy.deepcopy(config) if config is not None else MonitorConfig()
    config.window.window_s = log_.window_s  # as the events were scored
    config.window.hop_s = log_.hop_s
    attribution = attribution or AttributionOptions()
    duration = _probe_duration(media_path, audio_path)
    if duration is not None and log_.last_time() > duration + log_.window_s + 1.0:
        raise EventsError(
            f"the events run to {log_.last_time():.1f} s but {media_path} lasts {duration:.1f} s: "
            "they were not recorded from this media"
        )

    learned_reason = ""
    if learned == "auto":
        learned, learned_reason = load_learned_sync(config.lip_sync.backend)
    elif learned is None:
        learned_reason = "no learned model was given"
    assert not isinstance(learned, str)
    method = _method(log_)
    confidence_model = learned if method == "learned" else None

    targets = _alert_targets(log_, attribution.max_alerts)
    moments = _moments(log_, targets)
    still_times = [
        (g, a + (i + 0.5) * (b - a) / STILLS_PER_MOMENT)
        for g, (_, a, b) in enumerate(moments)
        for i in range(STILLS_PER_MOMENT)
    ]
    detail_spans = [(float(a["t_start"]), float(a["t_end"])) for a in targets]
    if learned is None:
        detail_spans = []
    trace = trace_media(
        media_path,
        audio_path=audio_path,
        config=config,
        detail_spans=detail_spans,
        still_times=still_times,
        learned=confidence_model,
    )
    explained: list[AlertAttribution] = []
    for alert, window in zip(targets, trace.details, strict=False):
        explained.append(attribute_alert(alert, window, learned, method, attribution))  # type: ignore[arg-type]

    document = _document(
        log_,
        trace,
        media_path,
        targets,
        moments,
        explained,
        learned,
        learned_reason,
        method,
        config,
        attribution,
    )
    try:
        out.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    log.info(
        "report %s: %.0f kB, %d alerts explained, media pass %.1f s, total %.1f s",
        out,
        len(document) / 1000,
        len(explained),
        trace.seconds,
        time.perf_counter() - started,
    )
    return out


def write_report_for_replay(
    events_path_or_list: str | Path | Iterable[dict[str, Any]],
    media_path: str | Path,
    out_html: str | Path,
    audio_path: str | Path | None = None,
    **options: Any,
) -> Path:
    """``dfmon replay --report`` and ``dfmon report``: events from a file or from memory."""
    return write_report(events_path_or_list, media_path, out_html, audio_path, **options)


# ----- the document ------------------------------------------------------------------------


def _document(
    log_: EventLog,
    trace: MediaTrace,
    media_path: str | Path,
    targets: Sequence[dict[str, Any]],
    moments: Sequence[tuple[str, float, float]],
    explained: Sequence[AlertAttribution],
    learned: LearnedSync | None,
    learned_reason: str,
    method: str,
    config: MonitorConfig,
    options: AttributionOptions,
) -> str:
    duration = max(trace.duration, log_.last_time())
    flagged_spans = _merge_spans([(e["t_start"], e["t_end"]) for e in _flagged(log_)])
    summary = log_.summary or {}
    verdict = log_.verdict
    sections = [
        _summary_section(log_, trace, verdict),
        _timeline_section(log_, config, duration),
        _contributions_section(log_, config, duration),
        _lip_sync_section(log_, trace, targets, learned, method, flagged_spans, duration),
        _filmstrip_section(trace, moments),
        _seam_section(log_, trace, moments),
        _rationale_section(log_),
        _attribution_section(explained, learned, learned_reason, targets, options),
        _method_section(trace, learned, method),
    ]
    nav = [
        ("summary", "Summary"),
        ("timeline", "Risk timeline"),
        ("contributions", "Detectors"),
        ("lip-sync", "Lip-sync"),
        ("filmstrip", "Filmstrip"),
        ("seam", "Blend seam"),
        ("rationale", "Rationale"),
        ("attribution", "Attribution"),
        ("method", "How to read"),
    ]
    title = f"dfmon report: {Path(media_path).name}"
    header = (
        f"<h1>{html.esc(title)}</h1><div class='meta'>session {html.esc(log_.session)}, "
        f"participant {html.esc(log_.participant)}; media {html.esc(Path(media_path))} "
        f"({duration:.1f} s); events from {html.esc(log_.source)}; generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by dfmon {__version__}</div>"
    )
    data = {
        "media": str(media_path),
        "session": log_.session,
        "verdict": verdict,
        "final_level": summary.get("final_level"),
        "risk": summary.get("risk"),
        "alerts": len(log_.alerts),
        "lip_sync_method": method,
        "frame_confidence_method": trace.confidence.method,
        "attribution": [item.to_json() for item in explained],
        "learned_model": None if learned is None else learned.backend,
        "learned_unavailable": learned_reason or None,
    }
    return html.page(title, header, nav, sections, data)


def _merge_spans(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _summary_section(log_: EventLog, trace: MediaTrace, verdict: str) -> str:
    summary = log_.summary or {}
    risk = summary.get("risk")
    peak = summary.get("peak") or {}
    final = summary.get("final_level")
    head = (
        f"<div class='verdict level-{html.esc(verdict)}'><b>Verdict: {html.esc(verdict)}</b>"
        + (f", risk {risk:.2f}" if isinstance(risk, int | float) else "")
        + (f"; final state {html.esc(final)}" if final else "")
        + f"; {len(log_.alerts)} level change(s) raised as alerts.</div>"
    )
    peak_text = "?"
    if peak:
        peak_text = (
            f"{peak.get('level')} at {peak.get('evidence_nats', 0):.1f} nats (risk "
            f"{peak.get('risk', 0):.2f}) over {format_span(peak['t_start'], peak['t_end'])}"
        )
    rows = [
        ("windows scored", summary.get("windows_scored", len(log_.scores))),
        ("windows with insufficient evidence", summary.get("windows_insufficient", "?")),
        ("peak of the accumulated evidence", peak_text),
        (
            "final state",
            f"{final} ({summary.get('evidence_nats', 0):.1f} nats)" if final else "?",
        ),
        ("frames with a face", f"{int(trace.has_face.sum())} of {len(trace.has_face)}"),
        ("audio", "yes" if trace.info.has_audio else "none"),
        ("frames dropped", summary.get("frames_dropped", 0)),
        ("detector errors", len(log_.errors)),
    ]
    text = summary.get("rationale") or "no summary event (the session did not finish)"
    return html.section(
        "summary",
        "Summary",
        head + f"<p><b>Session rationale:</b> {html.esc(text)}</p>" + html.table(["", ""], rows),
    )


def _timeline_section(log_: EventLog, config: MonitorConfig, duration: float) -> str:
    thresholds = (config.fusion.suspicious_threshold, config.fusion.alert_threshold)
    image = plots.risk_timeline(log_.scores, log_.alerts, thresholds, duration)
    decision = config.decision
    caption = (
        "Session risk (line: the evidence accumulated so far, on the risk scale) and each "
        "window's own risk (dots: its log-likelihood ratio as a probability), at the end "
        "of each window (when it was known). Suspicious starts at "
        f"{thresholds[0]} ({decision.suspicious_nats:g} nats of evidence) and alert at "
        f"{thresholds[1]} ({decision.alert_nats:g} nats); the bar below shows the session's "
        "level after each window; vertical lines mark alerts (level changes)."
    )
    return html.section(
        "timeline", "Risk timeline", html.figure("timeline", image, "risk timeline", caption)
    )


def _contributions_section(log_: EventLog, config: MonitorConfig, duration: float) -> str:
    image = plots.detector_contributions(log_.scores, duration)
    rows = []
    detectors = sorted({e["detector"] for s in log_.scores for e in s.get("evidence", [])})
    for name in detectors:
        items = [e for s in log_.scores for e in s.get("evidence", []) if e["detector"] == name]
        scored = [e for e in items if e.get("score") is not None]
        llrs = [e["llr"] for e in scored if e.get("llr") is not None]
        rows.append(
            (
                name,
                config.detectors.weights.get(name, 1.0),
                f"{len(scored)} of {len(items)}",
                f"{np.mean([e['score'] for e in scored]):.2f}" if scored else "-",
                f"{np.mean(llrs):+.2f}" if llrs else "-",
                f"{np.max(llrs):+.2f}" if llrs else "-",
            )
        )
    caption = (
        "Top: each detector's score per window. Bottom: the evidence it gave, its "
        "log-likelihood ratio in nats (manipulated against genuine, from the calibration; "
        "above 0 points to manipulation)"
    )
    if any(s.get("face_reading") for s in log_.scores):
        caption += (
            ", and the session's two readings: the lip-sync evidence summed over windows "
            "(less a small drift allowance, weighted for window overlap, never below 0), and "
            "the face reading, the face detectors' evidence of the last minute read as one "
            "face against how genuine and forged faces spread. The level follows the larger."
        )
    else:
        caption += (
            ". The session adds the windows' ratios, less a small drift allowance and "
            "weighted for window overlap, and never lets the sum fall below 0."
        )
    return html.section(
        "contributions",
        "Each detector's contribution",
        html.figure("contributions", image, "detector contributions", caption)
        + html.table(
            [
                "detector",
                "weight",
                "windows with evidence",
                "mean score",
                "mean log-likelihood ratio",
                "max log-likelihood ratio",
            ],
            rows,
            numeric=(1, 3, 4, 5),
        ),
    )


def _lip_sync_section(
    log_: EventLog,
    trace: MediaTrace,
    targets: Sequence[dict[str, Any]],
    learned: LearnedSync | None,
    method: str,
    flagged_spans: Sequence[tuple[float, float]],
    duration: float,
) -> str:
    parts = []
    windows = _lag_curve_windows(log_, targets)
    if windows:
        band, n_band = _genuine_band(log_, len(windows[0][1]))
        if method == "learned":
            dip = None if learned is None else learned.genuine_confidence
            genuine = ("relative", dip) if dip is not None else None
        else:
            genuine = ("absolute", BASELINE_GENUINE_DISTANCE)
        flagged = [
            (
                format_span(e["t_start"], e["t_end"]),
                lags,
                curve,
                (lip_sync_evidence(e) or {}).get("offset_ms"),
            )
            for e, lags, curve in windows
        ]
        image = plots.lag_curves(flagged, band, GENUINE_OFFSET_MS, genuine)
        if band is not None:
            band_text = (
                f"The grey band is the 10-90 % range of the curves of the {n_band} windows of "
                f"this call that look genuine (best lag within +-{GENUINE_OFFSET_MS:.0f} ms, "
                f"lip-sync score < {GENUINE_LOOKING_SCORE})."
            )
        else:
            band_text = (
                f"This call has {n_band} genuine-looking windows (fewer than {MIN_BAND_WINDOWS}), "
                "so the band is the documented constant: a genuine curve has its minimum within "
                f"+-{GENUINE_OFFSET_MS:.0f} ms (green) and "
                + (
                    "below the dashed line (its median minus the sync confidence 95 % of genuine "
                    "calibration windows exceed)."
                    if method == "learned"
                    else f"below the dashed line (distance {BASELINE_GENUINE_DISTANCE:.2f}, i.e. "
                    f"lip-audio correlation above {STRONG_COUPLING}, what coupled speech gives)."
                )
            )
        parts.append(
            "<h3 id='lag-curves'>Distance vs lag of the flagged windows</h3>"
            + html.figure(
                "lag-curves",
                image,
                "lag curves",
                f"Each curve: how well lips and audio match when the audio is moved by the lag "
                f"(lower = better). The red dot is the best lag. {band_text}",
            )
        )
    else:
        parts.append("<p class='note'>No flagged window carries a lip-sync lag curve.</p>")

    conf = trace.confidence
    times, values, offsets = conf.arrays()
    if len(times) and np.isfinite(values).any():
        image = plots.frame_confidence(
            times,
            values,
            offsets,
            conf.method,
            conf.genuine_confidence,
            GENUINE_OFFSET_MS,
            flagged_spans,
            duration,
        )
        how = (
            "per 40 ms step, median-filtered over 9 steps as SyncNet does"
            if conf.method == "learned"
            else "per 1 s sub-window every 0.2 s (baseline detector re-run)"
        )
        parts.append(
            "<h3 id='frame-confidence'>Sync confidence per frame</h3>"
            + html.figure(
                "frame-confidence",
                image,
                "sync confidence per frame",
                f"Confidence (median minus minimum of the distance-vs-lag curve) {how}, and the "
                "lag where lips and audio match best. Genuine speech stays in the green band "
                "near 0 ms; a steady offset outside it is what a delayed or dubbed track does.",
            )
        )
    else:
        parts.append(
            "<p class='note'>No sync confidence: no stretch of the media has both a face and "
            "speech.</p>"
        )

    image = plots.audio_and_lips(
        trace.wave_min,
        trace.wave_max,
        trace.mel,
        trace.mel_column_s,
        trace.voiced,
        trace.frame_times,
        trace.aperture,
        flagged_spans,
        duration,
        ROW_S,
    )
    parts.append(
        "<h3 id='audio-lips'>Audio and lips on one time axis</h3>"
        + html.figure(
            "audio-lips",
            image,
            "waveform, spectrogram and lip aperture",
            "Waveform (green: voice activity), log-mel spectrogram, and the inner-lip gap "
            "(fraction of face height). Flagged windows are shaded red.",
        )
    )
    zoom = windows[0] if windows else None
    if zoom is not None:
        event = zoom[0]
        t0, t1 = float(event["t_start"]), float(event["t_end"])
        rows = (np.arange(len(trace.loudness_db)) * ROW_S >= t0 - 0.6) & (
            np.arange(len(trace.loudness_db)) * ROW_S <= t1 + 0.6
        )
        frames = (trace.frame_times >= t0 - 0.6) & (trace.frame_times <= t1 + 0.6)
        offset = (lip_sync_evidence(event) or {}).get("offset_ms")
        image = plots.offset_zoom(
            t0,
            t1,
            np.flatnonzero(rows) * ROW_S,
            trace.loudness_db[rows],
            trace.frame_times[frames],
            trace.aperture[frames],
            offset,
        )
        parts.append(
            html.figure(
                "offset-zoom",
                image,
                "loudness against lip opening, one window",
                f"Window {format_span(t0, t1)} up close: audio loudness and lip opening, "
                "scaled to the same height. If the detected offset is real, the lips moved by "
                "it (dashed) line up with the loudness better than the lips as recorded.",
            )
        )
    return html.section("lip-sync", "Lip-sync evidence", "".join(parts))


def _filmstrip_section(trace: MediaTrace, moments: Sequence[tuple[str, float, float]]) -> str:
    if not moments:
        return html.section(
            "filmstrip", "Mouth filmstrip", "<p class='note'>No flagged moment to show.</p>"
        )
    groups = []
    for g, (label, a, b) in enumerate(moments):
        items = [
            (
                f"{format_media_time(s.t)}"
                + ("" if s.aperture is None else f"  gap {s.aperture:.3f}"),
                s.image,
            )
            for s in trace.stills
            if s.group == g
        ]
        groups.append((f"{label}\n{format_span(a, b)}", items))
    image = plots.filmstrip(groups)
    return html.section(
        "filmstrip",
        "Mouth filmstrip at the flagged moments",
        html.figure(
            "filmstrip",
            image,
            "mouth crops with lip landmarks",
            "The mouth crops the sync model sees (48x96, shown at twice the size), "
            f"{STILLS_PER_MOMENT} evenly spaced frames per flagged moment; green: outer lip "
            "contour, yellow: inner contour, red: the 40 lip landmarks; 'gap': inner-lip gap "
            "as a fraction of face height.",
        ),
    )


def _seam_section(
    log_: EventLog, trace: MediaTrace, moments: Sequence[tuple[str, float, float]]
) -> str:
    """The artifact detector's boundary map of each flagged moment over its face crops."""
    from monitor.detectors.artifact.evidence import decode_cells

    groups, maps, notes = [], [], []
    for g, (label, a, b) in enumerate(moments):
        window = min(
            log_.scores,
            key=lambda e: abs(e["t_start"] - a) + abs(e["t_end"] - b),
            default=None,
        )
        evidence = artifact_evidence(window) if window is not None else None
        seam = evidence.get("boundary_map") if evidence else None
        if not isinstance(seam, dict) or not seam.get("cells"):
            continue
        crops = [s for s in trace.stills if s.group == g]
        crops = [crops[i] for i in sorted({0, len(crops) // 2, len(crops) - 1})] if crops else []
        items = [(format_media_time(s.t), s.face_crop) for s in crops]
        where = str(evidence.get("region") or "none").replace("_", " ")
        z = evidence.get("z")
        strength = "" if z is None else f"{z:+.1f} sigma"
        groups.append((f"{label}\n{format_span(a, b)}\n{where} {strength}", items))
        maps.append(decode_cells(seam["cells"]))
        notes.append(f"{format_span(a, b)}: {evidence.get('rationale', '')}")
    if not groups:
        return html.section(
            "seam",
            "Blend seam on the face",
            "<p class='note'>No flagged moment with artifact-detector evidence.</p>",
        )
    image = plots.seam_overlays(groups, maps)
    listed = "".join(f"<li>{html.esc(note)}</li>" for note in notes)
    return html.section(
        "seam",
        "Blend seam on the face at the flagged moments",
        html.figure(
            "seam",
            image,
            "aligned face crops with the blend-boundary map",
            "Left: the artifact detector's blend-boundary map of the moment's window (16x16 "
            "cells over the aligned face crop, 4·M·(1−M) of a pasted region; dark: a seam). "
            "Right: the face crops it reads (256 px, eye line horizontal) at the moment's "
            "start, middle and end, with the map in red over them. A seam below the nose "
            "points at a pasted lower face (lip-sync generators), one along the face outline "
            "at a pasted face (face swaps).",
        )
        + f"<ul>{listed}</ul>",
    )


def _rationale_section(log_: EventLog) -> str:
    parts = []
    if log_.alerts:
        rows = []
        for alert in log_.alerts:
            live = (alert.get("explanation") or {}).get("summary", "-")
            rows.append(
                (
                    format_span(alert["t_start"], alert["t_end"]),
                    f"{alert['previous_level']} -> {alert['level']}",
                    f"{alert['risk']:.2f}",
                    alert["rationale"],
                    live,
                )
            )
        parts.append(
            "<h3>Alerts</h3>"
            + html.table(
                ["window", "level", "risk", "rationale", "live explanation (sent with the alert)"],
                rows,
                numeric=(2,),
            )
        )
    else:
        parts.append("<p>No alert was raised.</p>")
    ranked = sorted(_flagged(log_), key=lambda e: -(e.get("window_risk") or 0.0))[:MAX_RATIONALES]
    if ranked:
        rows = [
            (
                format_span(e["t_start"], e["t_end"]),
                e["level"],
                f"{e.get('window_risk') or 0:.2f}",
                e.get("rationale", ""),
            )
            for e in sorted(ranked, key=lambda e: e["t_start"])
        ]
        parts.append(
            f"<h3>Flagged windows (the {len(rows)} riskiest)</h3>"
            + html.table(["window", "level", "window risk", "rationale"], rows, numeric=(2,))
        )
    return html.section("rationale", "Rationale", "".join(parts))


def _attribution_section(
    explained: Sequence[AlertAttribution],
    learned: LearnedSync | None,
    learned_reason: str,
    targets: Sequence[dict[str, Any]],
    options: AttributionOptions,
) -> str:
    intro = (
        "<p>Which evidence made the learned sync model call these lips and this audio out "
        "of sync? Two answers per alert: <b>white-box</b> integrated gradients (through the "
        "model's gradients, per mouth pixel, lip coordinate and mel bin) and <b>black-box</b> "
        "occlusion (replace one piece of evidence with a neutral baseline and score again; "
        "needs no access to the model's inside, so it works on every backend). Each is "
        "checked by deletion: remove the evidence it ranks highest and see how much of the "
        "score goes, against removing as many random pieces. <b>Faithfulness</b> is the "
        "share of the score removed by the ranked pieces minus by random ones, averaged over "
        "removing 10, 20, 30 and 50 % (0: no better than random; 1: the top pieces carry the "
        "whole score).</p>"
    )
    if learned is None:
        body = intro + f"<p class='note'>Not available: {html.esc(learned_reason)}.</p>"
        return html.section("attribution", "Attribution", body)
    if not targets:
        body = intro + "<p class='note'>No alert was raised, so nothing is attributed.</p>"
        return html.section("attribution", "Attribution", body)
    parts = [intro]
    for item in explained:
        parts.append(item.html())
    skipped = len(targets) - len(explained)
    if skipped > 0:
        parts.append(f"<p class='note'>{skipped} alert(s) not attributed.</p>")
    parts.append(
        f"<p class='note'>Settings: integrated gradients with {options.ig_steps} steps; "
        f"random deletion averaged over {options.n_random} orders; model backend for the "
        f"black-box scores: {html.esc(learned.backend)}.</p>"
    )
    return html.section("attribution", "Attribution", "".join(parts))


def _method_section(trace: MediaTrace, learned: LearnedSync | None, method: str) -> str:
    rows = [
        ("lip-sync model of the events", method),
        ("per-frame confidence", trace.confidence.method),
        ("learned model backend", "-" if learned is None else learned.backend),
        ("media re-read in", f"{trace.seconds:.1f} s"),
        ("video", f"{trace.info.width}x{trace.info.height} at {trace.info.fps or 0:.2f} fps"),
    ]
    notes = (
        "<p class='note'>Offsets: positive when the audio arrives later than the lips. "
        "Genuine calls carry small constant offsets (codec and jitter-buffer delays), so "
        f"+-{GENUINE_OFFSET_MS:.0f} ms counts as in sync. Attribution removes evidence by "
        "replacing it with a neutral baseline (the window's average mouth; each mel band's "
        "quiet level); such inputs are unlike real speech, which moves scores by itself, so "
        "faithfulness is always stated against random removal of the same amount (see "
        "docs/EXPLANATIONS.md).</p>"
    )
    return html.section("method", "How to read this report", html.table(["", ""], rows) + notes)
