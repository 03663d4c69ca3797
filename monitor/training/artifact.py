"""Train the artifact network on self-blended pseudo-fakes (data: :mod:`.artifact_data`).

Stages, each reusable on its own (``tools/train_artifact.py`` runs them in order):

- :func:`prepare_pool`: every clip of the pool to samples, cached under ``/tmp``, in
  spawned worker processes.
- :func:`train_model`: paired batches (a chunk's real rendition next to its pseudo-fake,
  under the same call conditions, so who the person is and how the call looks cannot tell
  them apart), a fake loss and a boundary-map loss.
- :func:`heldout_report`: the pseudo-task on clips kept out of training (frame and chunk
  AUC), the number to watch before any other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from monitor.training.artifact_data import PoolClip, prepare_clip

log = logging.getLogger(__name__)

# Worker processes: one thread each, MediaPipe quiet.
WORKER_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GLOG_minloglevel": "2",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
REAL_CHUNKS = 24
FAKE_CHUNKS = 6


def clip_seed(clip: PoolClip, seed: int) -> int:
    digest = hashlib.sha1(f"{clip.path.name}|{seed}".encode()).hexdigest()
    return int(digest[:8], 16)


@dataclass(frozen=True)
class PrepareJob:
    clip: PoolClip
    cache: Path
    n_chunks: int
    seed: int
    blend: bool


def _prepare(job: PrepareJob) -> tuple[PoolClip, Path | None, float]:
    started = time.perf_counter()
    path = prepare_clip(job.clip, job.cache, job.n_chunks, job.seed, job.blend)
    return job.clip, path, time.perf_counter() - started


def _init_worker() -> None:
    os.environ.update(WORKER_ENVIRONMENT)
    import cv2

    cv2.setNumThreads(1)


def prepare_pool(
    clips: Sequence[PoolClip], cache: Path, *, seed: int = 0, jobs: int = 2
) -> list[tuple[PoolClip, Path]]:
    """Samples of every clip (pseudo-fakes of the real ones), longest clips first."""
    tasks = [
        PrepareJob(
            clip,
            cache,
            REAL_CHUNKS if clip.label == "real" else FAKE_CHUNKS,
            clip_seed(clip, seed),
            clip.label == "real",
        )
        for clip in clips
    ]
    tasks.sort(key=lambda t: -t.clip.path.stat().st_size)
    done: list[tuple[PoolClip, Path]] = []
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    started = time.monotonic()
    with ProcessPoolExecutor(
        max(1, jobs), mp_context=get_context("spawn"), initializer=_init_worker
    ) as pool:
        for i, (clip, path, seconds) in enumerate(pool.map(_prepare, tasks), start=1):
            log.info(
                "[%d/%d %.0f s] %s: %s (%.1f s)",
                i,
                len(tasks),
                time.monotonic() - started,
                clip.name,
                "no samples" if path is None else path.name,
                seconds,
            )
            if path is not None:
                done.append((clip, path))
    return done


@dataclass
class SampleSet:
    """Samples of many clips in memory; ``clip`` indexes ``clips``."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    boundary: np.ndarray  # (N, G, G) float16, nan: unknown
    label: np.ndarray  # (N,) int8
    chunk: np.ndarray  # (N,) int32, unique over the set
    fake_rendition: np.ndarray  # (N,) int8
    clip: np.ndarray  # (N,) int32
    clips: list[PoolClip]

    def subset(self, mask: np.ndarray) -> SampleSet:
        return SampleSet(
            self.crops[mask],
            self.boundary[mask],
            self.label[mask],
            self.chunk[mask],
            self.fake_rendition[mask],
            self.clip[mask],
            self.clips,
        )

    def __len__(self) -> int:
        return len(self.label)


def load_samples(prepared: Sequence[tuple[PoolClip, Path]]) -> SampleSet:
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("crops", "boundary", "label", "chunk", "fake_rendition", "clip")
    }
    clips = []
    chunk_offset = 0
    for index, (clip, path) in enumerate(prepared):
        with np.load(path) as data:
            n = len(data["label"])
            for key in ("crops", "boundary", "label", "fake_rendition"):
                parts[key].append(data[key])
            parts["chunk"].append(data["chunk"].astype(np.int32) + chunk_offset)
            chunk_offset += int(data["chunk"].max()) + 1
        parts["clip"].append(np.full(n, index, np.int32))
        clips.append(clip)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return SampleSet(clips=clips, **arrays)


