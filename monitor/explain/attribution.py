"""Attribution of a sync-mismatch score to its evidence: white-box and black-box.

* White-box (needs the torch module and its gradients): integrated gradients from the
  baseline to the input, or gradient x (input - baseline), per mouth pixel, per mel bin
  and per lip-geometry value, summed into units.
* Black-box (needs only a scoring function, so any backend works, TensorRT included):
  occlusion, i.e. the score drop when one unit is replaced by its baseline.

Both read "how much of the score does this evidence carry" in the score's own units,
so a unit's white-box and black-box numbers can be put side by side.

The interfaces are small on purpose: a black-box scorer is any callable
``(mouth (B,T,H,W), mel (B,A,F), lips (B,T,K) | None) -> (B,)`` scores, a white-box
model a ``torch.nn.Module`` with the same call on tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.explain.inputs import AVExample, Unit, occluded

if TYPE_CHECKING:
    import torch

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
Inputs = tuple[np.ndarray, np.ndarray, np.ndarray | None]

DEFAULT_BATCH = 16
IG_STEPS = 16


@dataclass
class InputAttribution:
    """Per-element attribution of one example (same shapes as its inputs)."""

    method: str
    mouth: np.ndarray  # (T, H, W)
    mel: np.ndarray  # (A, F)
    lips: np.ndarray | None  # (T, K)
    score: float  # model score of the input
    baseline_score: float  # model score of the all-baseline input

    @property
    def total(self) -> float:
        lips = 0.0 if self.lips is None else float(self.lips.sum())
        return float(self.mouth.sum() + self.mel.sum() + lips)

    @property
    def completeness_gap(self) -> float:
        """|sum of attributions - (score - baseline score)|: zero for exact integrated gradients."""
        return abs(self.total - (self.score - self.baseline_score))

    def unit_totals(self, units: Sequence[Unit]) -> np.ndarray:
        """Attribution summed over each unit's box (lip geometry goes with video time units)."""
        totals = np.empty(len(units))
        for i, unit in enumerate(units):
            source = self.mouth if unit.modality == "video" else self.mel
            value = float(source[unit.index].sum())
            if unit.lips_frames is not None and self.lips is not None:
                value += float(self.lips[unit.lips_frames].sum())
            totals[i] = value
        return totals


def score_inputs(
    score_fn: ScoreFn, inputs: Sequence[Inputs], batch_size: int = DEFAULT_BATCH
) -> np.ndarray:
    """Scores of several inputs, ``batch_size`` at a time."""
    out: list[np.ndarray] = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        mouth = np.stack([c[0] for c in chunk])
        mel = np.stack([c[1] for c in chunk])
        lips = None if chunk[0][2] is None else np.stack([c[2] for c in chunk])  # type: ignore[misc]
        scores = np.asarray(score_fn(mouth, mel, lips), dtype=np.float64).reshape(-1)
        if len(scores) != len(chunk):
            raise ValueError(f"scorer returned {len(scores)} scores for {len(chunk)} inputs")
        out.append(scores)
    return np.concatenate(out) if out else np.zeros(0)


def torch_score_fn(model: torch.nn.Module) -> ScoreFn:
    """A black-box scorer from a white-box module (no gradients, the module's device)."""
    import torch

    def score(mouth: np.ndarray, mel: np.ndarray, lips: np.ndarray | None) -> np.ndarray:
        device = _device(model)
        with torch.no_grad():
            result = model(
                torch.from_numpy(mouth).to(device),
                torch.from_numpy(mel).to(device),
                None if lips is None else torch.from_numpy(lips).to(device),
            )
        return result.detach().cpu().numpy().astype(np.float64)

    return score


