"""Inference backends for the sync model, chosen automatically, shared across sessions.

Every backend answers one call, ``embed(crops, lips, mel) -> (video_emb, audio_emb)``,
on numpy arrays with a leading batch of windows: crops (B, T, 48, 96), lips (B, T, 83),
mel (B, 4 * (T + 30), 80) -> (B, T, D) and (B, T + 30, D).

* ``torch``: the PyTorch module from ``sync_v2.pt`` on CPU; ``torch-cuda`` on a GPU.
* ``onnx``: onnxruntime (CPU provider) on the two streaming graphs
  ``sync_v2.frames.onnx`` and ``sync_v2.windows.onnx`` when they match the weights, else
  on ``sync_v2.onnx``; faster than torch on CPU for this small net (see
  tools/bench_sync.py), so it is the CPU default. It never imports torch.
* ``tensorrt``: an engine built from the ONNX (monitor/sync/engine.py), run with
  ``execute_async_v3`` on torch CUDA buffers or, without torch CUDA, pycuda buffers.

``auto`` tries tensorrt, then torch-cuda, then onnx, then torch. All inference runs on
one thread per process (:class:`BatchingRunner`): pycuda contexts belong to the thread
that made them, and windows that several sessions submit at the same moment are run as
one batch.

Streaming backends (torch, and onnx with the streaming graphs) also answer
``embed_frames(crops (N, 48, 96), lips (N, 83)) -> (N, F)``, the per-frame half of the
video tower, and ``embed_windows(frame_features (B, T, F), mel) -> (video_emb,
audio_emb)``, the rest: ``embed`` is exactly the two in a row, so a stream can compute
each frame once however many overlapping windows it falls in.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monitor.config import BACKEND_NAMES
from monitor.errors import BackendUnavailableError, ConfigError
from monitor.sync.checkpoint import (
    FRAME_INPUT_NAMES,
    FRAME_OUTPUT_NAME,
    INPUT_NAMES,
    ONNX_PATH,
    OUTPUT_NAMES,
    STREAM_PATHS,
    WEIGHTS_PATH,
    WINDOW_INPUT_NAMES,
    Calibration,
    load_checkpoint,
    weights_digest,
)

log = logging.getLogger(__name__)

AUTO_ORDER = ("tensorrt", "torch-cuda", "onnx", "torch")
GPU_BACKENDS = ("tensorrt", "torch-cuda")


def _cpu_threads() -> int:
    """``$DFMON_SYNC_THREADS``, else the cores this process may run on, at most 2."""
    configured = os.environ.get("DFMON_SYNC_THREADS")
    if configured:
        return max(1, int(configured))
    return max(1, min(2, len(os.sched_getaffinity(0))))


CPU_THREADS = _cpu_threads()


class SyncBackend(Protocol):
    name: str

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """The PyTorch module; CPU or CUDA."""

    def __init__(self, device: str = "cpu", weights: Path = WEIGHTS_PATH) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch has no CUDA device here")
        self.name = "torch-cuda" if device == "cuda" else "torch"
        self._torch = torch
        self.device = torch.device(device)
        model, self.info = load_checkpoint(weights)
        self.model = model.to(self.device)
        if device == "cpu" and torch.get_num_threads() > CPU_THREADS:
            torch.set_num_threads(CPU_THREADS)

    @property
    def calibration(self) -> Calibration | None:
        return self.info.calibration

    def _tensors(self, *arrays: np.ndarray) -> list[Any]:
        return [self._torch.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in arrays]

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.inference_mode():
            video, audio = self.model(*self._tensors(crops, lips, mel))
            return video.float().cpu().numpy(), audio.float().cpu().numpy()

    def embed_frames(self, crops: np.ndarray, lips: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model.frame_features(*self._tensors(crops, lips)).float().cpu().numpy()

    def embed_windows(
        self, frame_features: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.inference_mode():
            video, audio = self.model.window_embeddings(*self._tensors(frame_features, mel))
            return video.float().cpu().numpy(), audio.float().cpu().numpy()


class OnnxBackend:
    """onnxruntime on the streaming graph pair when it matches the weights, else on the
    whole graph (dynamic windows and steps either way)."""

    name = "onnx"

    def __init__(
        self,
        path: Path = ONNX_PATH,
        providers: list[str] | None = None,
        stream_paths: tuple[Path, Path] | None = STREAM_PATHS,
        weights: Path = WEIGHTS_PATH,
    ) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise BackendUnavailableError(f"onnxruntime cannot be imported: {exc}") from exc
        self._onnxruntime = onnxruntime
        self._providers = providers or ["CPUExecutionProvider"]
        self.session: Any = None
        self.frame_session: Any = None
        self.window_session: Any = None
        if stream_paths is not None and all(p.exists() for p in stream_paths):
            sessions = [self._open(p) for p in stream_paths]
            if _exported_from_installed_weights(sessions, weights):
                self.frame_session, self.window_session = sessions
        if self.frame_session is None:
            if not path.exists():
                raise BackendUnavailableError(f"sync model ONNX not found: {path}")
            self.session = self._open(path)
        raw = _metadata(self.window_session or self.session).get("dfmon.calibration")
        self.calibration = Calibration.from_dict(json.loads(raw)) if raw else None

    @property
    def streaming(self) -> bool:
        return self.frame_session is not None

    def _open(self, path: Path) -> Any:
        options = self._onnxruntime.SessionOptions()
        options.intra_op_num_threads = CPU_THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Busy-waiting worker threads steal the cores the rest of the pipeline needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return self._onnxruntime.InferenceSession(str(path), options, providers=self._providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailableError(f"onnxruntime cannot load {path}: {exc}") from exc

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.session is None:
            windows, steps = crops.shape[:2]
            features = self.embed_frames(
                crops.reshape(windows * steps, *crops.shape[2:]), lips.reshape(windows * steps, -1)
            )
            return self.embed_windows(features.reshape(windows, steps, -1), mel)
        video, audio = self.session.run(list(OUTPUT_NAMES), _feeds(INPUT_NAMES, crops, lips, mel))
        return video, audio

    def embed_frames(self, crops: np.ndarray, lips: np.ndarray) -> np.ndarray:
        if self.frame_session is None:
            raise BackendUnavailableError("the streaming sync graphs are not loaded")
        feeds = _feeds(FRAME_INPUT_NAMES, crops, lips)
        return self.frame_session.run([FRAME_OUTPUT_NAME], feeds)[0]

    def embed_windows(
        self, frame_features: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.window_session is None:
            raise BackendUnavailableError("the streaming sync graphs are not loaded")
        feeds = _feeds(WINDOW_INPUT_NAMES, frame_features, mel)
        video, audio = self.window_session.run(list(OUTPUT_NAMES), feeds)
        return video, audio


def _feeds(names: tuple[str, ...], *arrays: np.ndarray) -> dict[str, np.ndarray]:
    return {
        name: np.ascontiguousarray(x, dtype=np.float32)
        for name, x in zip(names, arrays, strict=True)
    }


def _metadata(session: Any) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def _exported_from_installed_weights(sessions: list[Any], weights: Path) -> bool:
    """Whether the streaming graphs were exported from the checkpoint now installed (a
    retrained model whose graphs were not re-exported must not run with stale ones)."""
    if not weights.exists():
        return True  # nothing to compare with: the graphs are the model
    digest = weights_digest(weights)
    if all(_metadata(session).get("dfmon.weights_sha256") == digest for session in sessions):
        return True
    log.warning(
        "the streaming sync graphs were not exported from %s; using the whole-window graph "
        "(re-export them with monitor.sync.export.export_stream_onnx)",
        weights,
    )
    return False


def create_backend(name: str = "auto") -> SyncBackend:
    """The named backend, or for ``auto`` the first that works in :data:`AUTO_ORDER`."""
    if name not in BACKEND_NAMES:
        raise ConfigError(
            f"unknown lip_sync backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if name != "auto":
        return _create_one(name)
    reasons = []
    gpu = nvidia_gpu_visible()
    for candidate in AUTO_ORDER:
        if candidate in GPU_BACKENDS and not gpu:
            # Importing torch or TensorRT only to hear there is no GPU costs seconds.
            reasons.append(f"{candidate}: no NVIDIA GPU visible")
            continue
        try:
            return _create_one(candidate)
        except BackendUnavailableError as exc:
            reasons.append(f"{candidate}: {exc}")
            log.debug("sync backend %s unavailable: %s", candidate, exc)
        except Exception as exc:  # a backend that breaks oddly (driver, runtime) is skipped too
            reasons.append(f"{candidate}: {type(exc).__name__}: {exc}")
            log.warning("sync backend %s failed to start: %s", candidate, exc)
    raise BackendUnavailableError("no sync backend works here: " + "; ".join(reasons))


def nvidia_gpu_visible() -> bool:
    """Whether this process may see an NVIDIA GPU (device nodes present, not hidden by
    ``CUDA_VISIBLE_DEVICES``); cheap, so ``auto`` imports no GPU stack on CPU machines."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    dev = Path("/dev")
    return (dev / "nvidiactl").exists() or any(dev.glob("nvidia[0-9]*"))


