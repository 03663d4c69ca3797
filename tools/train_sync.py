"""Train a learned sync model from scratch: monitor/models/NAME.{pt,onnx}, the two streaming
graphs (NAME.frames.onnx, NAME.windows.onnx) and NAME.training.json.

The default is the shipped model's recipe, ``sync_v2`` (no dev clips, the larger training
pool, call re-encodes that show the nearest source frame); seeded, on 2 CPU cores
(``--threads``; 1 is faster when other jobs share the cores), about 63 minutes from an empty
cache (monitor/models/MODEL_CARD.md):

    nice -n 10 .venv/bin/python tools/train_sync.py --name sync_v2

Shipping a new model: set ``MODEL_NAME`` (monitor/sync/checkpoint.py), bump
``LearnedSyncDetector.version``, rerun tools/calibrate_decision.py (its maps are bound to
the detector version) and update the model card.

Method (details in monitor/models/MODEL_CARD.md): self-supervised multi-way matching.
Each training sample is a 2 s window made exactly as the pipeline makes it (25 fps grid,
pipeline audio features over the window plus 0.6 s context). Every 5-frame video stack
must pick its own audio among 31 lags (-600..+600 ms) of the same clip plus the
same-time audio of the other windows in the batch (swapped-audio negatives): InfoNCE
over cosine similarities. Afterwards a logistic calibration of the in-sync probability
is fit on four train-pool speakers kept out of training, with shifted and swapped audio.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from monitor.evaluation.metrics import auc_or_nan
from monitor.training import sync_data

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("train_sync")

WINDOW_S = 2.0
CONTEXT_S = 0.6
# Share of training windows drawn from each kind of clip.
GROUP_SHARES = {"file": 0.3, "call": 0.3, "fake": 0.2, "synth": 0.2}
# A clip contributes at most this many seconds' worth of sampling weight (one 60 s
# speaker must not dominate 16 others).
CLIP_WEIGHT_CAP_S = 15.0
# Calibration conditions: genuine, shifted by these offsets (s), swapped.
CALIBRATION_SHIFTS = (-0.4, -0.28, -0.2, 0.2, 0.28, 0.4)


@dataclass
class TrainClip:
    name: str
    group: str
    track: object  # FrameTrack
    audio: object  # AudioBuffer of the clip's samples
    floor_db: float
    starts: np.ndarray  # candidate window starts (s)


def load_training_clips(paths: list[Path]) -> list[TrainClip]:
    from monitor.config import AudioConfig
    from monitor.features.audio import compute_audio_features

    clips = []
    for path in paths:
        cached = sync_data.load_cached(path)
        if len(cached.times) < 10 or not len(cached.samples):
            continue
        audio = compute_audio_features(cached.samples, cached.audio_t0, AudioConfig())
        floor_db = float(np.percentile(audio.loudness_db, 10.0))
        track = cached.track()
        candidates = np.arange(cached.times[0], cached.times[-1] - WINDOW_S, 0.1)
        keep = []
        for t in candidates:
            in_window = (track.times >= t) & (track.times < t + WINDOW_S)
            rows = (audio.times >= t) & (audio.times < t + WINDOW_S)
            if in_window.sum() < 10 or not rows.any():
                continue
            if track.face[in_window].mean() >= 0.6 and audio.voiced[rows].mean() >= 0.2:
                keep.append(t)
        if not keep:
            continue
        group = "fake" if cached.split == "train_fake" else cached.kind
        clips.append(
            TrainClip(
                cached.name,
                group,
                track,
                audio_buffer(cached),
                floor_db,
                np.asarray(keep),
            )
        )
    return clips


def audio_buffer(cached):  # noqa: ANN001, ANN201 - CachedClip -> AudioBuffer
    from monitor.media import AudioChunk
    from monitor.windows import AudioBuffer

    buffer = AudioBuffer()
    buffer.add(AudioChunk(cached.audio_t0, cached.samples))
    return buffer


# -- augmentation -------------------------------------------------------------------------


def augment_track(track, rng: np.random.Generator):  # noqa: ANN001, ANN201 - FrameTrack
    """Camera and tracker conditions: light, contrast, blur, noise, framing jitter, drops."""
    from monitor.sync.features import FrameTrack

    n = len(track)
    crops = track.crops.astype(np.float32)
    # One affine for the window (framing), plus per-frame jitter (tracker noise).
    scale = rng.uniform(0.9, 1.1)
    dx, dy = rng.uniform(-4, 4), rng.uniform(-3, 3)
    flip = rng.random() < 0.5
    blur = rng.uniform(0.5, 1.5) if rng.random() < 0.25 else 0.0
    out = np.empty_like(crops)
    for i in range(n):
        jx, jy = rng.normal(0, 0.7, 2)
        matrix = np.array(
            [[scale, 0, (1 - scale) * 48 + dx + jx], [0, scale, (1 - scale) * 24 + dy + jy]],
            dtype=np.float32,
        )
        frame = cv2.warpAffine(crops[i], matrix, (96, 48), borderMode=cv2.BORDER_REPLICATE)
        if blur:
            frame = cv2.GaussianBlur(frame, (0, 0), blur)
        out[i] = frame[:, ::-1] if flip else frame
    contrast = rng.uniform(0.5, 1.3)
    gamma = rng.uniform(0.7, 1.6)
    brightness = rng.uniform(-25, 25)
    out = 255.0 * np.power(np.clip(out / 255.0, 0, 1), gamma)
    out = (out - 128.0) * contrast + 128.0 + brightness
    out += rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(0, 6)
    crops_u8 = np.clip(out, 0, 255).astype(np.uint8)

    lips = track.lips.copy()
    lips[:, :80] *= rng.uniform(0.9, 1.1)
    lips += rng.normal(0, 0.01, lips.shape).astype(np.float32)
    times = track.times + rng.normal(0, 0.004, n)
    keep = np.ones(n, bool)
    if rng.random() < 0.3:
        keep = rng.random(n) >= rng.uniform(0.03, 0.12)
    return FrameTrack(times[keep], track.face[keep], crops_u8[keep], lips[keep])


def augment_audio(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:
        level = float(np.sqrt(np.mean(samples**2)) + 1e-6)
        snr_db = rng.uniform(5.0, 25.0)
        noise = rng.normal(0, level * 10 ** (-snr_db / 20.0), len(samples)).astype(np.float32)
        samples = samples + noise
    return samples * np.float32(rng.uniform(0.3, 2.0))


# -- batches and loss ---------------------------------------------------------------------


def sample_window(
    clips: list[TrainClip], weights: np.ndarray, rng: np.random.Generator, augment: bool
):  # noqa: ANN201 - SyncInputs
    """One augmented training window's SyncInputs (retries until a usable one is drawn)."""
    from monitor.config import AudioConfig
    from monitor.features.audio import compute_audio_features
    from monitor.sync.features import build_inputs

    config = AudioConfig()
    while True:
        clip = clips[int(rng.choice(len(clips), p=weights))]
        t_start = float(rng.choice(clip.starts)) + rng.uniform(0, 0.1)
        t_end = t_start + WINDOW_S
        track = clip.track.select(t_start, t_end)
        if augment:
            track = augment_track(track, rng)
        span = clip.audio.span(t_start - CONTEXT_S, t_end + CONTEXT_S)
        if augment:
            span = augment_audio(span, rng)
        audio = compute_audio_features(span, t_start - CONTEXT_S, config, clip.floor_db)
        inputs = build_inputs(track, audio, t_start, t_end)
        if inputs is not None and len(inputs.positions) >= 8:
            return inputs


