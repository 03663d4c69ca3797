"""Corpora of clips under call conditions, prepared once and cached.

A corpus entry is a clip from a ``MANIFEST.tsv`` pool (``../shared/data/dev`` or
``../shared/data/train``) under one condition: ``recorded`` (the file as it is) or a
:class:`~monitor.evaluation.calls.CallProfile`. Preparing it writes the call encoding (for a
call condition) and the condition's 16 kHz audio on the pipeline's clock, both cached under
``cache/conditions`` by the source file, its size and mtime, and the profile. Which call
profiles a clip gets is fixed by its name (a seeded rotation over the profiles), so every
run and every tool sees the same conditions.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.evaluation.calls import CALL_PROFILES, PROFILES_BY_NAME, RECORDED, encode_call
from monitor.evaluation.dataset import is_duplicate_row, is_lipsync_fake, manifest_rows
from monitor.evaluation.pool import open_pool, run_all

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CorpusClip:
    """One manifest row with audio."""

    key: str  # unique across pools: "<pool>/<file stem>"
    path: str
    pool: str  # "dev" | "train"
    label: str  # "real" | "fake"
    group: str  # the source repository: clips of one group may share a speaker
    notes: str
    duration_s: float

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    @property
    def lipsync_fake(self) -> bool:
        return is_lipsync_fake(self.notes)


def read_pool(data_root: Path, pool: str) -> list[CorpusClip]:
    """A pool's rows with audio, DUPLICATE SOURCE rows left out (the same speech twice)."""
    if not (data_root / pool / "MANIFEST.tsv").exists():
        return []
    clips = []
    for row in manifest_rows(data_root / pool):
        if row.get("has_audio") != "yes" or is_duplicate_row(row):
            continue
        path = data_root / pool / row["file"]
        clips.append(
            CorpusClip(
                key=f"{pool}/{path.stem}",
                path=str(path),
                pool=pool,
                label=row["label"].strip().lower(),
                group=row.get("source_repo") or path.stem,
                notes=(row.get("notes") or "").strip(),
                duration_s=float(row.get("duration_s") or 0.0),
            )
        )
    return clips


def call_conditions(clip: CorpusClip, calls_per_clip: int) -> list[str]:
    """``recorded`` and ``calls_per_clip`` call profiles, rotated by the clip's name."""
    start = int(hashlib.sha1(clip.key.encode()).hexdigest(), 16) % len(CALL_PROFILES)
    count = min(calls_per_clip, len(CALL_PROFILES))
    picked = [CALL_PROFILES[(start + i) % len(CALL_PROFILES)].name for i in range(count)]
    return [RECORDED, *picked]


@dataclass(frozen=True)
class PrepareTask:
    clip: CorpusClip
    condition: str
    cache_dir: str
    max_seconds: float | None = None  # media beyond this is not prepared


@dataclass(frozen=True)
class PreparedCondition:
    clip: CorpusClip
    condition: str
    media_path: str  # what the pipeline reads
    audio_path: str  # the condition's 16 kHz audio (.npy, t0 in the .json beside it)
    seconds: float  # preparation time (0 when cached)


