"""The sync model's files and how to read them: weights, ONNX export, calibration.

A module of its own so that the backends, the ONNX export and the TensorRT engine builder
all read one definition without importing each other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitor.errors import BackendUnavailableError

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# The shipped model: its files, its engines and its training record are named after it.
MODEL_NAME = "sync_v2"
WEIGHTS_PATH = MODELS_DIR / f"{MODEL_NAME}.pt"
ONNX_PATH = MODELS_DIR / f"{MODEL_NAME}.onnx"
INPUT_NAMES = ("crops", "lips", "mel")
OUTPUT_NAMES = ("video_embedding", "audio_embedding")
# The same weights as two graphs for streaming: per frame, and per window (monitor/sync/export.py).
STREAM_PATHS = (MODELS_DIR / f"{MODEL_NAME}.frames.onnx", MODELS_DIR / f"{MODEL_NAME}.windows.onnx")
FRAME_INPUT_NAMES = ("crops", "lips")
FRAME_OUTPUT_NAME = "frame_features"
WINDOW_INPUT_NAMES = ("frame_features", "mel")


def weights_digest(path: Path = WEIGHTS_PATH) -> str:
    """SHA-256 of a checkpoint file: what the streaming graphs record as their source."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Calibration:
    """Logistic in-sync probability from lag-curve features, fit on held-out clips."""

    weights: tuple[float, ...]
    bias: float
    # Sync confidence that 95 % of genuine calibration windows exceed (for rationales).
    genuine_confidence: float
    feature_names: tuple[str, ...] = ("confidence", "near_zero_confidence", "offset_frames")

    def probability(self, features: np.ndarray) -> float:
        z = float(np.dot(self.weights, features) + self.bias)
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": list(self.weights),
            "bias": self.bias,
            "genuine_confidence": self.genuine_confidence,
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            weights=tuple(float(w) for w in data["weights"]),
            bias=float(data["bias"]),
            genuine_confidence=float(data["genuine_confidence"]),
            feature_names=tuple(data.get("feature_names", cls.feature_names)),
        )


@dataclass(frozen=True)
class ModelInfo:
    """What the checkpoint says about itself: layer config, calibration, training record."""

    config: dict[str, Any]
    calibration: Calibration | None
    meta: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(path: Path = WEIGHTS_PATH) -> tuple[Any, ModelInfo]:
    """(SyncNetLite in eval mode, ModelInfo); BackendUnavailableError if missing or broken."""
    import torch

    from monitor.sync.model import SyncModelConfig, SyncNetLite

    if not path.exists():
        raise BackendUnavailableError(f"sync model weights not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = SyncModelConfig.from_dict(checkpoint["config"])
        model = SyncNetLite(config)
        state = {k: v.float() for k, v in checkpoint["state_dict"].items()}
        model.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise BackendUnavailableError(f"sync model weights {path} are unusable: {exc}") from exc
    model.eval()
    calibration = checkpoint.get("calibration")
    info = ModelInfo(
        config=checkpoint["config"],
        calibration=Calibration.from_dict(calibration) if calibration else None,
        meta=json.loads(checkpoint.get("meta", "{}")),
    )
    return model, info
