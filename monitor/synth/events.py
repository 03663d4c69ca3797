"""Synthetic event streams of one session, shaped like the pipeline's: for the alert-sink
tests and ``tools/bench_sinks.py``, which need many sessions without running detectors.

A stream is ``session_started``, one ``score`` per hop (0.5 s), an ``alert`` after the
score at each level change, then ``session_ended`` and ``summary``; every event passes
the event schema. Lip-sync evidence carries the 31-point lag curve a real window does.
"""

from __future__ import annotations

from typing import Any

from monitor.events import EventFactory
from monitor.levels import LEVEL_RANK

HOP_S = 0.5
WINDOW_S = 2.0
RISK = {"clear": 0.2, "suspicious": 0.6, "alert": 0.9, "unknown": 0.0}
NATS = {"clear": 1.0, "suspicious": 5.0, "alert": 8.0, "unknown": 0.0}
LAGS_MS = [float(ms) for ms in range(-600, 601, 40)]
# A participant whose level flaps every second or two: throttled to a few seconds, some
# changes are held, folded into one notice or dropped, so the notices depend on the
# order of the whole session (the bus tests and tools/bench_bus.py --sinks).
FLAPPING = [(3.0, "alert"), (4.0, "clear"), (6.0, "suspicious"), (7.0, "alert"), (9.0, "clear"),
            (12.0, "alert"), (13.0, "unknown"), (15.0, "clear"), (16.0, "suspicious")]  # fmt: skip


def interleaved(sessions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The events of several sessions, one of each in turn, as concurrent calls make them."""
    out: list[dict[str, Any]] = []
    for i in range(max((len(s) for s in sessions), default=0)):
        out += [s[i] for s in sessions if i < len(s)]
    return out


def _evidence(risk: float, t_start: float, t_end: float) -> list[dict[str, Any]]:
    return [
        {
            "detector": "lip_sync",
            "score": risk,
            "rationale": f"audio lags lips by 280 ms (sync confidence 2.6, genuine speech "
            f"gives > 0.4) over {t_start:.1f}-{t_end:.1f} s",
            "spans": [[t_start, t_end]],
            "offset_ms": 280.0,
            "confidence": 2.6,
            "lag_curve_ms": LAGS_MS,
            "lag_curve": [round(7.0 - 0.01 * i, 4) for i in range(len(LAGS_MS))],
        }
    ]


def session_events(
    changes: list[tuple[float, str]],
    *,
    until_s: float | None = None,
    participant: str = "alice",
    session: str = "s-1",
) -> list[dict[str, Any]]:
    """Events of one session whose level changes at each ``(t_end, level)`` (multiples of
    the hop); scores run from the first full window to ``until_s`` (default: 2 s after
    the last change)."""
    factory = EventFactory(session, participant)
    events = [
        factory.make(
            "session_started",
            source="call.mp4",
            fps=25.0,
            width=320,
            height=240,
            sample_rate=16000,
            duration_s=None,
            has_audio=True,
        )
    ]
    at = dict(changes)
    end = until_s if until_s is not None else max([t for t, _ in changes] + [WINDOW_S]) + 2.0
    level, windows = "clear", 0
    for n in range(int(round((end - WINDOW_S) / HOP_S)) + 1):
        t_start, t_end = n * HOP_S, n * HOP_S + WINDOW_S
        previous, level = level, at.get(t_end, level)
        risk = RISK[level]
        evidence = _evidence(risk, t_start, t_end)
        rationale = f"lip_sync {risk:.2f}: {evidence[0]['rationale']}"
        events.append(
            factory.make(
                "score",
                window=n,
                t_start=t_start,
                t_end=t_end,
                risk=risk,
                window_risk=risk,
                level=level,
                evidence_nats=NATS[level],
                window_llr=NATS[level] - NATS[previous] if level != previous else 0.0,
                rationale=rationale,
                evidence=evidence,
                dropped_frames=0,
            )
        )
        windows += 1
        if level != previous:
            events.append(
                factory.make(
                    "alert",
                    level=level,
                    previous_level=previous,
                    risk=risk,
                    evidence_nats=NATS[level],
                    t_start=t_start,
                    t_end=t_end,
                    rationale=f"level {previous} -> {level}: {rationale}",
                    evidence=evidence,
                )
            )
    events.append(factory.make("session_ended", reason="end of input"))
    peak = max((lv for _, lv in changes), key=LEVEL_RANK.__getitem__, default="clear")
    peak_t = min((t for t, lv in changes if lv == peak), default=WINDOW_S)
    events.append(
        factory.make(
            "summary",
            verdict=peak,
            risk=RISK[peak],
            peak={
                "level": peak,
                "risk": RISK[peak],
                "evidence_nats": NATS[peak],
                "t_start": peak_t - WINDOW_S,
                "t_end": peak_t,
            },
            final_level=level,
            final_risk=RISK[level],
            evidence_nats=NATS[level],
            windows_scored=windows,
            windows_insufficient=0,
            frames_dropped=0,
            rationale=f"lip_sync {RISK[peak]:.2f}: audio lags lips by 280 ms",
            evidence=[],
        )
    )
    return events