def _condition_stem(task: PrepareTask) -> Path:
    clip, condition = task.clip, task.condition
    stat = Path(clip.path).stat()
    profile = PROFILES_BY_NAME.get(condition)
    key = json.dumps(
        [
            FORMAT_VERSION,
            clip.path,
            stat.st_size,
            stat.st_mtime_ns,
            condition,
            profile.to_dict() if profile else None,
            task.max_seconds,
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(task.cache_dir) / "conditions" / f"{clip.stem[:60]}.{condition}.{digest}"


def prepare_condition(task: PrepareTask) -> PreparedCondition | str:
    """The condition's media and audio (cached); a one-line reason when the clip is unusable."""
    from monitor.errors import InputError
    from monitor.evaluation.sessions import decode_audio, save_audio

    started = time.perf_counter()
    stem = _condition_stem(task)
    audio_path = stem.with_suffix(".npy")
    media_path = Path(task.clip.path)
    try:
        if task.condition != RECORDED:
            media_path = stem.with_suffix(".mkv")
            if not media_path.exists():
                seed = int(hashlib.sha1(str(stem).encode()).hexdigest(), 16) % 2**31
                encode_call(
                    task.clip.path,
                    media_path,
                    PROFILES_BY_NAME[task.condition],
                    seed,
                    max_seconds=task.max_seconds,
                )
        if not audio_path.exists():
            samples, t0 = decode_audio(media_path, max_seconds=task.max_seconds)
            if not len(samples):
                return f"{task.clip.key}: no audio decoded"
            save_audio(audio_path, samples, t0)
    except InputError as exc:
        return f"{task.clip.key}: {exc}"
    return PreparedCondition(
        task.clip, task.condition, str(media_path), str(audio_path), time.perf_counter() - started
    )


# ----- from clips to session records ---------------------------------------------------------


def prepare_all(
    clips: Sequence[CorpusClip],
    *,
    calls_per_clip: int,
    cache_dir: Path,
    pool: ProcessPoolExecutor | None,
    max_seconds: float | None = None,
) -> tuple[list[PreparedCondition], list[str]]:
    """Every clip under ``recorded`` and its call conditions (cached); and what was skipped."""
    prepare = [
        PrepareTask(clip, condition, str(cache_dir), max_seconds)
        for clip in clips
        for condition in call_conditions(clip, calls_per_clip)
    ]
    # Longest clips first: the pool then ends with short ones and idles less.
    prepare.sort(key=lambda t: -t.clip.duration_s)
    prepared = run_all(pool, prepare_condition, prepare, "preparing call conditions")
    skipped = sorted({p for p in prepared if isinstance(p, str)})
    return [p for p in prepared if not isinstance(p, str)], skipped


def run_passes(
    prepared: Sequence[PreparedCondition],
    *,
    variants_for: Callable[[CorpusClip, dict[str, str]], tuple[Any, ...]],
    cache_dir: Path,
    pool: ProcessPoolExecutor | None,
    config_path: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    max_seconds: float | None = None,
) -> list[Any]:
    """One cached pipeline pass per prepared condition; its sessions' records, in order.

    ``variants_for(clip, donors)`` gives the pass's audio variants; ``donors`` maps every
    clip's key to its audio under the same condition, for swaps.
    """
    from monitor.evaluation.sessions import SessionTask, run_task

    audio_by_condition: dict[str, dict[str, str]] = {}
    for item in prepared:
        audio_by_condition.setdefault(item.condition, {})[item.clip.key] = item.audio_path
    tasks = []
    for item in prepared:
        donors = audio_by_condition[item.condition]
        variants = variants_for(item.clip, donors)
        tasks.append(
            SessionTask(
                clip=item.clip.key,
                condition=item.condition,
                media_path=item.media_path,
                audio_path=item.audio_path,
                variants=variants,
                donor_audio={v.donor: donors[v.donor] for v in variants if v.donor},
                config_path=config_path,
                config_overrides=config_overrides or {},
                cache_dir=str(cache_dir),
                max_seconds=max_seconds,
            )
        )
    results = run_all(pool, run_task, tasks, "running sessions")
    return [r for batch in results for r in batch]


def collect_records(
    clips: Sequence[CorpusClip],
    *,
    calls_per_clip: int,
    variants_for: Callable[[CorpusClip, dict[str, str]], tuple[Any, ...]],
    cache_dir: Path,
    jobs: int,
    config_path: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    max_seconds: float | None = None,
    log_path: Path | None = None,
) -> tuple[list[Any], list[PreparedCondition], list[str], dict[str, float]]:
    """:func:`prepare_all` then :func:`run_passes` in one worker pool: the records, the
    prepared conditions, the reasons clips were skipped, and the seconds each stage took."""
    timings: dict[str, float] = {}
    pool = open_pool(jobs, log_path)
    try:
        started = time.monotonic()
        prepared, skipped = prepare_all(
            clips,
            calls_per_clip=calls_per_clip,
            cache_dir=cache_dir,
            pool=pool,
            max_seconds=max_seconds,
        )
        timings["prepare_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        records = run_passes(
            prepared,
            variants_for=variants_for,
            cache_dir=cache_dir,
            pool=pool,
            config_path=config_path,
            config_overrides=config_overrides,
            max_seconds=max_seconds,
        )
        timings["sessions_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if pool is not None:
            pool.shutdown()
    return records, prepared, skipped, timings


def pick_donor(
    clip: CorpusClip, candidates: Sequence[CorpusClip], donors: dict[str, str]
) -> str | None:
    """Another clip's key from another source (so another speaker), half the list away."""
    others = [c for c in candidates if c.group != clip.group and c.key in donors]
    if not others:
        return None
    index = [c.key for c in candidates].index(clip.key) if clip in candidates else 0
    return others[(index + len(others) // 2) % len(others)].key
