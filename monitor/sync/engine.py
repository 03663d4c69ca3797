"""TensorRT engines for the sync model: build from the ONNX, cache, run.

An engine only runs where it was built (same TensorRT version, GPU compute capability,
OS), so engines are built on the target and cached in ``trt_engines/`` under a key of
the ONNX bytes' hash, the TensorRT version, the GPU name and compute capability and the
precision. Two TensorRT APIs are handled:

* TensorRT 10: weakly typed networks; fp16 is ``BuilderFlag.FP16`` on the fp32 ONNX.
* TensorRT 11: the FP16/INT8/BF16/FP8 builder flags are gone and networks are strongly
  typed, so fp16 needs an fp16 ONNX: it is exported from the weights
  (:func:`monitor.sync.export.export_onnx_bytes` with ``fp16=True``) and cached too.

The runtime uses ``execute_async_v3`` with torch CUDA buffers when torch has CUDA, else
pycuda buffers. It must stay on one thread (pycuda contexts are per thread); the
:class:`~monitor.sync.backends.BatchingRunner` guarantees that.

The ``trt`` module is passed in (not imported at module level) so that the build logic
and the 10/11 branching can be exercised on machines without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from monitor.errors import BackendUnavailableError, ConfigError
from monitor.sync.checkpoint import (
    INPUT_NAMES,
    MODEL_NAME,
    ONNX_PATH,
    OUTPUT_NAMES,
    WEIGHTS_PATH,
)
from monitor.sync.dims import (
    CROP_HEIGHT,
    CROP_WIDTH,
    LIP_FEATURES,
    MAX_LAG,
    MEL_ROWS_PER_STEP,
    N_MELS,
)

log = logging.getLogger(__name__)

REPO_ENGINE_DIR = Path(__file__).resolve().parents[2] / "trt_engines"
PRECISIONS = ("fp32", "fp16")


def engine_dir() -> Path:
    """``$DFMON_TRT_ENGINES``, else the repository's trt_engines/, else a user cache."""
    configured = os.environ.get("DFMON_TRT_ENGINES")
    if configured:
        return Path(configured)
    if REPO_ENGINE_DIR.is_dir():
        return REPO_ENGINE_DIR
    return Path.home() / ".cache" / "dfmon" / "trt_engines"


@dataclass(frozen=True)
class Profile:
    """Shapes an engine accepts, each (min, opt, max): windows per batch and 25 fps steps
    per window (50 = a 2 s window); the mel input follows the steps (4 rows per step plus
    2 * 15 steps of lag context)."""

    windows: tuple[int, int, int] = (1, 4, 32)
    steps: tuple[int, int, int] = (5, 50, 150)
    workspace_mb: int = 1024

    @classmethod
    def load(cls, path: Path | None = None) -> Profile:
        path = path or engine_dir() / "engines.toml"
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text()).get("profile", {})
            profile = cls(
                windows=tuple(data.get("windows", cls.windows)),  # type: ignore[arg-type]
                steps=tuple(data.get("steps", cls.steps)),  # type: ignore[arg-type]
                workspace_mb=int(data.get("workspace_mb", cls.workspace_mb)),
            )
        except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is not a valid engine config: {exc}") from exc
        for name, dims in (("windows", profile.windows), ("steps", profile.steps)):
            if len(dims) != 3 or not (1 <= dims[0] <= dims[1] <= dims[2]):
                raise ConfigError(
                    f"{path}: {name} must be [min, opt, max] with 1 <= min <= opt <= max"
                )
        return profile

    def shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Per input name: (min, opt, max) full shapes for the optimization profile."""
        out: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
        pairs = list(zip(self.windows, self.steps, strict=True))
        out["crops"] = tuple((b, t, CROP_HEIGHT, CROP_WIDTH) for b, t in pairs)  # type: ignore[assignment]
        out["lips"] = tuple((b, t, LIP_FEATURES) for b, t in pairs)  # type: ignore[assignment]
        out["mel"] = tuple(  # type: ignore[assignment]
            (b, MEL_ROWS_PER_STEP * (t + 2 * MAX_LAG), N_MELS) for b, t in pairs
        )
        return out


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: str  # the batch profile, as JSON

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]

    def filename(self) -> str:
        return f"{MODEL_NAME}-{self.precision}-{self.digest()}.engine"


def trt_major(trt: ModuleType) -> int:
    """TensorRT's major version from ``trt.__version__`` ("10.13.3.9" -> 10)."""
    version = str(getattr(trt, "__version__", "0"))
    try:
        return int(version.split(".")[0])
    except ValueError as exc:
        raise BackendUnavailableError(f"unrecognized TensorRT version {version!r}") from exc


