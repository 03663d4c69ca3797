"""Size, compute and speed of the learned sync model against SyncNet's architecture.

SyncNet's architecture (:mod:`monitor.sync.reference`, random weights: compute and speed
do not depend on them) and ours are timed on the same machine, in the same run, on one
analysis window's worth of work. A 2 s window at 25 fps is, for our model, 50 frames and
320 log-mel rows (the window plus 0.6 s of audio each side) in one pass; for SyncNet, 46
five-frame stacks of 224x224 faces and 76 MFCC windows of 0.2 s (46 + 2*15 lags), its own
way of scoring a window.

The command line is ``tools/bench_sync.py``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monitor.sync.model import macs_per_video_frame, parameter_count
from monitor.sync.reference import SyncNetReference, syncnet_inputs, syncnet_macs_per_frame

VIDEO_STACKS = 46
AUDIO_WINDOWS = 76
WINDOW_STEPS = 50
FPS = 25


def ours_inputs(windows: int, steps: int = WINDOW_STEPS) -> tuple[torch.Tensor, ...]:
    from monitor.sync.model import example_inputs

    return tuple(torch.randn_like(t) for t in example_inputs(windows, steps))


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls after one warm-up call."""
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def summarize_times(times: list[float]) -> dict[str, float]:
    """Median milliseconds and windows per second of per-window times."""
    ms = float(np.median(times) * 1000.0)
    return {
        "ms_per_window": round(ms, 2),
        "windows_per_s": round(1000.0 / ms, 2),
        "runs": len(times),
    }


def per_window(times: list[float], windows: int) -> dict[str, float]:
    return summarize_times([t / windows for t in times]) | {"windows_per_call": windows}


def benchmark(
    threads: int, repeats: int, syncnet_repeats: int, include_onnx_syncnet: bool
) -> dict[str, Any]:
    """Size, compute and CPU (and GPU, when there is one) speed of both models."""
    import onnxruntime

    from monitor.sync.backends import OnnxBackend, TorchBackend
    from monitor.sync.checkpoint import WEIGHTS_PATH
    from monitor.sync.model import SyncNetLite

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours = SyncNetLite().eval() if not WEIGHTS_PATH.exists() else TorchBackend("cpu").model
    reference = SyncNetReference().eval()

    our_macs = macs_per_video_frame(ours, WINDOW_STEPS)
    ref_macs = syncnet_macs_per_frame(reference)
    result: dict = {
        "threads": threads,
        "window": {
            "seconds": WINDOW_STEPS / FPS,
            "ours": f"{WINDOW_STEPS} frames + {4 * (WINDOW_STEPS + 30)} mel rows",
            "syncnet": f"{VIDEO_STACKS} stacks + {AUDIO_WINDOWS} MFCC windows",
        },
        "ours": {"parameters": parameter_count(ours), "macs_per_video_frame": our_macs},
        "syncnet": {"parameters": parameter_count(reference), "macs_per_video_frame": ref_macs},
    }
    result["ours"]["gmacs_per_second_of_video"] = round(our_macs * FPS / 1e9, 3)
    result["syncnet"]["gmacs_per_second_of_video"] = round(ref_macs * FPS / 1e9, 3)
    result["macs_ratio"] = round(ref_macs / our_macs, 1)
    result["parameter_ratio"] = round(parameter_count(reference) / parameter_count(ours), 1)

    window = ours_inputs(1)
    with torch.inference_mode():
        result["ours"]["torch_cpu"] = summarize_times(time_calls(lambda: ours(*window), repeats))
    onnx_backend = OnnxBackend()
    arrays = [t.numpy() for t in window]
    result["ours"]["onnx_cpu"] = summarize_times(
        time_calls(lambda: onnx_backend.embed(*arrays), repeats)
    )

    # Eight windows in one call: what the shared runner does for concurrent sessions.
    batch = ours_inputs(8)
    with torch.inference_mode():
        result["ours"]["torch_cpu_batch8"] = per_window(
            time_calls(lambda: ours(*batch), repeats), 8
        )
    batch_arrays = [t.numpy() for t in batch]
    result["ours"]["onnx_cpu_batch8"] = per_window(
        time_calls(lambda: onnx_backend.embed(*batch_arrays), repeats), 8
    )

    ref_window = syncnet_inputs(VIDEO_STACKS, AUDIO_WINDOWS)
    with torch.inference_mode():
        result["syncnet"]["torch_cpu"] = summarize_times(
            time_calls(lambda: reference(*ref_window), syncnet_repeats)
        )
    if include_onnx_syncnet:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "syncnet.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    reference,
                    syncnet_inputs(2, 2),
                    str(path),
                    dynamo=False,
                    input_names=["frames", "mfcc"],
                    dynamic_axes={"frames": {0: "v"}, "mfcc": {0: "a"}},
                    opset_version=17,
                )
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            feeds = {"frames": ref_window[0].numpy(), "mfcc": ref_window[1].numpy()}
            result["syncnet"]["onnx_cpu"] = summarize_times(
                time_calls(lambda: session.run(None, feeds), syncnet_repeats)
            )

    if torch.cuda.is_available():
        result["gpu"] = _gpu_benchmark(ours, reference, repeats)
    ours_ms = result["ours"]["torch_cpu"]["ms_per_window"]
    result["speedup_torch_cpu"] = round(
        result["syncnet"]["torch_cpu"]["ms_per_window"] / ours_ms, 1
    )
    return result


def _gpu_benchmark(ours: nn.Module, reference: nn.Module, repeats: int) -> dict:
    device = torch.device("cuda")
    out: dict = {"device": torch.cuda.get_device_name(0)}
    for name, model, inputs in (
        ("ours", ours, ours_inputs(1)),
        ("syncnet", reference, syncnet_inputs(VIDEO_STACKS, AUDIO_WINDOWS)),
    ):
        model = model.to(device)
        gpu_inputs = [t.to(device) for t in inputs]

        def run(model: nn.Module = model, gpu_inputs: list = gpu_inputs) -> None:
            with torch.inference_mode():
                model(*gpu_inputs)
            torch.cuda.synchronize()

        out[name] = summarize_times(time_calls(run, repeats * 4))
        model.cpu()
    return out
