"""Plan the variants of an evaluation and run each through the real replay pipeline.

The functions here are module-level so a process pool (spawned workers) can call them;
each returns plain data (dicts, dataclasses of paths and numbers) that pickles cheaply.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from monitor.evaluation import metrics
from monitor.evaluation.dataset import ClipEntry
from monitor.evaluation.variants import (
    EncodeSettings,
    PreparedClip,
    VariantSpec,
    build_variant,
    prepare_clip,
)

log = logging.getLogger(__name__)

DEFAULT_SHIFTS_MS = (100, 200, 400, 800)
PARTIAL_SHIFT_MS = 400
# A partial desync needs windows before and after its onset: only clips this long get one.
PARTIAL_MIN_SECONDS = 6.0


def shift_category(shift_ms: int) -> str:
    return f"shift{shift_ms:+d}ms"


def plan_variants(
    genuine: list[PreparedClip],
    fakes: list[tuple[PreparedClip, ClipEntry]],
    shifts_ms: tuple[int, ...] = DEFAULT_SHIFTS_MS,
    *,
    tts: bool = True,
) -> list[VariantSpec]:
    """Every variant of every genuine clip, and the known fakes as they are.

    ``tts=False`` leaves out the espeak-ng dub (where libespeak-ng is missing)."""
    specs: list[VariantSpec] = []
    n = len(genuine)
    for i, clip in enumerate(genuine):
        specs.append(VariantSpec("genuine", clip.name, manipulated=False))
        for magnitude in shifts_ms:
            for shift in (magnitude, -magnitude):
                specs.append(
                    VariantSpec(shift_category(shift), clip.name, audio="shift", shift_ms=shift)
                )
        if n >= 2:
            # Half the list away: another dataset, so another speaker, where the list allows.
            donor = genuine[(i + max(1, n // 2)) % n]
            specs.append(VariantSpec("swap", clip.name, audio="swap", donor=donor.name))
        if tts:
            specs.append(VariantSpec("tts", clip.name, audio="tts", text_index=i))
        specs.append(VariantSpec("frozen", clip.name, video="frozen"))
        specs.append(VariantSpec("looped", clip.name, video="looped"))
        if clip.duration_s >= PARTIAL_MIN_SECONDS:
            onset = round(clip.duration_s / 2, 1)
            specs.append(
                VariantSpec(
                    f"partial{PARTIAL_SHIFT_MS:+d}ms",
                    clip.name,
                    audio="partial",
                    shift_ms=PARTIAL_SHIFT_MS,
                    onset_s=onset,
                )
            )
    for clip, entry in fakes:
        category = "lipsync_fake" if entry.lipsync_fake else "known_fake"
        specs.append(VariantSpec(category, clip.name))
    return specs


@dataclass(frozen=True)
class PrepareTask:
    entry_path: str
    name: str
    cache_root: str
    settings: EncodeSettings
    kinds: tuple[str, ...]


def prepare_task(task: PrepareTask) -> PreparedClip | str:
    """The prepared clip, or the one-line reason it cannot be used (a broken file)."""
    from monitor.errors import InputError

    try:
        return prepare_clip(
            task.entry_path, Path(task.cache_root), task.settings, name=task.name, kinds=task.kinds
        )
    except InputError as exc:
        return f"{task.entry_path}: {exc}"


@dataclass(frozen=True)
class ScoreTask:
    spec: VariantSpec
    clips: dict[str, PreparedClip]  # the spec's clip and its donor, if any
    settings: EncodeSettings
    config_overrides: dict[str, Any]
    config_path: str | None
    events_dir: str | None


def score_task(task: ScoreTask) -> dict[str, Any]:
    """Build (or reuse) the variant's file, replay it, condense its events into one row."""
    from monitor.config import load_config

    started = time.perf_counter()
    path = build_variant(task.spec, task.clips, task.settings)
    build_s = time.perf_counter() - started
    config = load_config(task.config_path, **task.config_overrides)
    events_path = None
    if task.events_dir is not None:
        events_path = Path(task.events_dir) / f"{task.spec.name}.jsonl"
    row = score_file(path, config, task.spec, events_path=events_path)
    row["build_seconds"] = round(build_s, 3)
    return row