def heldout_groups(clips: Sequence[PoolClip], share: float, seed: int, label: str) -> set[str]:
    """Groups (people, scenes) of ``label`` clips kept out of training, about ``share``."""
    groups = sorted({c.group for c in clips if c.label == label})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    return set(groups[: max(1, int(round(share * len(groups))))])


def out_of_fold(clip: PoolClip, held: set[str], train_on_fakes: bool) -> bool:
    """Whether training never saw ``clip``: its group was held out, or it is one of the
    pool's fakes and none of those was trained on."""
    return clip.group in held or (clip.label == "fake" and not train_on_fakes)


def split_heldout(
    samples: SampleSet, share: float, seed: int, train_on_fakes: bool
) -> tuple[SampleSet, SampleSet, set[str]]:
    """(train, held out, held-out groups). Real clips are held out by group; the pool's
    fakes too when training uses them, else all of them (none is trained on)."""
    held = heldout_groups(samples.clips, share, seed, "real")
    if train_on_fakes:
        held |= heldout_groups(samples.clips, share, seed, "fake")
    out = np.array([out_of_fold(samples.clips[c], held, train_on_fakes) for c in samples.clip])
    return samples.subset(~out), samples.subset(out), held


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC of positives against negatives over their finite values; nan if a side is empty."""
    from monitor.evaluation.metrics import roc_auc

    pos = np.asarray(positive, np.float64)
    neg = np.asarray(negative, np.float64)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    return roc_auc(neg, pos)


def summarize_counts(samples: SampleSet) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for index in np.unique(samples.clip):
        kind = samples.clips[index].kind
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "samples": len(samples),
        "pseudo_fakes": int(samples.fake_rendition.sum()),
        "clips_by_kind": kinds,
    }


# ----- training ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 700  # about 45 min on one shared core
    pairs_per_batch: int = 12  # each pair: a real rendition and its pseudo-fake
    real_fakes_per_batch: int = 4  # fakes of the pool (no mask), as extra positives
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    boundary_weight: float = 1.0
    threads: int = 1  # more intra-op threads contend badly on a shared 2-core machine
    seed: int = 0
    eval_every: int = 250


def _pairs(samples: SampleSet) -> np.ndarray:
    """(P, 2) indices of (real rendition, pseudo-fake) of the same chunk and frame slot."""
    pairs = []
    by_chunk: dict[int, dict[int, list[int]]] = {}
    for i in np.flatnonzero(samples.label == 0):
        by_chunk.setdefault(int(samples.chunk[i]), {}).setdefault(0, []).append(int(i))
    for i in np.flatnonzero(samples.fake_rendition == 1):
        by_chunk.setdefault(int(samples.chunk[i]), {}).setdefault(1, []).append(int(i))
    for renditions in by_chunk.values():
        reals, fakes = renditions.get(0, []), renditions.get(1, [])
        for a, b in zip(reals, fakes, strict=False):
            pairs.append((a, b))
    return np.array(pairs, np.int64).reshape(-1, 2)


def _batch(
    samples: SampleSet, indices: np.ndarray, rng: np.random.Generator
) -> tuple[Any, Any, Any, Any]:
    import torch

    from monitor.detectors.artifact.crops import normalize

    crops = samples.crops[indices]
    boundary = samples.boundary[indices].astype(np.float32)
    flip = rng.random(len(indices)) < 0.5
    crops = np.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
    boundary = np.where(flip[:, None, None], boundary[:, :, ::-1], boundary)
    known = np.isfinite(boundary)
    return (
        torch.from_numpy(normalize(crops)),
        torch.from_numpy(samples.label[indices].astype(np.float32)),
        torch.from_numpy(np.nan_to_num(boundary)),
        torch.from_numpy(known.astype(np.float32)),
    )


def predict(model: Any, samples: SampleSet, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Fake logits and boundary maps of every sample (eval mode)."""
    from monitor.detectors.artifact.model import score_crops

    model.eval()
    logits, maps = [], []
    for start in range(0, len(samples), batch):
        a, b = score_crops(model, samples.crops[start : start + batch])
        logits.append(a)
        maps.append(b)
    return np.concatenate(logits), np.concatenate(maps)


