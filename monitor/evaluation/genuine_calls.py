"""False alarms on genuine calls, and detection on manipulated ones, from session records.

Two kinds of genuine "call":

- **Sessions**: each clip under each condition, replayed as its own call. Figures: the
  share that ever reaches ``suspicious`` / ``alert``, the share that ends in ``alert``, and
  false raises per hour of genuine media.
- **Long calls**: sessions chained end to end, in seeded random order, into calls of about
  ``call_minutes``; the decision's state carries over from one session to the next, so
  evidence that builds slowly over a long call shows. Windows that would straddle two
  sessions are not made (a real call has one speaker throughout); otherwise the decision
  sees exactly what it would see on the joined media, because window evidence depends on
  the window's media only (see :mod:`monitor.evaluation.sessions`).

Both decision rules are replayed on the same records: ``legacy`` (before) and
``sequential`` (after).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from monitor.config import MonitorConfig
from monitor.decision import LEVEL_RANK, EvidenceCalibration, SequentialDecision, evidence_risk
from monitor.evaluation import decide, metrics
from monitor.evaluation.sessions import SessionRecord, detector_versions
from monitor.sync.features import GRID_STEP_S


def session_traces(
    records: Sequence[SessionRecord],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    rule: str,
) -> list[decide.DecisionTrace]:
    versions = detector_versions(records)
    return [
        decide.trace(rule, decide.record_windows(r), config, calibration, versions) for r in records
    ]


def genuine_figures(
    records: Sequence[SessionRecord], traces: Sequence[decide.DecisionTrace]
) -> dict[str, Any]:
    hours = sum(r.media_seconds for r in records) / 3600.0
    n = len(records)
    alerts = sum(len(t.alerts) for t in traces)
    suspicious = sum(len(t.suspicious) for t in traces)

    def share(test: Any) -> float | None:
        return round(sum(1 for t in traces if test(t)) / n, 4) if n else None

    return {
        "sessions": n,
        "hours": round(hours, 3),
        "reached_suspicious": share(lambda t: LEVEL_RANK[t.peak_level] >= 1),
        "reached_alert": share(lambda t: t.peak_level == "alert"),
        "ended_in_alert": share(lambda t: t.final_level == "alert"),
        "sessions_ended_in_alert": sum(1 for t in traces if t.final_level == "alert"),
        "false_alerts": alerts,
        "false_alerts_per_hour": _round(metrics.per_hour(alerts, hours * 3600)),
        "false_suspicious": suspicious,
        "false_suspicious_per_hour": _round(metrics.per_hour(suspicious, hours * 3600)),
    }


def long_calls(
    records: Sequence[SessionRecord],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    rule: str,
    *,
    call_minutes: float,
    calls: int,
    seed: int = 0,
) -> dict[str, Any]:
    """``calls`` chained calls of about ``call_minutes`` each, drawn from ``records``."""
    rng = np.random.default_rng(seed)
    versions = detector_versions(records)
    traces = []
    seconds = 0.0
    for _ in range(calls):
        order = rng.permutation(len(records))
        windows: list[Any] = []
        offset = 0.0
        i = 0
        while offset < call_minutes * 60 and len(records):
            record = records[int(order[i % len(order)])]
            windows += decide.record_windows(record, offset)
            offset += record.media_seconds
            i += 1
        seconds += offset
        traces.append(decide.trace(rule, windows, config, calibration, versions))
    alerts = sum(len(t.alerts) for t in traces)
    suspicious = sum(len(t.suspicious) for t in traces)
    return {
        "calls": calls,
        "call_minutes": call_minutes,
        "hours": round(seconds / 3600.0, 2),
        "calls_reaching_suspicious": sum(1 for t in traces if LEVEL_RANK[t.peak_level] >= 1),
        "calls_reaching_alert": sum(1 for t in traces if t.peak_level == "alert"),
        "false_alerts": alerts,
        "false_alerts_per_hour": _round(metrics.per_hour(alerts, seconds)),
        "false_suspicious": suspicious,
        "false_suspicious_per_hour": _round(metrics.per_hour(suspicious, seconds)),
    }


def looped_windows(
    record: SessionRecord, seconds: float, hop_s: float
) -> list[decide.RecordedWindow]:
    """The session's windows repeated for about ``seconds`` of media, each repetition's
    first window one hop after the last one's, as in one continuous call (so a repetition's
    start does not count whole as a call's first window does)."""
    first = decide.record_windows(record)
    if not first:
        return first
    windows: list[decide.RecordedWindow] = []
    offset = 0.0
    while offset < seconds:
        windows += [(start + offset, end + offset, evidence) for start, end, evidence in first]
        offset = windows[-1][0] + hop_s - first[0][0]
    return windows


