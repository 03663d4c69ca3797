"""Prometheus text exposition for ``GET /metrics``, without a client library.

Everything is updated on the event loop thread (the worker threads hand their events
over with ``call_soon_threadsafe``), so plain integers suffice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.levels import LEVEL_NAMES

KINDS = ("audio", "video")
# Seconds; covers a fast GPU window (a few ms) up to a detector near its time budget.
INFERENCE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SINK_OUTCOMES = ("sent", "retried", "failed", "dropped")


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [
            f'{name}_bucket{{le="{bound:g}"}} {n}'
            for bound, n in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.total:.6f}")
        out.append(f"{name}_count {self.count}")
        return out


@dataclass
class LiveMetrics:
    sessions_active: int = 0
    sessions_total: int = 0
    sessions_rejected: int = 0
    rejected_by_status: Counter[int] = field(default_factory=Counter)
    frames_in: Counter[str] = field(default_factory=Counter)
    frames_dropped: Counter[str] = field(default_factory=Counter)
    windows_scored: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    inference: Histogram = field(default_factory=lambda: Histogram(INFERENCE_BUCKETS_S))
    rss_mib: float | None = None  # set by the server before each render
    # Per sink {outcome: count} (monitor.sinks.build.sink_stats), read at each scrape.
    sink_stats: Callable[[], dict[str, dict[str, int]]] | None = None

    def observe_event(self, event: dict) -> None:
        """Count what a session emitted (score -> windows and latency, alert -> level)."""
        kind = event.get("type", "?")
        self.events[kind] += 1
        if kind == "score":
            self.windows_scored += 1
            inference_ms = event.get("inference_ms")
            if isinstance(inference_ms, int | float):
                self.inference.observe(inference_ms / 1000.0)
        elif kind == "alert":
            self.alerts[str(event.get("level", "unknown"))] += 1

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        metric(
            "dfmon_sessions_active",
            "gauge",
            "Live WHIP sessions now open.",
            [f"dfmon_sessions_active {self.sessions_active}"],
        )
        metric(
            "dfmon_sessions_total",
            "counter",
            "WHIP sessions accepted since start.",
            [f"dfmon_sessions_total {self.sessions_total}"],
        )
        metric(
            "dfmon_sessions_rejected_total",
            "counter",
            "WHIP offers refused (auth, bad SDP, capacity).",
            [f"dfmon_sessions_rejected_total {self.sessions_rejected}"],
        )
        metric(
            "dfmon_sessions_rejected_by_status_total",
            "counter",
            "WHIP offers refused, by HTTP status (503 capacity, 429 quota, 4xx bad offer).",
            [
                f'dfmon_sessions_rejected_by_status_total{{status="{status}"}} {n}'
                for status, n in sorted(self.rejected_by_status.items())
            ],
        )
        metric(
            "dfmon_frames_received_total",
            "counter",
            "Decoded frames read from WebRTC tracks.",
            [f'dfmon_frames_received_total{{kind="{k}"}} {self.frames_in[k]}' for k in KINDS],
        )
        metric(
            "dfmon_frames_dropped_total",
            "counter",
            "Frames dropped because a session's analysis fell behind (oldest first).",
            [f'dfmon_frames_dropped_total{{kind="{k}"}} {self.frames_dropped[k]}' for k in KINDS],
        )
        metric(
            "dfmon_windows_scored_total",
            "counter",
            "Analysis windows scored (score events).",
            [f"dfmon_windows_scored_total {self.windows_scored}"],
        )
        metric(
            "dfmon_inference_seconds",
            "histogram",
            "Detector time per window.",
            self.inference.lines("dfmon_inference_seconds"),
        )
        metric(
            "dfmon_alerts_total",
            "counter",
            "Alert events by level entered.",
            [f'dfmon_alerts_total{{level="{lv}"}} {self.alerts[lv]}' for lv in LEVEL_NAMES],
        )
        metric(
            "dfmon_events_total",
            "counter",
            "Events emitted by type.",
            [f'dfmon_events_total{{type="{t}"}} {n}' for t, n in sorted(self.events.items())],
        )
        if self.rss_mib is not None:
            metric(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                [f"process_resident_memory_bytes {round(self.rss_mib * 1024 * 1024)}"],
            )
        sinks = self.sink_stats() if self.sink_stats is not None else {}
        metric(
            "dfmon_sink_events_total",
            "counter",
            "Events per sink: sent, failed (raised; for alert sinks: dead-lettered after the "
            "retries or at exit), and for alert sinks retried (attempts) and dropped "
            "(queue full, dead-lettered).",
            [
                f'dfmon_sink_events_total{{sink="{_label(name)}",outcome="{outcome}"}} '
                f"{counters.get(outcome, 0)}"
                for name, counters in sinks.items()
                for outcome in SINK_OUTCOMES
            ],
        )
        metric(
            "dfmon_sink_queue_depth",
            "gauge",
            "Alert notices waiting for delivery (or being delivered) per sink.",
            [
                f'dfmon_sink_queue_depth{{sink="{_label(name)}"}} {counters["queued"]}'
                for name, counters in sinks.items()
                if "queued" in counters
            ],
        )
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
