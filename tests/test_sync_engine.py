"""TensorRT engine build, cache key and the TensorRT 10/11 API branches.

TensorRT cannot be installed on these machines, so the build logic runs against a
stand-in module that records the calls TensorRT would receive (the one thing that cannot
run here); a real build-and-run test runs where ``tensorrt`` and a GPU exist.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from monitor.errors import BackendUnavailableError, ConfigError
from monitor.sync import engine
from monitor.sync.checkpoint import MODEL_NAME, ONNX_PATH, WEIGHTS_PATH

needs_model = pytest.mark.skipif(
    not (ONNX_PATH.exists() and WEIGHTS_PATH.exists()), reason="sync model not trained yet"
)
GPU = ("NVIDIA H100 80GB HBM3", "9.0")


def fake_tensorrt(version: str, *, fp16_flag: bool) -> types.SimpleNamespace:
    """A TensorRT stand-in: the API surface the builder uses, recording every call."""
    calls: list[tuple] = []

    class Network:
        def __init__(self, flags: int) -> None:
            calls.append(("create_network", flags))

    class Parser:
        def __init__(self, network: Network, logger: object) -> None:
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            calls.append(("parse", data))
            return True

    class Config:
        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("workspace", size))

        def set_flag(self, flag: str) -> None:
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile: object) -> None:
            calls.append(("add_profile",))

    class Profile:
        def set_shape(self, name: str, smallest: tuple, optimal: tuple, largest: tuple) -> None:
            calls.append(("set_shape", name, smallest, optimal, largest))

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calls.append(("build",))
            return b"serialized-engine"

    flags = {"INT8": "INT8"} | ({"FP16": "FP16"} if fp16_flag else {})
    return types.SimpleNamespace(
        __version__=version,
        calls=calls,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=Parser,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=types.SimpleNamespace(**flags),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
    )


def test_api_generation_from_version() -> None:
    assert engine.trt_major(fake_tensorrt("10.13.3.9", fp16_flag=True)) == 10
    assert engine.trt_major(fake_tensorrt("11.0.0", fp16_flag=False)) == 11
    with pytest.raises(BackendUnavailableError):
        engine.trt_major(fake_tensorrt("unknown", fp16_flag=True))
    assert not engine.needs_fp16_onnx(fake_tensorrt("10.13", fp16_flag=True), "fp16")
    assert engine.needs_fp16_onnx(fake_tensorrt("11.0", fp16_flag=False), "fp16")
    assert not engine.needs_fp16_onnx(fake_tensorrt("11.0", fp16_flag=False), "fp32")


def test_cache_key_changes_with_every_field() -> None:
    trt = fake_tensorrt("10.13.3.9", fp16_flag=True)
    profile = engine.Profile()
    base = engine.engine_key(trt, b"onnx-bytes", "fp16", GPU, profile)
    assert base == engine.engine_key(trt, b"onnx-bytes", "fp16", GPU, profile)
    variants = [
        engine.engine_key(trt, b"other-bytes", "fp16", GPU, profile),
        engine.engine_key(
            fake_tensorrt("10.14.1", fp16_flag=True), b"onnx-bytes", "fp16", GPU, profile
        ),
        engine.engine_key(trt, b"onnx-bytes", "fp16", ("NVIDIA H200", "9.0"), profile),
        engine.engine_key(trt, b"onnx-bytes", "fp16", (GPU[0], "8.9"), profile),
        engine.engine_key(trt, b"onnx-bytes", "fp32", GPU, profile),
        engine.engine_key(trt, b"onnx-bytes", "fp16", GPU, engine.Profile(windows=(1, 8, 64))),
    ]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == 1 + len(variants)
    assert base.filename().startswith(f"{MODEL_NAME}-fp16-") and base.filename().endswith(".engine")


def test_profile_config_in_the_repository_is_valid(tmp_path: Path) -> None:
    profile = engine.Profile.load(engine.REPO_ENGINE_DIR / "engines.toml")
    shapes = profile.shapes()
    assert shapes["crops"][0] == (profile.windows[0], profile.steps[0], 48, 96)
    assert shapes["lips"][1] == (profile.windows[1], profile.steps[1], 83)
    assert shapes["mel"][2] == (profile.windows[2], 4 * (profile.steps[2] + 30), 80)
    bad = tmp_path / "engines.toml"
    bad.write_text("[profile]\nwindows = [8, 4, 2]\n")
    with pytest.raises(ConfigError):
        engine.Profile.load(bad)


@needs_model
def test_trt10_fp16_sets_the_builder_flag_on_the_fp32_graph(tmp_path: Path) -> None:
    trt = fake_tensorrt("10.13.3.9", fp16_flag=True)
    path, built = engine.build_engine("fp16", trt=trt, gpu=GPU, cache_dir=tmp_path)
    assert built and path.read_bytes() == b"serialized-engine"
    assert ("create_network", 0) in trt.calls
    assert ("set_flag", "FP16") in trt.calls
    parsed = next(c[1] for c in trt.calls if c[0] == "parse")
    assert parsed == ONNX_PATH.read_bytes()
    shapes = {c[1]: c[2:] for c in trt.calls if c[0] == "set_shape"}
    assert set(shapes) == {"crops", "lips", "mel"}
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["precision"] == "fp16" and record["trt_version"] == "10.13.3.9"
    assert record["gpu_name"] == GPU[0] and record["compute_capability"] == GPU[1]

    # Same key again: the cached engine is reused, nothing is built.
    trt.calls.clear()
    again, built_again = engine.build_engine("fp16", trt=trt, gpu=GPU, cache_dir=tmp_path)
    assert again == path and not built_again and ("build",) not in trt.calls
    assert engine.find_engine("fp16", trt=trt, gpu=GPU, cache_dir=tmp_path) == path
    assert engine.find_engine("fp16", trt=trt, gpu=("NVIDIA L4", "8.9"), cache_dir=tmp_path) is None


@needs_model
def test_trt11_fp16_parses_a_strongly_typed_fp16_graph(tmp_path: Path) -> None:
    import onnx

    trt = fake_tensorrt("11.0.0", fp16_flag=False)
    path, built = engine.build_engine("fp16", trt=trt, gpu=GPU, cache_dir=tmp_path)
    assert built
    assert not any(c[0] == "set_flag" for c in trt.calls)
    assert ("create_network", 1 << 1) in trt.calls  # STRONGLY_TYPED
    parsed = onnx.load_from_string(next(c[1] for c in trt.calls if c[0] == "parse"))
    float_types = {init.data_type for init in parsed.graph.initializer if init.data_type in (1, 10)}
    assert float_types == {onnx.TensorProto.FLOAT16}
    io_types = {
        v.type.tensor_type.elem_type for v in list(parsed.graph.input) + list(parsed.graph.output)
    }
    assert io_types == {onnx.TensorProto.FLOAT}  # fp32 in and out, fp16 inside
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["parsed_onnx_sha256"] != record["onnx_sha256"]


@needs_model
def test_trt11_fp32_is_strongly_typed_without_flags(tmp_path: Path) -> None:
    trt = fake_tensorrt("11.0.0", fp16_flag=False)
    engine.build_engine("fp32", trt=trt, gpu=GPU, cache_dir=tmp_path)
    assert ("create_network", 1 << 1) in trt.calls
    assert not any(c[0] == "set_flag" for c in trt.calls)


def test_unknown_precision_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        engine.engine_path(fake_tensorrt("10.13", fp16_flag=True), "int8", GPU, tmp_path)


def test_build_engine_command_without_tensorrt_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("monitor.commands.build_engine")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from monitor.cli import main

    assert main(["build-engine", "--precision", "fp32"]) == 1


@needs_model
def test_real_tensorrt_engine_matches_onnxruntime(tmp_path: Path) -> None:
    trt = pytest.importorskip("tensorrt")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        pytest.importorskip("pycuda.driver")
    from monitor.sync.backends import OnnxBackend
    from monitor.sync.model import example_inputs

    path, _ = engine.build_engine("fp32", trt=trt, cache_dir=tmp_path)
    runner = engine.TensorRTBackend(path, trt)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=t.shape).astype(np.float32) for t in example_inputs(3, 50)]
    got = runner.embed(*inputs)
    want = OnnxBackend().embed(*inputs)
    for a, b in zip(got, want, strict=True):
        assert np.abs(a - b).max() <= 1e-3
