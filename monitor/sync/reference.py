"""SyncNet's architecture (joonson/syncnet_python, "S"), rebuilt from its published layer list.

With random weights: it serves size, compute and speed comparisons, which do not depend on
the weights (``tools/bench_sync.py``, ``tools/bench.py``, the model's budget test).
"""

from __future__ import annotations

import torch
from torch import nn

from monitor.sync.model import count_macs

# SyncNet "S": (kind, out_channels, kernel, stride, padding) then pooling, per tower.
SYNCNET_AUDIO = [
    ("conv", 64, (3, 3), (1, 1), (1, 1)),
    ("pool", None, (1, 1), (1, 1), (0, 0)),
    ("conv", 192, (3, 3), (1, 1), (1, 1)),
    ("pool", None, (3, 3), (1, 2), (0, 0)),
    ("conv", 384, (3, 3), (1, 1), (1, 1)),
    ("conv", 256, (3, 3), (1, 1), (1, 1)),
    ("conv", 256, (3, 3), (1, 1), (1, 1)),
    ("pool", None, (3, 3), (2, 2), (0, 0)),
    ("conv", 512, (5, 4), (1, 1), (0, 0)),
]
SYNCNET_LIP = [
    ("conv", 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),
    ("pool", None, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ("pool", None, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("pool", None, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
]


def _tower(spec: list, in_channels: int, dims: int) -> nn.Sequential:
    conv, norm, pool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        if dims == 2
        else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )
    layers: list[nn.Module] = []
    channels = in_channels
    for kind, out, kernel, stride, padding in spec:
        if kind == "conv":
            layers += [
                conv(channels, out, kernel, stride, padding),
                norm(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        else:
            layers.append(pool(kernel, stride, padding))
    return nn.Sequential(*layers)


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))


class SyncNetReference(nn.Module):
    """SyncNet's two towers: 5 RGB 224x224 face frames, and 13 MFCCs x 20 frames (0.2 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_cnn = _tower(SYNCNET_AUDIO, 1, 2)
        self.audio_fc = _head()
        self.lip_cnn = _tower(SYNCNET_LIP, 3, 3)
        self.lip_fc = _head()

    def forward(
        self, frames: torch.Tensor, mfcc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        video = self.lip_fc(self.lip_cnn(frames).flatten(1))
        audio = self.audio_fc(self.audio_cnn(mfcc).flatten(1))
        return video, audio


def syncnet_inputs(n_video: int, n_audio: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n_video, 3, 5, 224, 224), torch.randn(n_audio, 1, 13, 20)


def syncnet_macs_per_frame(model: nn.Module) -> int:
    """One video stack plus one audio slice: SyncNet's work per video frame when sliding."""
    return count_macs(model, syncnet_inputs(1, 1))