def _create_one(name: str) -> SyncBackend:
    if name == "torch":
        return TorchBackend("cpu")
    if name == "torch-cuda":
        return TorchBackend("cuda")
    if name == "onnx":
        return OnnxBackend()
    if name == "tensorrt":
        from monitor.sync.engine import TensorRTBackend

        return TensorRTBackend.from_model()
    raise ConfigError(f"unknown lip_sync backend {name!r}")


@dataclass
class _Request:
    method: str  # "embed", "embed_frames" or "embed_windows"
    arrays: tuple[np.ndarray, ...]  # stacked along axis 0 with other requests' arrays
    future: Future

    @property
    def size(self) -> int:
        return len(self.arrays[0])

    @property
    def group(self) -> tuple:
        """Requests with the same key can share a batch."""
        return (self.method, *(a.shape[1:] for a in self.arrays))


class BatchingRunner:
    """One inference thread for a backend; concurrent callers' requests run as one batch.

    The backend is created on the worker thread (TensorRT/pycuda contexts must stay on
    the thread that made them). Every call blocks until its own slice of the batch is
    back. Windows of different lengths cannot share a batch; they run one after the
    other. A batch holds at most ``max_windows`` windows (``embed``, ``embed_windows``)
    or ``max_windows * FRAMES_PER_WINDOW`` frames (``embed_frames``).
    """

    FRAMES_PER_WINDOW = 50

    def __init__(
        self, backend_name: str = "auto", *, max_windows: int = 32, gather_s: float = 0.002
    ) -> None:
        self.requested = backend_name
        self.max_windows = max_windows
        self.gather_s = gather_s
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._ready: Future = Future()
        self.batches_run = 0
        self.requests_run = 0
        self._thread = threading.Thread(target=self._work, name="dfmon-sync-inference", daemon=True)
        self._thread.start()
        self.backend: SyncBackend = self._ready.result()  # re-raises a creation failure

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def streaming(self) -> bool:
        """Whether ``embed_frames`` and ``embed_windows`` are available."""
        return bool(getattr(self.backend, "streaming", hasattr(self.backend, "embed_frames")))

    @property
    def calibration(self) -> Calibration | None:
        """What the backend's model file says about itself (None: ask the checkpoint)."""
        return getattr(self.backend, "calibration", None)

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._call("embed", crops, lips, mel)

    def embed_frames(self, crops: np.ndarray, lips: np.ndarray) -> np.ndarray:
        (features,) = self._call("embed_frames", crops, lips)
        return features

    def embed_windows(
        self, frame_features: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._call("embed_windows", frame_features, mel)

    def _call(self, method: str, *arrays: np.ndarray) -> Any:
        future: Future = Future()
        self._queue.put(_Request(method, arrays, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _limit(self, method: str) -> int:
        return self.max_windows * (self.FRAMES_PER_WINDOW if method == "embed_frames" else 1)

    def _work(self) -> None:
        try:
            backend = create_backend(self.requested)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(backend)
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.gather_s
            while sum(r.size for r in batch) < self._limit(first.method):
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            groups: dict[tuple, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.group, []).append(request)
            for group in groups.values():
                self._run(backend, group)

    def _run(self, backend: SyncBackend, batch: list[_Request]) -> None:
        method = batch[0].method
        try:
            run = getattr(backend, method)
            parts = zip(*(r.arrays for r in batch), strict=True)
            inputs = [np.concatenate(arrays) for arrays in parts]
            limit = self._limit(method)
            chunks = []
            for lo in range(0, len(inputs[0]), limit):
                out = run(*(x[lo : lo + limit] for x in inputs))
                chunks.append(out if isinstance(out, tuple) else (out,))
            outputs = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
        except BaseException as exc:
            for request in batch:
                request.future.set_exception(exc)
            return
        self.batches_run += 1
        self.requests_run += len(batch)
        start = 0
        for request in batch:
            end = start + request.size
            sliced = tuple(output[start:end] for output in outputs)
            request.future.set_result(sliced)
            start = end


_shared: dict[str, BatchingRunner] = {}
_shared_lock = threading.Lock()


def shared_runner(backend_name: str = "auto") -> BatchingRunner:
    """The process-wide runner for a backend choice (one model copy for all sessions)."""
    with _shared_lock:
        runner = _shared.get(backend_name)
        if runner is None:
            runner = BatchingRunner(backend_name)
            log.info("lip-sync model: backend %s (requested %s)", runner.name, backend_name)
            _shared[backend_name] = runner
        return runner
