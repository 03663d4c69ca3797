"""Size, compute and speed of the learned sync model against SyncNet's architecture.

SyncNet (joonson/syncnet_python, "S") is rebuilt here from its published layer list with
random weights: compute and speed do not depend on the weights. Both models are timed
on the same machine, in the same run, on one analysis window's worth of work. A 2 s
window at 25 fps is, for our model, 50 frames and 320 log-mel rows (the window plus
0.6 s of audio each side) in one pass; for SyncNet, 46 five-frame stacks of 224x224
faces and 76 MFCC windows of 0.2 s (46 + 2*15 lags), its own way of scoring a window.

    .venv/bin/python tools/bench_sync.py [--threads 2] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from monitor.sync.model import count_macs, macs_per_video_frame, parameter_count  # noqa: E402

VIDEO_STACKS = 46
AUDIO_WINDOWS = 76
WINDOW_STEPS = 50
FPS = 25

# SyncNet "S": (kind, out_channels, kernel, stride, padding) then pooling, per tower.
SYNCNET_AUDIO = [
    ("conv", 64, (3, 3), (1, 1), (1, 1)),
    ("pool", None, (1, 1), (1, 1), (0, 0)),
    ("conv", 192, (3, 3), (1, 1), (1, 1)),
    ("pool", None, (3, 3), (1, 2), (0, 0)),
    ("conv", 384, (3, 3), (1, 1), (1, 1)),
    ("conv", 256, (3, 3), (1, 1), (1, 1)),
    ("conv", 256, (3, 3), (1, 1), (1, 1)),
    ("pool", None, (3, 3), (2, 2), (0, 0)),
    ("conv", 512, (5, 4), (1, 1), (0, 0)),
]
SYNCNET_LIP = [
    ("conv", 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),
    ("pool", None, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ("pool", None, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("pool", None, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
]


def _tower(spec: list, in_channels: int, dims: int) -> nn.Sequential:
    conv, norm, pool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        if dims == 2
        else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )
    layers: list[nn.Module] = []
    channels = in_channels
    for kind, out, kernel, stride, padding in spec:
        if kind == "conv":
            layers += [
                conv(channels, out, kernel, stride, padding),
                norm(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        else:
            layers.append(pool(kernel, stride, padding))
    return nn.Sequential(*layers)


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))


class SyncNetReference(nn.Module):
    """SyncNet's two towers: 5 RGB 224x224 face frames, and 13 MFCCs x 20 frames (0.2 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_cnn = _tower(SYNCNET_AUDIO, 1, 2)
        self.audio_fc = _head()
        self.lip_cnn = _tower(SYNCNET_LIP, 3, 3)
        self.lip_fc = _head()

    def forward(
        self, frames: torch.Tensor, mfcc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        video = self.lip_fc(self.lip_cnn(frames).flatten(1))
        audio = self.audio_fc(self.audio_cnn(mfcc).flatten(1))
        return video, audio


def syncnet_inputs(n_video: int, n_audio: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n_video, 3, 5, 224, 224), torch.randn(n_audio, 1, 13, 20)


def ours_inputs(windows: int, steps: int = WINDOW_STEPS) -> tuple[torch.Tensor, ...]:
    from monitor.sync.model import example_inputs

    return tuple(torch.randn_like(t) for t in example_inputs(windows, steps))


def syncnet_macs_per_frame(model: nn.Module) -> int:
    """One video stack plus one audio slice: SyncNet's work per video frame when sliding."""
    return count_macs(model, syncnet_inputs(1, 1))


def _time(fn, repeats: int) -> list[float]:  # noqa: ANN001
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    ms = float(np.median(times) * 1000.0)
    return {
        "ms_per_window": round(ms, 2),
        "windows_per_s": round(1000.0 / ms, 2),
        "runs": len(times),
    }


def _per_window(times: list[float], windows: int) -> dict[str, float]:
    return _summary([t / windows for t in times]) | {"windows_per_call": windows}


def benchmark(threads: int, repeats: int, syncnet_repeats: int, include_onnx_syncnet: bool) -> dict:
    import onnxruntime

    from monitor.sync.backends import WEIGHTS_PATH, OnnxBackend, TorchBackend
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
        result["ours"]["torch_cpu"] = _summary(_time(lambda: ours(*window), repeats))
    onnx_backend = OnnxBackend()
    arrays = [t.numpy() for t in window]
    result["ours"]["onnx_cpu"] = _summary(_time(lambda: onnx_backend.embed(*arrays), repeats))

    # Eight windows in one call: what the shared runner does for concurrent sessions.
    batch = ours_inputs(8)
    with torch.inference_mode():
        result["ours"]["torch_cpu_batch8"] = _per_window(_time(lambda: ours(*batch), repeats), 8)
    batch_arrays = [t.numpy() for t in batch]
    result["ours"]["onnx_cpu_batch8"] = _per_window(
        _time(lambda: onnx_backend.embed(*batch_arrays), repeats), 8
    )

    ref_window = syncnet_inputs(VIDEO_STACKS, AUDIO_WINDOWS)
    with torch.inference_mode():
        result["syncnet"]["torch_cpu"] = _summary(
            _time(lambda: reference(*ref_window), syncnet_repeats)
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
            result["syncnet"]["onnx_cpu"] = _summary(
                _time(lambda: session.run(None, feeds), syncnet_repeats)
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

        out[name] = _summary(_time(run, repeats * 4))
        model.cpu()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--syncnet-repeats", type=int, default=3)
    parser.add_argument("--no-onnx-syncnet", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    result = benchmark(args.threads, args.repeats, args.syncnet_repeats, not args.no_onnx_syncnet)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
