"""The learned sync model as an explainable scorer: one window -> one sync-mismatch score.

The two-tower model (:mod:`monitor.sync.model`) embeds every 40 ms step of a window's
lips and of its audio; comparing lips at step ``k`` with audio at ``k + lag`` gives the
distance-vs-lag curve. Attribution needs one number, so a window is explained through
the quantity an alert rests on:

* ``offset`` mode (the best lag is outside the band genuine calls show): mean over the
  scored steps of ``d(lag 0) - d(best lag)``, i.e. how much better the audio matches
  the lips at the detected offset than at zero. Evidence that carries the desync
  raises it; removing that evidence brings it towards 0.
* ``distance`` mode (best lag inside the band, e.g. a lip-sync fake that is "in sync"
  but matches badly): mean ``d(lag 0)``, i.e. how badly lips and audio match.

Two implementations of the same score, checked against each other in the tests:

* :class:`SyncMismatchModule` (via :func:`sync_mismatch_module`), a torch module
  (white-box: gradients reach every mouth pixel, lip coordinate and log-mel bin). It
  exposes its input layer (``preprocess`` / ``score_preprocessed`` / ``fold``) so that
  integrated gradients can run after the input normalization;
* :class:`SyncMismatchScorer`, numpy around any backend of :mod:`monitor.sync.backends`
  (black-box: it only calls ``embed(crops, lips, mel)``, so ONNX or TensorRT engines
  plug in); a batch of perturbed windows is one backend call.

The preprocessing mirrors :func:`monitor.sync.features.build_inputs`, which the
detector uses, so the explained score is the detector's own view of the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.detectors.base import GENUINE_OFFSET_MS
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
    lag_distances,
    normalize_crops,
    normalize_mel,
    window_lag_distances,
)

SCORER_BATCH = 16  # perturbed windows per backend call

# A backend's call: crops (B,T,H,W), lips (B,T,K), mel (B,4(T+2L),F) -> (B,T,D), (B,T+2L,D).
EmbedFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SyncTarget:
    """One window prepared for explanation: the evidence and how the model reads it."""

    example: AVExample
    inputs: SyncInputs  # what the detector's preprocessing makes of the window
    has_face: np.ndarray  # (T,) grid steps with a face (others are zeros for the model)
    mel_rows: np.ndarray  # (4 (T + 2 max_lag),) row of the example's mel per model row
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

    ``curve_fn`` returns the window's (K, L) distances (the model, intact input) and
    picks the offset when ``offset_ms`` (e.g. from the alert's evidence) is not given.
    """
    inputs = build_inputs(track, audio, t_start, t_end, max_lag)
    if inputs is None:
        raise ExplanationInputError(
            f"no five consecutive frames with a face in {t_start:.2f}-{t_end:.2f} s"
        )
    n_grid = inputs.steps
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
    first_row = int(round((t_start - max_lag * GRID_STEP_S - audio.t0) / audio.hop_s))
    mel_rows = first_row + np.arange(len(inputs.mel))
    lag0 = inputs.max_lag
    if offset_ms is None:
        lag_best = int(np.argmin(curve_fn(inputs).mean(axis=0)))
    else:
        lag_best = int(np.clip(round(offset_ms / 1000.0 / GRID_STEP_S) + lag0, 0, 2 * lag0))
    out_of_band = abs(lag_best - lag0) * GRID_STEP_S * 1000.0 > GENUINE_OFFSET_MS
    return SyncTarget(
        example=example,
        inputs=inputs,
        has_face=has_face,
        mel_rows=mel_rows,
        lag0=lag0,
        lag_best=lag_best,
        mode="offset" if out_of_band else "distance",
    )


# ----- numpy (black-box) -------------------------------------------------------------------