def heldout_report(model: Any, heldout: SampleSet) -> dict[str, Any]:
    """Pseudo-task AUC on held-out clips: per frame, per chunk (mean logit over its frames),
    per clip; and each pool-fake kind against the held-out real renditions, per chunk."""
    logits, maps = predict(model, heldout)
    out: dict[str, Any] = {}
    real = heldout.label == 0
    pseudo = heldout.fake_rendition == 1
    out["frame_auc"] = auc(logits[pseudo], logits[real])

    def chunk_means(mask: np.ndarray) -> dict[int, float]:
        values: dict[int, list[float]] = {}
        for i in np.flatnonzero(mask):
            values.setdefault(int(heldout.chunk[i]), []).append(float(logits[i]))
        return {k: float(np.mean(v)) for k, v in values.items()}

    real_chunks = chunk_means(real)
    out["chunk_auc"] = auc(list(chunk_means(pseudo).values()), list(real_chunks.values()))
    clip_of_chunk = {int(c): int(k) for c, k in zip(heldout.chunk, heldout.clip, strict=True)}
    real_clip_scores: dict[int, list[float]] = {}
    for chunk, value in real_chunks.items():
        real_clip_scores.setdefault(clip_of_chunk[chunk], []).append(value)
    real_clips = [float(np.mean(v)) for v in real_clip_scores.values()]
    kinds: dict[str, list[float]] = {}
    for chunk, value in chunk_means(heldout.label == 1).items():
        clip = heldout.clips[clip_of_chunk[chunk]]
        if clip.label == "fake":
            kinds.setdefault(clip.kind, []).append(value)
    for kind, values in sorted(kinds.items()):
        out[f"{kind}_chunk_auc"] = auc(values, list(real_chunks.values()))
    # The boundary head: mean predicted map inside the true seam against outside it.
    target = heldout.boundary.astype(np.float32)
    seam = pseudo[:, None, None] & np.isfinite(target) & (target > 0.5)
    quiet = real[:, None, None] & np.isfinite(target)
    out["boundary_in_seam"] = float(maps[seam].mean()) if seam.any() else float("nan")
    out["boundary_on_real"] = float(maps[quiet].mean()) if quiet.any() else float("nan")
    out["real_clips"] = len(real_clips)
    return out


def train_model(
    train: SampleSet,
    settings: TrainSettings,
    heldout: SampleSet | None = None,
    model: Any = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train (from scratch unless ``model`` is given); returns the model and the log."""
    import torch

    from monitor.detectors.artifact.model import ArtifactNet

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rng = np.random.default_rng(settings.seed)
    model = model or ArtifactNet()
    pairs = _pairs(train)
    real_fakes = np.flatnonzero((train.label == 1) & (train.fake_rendition == 0))
    if not len(pairs):
        raise ValueError("no (real, pseudo-fake) pairs to train on")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return settings.lr * (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return settings.lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * progress)))

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    history: list[dict[str, Any]] = []
    started = time.monotonic()
    running = {"loss": 0.0, "fake": 0.0, "boundary": 0.0, "n": 0}
    for step in range(settings.steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        chosen = pairs[rng.integers(0, len(pairs), settings.pairs_per_batch)].reshape(-1)
        if settings.real_fakes_per_batch and len(real_fakes):
            extra = real_fakes[rng.integers(0, len(real_fakes), settings.real_fakes_per_batch)]
            chosen = np.concatenate([chosen, extra])
        x, label, target, known = _batch(train, chosen, rng)
        logits, boundary = model(x)
        fake_loss = bce(logits, label)
        cell_loss = bce(boundary, target, reduction="none")
        boundary_loss = (cell_loss * known).sum() / known.sum().clamp(min=1.0)
        loss = fake_loss + settings.boundary_weight * boundary_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running["loss"] += float(loss.detach())
        running["fake"] += float(fake_loss.detach())
        running["boundary"] += float(boundary_loss.detach())
        running["n"] += 1
        last = step + 1 == settings.steps
        if (step + 1) % settings.eval_every == 0 or last:
            entry: dict[str, Any] = {
                "step": step + 1,
                "seconds": round(time.monotonic() - started, 1),
                **{k: round(running[k] / running["n"], 4) for k in ("loss", "fake", "boundary")},
            }
            running = {"loss": 0.0, "fake": 0.0, "boundary": 0.0, "n": 0}
            if heldout is not None and len(heldout):
                entry["heldout"] = {
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in heldout_report(model, heldout).items()
                }
            log.info("%s", entry)
            history.append(entry)
    model.eval()
    return model, history


# ----- scoring whole clips (calibration, evaluation) ---------------------------------------


@dataclass
class ClipValues:
    """The detector's window values over one clip (mean fake logit of each window's scored
    frames), as the pipeline computes them, with the strongest window's region."""

    name: str
    condition: str  # "recorded" or the re-encoding's name
    window_values: list[float]
    window_spans: list[tuple[float, float]]
    regions: list[str]
    frames: int
    face_frames: int

    @property
    def session_value(self) -> float:
        return float(np.mean(self.window_values)) if self.window_values else float("nan")


