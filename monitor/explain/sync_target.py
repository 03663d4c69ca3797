"""The learned sync model as an explainable scorer: one window -> one sync-mismatch score.

The two-tower model (:mod:`monitor.sync.model`) turns a window into a distance-vs-lag
curve. Attribution needs one number, so the window is explained through the quantity
an alert rests on:

* ``offset`` mode (the window's best lag is outside the band genuine calls show):
  mean over the window's 5-frame stacks of ``d(lag 0) - d(best lag)``, i.e. how much
  better the audio matches the lips at the detected offset than at zero. Evidence
  that carries the desync raises it; removing that evidence brings the score to 0.
* ``distance`` mode (best lag inside the band, e.g. a lip-sync fake that is "in sync"
  but matches badly): mean ``d(lag 0)``, i.e. how badly lips and audio match.

Two implementations of the same score, checked against each other in the tests:

* :class:`SyncMismatchModule`, a torch module (white-box: gradients flow from the score
  through the embeddings, the per-stack normalization and the stacking back to every
  mouth pixel, lip coordinate and log-mel bin);
* :class:`SyncMismatchScorer`, numpy around any backend of :mod:`monitor.sync.backends`
  (black-box: it only calls ``embed(crops, lips, mel)``, so ONNX or TensorRT engines
  plug in). What an occlusion leaves untouched is not embedded again.

The preprocessing mirrors :func:`monitor.sync.features.build_inputs`, which the
detector uses, so the explained score is the detector's own view of the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.explain.inputs import AVExample, ExplanationInputError
from monitor.features.types import AudioFeatures
from monitor.sync.features import (
    GRID_STEP_S,
    MAX_LAG_FRAMES,
    MEL_DYNAMIC_RANGE,
    MIN_CROP_STD,
    FrameTrack,
    SyncInputs,
    build_inputs,
    grid_frames,
)
from monitor.sync.model import DISTANCE_SCALE, MEL_FRAMES, STACK_FRAMES

# Offsets genuine calls show (codec and jitter-buffer delays); the baseline detector's band.
GENUINE_OFFSET_MS = 120.0

# A backend's call: crops (N,5,H,W), lips (N,5,K), mel (M,20,F) -> (N,D), (M,D) embeddings.
EmbedFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SyncTarget:
    """One window prepared for explanation: the evidence and how the model reads it."""

    example: AVExample
    inputs: SyncInputs  # what the detector's preprocessing makes of the window
    stack_frames: np.ndarray  # (P, 5) grid frame of each stack frame
    audio_rows: np.ndarray  # (M, 20) mel row of each audio window row (may be out of range)
    lag0: int  # column of lag 0 in the lag curve
    lag_best: int  # column of the explained offset
    mode: str  # "offset" or "distance"

    @property
    def offset_ms(self) -> float:
        return float((self.lag_best - self.lag0) * GRID_STEP_S * 1000.0)

    def describe(self) -> str:
        if self.mode == "offset":
            return (
                f"sync mismatch: mean distance at lag 0 minus at the detected offset "
                f"{self.offset_ms:+.0f} ms (model distance units)"
            )
        return "sync mismatch: mean lip-audio distance at lag 0 (model distance units)"


def prepare_target(
    track: FrameTrack,
    audio: AudioFeatures,
    t_start: float,
    t_end: float,
    curve_fn: Callable[[SyncInputs], np.ndarray],
    *,
    offset_ms: float | None = None,
    max_lag: int = MAX_LAG_FRAMES,
) -> SyncTarget:
    """Build the example and the score's structure for ``[t_start, t_end)``.

    ``curve_fn`` returns the window's (P, L) distances (the model, clean input) and picks
    the offset when ``offset_ms`` (e.g. from the alert's evidence) is not given.
    """
    inputs = build_inputs(track, audio, t_start, t_end, max_lag)
    if inputs is None:
        raise ExplanationInputError(
            f"no five consecutive frames with a face in {t_start:.2f}-{t_end:.2f} s"
        )
    n_grid = int(round((t_end - t_start) / GRID_STEP_S))
    pick = grid_frames(track.times, t_start, n_grid)
    has_face = np.zeros(n_grid, bool)
    has_face[pick >= 0] = track.face[pick[pick >= 0]]
    mouth = np.zeros((n_grid, *track.crops.shape[1:]), np.float32)
    lips = np.zeros((n_grid, track.lips.shape[1]), np.float32)
    mouth[has_face] = track.crops[pick[has_face]]
    lips[has_face] = track.lips[pick[has_face]]
    example = AVExample.build(
        mouth,
        audio.log_mel,
        lips=lips,
        has_face=has_face,
        video_t0=t_start,
        video_step=GRID_STEP_S,
        audio_t0=audio.t0,
        audio_step=audio.hop_s,
    )
    stack_frames = inputs.starts[:, None] + np.arange(STACK_FRAMES)[None, :]
    first_row = int(round((t_start - max_lag * GRID_STEP_S - audio.t0) / audio.hop_s))
    n_audio = len(inputs.mel)
    rows = first_row + np.round(np.arange(n_audio) * GRID_STEP_S / audio.hop_s).astype(int)
    audio_rows = rows[:, None] + np.arange(MEL_FRAMES)[None, :]

    lag0 = inputs.max_lag
    if offset_ms is None:
        curve = curve_fn(inputs).mean(axis=0)
        lag_best = int(np.argmin(curve))
    else:
        lag_best = int(np.clip(round(offset_ms / 1000.0 / GRID_STEP_S) + lag0, 0, 2 * lag0))
    out_of_band = abs(lag_best - lag0) * GRID_STEP_S * 1000.0 > GENUINE_OFFSET_MS
    return SyncTarget(
        example=example,
        inputs=inputs,
        stack_frames=stack_frames,
        audio_rows=audio_rows,
        lag0=lag0,
        lag_best=lag_best,
        mode="offset" if out_of_band else "distance",
    )


# ----- numpy (black-box) -------------------------------------------------------------------


def _normalize_stacks(stacks: np.ndarray) -> np.ndarray:
    """monitor.sync.features.normalize_crops on float input."""
    mean = stacks.mean(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(stacks.std(axis=(1, 2, 3), keepdims=True), MIN_CROP_STD)
    return ((stacks - mean) / std).astype(np.float32)


def _normalized_mel_windows(mel: np.ndarray, audio_rows: np.ndarray) -> np.ndarray:
    """monitor.sync.features.normalize_mel, then the (M, 20, F) windows with floor fill."""
    mel = np.maximum(mel, mel.max() - MEL_DYNAMIC_RANGE)
    mel = mel - mel.mean(axis=0, keepdims=True)
    mel = mel / max(float(mel.std()), 1e-3)
    valid = (audio_rows >= 0) & (audio_rows < len(mel))
    out = np.full((*audio_rows.shape, mel.shape[1]), float(mel.min()), np.float32)
    out[valid] = mel[audio_rows[valid]]
    return out


def _score_from_distances(distances: np.ndarray, target: SyncTarget) -> float:
    if target.mode == "offset":
        return float((distances[:, target.lag0] - distances[:, target.lag_best]).mean())
    return float(distances[:, target.lag0].mean())


class SyncMismatchScorer:
    """Black-box scorer ``(mouth, mel, lips) -> scores`` around one backend ``embed`` call."""

    def __init__(self, target: SyncTarget, embed: EmbedFn):
        self.target = target
        self.embed = embed
        example = target.example
        self._clean_stacks = self._stacks(example.mouth)
        self._clean_lips = self._lip_stacks(example.lips)
        self._clean_mel = example.mel
        video, audio = embed(
            self._clean_stacks,
            self._clean_lips,
            _normalized_mel_windows(example.mel, target.audio_rows),
        )
        self._clean_video = np.asarray(video, np.float32)
        self._clean_audio = np.asarray(audio, np.float32)
        self.embedded = {"video": 0, "audio": 0}  # stacks and windows embedded after setup

    def _stacks(self, mouth: np.ndarray) -> np.ndarray:
        return _normalize_stacks(mouth[self.target.stack_frames])

    def _lip_stacks(self, lips: np.ndarray | None) -> np.ndarray:
        if lips is None:
            n_features = (
                82 if self.target.example.lips is None else self.target.example.lips.shape[1]
            )
            return np.zeros((*self.target.stack_frames.shape, n_features), np.float32)
        return lips[self.target.stack_frames].astype(np.float32)

    def distances(self, mouth: np.ndarray, mel: np.ndarray, lips: np.ndarray | None) -> np.ndarray:
        """(B, P, L) distance curves of a batch of inputs, with one backend call.

        Only what differs from the intact window is embedded: the video stacks an
        occlusion touched, and the audio of inputs whose mel changed at all (the mel is
        normalized over the whole window, so any change moves every audio window).
        """
        video_parts, lip_parts, audio_parts = [], [], []
        changes: list[tuple[np.ndarray, bool]] = []
        for b in range(len(mouth)):
            stacks = self._stacks(mouth[b])
            lip_stacks = self._lip_stacks(None if lips is None else lips[b])
            changed = np.any(stacks != self._clean_stacks, axis=(1, 2, 3)) | np.any(
                lip_stacks != self._clean_lips, axis=(1, 2)
            )
            mel_changed = not np.array_equal(mel[b], self._clean_mel)
            video_parts.append(stacks[changed])
            lip_parts.append(lip_stacks[changed])
            if mel_changed:
                audio_parts.append(_normalized_mel_windows(mel[b], self.target.audio_rows))
            changes.append((changed, mel_changed))
        n_video = sum(len(v) for v in video_parts)
        n_audio = sum(len(a) for a in audio_parts)
        new_video = new_audio = None
        if n_video or n_audio:
            # One backend call embeds both towers; an empty side sends one dummy item.
            crops = np.concatenate(video_parts) if n_video else self._clean_stacks[:1]
            lip_in = np.concatenate(lip_parts) if n_video else self._clean_lips[:1]
            windows = np.concatenate(audio_parts) if n_audio else None
            if windows is None:
                windows = _normalized_mel_windows(self._clean_mel, self.target.audio_rows)[:1]
            new_video, new_audio = (
                np.asarray(x, np.float32) for x in self.embed(crops, lip_in, windows)
            )
            self.embedded["video"] += n_video
            self.embedded["audio"] += n_audio
        out = []
        v_at = a_at = 0
        n_windows = len(self._clean_audio)
        for changed, mel_changed in changes:
            video, audio = self._clean_video, self._clean_audio
            if changed.any():
                assert new_video is not None
                video = video.copy()
                video[changed] = new_video[v_at : v_at + int(changed.sum())]
                v_at += int(changed.sum())
            if mel_changed:
                assert new_audio is not None
                audio = new_audio[a_at : a_at + n_windows]
                a_at += n_windows
            paired = audio[self.target.inputs.audio_index()]  # (P, L, D)
            out.append(np.linalg.norm(paired - video[:, None, :], axis=2))
        return np.stack(out)

    def __call__(self, mouth: np.ndarray, mel: np.ndarray, lips: np.ndarray | None) -> np.ndarray:
        return np.array(
            [_score_from_distances(d, self.target) for d in self.distances(mouth, mel, lips)]
        )


def torch_embed(model: object) -> EmbedFn:
    """The backend call for an in-memory :class:`~monitor.sync.model.SyncNetLite`."""
    import torch

    device = next(model.parameters()).device  # type: ignore[attr-defined]

    def embed(
        crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in (crops, lips, mel)]
        with torch.no_grad():
            video, audio = model(*tensors)  # type: ignore[operator]
        return video.cpu().numpy(), audio.cpu().numpy()

    return embed


def distance_curve_fn(embed: EmbedFn) -> Callable[[SyncInputs], np.ndarray]:
    """(P, L) distances of prepared inputs, as the detector computes them."""
    from monitor.sync.features import lag_distances

    def curve(inputs: SyncInputs) -> np.ndarray:
        return lag_distances(inputs, *embed(inputs.crops, inputs.lips, inputs.mel))

    return curve


# ----- torch (white-box) -------------------------------------------------------------------


def sync_mismatch_module(model: object, target: SyncTarget) -> object:
    """A :class:`SyncMismatchModule` (built lazily so importing this file needs no torch)."""
    return _module_class()(model, target)


def _module_class() -> type:
    import torch
    from torch import nn

    class SyncMismatchModule(nn.Module):
        """``(mouth (B,T,H,W), mel (B,A,F), lips (B,T,K)) -> (B,)`` mismatch scores."""

        def __init__(self, model: nn.Module, target: SyncTarget) -> None:
            super().__init__()
            self.model = model.eval()
            self.mode = target.mode
            self.lag0, self.lag_best = target.lag0, target.lag_best
            rows = target.audio_rows
            self.register_buffer("stack_frames", torch.from_numpy(target.stack_frames).long())
            self.register_buffer(
                "audio_rows", torch.from_numpy(np.clip(rows, 0, target.example.n_audio - 1)).long()
            )
            valid = (rows >= 0) & (rows < target.example.n_audio)
            self.register_buffer("row_valid", torch.from_numpy(valid))
            self.register_buffer(
                "audio_index", torch.from_numpy(target.inputs.audio_index()).long()
            )
            self.n_lip_features = (
                82 if target.example.lips is None else target.example.lips.shape[1]
            )
            self.n_frames = target.example.n_video

        def preprocess(
            self, mouth: torch.Tensor, mel: torch.Tensor, lips: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """The network's input layer: crops normalized per stack (B, P, 5, H, W), the
            mel normalized over the window (B, A, F), lip geometry per stack (B, P, 5, K)."""
            batch = mouth.shape[0]
            n_stacks = self.stack_frames.shape[0]
            stacks = mouth[:, self.stack_frames]  # (B, P, 5, H, W)
            mean = stacks.mean(dim=(2, 3, 4), keepdim=True)
            std = stacks.std(dim=(2, 3, 4), keepdim=True, unbiased=False).clamp_min(MIN_CROP_STD)
            crops = (stacks - mean) / std
            if lips is None:
                lip_stacks = mouth.new_zeros((batch, n_stacks, STACK_FRAMES, self.n_lip_features))
            else:
                lip_stacks = lips[:, self.stack_frames]
            peak = mel.amax(dim=(1, 2), keepdim=True)
            normed = torch.maximum(mel, peak - MEL_DYNAMIC_RANGE)
            normed = normed - normed.mean(dim=1, keepdim=True)
            normed = normed / normed.std(dim=(1, 2), keepdim=True, unbiased=False).clamp_min(1e-3)
            return crops, normed, lip_stacks

        def score_preprocessed(
            self, crops: torch.Tensor, normed: torch.Tensor, lip_stacks: torch.Tensor
        ) -> torch.Tensor:
            batch, n_stacks = crops.shape[:2]
            windows = normed[:, self.audio_rows]  # (B, M, 20, F)
            floor = normed.amin(dim=(1, 2))[:, None, None, None]
            windows = torch.where(self.row_valid[None, :, :, None], windows, floor)
            video = self.model.video(crops.flatten(0, 1), lip_stacks.flatten(0, 1))
            video = video.view(batch, n_stacks, -1) * DISTANCE_SCALE
            audio = self.model.audio(windows.flatten(0, 1)).view(batch, windows.shape[1], -1)
            audio = audio * DISTANCE_SCALE
            paired = audio[:, self.audio_index]  # (B, P, L, D)
            distances = (paired - video[:, :, None, :]).square().sum(-1).clamp_min(1e-12).sqrt()
            if self.mode == "offset":
                return (distances[:, :, self.lag0] - distances[:, :, self.lag_best]).mean(dim=1)
            return distances[:, :, self.lag0].mean(dim=1)

        def fold(
            self, crops: np.ndarray, normed: np.ndarray, lip_stacks: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Attributions of the input layer summed back onto frames (each frame sits in
            up to five stacks) and mel rows: (T, H, W), (A, F), (T, K)."""
            frames = self.stack_frames.cpu().numpy()
            mouth = np.zeros((self.n_frames, *crops.shape[-2:]), np.float32)
            lips = np.zeros((self.n_frames, lip_stacks.shape[-1]), np.float32)
            np.add.at(mouth, frames.reshape(-1), crops.reshape(-1, *crops.shape[-2:]))
            np.add.at(lips, frames.reshape(-1), lip_stacks.reshape(-1, lip_stacks.shape[-1]))
            return mouth, normed, lips

        def forward(
            self, mouth: torch.Tensor, mel: torch.Tensor, lips: torch.Tensor | None
        ) -> torch.Tensor:
            return self.score_preprocessed(*self.preprocess(mouth, mel, lips))

    return SyncMismatchModule