def sampling_weights(clips: list[TrainClip]) -> np.ndarray:
    raw = np.array([min(len(c.starts) * 0.1, CLIP_WEIGHT_CAP_S) for c in clips])
    weights = np.zeros(len(clips))
    for group, share in GROUP_SHARES.items():
        members = np.array([c.group == group for c in clips])
        if members.any():
            weights[members] = raw[members] / raw[members].sum() * share
    return weights / weights.sum()


def batch_loss(model, logit_scale, batch, torch):  # noqa: ANN001, ANN201
    """InfoNCE: each video step picks its lag-0 audio among 31 lags and the batch's other
    windows' audio at the same step (swapped-audio negatives)."""
    crops = torch.from_numpy(np.stack([b.crops for b in batch]))
    lips = torch.from_numpy(np.stack([b.lips for b in batch]))
    mel = torch.from_numpy(np.stack([b.mel for b in batch]))
    video, audio = model(crops, lips, mel)
    video = torch.nn.functional.normalize(video, dim=2)
    audio = torch.nn.functional.normalize(audio, dim=2)
    n_windows = len(batch)
    scale = logit_scale.exp().clamp(max=50.0)
    losses, weights, correct, total = [], [], 0, 0
    for b, inputs in enumerate(batch):
        positions = torch.from_numpy(inputs.positions)
        v = video[b][positions]  # (K, D)
        lag_audio = audio[b][torch.from_numpy(inputs.audio_index())]  # (K, L, D)
        lag_logits = torch.einsum("kd,kld->kl", v, lag_audio)
        others = [o for o in range(n_windows) if o != b]
        zero_index = positions + inputs.max_lag
        other_audio = audio[others][:, zero_index].permute(1, 0, 2)  # (K, B-1, D)
        other_logits = torch.einsum("kd,kod->ko", v, other_audio)
        logits = torch.cat([lag_logits, other_logits], dim=1) * scale
        target = torch.full((len(positions),), inputs.max_lag, dtype=torch.long)
        losses.append(torch.nn.functional.cross_entropy(logits, target, reduction="none"))
        voiced = inputs.voiced[inputs.positions + inputs.max_lag]
        speech = voiced >= 0.3
        weights.append(torch.from_numpy(np.where(speech, 1.0, 0.1).astype(np.float32)))
        with torch.no_grad():
            hit = ((lag_logits.argmax(dim=1) - inputs.max_lag).abs() <= 1).numpy()
            correct += int((hit & speech).sum())
            total += int(speech.sum())
    loss_all = torch.cat(losses)
    weight_all = torch.cat(weights)
    return (loss_all * weight_all).sum() / weight_all.sum(), correct / max(total, 1)