def neutral_calibration() -> Any:
    """Calibration that leaves values as they are (z = value): for measuring only."""
    from monitor.detectors.artifact.calibration import ArtifactCalibration
    from monitor.detectors.temporal.calibration import Stats

    return ArtifactCalibration(Stats(0.0, 1.0), Stats(0.0, 1.0))


def clip_values(
    frames: Sequence[Any], name: str, condition: str, config: Any, backend: Any
) -> ClipValues:
    """Run the detector over a clip's tracked frames (``FrameFeatures``), window by window."""
    from monitor.detectors.artifact.detector import ArtifactDetector
    from monitor.training.faces import iter_windows

    detector = ArtifactDetector(config, backend=backend, calibration=neutral_calibration())
    values, spans, regions = [], [], []
    for window in iter_windows(list(frames), config.window):
        evidence = detector.analyze(window)
        if evidence.score is None:
            continue
        values.append(float(evidence.fields["logit"]))
        spans.append((window.t_start, window.t_end))
        regions.append(str(evidence.fields["region"]))
    return ClipValues(
        name,
        condition,
        values,
        spans,
        regions,
        len(frames),
        sum(f.face is not None for f in frames),
    )


def balanced_stats(per_clip: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Mean and spread over values pooled from clips, each clip weighing the same."""
    values, weights = [], []
    for clip in per_clip:
        clip = np.asarray(clip, np.float64)
        clip = clip[np.isfinite(clip)]
        if len(clip):
            values.append(clip)
            weights.append(np.full(len(clip), 1.0 / len(clip)))
    pooled, w = np.concatenate(values), np.concatenate(weights)
    mean = float(np.average(pooled, weights=w))
    return mean, float(np.sqrt(np.average((pooled - mean) ** 2, weights=w)))


# ----- calibration against genuine video ---------------------------------------------------

# A starved call: what tools/calibrate_temporal.py re-encodes the pool with (x264 crf 28,
# at most 640x360).
CALL_CONDITION = "call"


def call_encoding() -> Any:
    from monitor.evaluation.variants import EncodeSettings

    return EncodeSettings(crf=28, max_long_side=640, max_short_side=360, max_seconds=20.0)


@dataclass(frozen=True)
class ScoreJob:
    clip: PoolClip
    condition: str  # "recorded" or CALL_CONDITION
    onnx: Path
    cache: Path


def _score(job: ScoreJob) -> ClipValues | None:
    from monitor.config import MonitorConfig
    from monitor.detectors.artifact.backend import OnnxArtifactBackend
    from monitor.errors import InputError
    from monitor.evaluation.variants import prepare_clip as encode_clip
    from monitor.training.faces import clip_frames

    path = job.clip.path
    try:
        if job.condition == CALL_CONDITION:
            encoded = encode_clip(path, job.cache / "call", call_encoding(), kinds=("original",))
            path = encoded.video_tracks["original"]
        frames = clip_frames(path, job.cache / "faces")
    except InputError as exc:
        log.warning("%s (%s): %s", job.clip.name, job.condition, exc)
        return None
    config = MonitorConfig()
    return clip_values(frames, job.clip.name, job.condition, config, OnnxArtifactBackend(job.onnx))


def score_pool(
    clips: Sequence[PoolClip], conditions: Sequence[str], onnx: Path, cache: Path, jobs: int = 2
) -> list[ClipValues]:
    """Window values of every clip in every condition, through the detector as it runs."""
    tasks = [ScoreJob(c, condition, onnx, cache) for condition in conditions for c in clips]
    tasks.sort(key=lambda t: -t.clip.path.stat().st_size)
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    results = []
    started = time.monotonic()
    with ProcessPoolExecutor(
        max(1, jobs), mp_context=get_context("spawn"), initializer=_init_worker
    ) as pool:
        for i, values in enumerate(pool.map(_score, tasks), start=1):
            if values is not None:
                results.append(values)
                log.info(
                    "[%d/%d %.0f s] %s (%s): %d windows, mean %.2f",
                    i,
                    len(tasks),
                    time.monotonic() - started,
                    values.name,
                    values.condition,
                    len(values.window_values),
                    values.session_value,
                )
    return results


def calibrate(
    values: Sequence[ClipValues], clips: Sequence[PoolClip], center_z: float, width_z: float
) -> Any:
    """Genuine statistics from the real clips in every condition (each clip weighing the
    same); nothing is fitted to the fakes."""
    from monitor.detectors.artifact.calibration import ArtifactCalibration
    from monitor.detectors.temporal.calibration import Stats

    labels = {c.name: c.label for c in clips}
    genuine = [v for v in values if labels.get(v.name) == "real" and v.window_values]
    if len(genuine) < 3:
        raise ValueError(f"need at least 3 scored real clips, got {len(genuine)}")
    window_mean, window_std = balanced_stats([v.window_values for v in genuine])
    sessions = np.array([v.session_value for v in genuine])
    return ArtifactCalibration(
        window=Stats(window_mean, max(window_std, 1e-3)),
        session=Stats(float(sessions.mean()), max(float(sessions.std()), 1e-3)),
        center_z=center_z,
        width_z=width_z,
    )


def pool_report(
    values: Sequence[ClipValues], clips: Sequence[PoolClip], calibration: Any
) -> dict[str, Any]:
    """Per condition: each fake kind's per-clip AUC (session value) against the real clips,
    and how genuine clips sit against the calibration (windows and sessions over 2 and 3
    sigma)."""
    by_name = {c.name: c for c in clips}
    report: dict[str, Any] = {}
    for condition in sorted({v.condition for v in values}):
        rows = [v for v in values if v.condition == condition and v.window_values]
        real = [v for v in rows if by_name[v.name].label == "real"]
        block: dict[str, Any] = {"real_clips": len(real)}
        kinds = sorted({by_name[v.name].kind for v in rows if by_name[v.name].label == "fake"})
        for kind in kinds:
            fakes = [v for v in rows if by_name[v.name].kind == kind]
            block[kind] = {
                "clips": len(fakes),
                "auc": round(
                    auc([f.session_value for f in fakes], [r.session_value for r in real]), 3
                ),
            }
        window_z = [calibration.window.z(x) for v in real for x in v.window_values]
        session_z = [calibration.session.z(v.session_value) for v in real]
        block["real_windows"] = len(window_z)
        block["real_windows_over_2_sigma"] = int(sum(z > 2 for z in window_z))
        block["real_windows_over_3_sigma"] = int(sum(z > 3 for z in window_z))
        block["real_sessions_over_2_sigma"] = int(sum(z > 2 for z in session_z))
        block["max_real_window_z"] = round(max(window_z), 2) if window_z else None
        report[condition] = block
    return report


# ----- the sequential decision's map (monitor/decision.py) ---------------------------------

# The map never speaks for a genuine call (the network cannot see whole generated heads)
# and one window says at most this much (nats) for a pasted face.
DECISION_LLR_RANGE = (0.0, 1.0)


def decision_map(
    values: Sequence[ClipValues], clips: Sequence[PoolClip], calibration: Any
) -> dict[str, Any]:
    """The detector's score -> log-likelihood-ratio map for the sequential decision, from
    the held-out pool's windows, conservatively.

    The slope is the class-balanced logistic fit of pasted fakes (the pool's lip-sync
    fakes) against genuine windows (real clips, recorded and as a starved call) on the
    logit of the window score, as ``tools/calibrate_decision.py`` fits the other
    detectors. The intercept is then lowered so that the strongest genuine window gives
    0 nats, and the map is clipped to :data:`DECISION_LLR_RANGE`: no genuine window of the
    calibration adds evidence, and a window adds evidence only beyond every one of them.
    """
    from monitor.decision import logit
    from monitor.evaluation.calibrate import balanced_weights, fit_logistic_1d

    kinds = {c.name: (c.label, c.kind) for c in clips}
    x, y = [], []
    for clip in values:
        label, kind = kinds[clip.name]
        if label == "fake" and kind != "lipsync":
            continue
        for value in clip.window_values:
            x.append(logit(calibration.score(calibration.window.z(value))))
            y.append(1.0 if label == "fake" else 0.0)
    x_arr, y_arr = np.array(x), np.array(y)
    if not len(x_arr) or y_arr.min() == y_arr.max():
        raise ValueError("the decision map needs genuine and lip-sync windows")
    slope, fitted_intercept = fit_logistic_1d(x_arr, y_arr, balanced_weights(y_arr))
    genuine_max = float(x_arr[y_arr == 0].max())
    slope = max(slope, 0.0)
    intercept = -slope * genuine_max
    return {
        "slope": slope,
        "intercept": intercept,
        "llr_min": DECISION_LLR_RANGE[0],
        "llr_max": DECISION_LLR_RANGE[1],
        "fit": {
            "windows": {"genuine": int((y_arr == 0).sum()), "lipsync": int(y_arr.sum())},
            "fitted_intercept": round(float(fitted_intercept), 4),
            "genuine_max_score_logit": round(genuine_max, 3),
            "window_auc": round(auc(x_arr[y_arr == 1], x_arr[y_arr == 0]), 3),
        },
    }
