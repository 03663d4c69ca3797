"""ONNX export of the sync model: fp32 with dynamic batch and time, and a strongly typed fp16.

The fp32 graph is what onnxruntime runs and what TensorRT 10 builds (with its FP16 flag
for fp16). TensorRT 11 dropped the FP16 builder flag, its networks are strongly typed, so
fp16 there needs a graph whose tensors are fp16 already: :func:`export_onnx` with
``fp16=True`` exports the half-precision module between casts, keeping fp32 inputs and
outputs so every backend is fed the same way.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

from monitor.sync.checkpoint import INPUT_NAMES, OUTPUT_NAMES, WEIGHTS_PATH, load_checkpoint

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
        "dfmon.model": "sync_v1",
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
