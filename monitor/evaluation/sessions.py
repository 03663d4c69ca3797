"""Run clips through the real session pipeline once and keep what each window's detectors said.

Calibration and the long genuine-call corpus need the per-window evidence of many sessions:
each clip under several call conditions, with its own audio and with manipulated audio
(shifted, swapped). Face tracking is the dearest stage and manipulated audio does not
change the video, so one pass over a file tracks each frame once and feeds the same
observation to one :class:`~monitor.pipeline.SessionAnalyzer` per audio variant, each with
its own audio. Every analyzer is the product's: same windows, same detectors, same fusion.

What is kept (:class:`SessionRecord`): per window, each detector's score (``None``: no
evidence) and the lip-sync offset, confidence and lag curve. The decision (legacy fusion or
the sequential decision) is a function of that sequence alone, so it can be replayed from
the record; :func:`decide` does so, and a test checks it against the pipeline's own events.

Detectors that do not read audio (``VIDEO_ONLY_DETECTORS``) score an audio variant's windows
exactly as the genuine session's (same frames, same windows), so they run only in the
genuine session and their evidence is copied into the variants' records.

Records are cached as JSON under ``cache/sessions``, keyed by the clip file, the condition,
the variants and a fingerprint of everything that shapes the evidence (detector config,
model weights, detector calibration files, this module's format version).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitor.decision import CALIBRATION_PATH as DECISION_CALIBRATION_PATH
from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame, contiguous_samples

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Detectors whose window evidence does not depend on the audio track.
VIDEO_ONLY_DETECTORS = ("temporal", "artifact")
# Audio is fed to the analyzers in chunks of this many samples (0.1 s).
_CHUNK = AUDIO_RATE // 10
_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class AudioVariant:
    """Which audio a session hears: the clip's own, shifted, or another speaker's."""

    kind: str  # "genuine" | "shift" | "swap"
    shift_ms: int = 0
    donor: str | None = None  # swap: the key of the donor clip

    @property
    def name(self) -> str:
        if self.kind == "shift":
            return f"shift{self.shift_ms:+d}ms"
        return self.kind

    @property
    def manipulated(self) -> bool:
        return self.kind != "genuine"


GENUINE = AudioVariant("genuine")


@dataclass(frozen=True)
class SessionRecord:
    """The per-window evidence of one session (one clip, condition and audio variant)."""

    clip: str
    condition: str
    variant: str
    manipulated: bool
    media_seconds: float
    detectors: dict[str, str]  # name -> version, as the session announced them
    windows: list[dict[str, Any]]  # {"t_start", "t_end", "evidence": {detector: {...}}}
    pipeline: dict[str, Any] = field(default_factory=dict)  # the session's own summary/alerts

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionRecord:
        return cls(**data)

    def evidence(self, index: int) -> list[Any]:
        """Window ``index`` as Evidence objects (what fusion and the decision read)."""
        from monitor.detectors.base import Evidence

        return [
            Evidence(name, item.get("score"), "", fields=_fields(item))
            for name, item in self.windows[index]["evidence"].items()
        ]


def _fields(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "score"}


# ----- what a window's evidence keeps -------------------------------------------------------

_KEPT_FIELDS = ("offset_ms", "confidence", "lag_curve", "in_sync_probability", "combined_z")


def compact_evidence(evidence: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in evidence:
        kept = {"score": item.get("score")}
        for key in _KEPT_FIELDS:
            if item.get(key) is not None:
                kept[key] = item[key]
        out[item["detector"]] = kept
    return out


def record_from_events(
    events: list[dict[str, Any]],
    *,
    clip: str,
    condition: str,
    variant: AudioVariant,
    media_seconds: float,
) -> SessionRecord:
    started = next(e for e in events if e["type"] == "session_started")
    summary = next(e for e in events if e["type"] == "summary")
    windows = [
        {
            "t_start": e["t_start"],
            "t_end": e["t_end"],
            "evidence": compact_evidence(e["evidence"]),
        }
        for e in events
        if e["type"] == "score"
    ]
    alerts = [
        {"t_end": e["t_end"], "level": e["level"], "previous_level": e["previous_level"]}
        for e in events
        if e["type"] == "alert"
    ]
    pipeline = {
        "summary": {
            k: summary.get(k)
            for k in ("risk", "level", "verdict", "final_level", "peak_risk", "alerts")
        },
        "alerts": alerts,
        "window_levels": [e["level"] for e in events if e["type"] == "score"],
        # The session's level after each window (``level`` is "unknown" for a window
        # without evidence even while the session stays clear).
        "session_levels": [
            e.get("session_level", e["level"]) for e in events if e["type"] == "score"
        ],
        "risks": [e.get("risk") for e in events if e["type"] == "score"],
        "errors": [e["message"] for e in events if e["type"] == "error"],
    }
    return SessionRecord(
        clip=clip,
        condition=condition,
        variant=variant.name,
        manipulated=variant.manipulated,
        media_seconds=round(media_seconds, 3),
        detectors=dict(started.get("config", {}).get("detectors", {})),
        windows=windows,
        pipeline=pipeline,
    )


def detector_versions(records: Sequence[SessionRecord]) -> dict[str, str]:
    """Every detector the records' sessions ran, with its version."""
    versions: dict[str, str] = {}
    for record in records:
        versions.update(record.detectors)
    return versions


