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
    """Integrated gradients along the straight path from the baseline (midpoint rule).

    A module with an input layer (``preprocess`` -> ``score_preprocessed``, ``fold``, as
    the sync model's has) is integrated at that layer: from the preprocessed baseline to
    the preprocessed input, then folded back onto frames and mel rows. Why: input
    normalization (the mel over the window, crops per stack) makes the score almost
    scale-invariant along a raw-input path, so nearly all of the change happens within
    a hair of the baseline, where no Riemann sum samples; at the input layer the path
    is well-behaved and completeness holds (see ``completeness_gap``).
    """
    alphas = (np.arange(steps) + 0.5) / steps
    weights = np.full(steps, 1.0 / steps)
    return _path_gradients(model, example, alphas, weights, "integrated gradients", batch_size)


def gradient_x_input(model: torch.nn.Module, example: AVExample) -> InputAttribution:
    """Gradient at the input times (input - baseline): one backward pass, first-order only."""
    one = np.array([1.0])
    return _path_gradients(model, example, one, one, "gradient x input", 1)


def _tensors(example: AVExample, device: Any) -> tuple[list[Any], list[Any]]:
    """Input and baseline as batched tensors (batch of one); lips may be None."""
    import torch

    base = example.baseline_arrays()
    inputs = (example.mouth, example.mel, example.lips)

    def batched(array: np.ndarray | None) -> Any:
        return (
            None
            if array is None
            else torch.from_numpy(np.ascontiguousarray(array))[None].to(device)
        )

    return [batched(a) for a in inputs], [batched(b) for b in base]


def _path_gradients(
    model: Any,
    example: AVExample,
    alphas: np.ndarray,
    weights: np.ndarray,
    method: str,
    batch_size: int,
) -> InputAttribution:
    """Sum over ``alphas`` of weight x gradient at baseline + alpha (input - baseline),
    times (input - baseline), in raw-input space or at the module's input layer."""
    import torch

    device = _device(model)
    x, b = _tensors(example, device)
    layered = all(hasattr(model, name) for name in ("preprocess", "score_preprocessed", "fold"))
    if example.lips is None or b[2] is None:
        x[2] = b[2] = None
    with torch.no_grad():
        if layered:
            x = list(model.preprocess(*x))
            b = list(model.preprocess(*b))
        score_fn = model.score_preprocessed if layered else model
        both = score_fn(
            *[None if xi is None else torch.cat([xi, bi]) for xi, bi in zip(x, b, strict=True)]
        )
    score, baseline_score = (float(v) for v in both.cpu())

    grads = [None if t is None else torch.zeros_like(t[0]) for t in x]
    for start in range(0, len(alphas), batch_size):
        a = torch.tensor(alphas[start : start + batch_size], dtype=torch.float32, device=device)
        w = torch.tensor(weights[start : start + batch_size], dtype=torch.float32, device=device)
        path = []
        for xi, bi in zip(x, b, strict=True):
            if xi is None:
                path.append(None)
                continue
            shape = (-1,) + (1,) * (xi.dim() - 1)
            path.append((bi + a.view(shape) * (xi - bi)).requires_grad_(True))
        leaves = [t for t in path if t is not None]
        weighted = (score_fn(*path) * w).sum()
        found = iter(torch.autograd.grad(weighted, leaves, allow_unused=True))
        for i, t in enumerate(path):
            if t is not None:
                grads[i] += _summed(next(found), t)
    attributions = [
        None if xi is None else ((xi[0] - bi[0]) * g).detach().cpu().numpy()
        for xi, bi, g in zip(x, b, grads, strict=True)
    ]
    if layered:
        attributions = list(model.fold(*attributions))
    mouth, mel, lips = attributions
    return InputAttribution(
        method=method,
        mouth=mouth,
        mel=mel,
        lips=lips if example.lips is not None else None,
        score=score,
        baseline_score=baseline_score,
    )


def _summed(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A batch of gradients summed over the batch (zeros where the input is unused)."""
    import torch

    if grad is None:
        return torch.zeros_like(like[0])
    return grad.sum(dim=0)
