"""Inference backends for the sync model, chosen automatically, shared across sessions.

Every backend answers one call, ``embed(crops, lips, mel) -> (video_emb, audio_emb)``,
on numpy arrays with a leading batch of windows: crops (B, T, 48, 96), lips (B, T, 83),
mel (B, 4 * (T + 30), 80) -> (B, T, D) and (B, T + 30, D).

* ``torch``: the PyTorch module from ``sync_v1.pt`` on CPU; ``torch-cuda`` on a GPU.
* ``onnx``: onnxruntime on ``sync_v1.onnx`` (CPU provider); faster than torch on CPU
  for this small net (see tools/bench_sync.py), so it is the CPU default.
* ``tensorrt``: an engine built from the ONNX (monitor/sync/engine.py), run with
  ``execute_async_v3`` on torch CUDA buffers or, without torch CUDA, pycuda buffers.

``auto`` tries tensorrt, then torch-cuda, then onnx, then torch. All inference runs on
one thread per process (:class:`BatchingRunner`): pycuda contexts belong to the thread
that made them, and windows that several sessions submit at the same moment are run as
one batch.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from monitor.config import BACKEND_NAMES
from monitor.errors import BackendUnavailableError, ConfigError
from monitor.sync.checkpoint import (
    INPUT_NAMES,
    ONNX_PATH,
    OUTPUT_NAMES,
    WEIGHTS_PATH,
    load_checkpoint,
)

log = logging.getLogger(__name__)

AUTO_ORDER = ("tensorrt", "torch-cuda", "onnx", "torch")
CPU_THREADS = int(os.environ.get("DFMON_SYNC_THREADS", "2"))


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

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            inputs = [
                torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
                for x in (crops, lips, mel)
            ]
            video, audio = self.model(*inputs)
            return video.float().cpu().numpy(), audio.float().cpu().numpy()


class OnnxBackend:
    """onnxruntime on the exported graph (dynamic windows and steps)."""

    name = "onnx"

    def __init__(self, path: Path = ONNX_PATH, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise BackendUnavailableError(f"onnxruntime cannot be imported: {exc}") from exc
        if not path.exists():
            raise BackendUnavailableError(f"sync model ONNX not found: {path}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = CPU_THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailableError(f"onnxruntime cannot load {path}: {exc}") from exc

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        feeds = {
            name: np.ascontiguousarray(x, dtype=np.float32)
            for name, x in zip(INPUT_NAMES, (crops, lips, mel), strict=True)
        }
        video, audio = self.session.run(list(OUTPUT_NAMES), feeds)
        return video, audio


def create_backend(name: str = "auto") -> SyncBackend:
    """The named backend, or for ``auto`` the first that works in :data:`AUTO_ORDER`."""
    if name not in BACKEND_NAMES:
        raise ConfigError(
            f"unknown lip_sync backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if name != "auto":
        return _create_one(name)
    reasons = []
    for candidate in AUTO_ORDER:
        try:
            return _create_one(candidate)
        except BackendUnavailableError as exc:
            reasons.append(f"{candidate}: {exc}")
            log.debug("sync backend %s unavailable: %s", candidate, exc)
        except Exception as exc:  # a backend that breaks oddly (driver, runtime) is skipped too
            reasons.append(f"{candidate}: {type(exc).__name__}: {exc}")
            log.warning("sync backend %s failed to start: %s", candidate, exc)
    raise BackendUnavailableError("no sync backend works here: " + "; ".join(reasons))


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
    crops: np.ndarray
    lips: np.ndarray
    mel: np.ndarray
    future: Future


class BatchingRunner:
    """One inference thread for a backend; concurrent callers' windows run as one batch.

    The backend is created on the worker thread (TensorRT/pycuda contexts must stay on
    the thread that made them). ``embed`` blocks until its own slice of the batch is back.
    Windows of different lengths cannot share a batch; they run one after the other.
    """

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

    def embed(
        self, crops: np.ndarray, lips: np.ndarray, mel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        future: Future = Future()
        self._queue.put(_Request(crops, lips, mel, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

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
            windows = len(first.crops)
            deadline = time.monotonic() + self.gather_s
            while windows < self.max_windows:
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
                windows += len(item.crops)
            groups: dict[tuple, list[_Request]] = {}
            for request in batch:
                groups.setdefault((request.crops.shape[1:], request.mel.shape[1:]), []).append(
                    request
                )
            for group in groups.values():
                self._run(backend, group)

    def _run(self, backend: SyncBackend, batch: list[_Request]) -> None:
        try:
            crops = np.concatenate([r.crops for r in batch])
            lips = np.concatenate([r.lips for r in batch])
            mel = np.concatenate([r.mel for r in batch])
            video_parts, audio_parts = [], []
            for lo in range(0, len(crops), self.max_windows):
                hi = lo + self.max_windows
                video, audio = backend.embed(crops[lo:hi], lips[lo:hi], mel[lo:hi])
                video_parts.append(video)
                audio_parts.append(audio)
            video_all = np.concatenate(video_parts)
            audio_all = np.concatenate(audio_parts)
        except BaseException as exc:
            for request in batch:
                request.future.set_exception(exc)
            return
        self.batches_run += 1
        self.requests_run += len(batch)
        start = 0
        for request in batch:
            end = start + len(request.crops)
            request.future.set_result((video_all[start:end], audio_all[start:end]))
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