def needs_fp16_onnx(trt: ModuleType, precision: str) -> bool:
    """TensorRT 11+ has no FP16 builder flag: fp16 must come from an fp16 graph."""
    return precision == "fp16" and (trt_major(trt) >= 11 or not hasattr(trt.BuilderFlag, "FP16"))


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") via torch CUDA, else pycuda."""
    try:
        import torch

        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            return torch.cuda.get_device_name(index), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return device.name(), f"{major}.{minor}"
    except Exception as exc:  # pycuda missing, or no driver/GPU
        raise BackendUnavailableError(f"no CUDA GPU visible (torch and pycuda): {exc}") from exc


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(f"tensorrt cannot be imported: {exc}") from exc
    return tensorrt


def onnx_for_precision(trt: ModuleType, precision: str, onnx_path: Path, weights: Path) -> bytes:
    """The ONNX bytes the builder parses: the fp32 graph, or an fp16 graph for TRT 11 fp16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if needs_fp16_onnx(trt, precision):
        from monitor.sync.export import export_onnx_bytes

        return export_onnx_bytes(weights, fp16=True)
    if not onnx_path.exists():
        raise BackendUnavailableError(f"sync model ONNX not found: {onnx_path}")
    return onnx_path.read_bytes()


def engine_key(
    trt: ModuleType, onnx_bytes: bytes, precision: str, gpu: tuple[str, str], profile: Profile
) -> EngineKey:
    return EngineKey(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        trt_version=str(trt.__version__),
        gpu_name=gpu[0],
        compute_capability=gpu[1],
        precision=precision,
        profile=json.dumps(asdict(profile), sort_keys=True),
    )


def network_flags(trt: ModuleType, strongly_typed: bool) -> int:
    """Creation flags: 0 (explicit batch is implicit since TRT 10), or STRONGLY_TYPED."""
    if not strongly_typed:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_serialized_engine(
    trt: ModuleType, onnx_bytes: bytes, precision: str, profile: Profile
) -> bytes:
    """Parse, configure and build; raises BackendUnavailableError with the parser's errors."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    fp16_graph = needs_fp16_onnx(trt, precision)
    # TRT 11 networks are always strongly typed; on 10, only the fp16-graph path asks for it.
    network = builder.create_network(network_flags(trt, fp16_graph or trt_major(trt) >= 11))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT could not parse the sync ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mb << 20)
    if precision == "fp16" and not fp16_graph:
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in profile.shapes().items():
        optimization.set_shape(name, smallest, optimal, largest)
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError("TensorRT failed to build the sync engine (see its log)")
    return bytes(serialized)