def train(clips: list[TrainClip], steps: int, batch_size: int, seed: int, lr: float):  # noqa: ANN201
    import torch

    from monitor.sync.model import SyncNetLite

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = SyncNetLite()
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    params = list(model.parameters()) + [logit_scale]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    weights = sampling_weights(clips)
    model.train()
    started = time.perf_counter()
    running_loss, running_acc = 0.0, 0.0
    for step in range(steps):
        batch = [sample_window(clips, weights, rng, augment=True) for _ in range(batch_size)]
        loss, accuracy = batch_loss(model, logit_scale, batch, torch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        running_loss = 0.98 * running_loss + 0.02 * value if step else value
        running_acc = 0.98 * running_acc + 0.02 * accuracy if step else accuracy
        if step % 50 == 0 or step == steps - 1:
            log.info(
                "step %d/%d loss %.3f lag-acc(+-1) %.2f scale %.1f lr %.2e %.0f s",
                step,
                steps,
                running_loss,
                running_acc,
                float(logit_scale.detach().exp()),
                scheduler.get_last_lr()[0],
                time.perf_counter() - started,
            )
    model.eval()
    return model, {"final_loss": running_loss, "final_lag_accuracy": running_acc}


# -- calibration --------------------------------------------------------------------------


def window_curves(embed, clip, frames, shift_s: float, donor) -> list[np.ndarray]:  # noqa: ANN001
    from monitor.config import MonitorConfig
    from monitor.sync.features import window_inputs, window_lag_distances

    config = MonitorConfig().window
    curves = []
    for window in sync_data.clip_windows(clip, shift_s=shift_s, donor=donor, frames=frames):
        if window.face_fraction < config.min_face_fraction:
            continue
        if window.speech_fraction() < config.min_speech_fraction:
            continue
        inputs = window_inputs(window)
        if inputs is None:
            continue
        curves.append(window_lag_distances(inputs, embed).mean(axis=0))
    return curves


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 50):  # noqa: ANN201
    """Newton's method on the L2-penalized log loss (features standardized first)."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    design = np.hstack([z, np.ones((len(z), 1))])
    w = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ w))
        grad = design.T @ (p - y) + l2 * np.r_[w[:-1], 0.0]
        hess = design.T @ (design * (p * (1 - p))[:, None]) + l2 * np.diag(
            np.r_[np.ones(len(w) - 1), 0.0]
        )
        w -= np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
    weights = w[:-1] / std
    bias = float(w[-1] - np.sum(w[:-1] * mean / std))
    return weights, bias


def calibrate(model, paths: list[Path], seed: int):  # noqa: ANN001, ANN201
    """Fit the in-sync probability on held-out speakers: genuine vs shifted and swapped."""
    from monitor.explain.sync_target import torch_embed
    from monitor.sync.checkpoint import Calibration
    from monitor.sync.features import MAX_LAG_FRAMES
    from monitor.sync.scoring import curve_features

    embed = torch_embed(model)
    lags = np.arange(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1)
    clips = [sync_data.load_cached(p) for p in paths]
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    genuine_conf = []
    for i, clip in enumerate(clips):
        frames = clip.frame_features()
        base = clip.name.split(".")[0]
        donors = [c for c in clips if c.name.split(".")[0] != base]
        for curve in window_curves(embed, clip, frames, 0.0, None):
            rows.append(curve_features(curve, lags))
            labels.append(1.0)
            genuine_conf.append(rows[-1][0])
        for shift in CALIBRATION_SHIFTS:
            for curve in window_curves(embed, clip, frames, shift, None):
                rows.append(curve_features(curve, lags))
                labels.append(0.0)
        for donor in rng.permutation(len(donors))[:2]:
            for curve in window_curves(embed, clip, frames, 0.0, donors[int(donor)]):
                rows.append(curve_features(curve, lags))
                labels.append(0.0)
        log.info(
            "calibration clip %d/%d %s: %d rows so far", i + 1, len(clips), clip.name, len(rows)
        )
    x, y = np.asarray(rows), np.asarray(labels)
    # Equal total weight for genuine and manipulated windows: duplicate the minority rows.
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    repeat = max(1, int(round(len(negatives) / max(len(positives), 1))))
    index = np.concatenate([np.repeat(positives, repeat), negatives])
    weights, bias = fit_logistic(x[index], y[index])
    calibration = Calibration(
        weights=tuple(float(w) for w in weights),
        bias=bias,
        genuine_confidence=float(np.percentile(genuine_conf, 5)) if genuine_conf else 0.0,
    )
    probability = np.array([calibration.probability(r) for r in x])
    auc = auc_or_nan(1 - probability[y == 0], 1 - probability[y == 1])
    stats = {
        "calibration_windows": {"genuine": int(y.sum()), "manipulated": int((1 - y).sum())},
        "calibration_auc": auc,
        "genuine_confidence_median": float(np.median(genuine_conf)) if genuine_conf else None,
    }
    return calibration, stats


# -- export -------------------------------------------------------------------------------


def save_checkpoint(model, calibration, meta: dict, path: Path) -> None:  # noqa: ANN001
    import torch

    torch.save(
        {
            "config": model.config.to_dict(),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "calibration": calibration.to_dict(),
            "meta": json.dumps(meta, sort_keys=True),
        },
        path,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the learned lip-sync model.")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8, help="windows per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="data preparation processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (1 is faster on a machine whose cores other jobs share)",
    )
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--synth", type=int, default=24)
    parser.add_argument("--out", type=Path, default=REPO / "monitor" / "models")
    parser.add_argument(
        "--name", default="sync_v2", help="model name: the stem of the files it writes"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    if not sync_data.DATA_ROOT.exists():
        log.error("training data not found at %s", sync_data.DATA_ROOT)
        return 2

    train_jobs = sync_data.training_jobs(args.variants, args.synth, args.seed)
    calibration_jobs = sync_data.calibration_jobs(args.seed)
    sync_data.run_jobs(train_jobs + calibration_jobs, args.jobs)
    prep_s = time.perf_counter() - started
    clips = load_training_clips([j.cache_path for j in train_jobs])
    log.info(
        "data ready in %.0f s: %d clips, %d candidate windows",
        prep_s,
        len(clips),
        sum(len(c.starts) for c in clips),
    )

    model, train_stats = train(clips, args.steps, args.batch, args.seed, args.lr)
    train_s = time.perf_counter() - started - prep_s
    calibration, calibration_stats = calibrate(
        model, [j.cache_path for j in calibration_jobs], args.seed
    )
    log.info("calibration: %s %s", calibration, calibration_stats)

    from monitor.sync.export import export_onnx, export_stream_onnx
    from monitor.sync.model import macs_per_video_frame, parameter_count

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "seed": args.seed,
        "threads": args.threads,
        "steps": args.steps,
        "batch_windows": args.batch,
        "lr": args.lr,
        "train_clips": len(clips),
        "parameters": parameter_count(model),
        "macs_per_video_frame": macs_per_video_frame(model),
        "prep_seconds": round(prep_s, 1),
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in train_stats.items()},
        **calibration_stats,
    }
    weights_path = args.out / f"{args.name}.pt"
    save_checkpoint(model, calibration, meta, weights_path)
    export_onnx(weights_path, args.out / f"{args.name}.onnx")
    export_stream_onnx(
        weights_path,
        (args.out / f"{args.name}.frames.onnx", args.out / f"{args.name}.windows.onnx"),
    )
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    # Every clip training and the in-sync calibration read: what later calibrations and
    # evaluations must leave out (monitor.evaluation.calibration_run reads this list).
    meta["train_files"] = sync_data.training_files()
    (args.out / f"{args.name}.training.json").write_text(
        json.dumps(meta, indent=2, sort_keys=True) + "\n"
    )
    log.info("wrote %s and its ONNX in %.0f s total", weights_path, meta["total_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