def same_speaker_calls(
    records: Sequence[SessionRecord],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    rule: str,
    *,
    call_minutes: float,
) -> dict[str, Any]:
    """Each genuine session looped into one call of ``call_minutes``: one speaker, one
    camera and one connection for the whole call. A caller whose windows read a little
    manipulated window after window climbs to a level over a long call; the mixed long
    calls hide that, since the next clip's genuine evidence pulls the sum back down. The
    same content repeated is a harsh case (a real call's words change): an upper bound."""
    versions = detector_versions(records)
    rows = []
    seconds = 0.0
    for record in records:
        windows = looped_windows(record, call_minutes * 60, config.window.hop_s)
        if not windows:
            continue
        trace = decide.trace(rule, windows, config, calibration, versions)
        seconds += windows[-1][1] - windows[0][0]
        rows.append((record, trace))
    alerts = sum(len(t.alerts) for _, t in rows)
    return {
        "calls": len(rows),
        "call_minutes": call_minutes,
        "hours": round(seconds / 3600.0, 2),
        "calls_reaching_suspicious": sum(1 for _, t in rows if LEVEL_RANK[t.peak_level] >= 1),
        "calls_reaching_alert": sum(1 for _, t in rows if t.peak_level == "alert"),
        "false_alerts_per_hour": _round(metrics.per_hour(alerts, seconds)),
        "alerting": sorted(f"{r.clip} ({r.condition})" for r, t in rows if t.peak_level == "alert"),
    }


# Drift allowances tried (nats a window), for DecisionConfig.drift_allowance_nats.
ALLOWANCE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def lip_sync_reads_off(
    record: SessionRecord, config: MonitorConfig, calibration: EvidenceCalibration
) -> bool:
    """Whether most of the session's lip-sync windows point to manipulation: a recording
    whose audio really is off the lips (SyncNet's demo clip), which no allowance should hide."""
    decision = SequentialDecision.for_session(config, detector_versions([record]), calibration)
    readings = [
        decision.contributions(evidence)[0].get("lip_sync")
        for _, _, evidence in decide.record_windows(record)
    ]
    readings = [x for x in readings if x is not None]
    return bool(readings) and float(np.median(readings)) > 0