def score_file(
    path: Path,
    config: Any,
    spec: VariantSpec,
    *,
    events_path: Path | None = None,
) -> dict[str, Any]:
    """Replay ``path`` in-process (as fast as possible) and condense its events."""
    from monitor.replay import replay_file

    events: list[dict[str, Any]] = []
    result = replay_file(path, config, events.append, session=spec.name[:64], participant=spec.clip)
    if events_path is not None:
        events_path.parent.mkdir(parents=True, exist_ok=True)
        with events_path.open("w") as handle:
            for event in events:
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
    return condense(events, spec, result.media_seconds, result.wall_seconds)


def session_offset(events: list[dict[str, Any]]) -> tuple[float | None, str]:
    """The session's lip-sync offset: the summary's, else the median of the windows'."""
    summary = next((e for e in events if e.get("type") == "summary"), {})
    for item in summary.get("evidence", []):
        if item.get("detector") == "lip_sync" and item.get("offset_ms") is not None:
            return float(item["offset_ms"]), "summary"
    offsets = [
        float(item["offset_ms"])
        for e in events
        if e.get("type") == "score"
        for item in e.get("evidence", [])
        if item.get("detector") == "lip_sync"
        and item.get("score") is not None
        and item.get("offset_ms") is not None
    ]
    if offsets:
        return statistics.median(offsets), "window median"
    return None, "none"


def condense(
    events: list[dict[str, Any]], spec: VariantSpec, media_seconds: float, wall_seconds: float
) -> dict[str, Any]:
    """One row per variant: the numbers the report needs, nothing that identifies the file."""
    summary = next((e for e in events if e.get("type") == "summary"), None)
    if summary is None:
        raise RuntimeError(f"replay of {spec.name} ended without a summary event")
    started = next((e for e in events if e.get("type") == "session_started"), {})
    offset, offset_source = session_offset(events)
    alarms = [
        {"t_end": e["t_end"], "level": e["level"], "risk": e["risk"]}
        for e in events
        if metrics.is_alarm(e)
    ]
    errors = [e["message"] for e in events if e.get("type") == "error"]
    return {
        **asdict(spec),
        "name": spec.name,
        "true_offset_ms": spec.true_offset_ms,
        "risk": float(summary["risk"]),
        # The session's verdict (the highest level its evidence reached) and its end.
        "level": summary.get("verdict", summary.get("level")),
        "final_level": summary.get("final_level"),
        "peak_risk": (summary.get("peak") or {}).get("risk", summary.get("peak_risk")),
        "windows_scored": summary["windows_scored"],
        "windows_insufficient": summary["windows_insufficient"],
        "alarms": alarms,
        "time_to_alert_s": metrics.time_to_alert(events, spec.onset_s),
        "alarms_before_onset": metrics.alarms_before(events, spec.onset_s) if spec.onset_s else 0,
        "offset_ms": offset,
        "offset_source": offset_source,
        "media_seconds": round(media_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "detectors": started.get("config", {}).get("detectors", {}),
        "errors": errors,
    }


# Set in the parent before a pool starts, so spawned workers import torch and MediaPipe
# with them: one thread each (the pool is the parallelism) and no per-session log noise.
WORKER_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GLOG_minloglevel": "2",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def init_worker(stderr_path: str | None = None) -> None:
    """Per worker: quiet logs (the parent reports what matters), one OpenCV thread.

    ``stderr_path``: where the worker's stderr goes (MediaPipe's C++ logs write straight to
    file descriptor 2 once per session), so the parent's progress stays readable.
    """
    if stderr_path is not None:
        handle = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(handle, 2)
        os.close(handle)
    logging.basicConfig(level=logging.WARNING)
    # Each session warns once about a configured but absent detector; the report names
    # the detectors that really ran.
    logging.getLogger("monitor.detectors.registry").setLevel(logging.ERROR)
    import cv2

    cv2.setNumThreads(1)
