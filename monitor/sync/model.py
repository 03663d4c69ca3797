"""The two-tower audio-visual sync network (SyncNet family, about 90x cheaper).

Both towers turn a window into one embedding per 40 ms step (25 fps); matching audio
and lips land close together, so comparing the video embedding of frame ``k`` with the
audio embeddings at steps ``k + lag`` for lags of -15..+15 gives SyncNet's
distance-vs-lag curve.

* Video tower: each grayscale mouth crop (48x96) through a small strided CNN, plus the
  frame's lip-landmark geometry through a linear layer; then 1-D convolutions over the
  frames. The first temporal layer spans 5 frames (SyncNet's 0.2 s); two dilated layers
  widen the view to 13 frames (0.52 s), which makes each step's embedding distinctive
  enough to learn from a few minutes of real video.
* Audio tower: log-mel (80 bands, 100 Hz) through 1-D convolutions over time, strided
  to 25 Hz (4 mel rows per step), then the same temporal layers.

Embeddings are L2-normalized, then multiplied by ``DISTANCE_SCALE`` so that Euclidean
distances between them span roughly SyncNet's range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional

from monitor.sync.dims import (  # noqa: F401 - re-exported: the model's dimensions
    CROP_HEIGHT,
    CROP_WIDTH,
    DISTANCE_SCALE,
    LIP_FEATURES,
    MAX_LAG,
    MEL_ROWS_PER_STEP,
    N_MELS,
)


@dataclass(frozen=True)
class SyncModelConfig:
    """Layer widths; stored with the weights so a checkpoint rebuilds its own net."""

    crop_channels: tuple[int, ...] = (32, 48, 48, 96, 96, 128)
    crop_features: int = 128
    lip_features: int = 64
    frame_features: int = 192
    audio_channels: tuple[int, ...] = (128, 128, 192)
    temporal_channels: int = 192
    embedding: int = 128
    branch_dropout: float = 0.2

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SyncModelConfig:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)  # type: ignore[arg-type]


def _conv_bn(
    c_in: int, c_out: int, stride: int = 1, dims: int = 2, kernel: int = 3, dilation: int = 1
) -> nn.Sequential:
    conv_cls = nn.Conv2d if dims == 2 else nn.Conv1d
    norm_cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        conv_cls(
            c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=False
        ),
        norm_cls(c_out),
        nn.ReLU(inplace=True),
    )


class TemporalEncoder(nn.Module):
    """(B, C, T) -> (B, D, T): a 5-step layer, then two dilated 3-step layers (13 steps)."""

    def __init__(self, channels: int, embedding: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv_bn(channels, channels, dims=1, kernel=5),
            _conv_bn(channels, channels, dims=1, kernel=3, dilation=2),
            _conv_bn(channels, channels, dims=1, kernel=3, dilation=2),
        )
        self.project = nn.Conv1d(channels, embedding, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.layers(x))


class VideoTower(nn.Module):
    """(B, T, 48, 96) crops + (B, T, 83) lip geometry -> (B, T, D) unit embeddings."""

    def __init__(self, config: SyncModelConfig) -> None:
        super().__init__()
        c = config.crop_channels
        strides = (2, 2, 1, 2, 1, 2)  # 48x96 -> 3x6
        layers: list[nn.Module] = []
        c_in = 1
        for c_out, stride in zip(c, strides, strict=True):
            layers.append(_conv_bn(c_in, c_out, stride))
            c_in = c_out
        self.crop_cnn = nn.Sequential(*layers)
        # The spatial layout of the mouth matters (open vs spread), so no global pooling.
        self.crop_fc = nn.Linear(c[-1] * 3 * 6, config.crop_features)
        self.lip_fc = nn.Linear(LIP_FEATURES, config.lip_features)
        self.fuse = nn.Linear(config.crop_features + config.lip_features, config.frame_features)
        self.temporal = TemporalEncoder(config.frame_features, config.embedding)
        self.branch_dropout = config.branch_dropout

    def forward(self, crops: torch.Tensor, lips: torch.Tensor) -> torch.Tensor:
        batch, steps = crops.shape[0], crops.shape[1]
        frames = crops.reshape(-1, CROP_HEIGHT, CROP_WIDTH)
        crop_feat, lip_feat = self._branches(frames, lips.reshape(-1, LIP_FEATURES))
        if self.training and self.branch_dropout > 0:
            # Drop a whole branch for a whole window now and then, so that each branch
            # learns to carry sync on its own (crops fail in the dark, landmarks jitter).
            drop = (
                torch.rand(batch, 1, 1, device=crops.device).expand(batch, steps, 1).reshape(-1, 1)
            )
            crop_feat = crop_feat * (drop >= self.branch_dropout / 2).float()
            lip_feat = lip_feat * (drop < 1 - self.branch_dropout / 2).float()
        frame_feat = functional.relu(self.fuse(torch.cat([crop_feat, lip_feat], dim=1)))
        return self.embed_sequence(frame_feat.reshape(batch, steps, -1))

    def _branches(
        self, crops: torch.Tensor, lips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crop_feat = functional.relu(self.crop_fc(self.crop_cnn(crops[:, None]).flatten(1)))
        return crop_feat, functional.relu(self.lip_fc(lips))

    def frame_features(self, crops: torch.Tensor, lips: torch.Tensor) -> torch.Tensor:
        """(N, 48, 96) crops + (N, 83) lips -> (N, F): each frame on its own, so a stream
        computes it once per frame however many windows the frame falls in."""
        crop_feat, lip_feat = self._branches(crops, lips)
        return functional.relu(self.fuse(torch.cat([crop_feat, lip_feat], dim=1)))

    def embed_sequence(self, frame_features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frame features -> (B, T, D) unit embeddings (the temporal layers)."""
        sequence = frame_features.transpose(1, 2)
        return functional.normalize(self.temporal(sequence), dim=1).transpose(1, 2)