def choose_drift_allowance(
    records: Sequence[SessionRecord],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    rule: str,
    *,
    call_minutes: float,
    grid: Sequence[float] = ALLOWANCE_GRID,
) -> dict[str, Any]:
    """The smallest allowance on ``grid`` for which no genuine session looped into a call of
    its own (:func:`same_speaker_calls`) reaches suspicious, sessions whose lip-sync
    evidence itself reads the audio off the lips apart (named: no allowance should hide
    them)."""
    off = [lip_sync_reads_off(r, config, calibration) for r in records]
    rest = [r for r, reads_off in zip(records, off, strict=True) if not reads_off]
    tried = []
    chosen = None
    for allowance in grid:
        trial = dataclasses.replace(
            config, decision=dataclasses.replace(config.decision, drift_allowance_nats=allowance)
        )
        calls = same_speaker_calls(rest, trial, calibration, rule, call_minutes=call_minutes)
        tried.append({"allowance_nats": allowance, **calls})
        if calls["calls_reaching_suspicious"] == 0:
            chosen = allowance
            break
    return {
        "sessions": len(rest),
        "lip_sync_off_sessions": sorted(
            f"{r.clip} ({r.condition})"
            for r, reads_off in zip(records, off, strict=True)
            if reads_off
        ),
        "chosen_nats": chosen,
        "tried": tried,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


# ----- manipulated sessions ------------------------------------------------------------------


def session_offset_ms(record: SessionRecord) -> float | None:
    """The session's lip-sync offset: the minimum of the mean lag curve of its scored
    windows, refined to a fraction of a frame (see monitor.sync.scoring)."""
    from monitor.sync.scoring import refined_minimum

    curves = [
        w["evidence"]["lip_sync"]["lag_curve"]
        for w in record.windows
        if w["evidence"].get("lip_sync", {}).get("score") is not None
        and w["evidence"]["lip_sync"].get("lag_curve")
    ]
    lengths = {len(c) for c in curves}
    if not curves or len(lengths) != 1:
        return None
    curve = np.mean(np.asarray(curves, dtype=np.float64), axis=0)
    max_lag = (len(curve) - 1) // 2
    return (refined_minimum(curve) - max_lag) * GRID_STEP_S * 1000.0


def session_score(trace: decide.DecisionTrace, config: MonitorConfig) -> float:
    """One number per session for ROC figures: peak risk (legacy) or peak evidence as risk."""
    if trace.rule == "sequential":
        fusion = config.fusion
        return evidence_risk(
            trace.peak_score, config.decision, fusion.suspicious_threshold, fusion.alert_threshold
        )
    return trace.peak_score


def attack_figures(
    records: Sequence[SessionRecord],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    rule: str,
) -> dict[str, Any]:
    """Per condition and manipulation: AUC against the condition's genuine sessions (with
    counts), share alarmed, median time to the first alarm, offset error (shifts): against
    the shift, and against the shift from the clip's own unshifted reading."""
    traces = session_traces(records, config, calibration, rule)
    out: dict[str, Any] = {}
    conditions = sorted({r.condition for r in records})
    for condition in [*conditions, "all"]:
        chosen = [
            (r, t)
            for r, t in zip(records, traces, strict=True)
            if condition in ("all", r.condition)
        ]
        negatives = [session_score(t, config) for r, t in chosen if not r.manipulated]
        # Each clip's own offset as read unshifted: a recording whose audio runs 100 ms early
        # reads a +200 ms shift as +100, which is the model right and the recording off.
        own_offset = {
            (r.clip, r.condition): session_offset_ms(r) for r, _ in chosen if not r.manipulated
        }
        by_variant: dict[str, list[tuple[SessionRecord, decide.DecisionTrace]]] = {}
        for r, t in chosen:
            if r.manipulated:
                by_variant.setdefault(r.variant, []).append((r, t))
        table = {}
        for variant, members in sorted(by_variant.items()):
            positives = [session_score(t, config) for _, t in members]
            times = [t.first_alarm_after(0.0) for _, t in members]
            alarmed = [x for x in times if x is not None]
            row: dict[str, Any] = {
                "n": len(members),
                "genuine_n": len(negatives),
                "auc": _round(metrics.roc_auc(negatives, positives)) if negatives else None,
                "alarmed": len(alarmed),
                "reached_alert": sum(1 for _, t in members if t.peak_level == "alert"),
                "median_time_to_alarm_s": _round(metrics.median(alarmed), 2),
            }
            if variant.startswith("shift"):
                truth = float(variant[len("shift") : -len("ms")])
                read = [
                    (session_offset_ms(r), own_offset.get((r.clip, r.condition)))
                    for r, _ in members
                ]
                errors = [abs(offset - truth) for offset, _ in read if offset is not None]
                row["offset_error_median_ms"] = _round(metrics.median(errors), 1)
                row["offset_error_p90_ms"] = _round(metrics.percentile(errors, 90), 1)
                relative = [
                    abs(offset - own - truth)
                    for offset, own in read
                    if offset is not None and own is not None
                ]
                row["relative_offset_error_median_ms"] = _round(metrics.median(relative), 1)
                row["relative_offset_error_p90_ms"] = _round(metrics.percentile(relative, 90), 1)
            table[variant] = row
        out[condition] = table
    return out
