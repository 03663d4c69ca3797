"""Inference for the artifact network: onnxruntime on CPU (faster for this small network and
with its own thread count), the PyTorch checkpoint where onnxruntime cannot be used."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from monitor.detectors.artifact.crops import normalize
from monitor.errors import BackendUnavailableError

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
WEIGHTS_PATH = MODELS_DIR / "artifact_v1.pt"
ONNX_PATH = MODELS_DIR / "artifact_v1.onnx"
INPUT_NAME = "crops"
OUTPUT_NAMES = ("fake_logit", "boundary_logit")
# One intra-op thread: the detector runs beside the tracker and the sync model, per session.
CPU_THREADS = int(os.environ.get("DFMON_ARTIFACT_THREADS", "1"))


class ArtifactBackend(Protocol):
    name: str

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 256, 256, 3) uint8 face crops -> fake logits (N,), boundary maps (N, 16, 16)."""
        ...


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class OnnxArtifactBackend:
    name = "onnx"

    def __init__(self, path: Path = ONNX_PATH) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise BackendUnavailableError(f"onnxruntime cannot be imported: {exc}") from exc
        if not path.exists():
            raise BackendUnavailableError(f"artifact model not found: {path}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = CPU_THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Busy-waiting worker threads steal the cores the rest of the pipeline needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailableError(f"onnxruntime cannot load {path}: {exc}") from exc

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, boundary = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: normalize(crops)})
        return logits.astype(np.float32), _sigmoid(boundary).astype(np.float32)


class TorchArtifactBackend:
    name = "torch"

    def __init__(self, path: Path = WEIGHTS_PATH) -> None:
        from monitor.detectors.artifact.model import load_model

        if not path.exists():
            raise BackendUnavailableError(f"artifact model not found: {path}")
        self.model, _ = load_model(path)

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from monitor.detectors.artifact.model import score_crops

        return score_crops(self.model, crops)


@lru_cache(maxsize=1)
def shared_backend() -> ArtifactBackend:
    """One backend per process, shared by every session (both are safe across threads)."""
    try:
        return OnnxArtifactBackend()
    except BackendUnavailableError as exc:
        log.warning("artifact detector: %s; using torch", exc)
        return TorchArtifactBackend()


def export_onnx(model: object, path: Path = ONNX_PATH) -> None:
    """The network as ONNX (opset 17, any batch size)."""
    import torch

    from monitor.detectors.artifact.crops import INPUT_SIDE

    example = torch.zeros(1, 3, INPUT_SIDE, INPUT_SIDE)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "frames"}, **{n: {0: "frames"} for n in OUTPUT_NAMES}},
        opset_version=17,
        dynamo=False,
    )