def merge_video_evidence(genuine: SessionRecord, variant: SessionRecord) -> SessionRecord:
    """The variant's record with the video-only detectors' evidence of the genuine session."""
    by_span = {(w["t_start"], w["t_end"]): w["evidence"] for w in genuine.windows}
    windows = []
    for window in variant.windows:
        evidence = dict(window["evidence"])
        for name, item in by_span.get((window["t_start"], window["t_end"]), {}).items():
            if name in VIDEO_ONLY_DETECTORS:
                evidence[name] = item
        windows.append({**window, "evidence": evidence})
    detectors = {
        **variant.detectors,
        **{k: v for k, v in genuine.detectors.items() if k in VIDEO_ONLY_DETECTORS},
    }
    return dataclasses.replace(variant, windows=windows, detectors=detectors)


# ----- audio --------------------------------------------------------------------------------


def decode_audio(
    path: str | os.PathLike[str], *, max_seconds: float | None = None
) -> tuple[np.ndarray, float]:
    """The file's audio as one 16 kHz array on the pipeline's clock: (samples, t0),
    up to ``max_seconds`` (and up to a second past it, for lag context)."""
    from monitor.sources.file import FileSource

    chunks: list[AudioChunk] = []
    with FileSource(path) as source:
        for item in source:
            if max_seconds is not None and item.t >= max_seconds + 1.0:
                break
            if isinstance(item, AudioChunk):
                chunks.append(item)
    return contiguous_samples(chunks)


def variant_audio(variant: AudioVariant, own: np.ndarray, donor: np.ndarray | None) -> np.ndarray:
    """The variant's samples, as long as the clip's own (see monitor.evaluation.variants)."""
    from monitor.evaluation.variants import fit_speech, shift_audio

    if variant.kind == "genuine":
        return own
    if variant.kind == "shift":
        return shift_audio(own, variant.shift_ms)
    if variant.kind == "swap":
        if donor is None or not len(donor):
            raise ValueError("a swap needs the donor's audio")
        return fit_speech(donor, len(own), own)
    raise ValueError(f"unknown audio variant {variant.kind!r}")


# ----- one pass, several sessions -----------------------------------------------------------


class _SharedObservation:
    """The face tracker every analyzer of one pass gets: it hands out the frame's one
    observation, tracked once by the real tracker."""

    def __init__(self) -> None:
        self.observation: Any = None

    def track(self, frame: VideoFrame) -> Any:
        return self.observation

    def close(self) -> None:
        """Nothing of its own: the pass closes the real tracker."""


def _chunks(samples: np.ndarray, t0: float) -> Iterator[AudioChunk]:
    for start in range(0, len(samples), _CHUNK):
        yield AudioChunk(t=t0 + start / AUDIO_RATE, samples=samples[start : start + _CHUNK])


def run_sessions(
    path: str | os.PathLike[str],
    audio: dict[str, tuple[np.ndarray, float]],
    configs: dict[str, Any],
    *,
    max_seconds: float | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], float]:
    """One pass over ``path``'s video; one session per entry of ``audio`` (name ->
    (samples, t0)), each with its ``configs[name]``. Returns each session's events and the
    media seconds covered. ``max_seconds`` ends the sessions there."""
    from monitor.features.face import create_face_tracker
    from monitor.pipeline import SessionAnalyzer
    from monitor.sources.file import FileSource

    shared = _SharedObservation()
    events: dict[str, list[dict[str, Any]]] = {name: [] for name in audio}
    tracker = create_face_tracker(next(iter(configs.values())).face)
    analyzers = {
        name: SessionAnalyzer(
            configs[name],
            session=name[:64],
            participant=Path(path).stem,
            emit=events[name].append,
            face_tracker=shared,
        )
        for name in audio
    }
    feeds = {name: _chunks(*audio[name]) for name in audio}
    pending: dict[str, AudioChunk | None] = {name: next(feeds[name], None) for name in audio}
    media_t = 0.0
    try:
        with FileSource(path) as source:
            for analyzer in analyzers.values():
                analyzer.start(source.info)
            for item in source:
                if not isinstance(item, VideoFrame):
                    continue  # the sessions' audio comes from ``audio``
                if max_seconds is not None and item.t >= max_seconds:
                    break
                for name, analyzer in analyzers.items():
                    chunk = pending[name]
                    while chunk is not None and chunk.t <= item.t:
                        analyzer.add_audio(chunk)
                        chunk = next(feeds[name], None)
                    pending[name] = chunk
                shared.observation = tracker.track(item)
                for analyzer in analyzers.values():
                    analyzer.add_video(item)
                media_t = max(media_t, item.t)
        for name, analyzer in analyzers.items():
            chunk = pending[name]
            while chunk is not None and (max_seconds is None or chunk.t < max_seconds):
                analyzer.add_audio(chunk)
                chunk = next(feeds[name], None)
            analyzer.finish(reason="end of input")
    finally:
        for analyzer in analyzers.values():
            analyzer.close()
        tracker.close()
    return events, media_t


