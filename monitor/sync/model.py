"""The two-tower audio-visual sync network (SyncNet family, about 60x cheaper).

Each tower maps 0.2 s of one modality to an embedding; matching audio and lips land
close together. Comparing one video embedding with audio embeddings taken at lags of
-15..+15 frames gives SyncNet's distance-vs-lag curve.

* Video tower: 5 grayscale mouth crops (48x96, frames stacked as channels, i.e. early
  fusion in time as SyncNet's first 3-D conv does) through a small strided CNN, plus
  the 5 frames' lip-landmark geometry through an MLP; both fused into one embedding.
* Audio tower: 20 log-mel frames (0.2 s at 100 Hz, 80 bands) through 1-D convolutions
  over time.

Embeddings are L2-normalized, then multiplied by ``DISTANCE_SCALE`` so that Euclidean
distances between them span roughly SyncNet's range (its confidences of 1-10).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional

STACK_FRAMES = 5  # video frames per embedding (0.2 s at 25 fps)
MEL_FRAMES = 20  # log-mel frames per embedding (0.2 s at 100 Hz)
N_MELS = 80
CROP_HEIGHT, CROP_WIDTH = 48, 96
LIP_FEATURES = 82  # 40 lip landmarks (x, y) + aperture + mouth width
DISTANCE_SCALE = 5.0  # unit embeddings times this: distances in [0, 10]


@dataclass(frozen=True)
class SyncModelConfig:
    """Layer widths; stored with the weights so a checkpoint rebuilds its own net."""

    crop_channels: tuple[int, ...] = (24, 48, 48, 96, 96, 128)
    crop_embedding: int = 192
    lip_hidden: int = 128
    audio_channels: tuple[int, ...] = (128, 128, 192, 192, 256)
    embedding: int = 128
    branch_dropout: float = 0.2

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SyncModelConfig:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)  # type: ignore[arg-type]


def _conv_bn(c_in: int, c_out: int, stride: int, dims: int = 2) -> nn.Sequential:
    conv_cls = nn.Conv2d if dims == 2 else nn.Conv1d
    norm_cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return nn.Sequential(
        conv_cls(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        norm_cls(c_out),
        nn.ReLU(inplace=True),
    )


class VideoTower(nn.Module):
    """(N, 5, 48, 96) crops + (N, 5, 82) lip geometry -> (N, D) unit embeddings."""

    def __init__(self, config: SyncModelConfig) -> None:
        super().__init__()
        c = config.crop_channels
        # Strides 2,2,1,2,1,2: 48x96 -> 3x6; the stride-1 layers add depth where it is cheap.
        strides = (2, 2, 1, 2, 1, 2)
        layers: list[nn.Module] = []
        c_in = STACK_FRAMES
        for c_out, stride in zip(c, strides, strict=True):
            layers.append(_conv_bn(c_in, c_out, stride))
            c_in = c_out
        self.crop_cnn = nn.Sequential(*layers)
        # The spatial layout of the mouth matters (open vs spread), so no global pooling.
        self.crop_fc = nn.Linear(c[-1] * 3 * 6, config.crop_embedding)
        self.lip_mlp = nn.Sequential(
            nn.Linear(STACK_FRAMES * LIP_FEATURES, config.lip_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.lip_hidden, config.lip_hidden),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Linear(config.crop_embedding + config.lip_hidden, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, config.embedding),
        )
        self.branch_dropout = config.branch_dropout

    def forward(self, crops: torch.Tensor, lips: torch.Tensor) -> torch.Tensor:
        crop_feat = functional.relu(self.crop_fc(self.crop_cnn(crops).flatten(1)))
        lip_feat = self.lip_mlp(lips.flatten(1))
        if self.training and self.branch_dropout > 0:
            # Drop a whole branch now and then so each one learns to carry sync alone.
            n = crops.shape[0]
            drop = torch.rand(n, 1, device=crops.device)
            keep_crop = (drop >= self.branch_dropout / 2).float()
            keep_lip = (drop < 1 - self.branch_dropout / 2).float()
            crop_feat = crop_feat * keep_crop
            lip_feat = lip_feat * keep_lip
        return functional.normalize(self.fuse(torch.cat([crop_feat, lip_feat], dim=1)), dim=1)


class AudioTower(nn.Module):
    """(N, 20, 80) normalized log-mel -> (N, D) unit embeddings."""

    def __init__(self, config: SyncModelConfig) -> None:
        super().__init__()
        c = config.audio_channels
        strides = (1, 1, 2, 1, 2)  # 20 -> 5 time steps
        layers: list[nn.Module] = []
        c_in = N_MELS
        for c_out, stride in zip(c, strides, strict=True):
            layers.append(_conv_bn(c_in, c_out, stride, dims=1))
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(c[-1] * 5, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, config.embedding),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # (N, T, F) -> (N, F, T): mel bands are the channels, time is convolved.
        features = self.cnn(mel.transpose(1, 2)).flatten(1)
        return functional.normalize(self.fc(features), dim=1)


class SyncNetLite(nn.Module):
    """Both towers; ``forward`` returns scaled embeddings whose distances form lag curves."""

    def __init__(self, config: SyncModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or SyncModelConfig()
        self.video = VideoTower(self.config)
        self.audio = AudioTower(self.config)

    def forward(
        self, crops: torch.Tensor, lips: torch.Tensor, mel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Video stacks and audio windows have independent batch sizes (N_v and N_a)."""
        return (
            self.video(crops, lips) * DISTANCE_SCALE,
            self.audio(mel) * DISTANCE_SCALE,
        )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass, counted on conv and linear layers.

    Hooks instead of a profiler library: the two layer types carry all but a sliver of
    the compute in both this net and SyncNet, and the count is exact for them.
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            kernel = 1
            for k in module.kernel_size:
                kernel *= k
            total += output.numel() * (module.in_channels // module.groups) * kernel
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear)
    ]
    was_training = model.training
    model.eval()  # batch norm cannot run in training mode on a batch of one
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def example_inputs(n_video: int = 1, n_audio: int = 1) -> tuple[torch.Tensor, ...]:
    return (
        torch.zeros(n_video, STACK_FRAMES, CROP_HEIGHT, CROP_WIDTH),
        torch.zeros(n_video, STACK_FRAMES, LIP_FEATURES),
        torch.zeros(n_audio, MEL_FRAMES, N_MELS),
    )