def _device(model: Any) -> Any:
    import torch

    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def occlusion(
    score_fn: ScoreFn,
    example: AVExample,
    units: Sequence[Unit],
    batch_size: int = DEFAULT_BATCH,
) -> tuple[np.ndarray, float]:
    """Score drop when each unit alone is replaced by its baseline; and the input's score."""
    inputs: list[Inputs] = [(example.mouth, example.mel, example.lips)]
    inputs.extend(occluded(example, [unit]) for unit in units)
    scores = score_inputs(score_fn, inputs, batch_size)
    return scores[0] - scores[1:], float(scores[0])


def integrated_gradients(
    model: torch.nn.Module,
    example: AVExample,
    steps: int = IG_STEPS,
    batch_size: int = DEFAULT_BATCH,
) -> InputAttribution:
    """Integrated gradients along the straight path from the baseline (midpoint rule)."""
    alphas = (np.arange(steps) + 0.5) / steps
    return _path_gradients(model, example, alphas, "integrated gradients", batch_size)


def gradient_x_input(model: torch.nn.Module, example: AVExample) -> InputAttribution:
    """Gradient at the input times (input - baseline): one backward pass, first-order only."""
    return _path_gradients(model, example, np.array([1.0]), "gradient x input", 1)


def _path_gradients(
    model: torch.nn.Module,
    example: AVExample,
    alphas: np.ndarray,
    method: str,
    batch_size: int,
) -> InputAttribution:
    import torch

    device = _device(model)
    x_mouth = torch.from_numpy(example.mouth).to(device)
    x_mel = torch.from_numpy(example.mel).to(device)
    x_lips = None if example.lips is None else torch.from_numpy(example.lips).to(device)
    b_mouth_np, b_mel_np, b_lips_np = example.baseline_arrays()
    b_mouth = torch.from_numpy(b_mouth_np).to(device)
    b_mel = torch.from_numpy(b_mel_np).to(device)
    b_lips = None if b_lips_np is None else torch.from_numpy(b_lips_np).to(device)

    grad_mouth = torch.zeros_like(x_mouth)
    grad_mel = torch.zeros_like(x_mel)
    grad_lips = None if x_lips is None else torch.zeros_like(x_lips)
    for start in range(0, len(alphas), batch_size):
        a = torch.tensor(alphas[start : start + batch_size], dtype=torch.float32, device=device)
        mouth = (b_mouth + a[:, None, None, None] * (x_mouth - b_mouth)).requires_grad_(True)
        mel = (b_mel + a[:, None, None] * (x_mel - b_mel)).requires_grad_(True)
        lips = None
        if x_lips is not None and b_lips is not None:
            lips = (b_lips + a[:, None, None] * (x_lips - b_lips)).requires_grad_(True)
        leaves = [t for t in (mouth, mel, lips) if t is not None]
        grads = torch.autograd.grad(model(mouth, mel, lips).sum(), leaves, allow_unused=True)
        grad_mouth += _summed(grads[0], mouth)
        grad_mel += _summed(grads[1], mel)
        if grad_lips is not None and lips is not None:
            grad_lips += _summed(grads[2], lips)
    n = len(alphas)
    with torch.no_grad():
        both = model(
            torch.stack([x_mouth, b_mouth]),
            torch.stack([x_mel, b_mel]),
            None if x_lips is None or b_lips is None else torch.stack([x_lips, b_lips]),
        )
    score, baseline_score = (float(v) for v in both.cpu())
    return InputAttribution(
        method=method,
        mouth=((x_mouth - b_mouth) * grad_mouth / n).cpu().numpy(),
        mel=((x_mel - b_mel) * grad_mel / n).cpu().numpy(),
        lips=None
        if grad_lips is None or x_lips is None or b_lips is None
        else ((x_lips - b_lips) * grad_lips / n).cpu().numpy(),
        score=score,
        baseline_score=baseline_score,
    )


def _summed(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A batch of gradients summed over the batch (zeros where the input is unused)."""
    import torch

    if grad is None:
        return torch.zeros_like(like[0])
    return grad.sum(dim=0)