# ----- cached tasks -------------------------------------------------------------------------


def evidence_fingerprint(config: Any, leave_out: Sequence[str] = ()) -> str:
    """A digest of what shapes window evidence: config, model weights, detector calibrations
    (the artifact's and lip_timing's beside the models; the temporal detector's in its
    package). The decision's calibration is left out: decisions are replayed, not cached.
    ``leave_out``: further file names not to digest (a tool's own output)."""
    digest = hashlib.sha1()
    digest.update(f"format {FORMAT_VERSION}".encode())
    shaping = {
        k: dataclasses.asdict(getattr(config, k))
        for k in ("window", "audio", "face", "detectors", "lip_sync")
    }
    digest.update(json.dumps(shaping, sort_keys=True, default=str).encode())
    models = _PACKAGE / "models"
    files = sorted(
        [
            *models.glob("*.pt"),
            *models.glob("*.onnx"),
            *models.glob("*.json"),
        ]
    ) + sorted((_PACKAGE / "detectors").glob("*.json"))
    skipped = {DECISION_CALIBRATION_PATH.name, *leave_out}
    files = [path for path in files if path.name not in skipped]
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha1(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SessionTask:
    """One pass: a clip under one condition, with its audio variants."""

    clip: str  # the clip's key
    condition: str
    media_path: str  # the file the pass reads (the clip, or its call encoding)
    audio_path: str  # .npy of the condition's 16 kHz audio; its t0 in the .json beside it
    variants: tuple[AudioVariant, ...]
    donor_audio: dict[str, str]  # donor key -> .npy path
    config_path: str | None
    config_overrides: dict[str, Any]
    cache_dir: str
    max_seconds: float | None = None

    def cache_path(self, fingerprint: str) -> Path:
        key = json.dumps(
            [
                self.clip,
                self.condition,
                Path(self.media_path).name,
                [dataclasses.asdict(v) for v in self.variants],
                self.max_seconds,
                fingerprint,
            ]
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        return (
            Path(self.cache_dir)
            / "sessions"
            / f"{self.clip[:60]}.{self.condition}.{digest}.json.gz"
        )


def save_audio(path: Path, samples: np.ndarray, t0: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, samples.astype(np.float32))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"t0": t0}))


def load_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    path = Path(path)
    return np.load(path), float(json.loads(path.with_suffix(".json").read_text())["t0"])


def run_task(task: SessionTask) -> list[SessionRecord]:
    """The task's records, from the cache when it holds them."""
    from monitor.config import load_config

    config = load_config(task.config_path, **task.config_overrides)
    fingerprint = evidence_fingerprint(config)
    target = task.cache_path(fingerprint)
    if target.exists():
        with gzip.open(target, "rt") as handle:
            return [SessionRecord.from_json(r) for r in json.load(handle)]
    own, t0 = load_audio(task.audio_path)
    audio_only = dataclasses.replace(
        config.detectors,
        enabled=[d for d in config.detectors.enabled if d not in VIDEO_ONLY_DETECTORS],
    )
    variant_config = dataclasses.replace(config, detectors=audio_only)
    audio, configs = {}, {}
    for variant in task.variants:
        donor = load_audio(task.donor_audio[variant.donor])[0] if variant.donor else None
        audio[variant.name] = (variant_audio(variant, own, donor), t0)
        configs[variant.name] = config if not variant.manipulated else variant_config
    events, media_t = run_sessions(task.media_path, audio, configs, max_seconds=task.max_seconds)
    records = {
        v.name: record_from_events(
            events[v.name],
            clip=task.clip,
            condition=task.condition,
            variant=v,
            media_seconds=media_t,
        )
        for v in task.variants
    }
    genuine = records.get(GENUINE.name)
    if genuine is not None:
        for name, record in records.items():
            if record.manipulated:
                records[name] = merge_video_evidence(genuine, record)
    out = [records[v.name] for v in task.variants]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with gzip.open(tmp, "wt") as handle:
        json.dump([r.to_json() for r in out], handle, separators=(",", ":"))
    os.replace(tmp, target)
    return out


def shifts_and_swap(shifts_ms: Sequence[int], donor: str | None) -> tuple[AudioVariant, ...]:
    """Genuine, each shift both ways, and a swap from ``donor`` (when given)."""
    variants = [GENUINE]
    for magnitude in shifts_ms:
        variants += [AudioVariant("shift", magnitude), AudioVariant("shift", -magnitude)]
    if donor is not None:
        variants.append(AudioVariant("swap", donor=donor))
    return tuple(variants)