def build_engine(
    precision: str = "fp16",
    *,
    trt: ModuleType | None = None,
    gpu: tuple[str, str] | None = None,
    cache_dir: Path | None = None,
    onnx_path: Path = ONNX_PATH,
    weights: Path = WEIGHTS_PATH,
    profile: Profile | None = None,
    force: bool = False,
) -> tuple[Path, bool]:
    """(engine path, built now?): a cached engine with the same key is reused.

    The key hashes the shipped fp32 ONNX (the model's identity) even when TensorRT 11
    parses an fp16 graph exported from the same weights; the sidecar records both hashes.
    """
    trt = trt or import_tensorrt()
    gpu = gpu or gpu_identity()
    cache_dir = cache_dir or engine_dir()
    profile = profile or Profile.load(cache_dir / "engines.toml")
    path = engine_path(trt, precision, gpu, cache_dir, onnx_path, profile)
    if path.exists() and not force:
        log.info("TensorRT engine cached: %s", path)
        return path, False
    onnx_bytes = onnx_for_precision(trt, precision, onnx_path, weights)
    log.info(
        "building TensorRT %s engine (%s, TensorRT %s, %s)",
        precision,
        gpu[0],
        trt.__version__,
        gpu[1],
    )
    serialized = build_serialized_engine(trt, onnx_bytes, precision, profile)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(serialized)
    partial.replace(path)
    record = asdict(engine_key(trt, onnx_path.read_bytes(), precision, gpu, profile))
    record["parsed_onnx_sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path, True


def engine_path(
    trt: ModuleType,
    precision: str,
    gpu: tuple[str, str],
    cache_dir: Path | None = None,
    onnx_path: Path = ONNX_PATH,
    profile: Profile | None = None,
) -> Path:
    """Where the engine for this model, TensorRT, GPU, precision and profile lives."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not onnx_path.exists():
        raise BackendUnavailableError(f"sync model ONNX not found: {onnx_path}")
    cache_dir = cache_dir or engine_dir()
    profile = profile or Profile.load(cache_dir / "engines.toml")
    key = engine_key(trt, onnx_path.read_bytes(), precision, gpu, profile)
    return cache_dir / key.filename()


def find_engine(
    precision: str, *, trt: ModuleType, gpu: tuple[str, str], cache_dir: Path | None = None
) -> Path | None:
    """The cached engine for this ONNX, TensorRT, GPU and precision, if there is one."""
    path = engine_path(trt, precision, gpu, cache_dir)
    return path if path.exists() else None


class TensorRTBackend:
    """Runs a serialized engine with ``execute_async_v3``; one instance per thread."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, trt: ModuleType | None = None) -> None:
        self.trt = trt or import_tensorrt()
        self.engine_path = engine_path
        logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._runtime = self.trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise BackendUnavailableError(f"TensorRT could not load engine {engine_path}")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        missing = set(INPUT_NAMES + OUTPUT_NAMES) - set(names)
        if missing:
            raise BackendUnavailableError(f"engine {engine_path} lacks tensors {sorted(missing)}")
        self._buffers: _Buffers = _TorchBuffers() if _torch_cuda() else _PycudaBuffers()

    @classmethod
    def from_model(cls, precision: str | None = None) -> TensorRTBackend:
        """Find (or build, fp16 first) the engine for this machine's GPU and TensorRT."""
        trt = import_tensorrt()
        gpu = gpu_identity()
        precisions = (precision,) if precision else ("fp16", "fp32")
        for candidate in precisions:
            engine = find_engine(candidate, trt=trt, gpu=gpu)
            if engine is not None:
                return cls(engine, trt)
        path, _ = build_engine(precisions[0], trt=trt, gpu=gpu)
        return cls(path, trt)

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        inputs = dict(zip(INPUT_NAMES, (crops, lips, mel), strict=True))
        for name, array in inputs.items():
            self.context.set_input_shape(name, tuple(array.shape))
        shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in OUTPUT_NAMES}
        addresses = self._buffers.stage(inputs, shapes)
        for name, address in addresses.items():
            self.context.set_tensor_address(name, address)
        if not self.context.execute_async_v3(self._buffers.stream_handle()):
            raise BackendUnavailableError("TensorRT execute_async_v3 failed")
        outputs = self._buffers.fetch(OUTPUT_NAMES)
        return outputs[OUTPUT_NAMES[0]], outputs[OUTPUT_NAMES[1]]


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class _Buffers:
    def stage(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, tuple[int, ...]]
    ) -> dict[str, int]:
        raise NotImplementedError

    def stream_handle(self) -> int:
        raise NotImplementedError

    def fetch(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class _TorchBuffers(_Buffers):
    """Device tensors from torch; the engine runs on torch's current stream."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.tensors: dict[str, Any] = {}
        self.stream = torch.cuda.current_stream()

    def stage(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, tuple[int, ...]]
    ) -> dict[str, int]:
        torch = self.torch
        self.tensors = {
            name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).cuda(
                non_blocking=True
            )
            for name, a in inputs.items()
        }
        for name, shape in outputs.items():
            self.tensors[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
        return {name: int(t.data_ptr()) for name, t in self.tensors.items()}

    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def fetch(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.stream.synchronize()
        return {name: self.tensors[name].cpu().numpy() for name in names}


class _PycudaBuffers(_Buffers):
    """pycuda device memory; the context is made on (and bound to) the calling thread."""

    def __init__(self) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendUnavailableError(
                f"neither torch CUDA nor pycuda is usable: {exc}"
            ) from exc
        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(0).make_context()  # current on this thread only
        self.stream = cuda.Stream()
        self.device: dict[str, Any] = {}
        self.host: dict[str, np.ndarray] = {}

    def stage(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, tuple[int, ...]]
    ) -> dict[str, int]:
        cuda = self.cuda
        addresses = {}
        for name, array in inputs.items():
            host = cuda.pagelocked_empty(array.shape, np.float32)
            host[...] = array
            self.host[name] = host
            self.device[name] = cuda.mem_alloc(host.nbytes)
            cuda.memcpy_htod_async(self.device[name], host, self.stream)
            addresses[name] = int(self.device[name])
        for name, shape in outputs.items():
            self.host[name] = cuda.pagelocked_empty(shape, np.float32)
            self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
            addresses[name] = int(self.device[name])
        return addresses

    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def fetch(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        for name in names:
            self.cuda.memcpy_dtoh_async(self.host[name], self.device[name], self.stream)
        self.stream.synchronize()
        return {name: np.array(self.host[name]) for name in names}