def _model_inputs(
    target: SyncTarget, mouth: np.ndarray, mel: np.ndarray, lips: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One example's raw evidence -> the model's (crops, lips, mel rows), as build_inputs."""
    face = target.has_face
    crops = normalize_crops(mouth)
    crops[~face] = 0.0
    if lips is None:
        lip_in = np.zeros_like(target.inputs.lips)
    else:
        lip_in = lips.astype(np.float32).copy()
        lip_in[~face] = 0.0
    normed = normalize_mel(mel)
    rows = target.mel_rows
    valid = (rows >= 0) & (rows < len(normed))
    gathered = np.full((len(rows), normed.shape[1]), float(normed.min()), np.float32)
    gathered[valid] = normed[rows[valid]]
    return crops, lip_in, gathered


def _score_from_distances(distances: np.ndarray, target: SyncTarget) -> float:
    if target.mode == "offset":
        return float((distances[:, target.lag0] - distances[:, target.lag_best]).mean())
    return float(distances[:, target.lag0].mean())


class SyncMismatchScorer:
    """Black-box scorer ``(mouth, mel, lips) -> scores`` around one backend ``embed`` call."""

    def __init__(self, target: SyncTarget, embed: EmbedFn):
        self.target = target
        self.embed = embed
        self.windows_embedded = 0

    def distances(self, mouth: np.ndarray, mel: np.ndarray, lips: np.ndarray | None) -> np.ndarray:
        """(B, K, L) distance curves of a batch of inputs (``SCORER_BATCH`` per call)."""
        out = []
        for start in range(0, len(mouth), SCORER_BATCH):
            stop = min(start + SCORER_BATCH, len(mouth))
            prepared = [
                _model_inputs(self.target, mouth[b], mel[b], None if lips is None else lips[b])
                for b in range(start, stop)
            ]
            video, audio = self.embed(*(np.stack(part) for part in zip(*prepared, strict=True)))
            self.windows_embedded += stop - start
            for v, a in zip(video, audio, strict=True):
                out.append(lag_distances(self.target.inputs, np.asarray(v), np.asarray(a)))
        return np.stack(out)

    def __call__(self, mouth: np.ndarray, mel: np.ndarray, lips: np.ndarray | None) -> np.ndarray:
        distances = self.distances(mouth, mel, lips)
        return np.array([_score_from_distances(d, self.target) for d in distances])


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
    """(K, L) distances of prepared inputs, as the detector computes them."""

    def curve(inputs: SyncInputs) -> np.ndarray:
        return window_lag_distances(inputs, embed)

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
            n_audio = target.example.n_audio
            rows = target.mel_rows
            self.register_buffer("face", torch.from_numpy(target.has_face))
            self.register_buffer("rows", torch.from_numpy(np.clip(rows, 0, n_audio - 1)).long())
            self.register_buffer("row_valid", torch.from_numpy((rows >= 0) & (rows < n_audio)))
            self.register_buffer("positions", torch.from_numpy(target.inputs.positions).long())
            self.register_buffer(
                "audio_index", torch.from_numpy(target.inputs.audio_index()).long()
            )
            self.n_lip_features = target.inputs.lips.shape[1]

        def preprocess(
            self, mouth: torch.Tensor, mel: torch.Tensor, lips: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """The network's input layer: crops normalized per frame (B, T, H, W), the mel
            normalized over the window (B, A, F), lip geometry (B, T, K); no-face steps 0."""
            face = self.face[None, :, None, None].to(mouth.dtype)
            mean = mouth.mean(dim=(2, 3), keepdim=True)
            std = mouth.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(MIN_CROP_STD)
            crops = (mouth - mean) / std * face
            if lips is None:
                lip_in = mouth.new_zeros((*mouth.shape[:2], self.n_lip_features))
            else:
                lip_in = lips * face[..., 0]
            peak = mel.amax(dim=(1, 2), keepdim=True)
            normed = torch.maximum(mel, peak - MEL_DYNAMIC_RANGE)
            normed = normed - normed.mean(dim=1, keepdim=True)
            normed = normed / normed.std(dim=(1, 2), keepdim=True, unbiased=False).clamp_min(1e-3)
            return crops, normed, lip_in

        def score_preprocessed(
            self, crops: torch.Tensor, normed: torch.Tensor, lips: torch.Tensor
        ) -> torch.Tensor:
            floor = normed.amin(dim=(1, 2))[:, None, None]
            rows = torch.where(self.row_valid[None, :, None], normed[:, self.rows], floor)
            video, audio = self.model(crops, lips, rows)  # (B, T, D), (B, T + 2L, D)
            paired = audio[:, self.audio_index]  # (B, K, L, D)
            steps = video[:, self.positions][:, :, None, :]  # (B, K, 1, D)
            distances = (paired - steps).square().sum(-1).clamp_min(1e-12).sqrt()
            if self.mode == "offset":
                return (distances[:, :, self.lag0] - distances[:, :, self.lag_best]).mean(dim=1)
            return distances[:, :, self.lag0].mean(dim=1)

        def fold(
            self, crops: np.ndarray, normed: np.ndarray, lips: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Input-layer attributions onto the evidence: one-to-one here (per frame, per
            mel row and band, per lip value)."""
            return crops, normed, lips

        def forward(
            self, mouth: torch.Tensor, mel: torch.Tensor, lips: torch.Tensor | None
        ) -> torch.Tensor:
            return self.score_preprocessed(*self.preprocess(mouth, mel, lips))

    return SyncMismatchModule