class AudioTower(nn.Module):
    """(B, 4*S, 80) normalized log-mel -> (B, S, D) unit embeddings, one per 40 ms."""

    def __init__(self, config: SyncModelConfig) -> None:
        super().__init__()
        c = config.audio_channels
        self.front = nn.Sequential(
            _conv_bn(N_MELS, c[0], dims=1, kernel=5),
            _conv_bn(c[0], c[1], stride=2, dims=1),
            _conv_bn(c[1], c[2], stride=2, dims=1),
        )
        self.to_temporal = nn.Conv1d(c[2], config.temporal_channels, kernel_size=1)
        self.temporal = TemporalEncoder(config.temporal_channels, config.embedding)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # (B, T, F) -> (B, F, T): mel bands are the channels, time is convolved.
        features = self.to_temporal(self.front(mel.transpose(1, 2)))
        return functional.normalize(self.temporal(features), dim=1).transpose(1, 2)


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
        """(B, T) video steps and (B, 4*(T + 2*MAX_LAG)) mel rows -> (B, T, D), (B, T+30, D)."""
        return (
            self.video(crops, lips) * DISTANCE_SCALE,
            self.audio(mel) * DISTANCE_SCALE,
        )

    def frame_features(self, crops: torch.Tensor, lips: torch.Tensor) -> torch.Tensor:
        """The per-frame half of the video tower: (N, 48, 96), (N, 83) -> (N, F)."""
        return self.video.frame_features(crops, lips)

    def window_embeddings(
        self, frame_features: torch.Tensor, mel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest of :meth:`forward` given per-frame features: (B, T, F) and
        (B, 4*(T + 2*MAX_LAG), 80) -> (B, T, D), (B, T+30, D), exactly as ``forward``."""
        return (
            self.video.embed_sequence(frame_features) * DISTANCE_SCALE,
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


def example_inputs(batch: int = 1, steps: int = 50) -> tuple[torch.Tensor, ...]:
    """Zero inputs for ``batch`` windows of ``steps`` video steps (50 = 2 s at 25 fps)."""
    return (
        torch.zeros(batch, steps, CROP_HEIGHT, CROP_WIDTH),
        torch.zeros(batch, steps, LIP_FEATURES),
        torch.zeros(batch, MEL_ROWS_PER_STEP * (steps + 2 * MAX_LAG), N_MELS),
    )


def macs_per_video_frame(model: nn.Module, steps: int = 50) -> float:
    """Compute of one window divided by its video frames (audio context included)."""
    return count_macs(model, example_inputs(1, steps)) / steps
