"""ONNX export of the sync model: fp32 with dynamic batch and time, and a strongly typed fp16.

The fp32 graph is what onnxruntime runs and what TensorRT 10 builds (with its FP16 flag
for fp16). TensorRT 11 dropped the FP16 builder flag, its networks are strongly typed, so
fp16 there needs a graph whose tensors are fp16 already: :func:`export_onnx` with
``fp16=True`` exports the half-precision module between casts, keeping fp32 inputs and
outputs so every backend is fed the same way.

:func:`export_stream_onnx` writes the same weights as two graphs for streaming: the
per-frame half of the video tower (every frame once, whatever windows it falls in) and
the rest (temporal layers and the audio tower, per window). Both carry the SHA-256 of the
checkpoint they came from, so a backend can tell when they are stale.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

from monitor.sync.checkpoint import (
    FRAME_INPUT_NAMES,
    FRAME_OUTPUT_NAME,
    INPUT_NAMES,
    OUTPUT_NAMES,
    STREAM_PATHS,
    WEIGHTS_PATH,
    WINDOW_INPUT_NAMES,
    load_checkpoint,
    weights_digest,
)

OPSET = 17
DYNAMIC_AXES = {
    "crops": {0: "windows", 1: "steps"},
    "lips": {0: "windows", 1: "steps"},
    "mel": {0: "windows", 1: "mel_rows"},
    "video_embedding": {0: "windows", 1: "steps"},
    "audio_embedding": {0: "windows", 1: "audio_steps"},
}


def export_onnx_bytes(weights: Path = WEIGHTS_PATH, *, fp16: bool = False) -> bytes:
    import onnx
    import torch

    from monitor.sync.model import example_inputs

    model, info = load_checkpoint(weights)
    module: torch.nn.Module = model
    if fp16:
        module = _HalfBetweenCasts(model.half())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            module,
            example_inputs(2, 50),
            buffer,
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=DYNAMIC_AXES,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {
        "dfmon.model": weights.stem,
        "dfmon.precision": "fp16" if fp16 else "fp32",
        "dfmon.config": json.dumps(info.config, sort_keys=True),
    }
    if info.calibration is not None:
        metadata["dfmon.calibration"] = json.dumps(info.calibration.to_dict(), sort_keys=True)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(weights: Path, out: Path, *, fp16: bool = False) -> Path:
    out.write_bytes(export_onnx_bytes(weights, fp16=fp16))
    return out


def _to_onnx(module: Any, inputs: tuple, names: tuple[str, ...], outputs: list[str],
             axes: dict[str, dict[int, str]], metadata: dict[str, str]) -> bytes:  # fmt: skip
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            buffer,
            dynamo=False,
            input_names=list(names),
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_stream_onnx(
    weights: Path = WEIGHTS_PATH, paths: tuple[Path, Path] = STREAM_PATHS
) -> tuple[Path, Path]:
    """The per-frame and the per-window graph (see the module docstring), fp32."""
    import torch

    from monitor.sync.model import example_inputs

    model, info = load_checkpoint(weights)
    crops, lips, mel = example_inputs(2, 50)

    class Part(torch.nn.Module):
        """One of the model's streaming halves as a module of its own, for the exporter."""

        def __init__(self, method: str) -> None:
            super().__init__()
            self.model, self.method = model, method

        def forward(self, *inputs):  # noqa: ANN002, ANN202
            return getattr(self.model, self.method)(*inputs)

    metadata = {
        "dfmon.model": weights.stem,
        "dfmon.precision": "fp32",
        "dfmon.config": json.dumps(info.config, sort_keys=True),
        "dfmon.weights_sha256": weights_digest(weights),
    }
    if info.calibration is not None:
        metadata["dfmon.calibration"] = json.dumps(info.calibration.to_dict(), sort_keys=True)
    flat_crops, flat_lips = crops.reshape(-1, *crops.shape[2:]), lips.reshape(-1, lips.shape[-1])
    with torch.no_grad():
        features = model.frame_features(flat_crops, flat_lips).reshape(2, 50, -1)
    frames_bytes = _to_onnx(
        Part("frame_features"),
        (flat_crops, flat_lips),
        FRAME_INPUT_NAMES,
        [FRAME_OUTPUT_NAME],
        {name: {0: "frames"} for name in (*FRAME_INPUT_NAMES, FRAME_OUTPUT_NAME)},
        {**metadata, "dfmon.part": "frames"},
    )
    windows_bytes = _to_onnx(
        Part("window_embeddings"),
        (features, mel),
        WINDOW_INPUT_NAMES,
        list(OUTPUT_NAMES),
        {
            "frame_features": {0: "windows", 1: "steps"},
            "mel": {0: "windows", 1: "mel_rows"},
            "video_embedding": {0: "windows", 1: "steps"},
            "audio_embedding": {0: "windows", 1: "audio_steps"},
        },
        {**metadata, "dfmon.part": "windows"},
    )
    for path, data in zip(paths, (frames_bytes, windows_bytes), strict=True):
        path.write_bytes(data)
    return paths


def _half_between_casts_factory():  # noqa: ANN202 - defined lazily so torch loads on demand
    import torch

    class HalfBetweenCasts(torch.nn.Module):
        """fp32 in, fp16 inside, fp32 out."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, crops, lips, mel):  # noqa: ANN001, ANN201
            video, audio = self.inner(crops.half(), lips.half(), mel.half())
            return video.float(), audio.float()

    return HalfBetweenCasts


def _HalfBetweenCasts(inner):  # noqa: ANN001, ANN202, N802 - reads like the class it builds
    return _half_between_casts_factory()(inner)
