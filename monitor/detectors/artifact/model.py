"""The artifact network: one aligned face crop in, a fake logit and a blend-boundary map out.

Fully convolutional on the 256 px face crop the tracker cuts (eye line horizontal), so the
first layers see the pixels at the resolution where resampling, sharpening and pasting
leave their traces. Five stride-2 stages bring it to a 16x16 grid; there the network
predicts, per cell, the blend boundary 4·M·(1−M) of a pasted region (LAA-Net's target), a
picture of *where* a face was pasted. The fake logit is read from features pooled over
the upper and the lower half of the grid and their difference, so it compares the lower
face with the upper face of the same frame instead of judging the face as a whole, plus
the strongest boundary cells.

:func:`score_crops` is the per-frame scoring function: arrays in, arrays out, no session
state, so a per-session feature store can call it as well as the detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from monitor.detectors.artifact.crops import (
    GRID,
    INPUT_SIDE,
    boundary_target,
    normalize,
    to_input_side,
)

__all__ = [
    "GRID",
    "INPUT_SIDE",
    "ArtifactNet",
    "boundary_target",
    "load_model",
    "normalize",
    "parameter_count",
    "save_model",
    "score_crops",
    "to_input_side",
]

STAGES = (16, 32, 48, 64, 96)
TOP_CELLS = 8


def _block(c_in: int, c_out: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ArtifactNet(nn.Module):
    def __init__(self, stages: tuple[int, ...] = STAGES) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = stages
        self.features = nn.Sequential(
            _block(3, c1, 2),  # 128
            _block(c1, c2, 2),  # 64
            _block(c2, c3, 2),  # 32
            _block(c3, c4, 1),
            _block(c4, c5, 2),  # 16
            _block(c5, c5, 1, dilation=2),
        )
        self.boundary = nn.Conv2d(c5, 1, 1)
        self.classify = nn.Sequential(
            nn.Linear(3 * c5 + c5 + TOP_CELLS, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
        )
        self.stages = tuple(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fake logits (N,), boundary logits (N, GRID, GRID)) for normalised crops."""
        features = self.features(x)
        boundary = self.boundary(features)[:, 0]
        half = features.shape[2] // 2
        upper = features[:, :, :half].mean(dim=(2, 3))
        lower = features[:, :, half:].mean(dim=(2, 3))
        strongest = features.amax(dim=(2, 3))
        top = torch.sigmoid(boundary).flatten(1).topk(TOP_CELLS, dim=1).values
        pooled = torch.cat([upper, lower, lower - upper, strongest, top], dim=1)
        return self.classify(pooled)[:, 0], boundary


@torch.inference_mode()
def score_crops(model: ArtifactNet, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame scoring: fake logits (N,) and boundary maps (N, GRID, GRID) in [0, 1]."""
    if len(crops) == 0:
        return np.zeros(0, np.float32), np.zeros((0, GRID, GRID), np.float32)
    logits, boundary = model(torch.from_numpy(normalize(crops)))
    return logits.numpy().astype(np.float32), torch.sigmoid(boundary).numpy().astype(np.float32)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(path: Any, model: ArtifactNet, extra: dict[str, Any]) -> None:
    torch.save({"stages": list(model.stages), "state": model.state_dict(), **extra}, path)


def load_model(path: Any) -> tuple[ArtifactNet, dict[str, Any]]:
    """The network in eval mode and the rest of the checkpoint (training record)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = ArtifactNet(tuple(checkpoint.pop("stages")))
    model.load_state_dict(checkpoint.pop("state"))
    model.eval()
    return model, checkpoint
