#!/usr/bin/env python3
"""How fast the monitor is: replay speed on one core, per-stage cost, live capacity,
end-to-end alert latency, memory per session, and SyncNet's cost for comparison.

    .venv/bin/python tools/bench.py [CLIP] [--runs 3] [--out /tmp/dfmon-bench]

- Replay speed: ``taskset -c 0`` on a subprocess that runs ``dfmon replay CLIP`` (the CLI
  entry point, in-process, with ``replay_file`` wrapped to keep its stats), once per
  lip-sync model and run. x real time = media seconds / replay wall seconds (interpreter
  start and imports excluded; the process wall time is reported too). Milliseconds per
  frame per stage come from the same run's stats; peak RSS from ``getrusage``.
- Live capacity: ``tools/bench_live.py capacity`` (real WHIP sessions on loopback, the
  server in one process, publishers in another); the largest count whose frame drops
  stay <= 1% and whose latency does not grow by more than 0.5 s.
- End-to-end latency: ``dfmon replay CLIP --realtime --serve-alerts`` in a subprocess and
  a websocket client here; latency of a window = arrival time - (replay start + t_end).
- SyncNet: ``tools/bench_sync.py`` on the same core, SyncNet's architecture (random
  weights) against the learned model, per 2 s analysis window.

Every figure is a median of ``--runs`` runs (capacity: one sweep), with the baseline
lip-sync detector measured in the same run as the reference for ratios. ``--ref COMMIT``
also replays with that commit's code (``git archive`` under /tmp, same interpreter and
packages), so a change is measured against its parent in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.evaluation.machine import describe_machine, machine_line
from monitor.evaluation.metrics import percentile

ROOT = Path(__file__).resolve().parents[1]

SHARED_CLIP = (
    ROOT.parent / "shared" / "data" / "dev" / "real" / "semchan_HyperLips__test_video1_video1.mp4"
)
RESULT_MARK = "BENCH-RESULT "
STAGES = ("decode", "landmarks", "audio_features", "detectors", "fusion")
# Capacity: a count is sustained when drops stay under this and latency does not grow.
MAX_DROP_FRACTION = 0.01
MAX_LAG_GROWTH_S = 0.5
ONE_CORE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOG_minloglevel": "2"}


# ----- workers (run as subprocesses of this script) --------------------------------------------


def _capture_replay(on_start: Any = None) -> list[Any]:
    """Wrap ``monitor.replay.replay_file`` (the CLI imports it at call time) to keep results."""
    import monitor.replay

    results: list[Any] = []
    original = monitor.replay.replay_file

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if on_start is not None:
            on_start()
        result = original(*args, **kwargs)
        results.append(result)
        return result

    monitor.replay.replay_file = wrapped
    return results


def _emit_result(data: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(data) + "\n")
    sys.stdout.flush()


def worker_replay(clip: str, model: str) -> int:
    """``dfmon replay CLIP`` as fast as possible; print its stats and this process's peak RSS."""
    from monitor.cli import main as dfmon

    results = _capture_replay()
    status = dfmon(["replay", clip, "--out", os.devnull, "--lip-sync", model])
    if status != 0 or not results:
        return status or 1
    result = results[0]
    stats = result.stats
    windows = stats.windows_scored + stats.windows_insufficient
    _emit_result(
        {
            "media_seconds": result.media_seconds,
            "wall_seconds": result.wall_seconds,
            "x_realtime": result.x_realtime,
            "video_frames": stats.video_frames,
            "windows": windows,
            "stage_seconds": {"decode": result.decode_seconds, **stats.stage_seconds},
            "detector_seconds": stats.detector_seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    return 0


def worker_latency(clip: str, model: str, port: int) -> int:
    """``dfmon replay --realtime --serve-alerts``; print the wall time its replay started."""
    from monitor.cli import main as dfmon

    origin: list[float] = []
    _capture_replay(on_start=lambda: origin.append(time.time()))
    status = dfmon(
        [
            "replay", clip, "--realtime", "--serve-alerts", f"127.0.0.1:{port}",
            "--out", os.devnull, "--lip-sync", model,
        ]
    )  # fmt: skip
    if origin:
        _emit_result({"origin": origin[0]})
    return status


# ----- measurements (this process) -------------------------------------------------------------


def _run_worker(
    args: list[str], *, one_core: bool, timeout: float, tree: Path = ROOT
) -> tuple[dict[str, Any], float]:
    """Run a worker subprocess (of the code in ``tree``); return its result line and the
    process's wall seconds."""
    command = [sys.executable, str(tree / "tools" / "bench.py"), "--worker", *args]
    if one_core:
        command = ["taskset", "-c", "0", *command]
    env = {**os.environ, **ONE_CORE_ENV} if one_core else dict(os.environ)
    if tree != ROOT:  # that commit's package, not the one installed from this checkout
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(":")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - started
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :]), wall
    raise RuntimeError(f"worker {args[0]} failed ({done.returncode}): {done.stderr[-800:]}")


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def ref_tree(ref: str) -> tuple[Path, str]:
    """The code of commit ``ref`` unpacked under /tmp (once per commit), and its short hash."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    tree = Path("/tmp") / f"dfmon-bench-ref-{sha}"
    if not (tree / "tools" / "bench.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, sha


def bench_replay(clip: Path, model: str, runs: int, tree: Path = ROOT) -> dict[str, Any]:
    """Replay speed and per-stage cost on core 0, median of ``runs`` runs."""
    samples = [
        _run_worker(["replay", str(clip), model], one_core=True, timeout=600, tree=tree)
        for _ in range(runs)
    ]
    results = [s for s, _ in samples]
    frames = results[0]["video_frames"]
    windows = max(1, results[0]["windows"])
    per_stage = {
        stage: round(
            _median([1000 * r["stage_seconds"].get(stage, 0.0) / frames for r in results]), 3
        )
        for stage in STAGES
    }
    return {
        "model": model,
        "runs": runs,
        "media_seconds": round(results[0]["media_seconds"], 2),
        "video_frames": frames,
        "windows": windows,
        "x_realtime": round(_median([r["x_realtime"] for r in results]), 2),
        "x_realtime_runs": [round(r["x_realtime"], 2) for r in results],
        "process_wall_seconds": round(_median([wall for _, wall in samples]), 2),
        "ms_per_frame": per_stage,
        "ms_per_frame_total": round(sum(per_stage.values()), 3),
        "detector_ms_per_window": {
            name: round(
                _median([1000 * r["detector_seconds"].get(name, 0.0) / windows for r in results]), 2
            )
            for name in results[0]["detector_seconds"]
        },
        "peak_rss_mib": round(_median([r["peak_rss_mib"] for r in results]), 1),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _latency_once(clip: Path, model: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    port = _free_port()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "latency",
        str(clip),
        model,
        str(port),
    ]
    env = {**os.environ, "GLOG_minloglevel": "2"}
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    received: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + 60
    websocket = None
    while websocket is None:
        try:
            websocket = await connect(f"ws://127.0.0.1:{port}/alerts", open_timeout=2)
        except OSError:
            if time.monotonic() > deadline or process.returncode is not None:
                process.kill()
                raise RuntimeError("the replay's alert channel never came up") from None
            await asyncio.sleep(0.05)
    connected_at = time.time()
    try:
        async for message in websocket:
            received.append((time.time(), json.loads(message)))
    except Exception:  # the server closing at the end of the replay ends the stream
        pass
    stdout, _ = await process.communicate()
    origin = None
    for line in stdout.decode().splitlines():
        if line.startswith(RESULT_MARK):
            origin = json.loads(line[len(RESULT_MARK) :])["origin"]
    if origin is None:
        raise RuntimeError(f"latency worker exited {process.returncode} without a result")
    total, pipeline = [], []
    for arrival, event in received:
        # Events from before the connection came as history, not live: not timed.
        if event.get("type") != "score" or _epoch(event["ts"]) < connected_at:
            continue
        window_end = origin + float(event["t_end"])
        total.append(arrival - window_end)
        pipeline.append(_epoch(event["ts"]) - window_end)
    if not total:
        raise RuntimeError("no score event arrived on the websocket")
    return {
        "windows": len(total),
        "median_s": _median(total),
        "p95_s": percentile(total, 95.0),
        "emitted_median_s": _median(pipeline),
    }


def bench_latency(clip: Path, model: str, runs: int) -> dict[str, Any]:
    results = [asyncio.run(_latency_once(clip, model)) for _ in range(runs)]
    return {
        "model": model,
        "runs": runs,
        "windows_per_run": results[0]["windows"],
        "median_s": round(_median([r["median_s"] for r in results]), 3),
        "p95_s": round(_median([r["p95_s"] for r in results]), 3),
        "emitted_median_s": round(_median([r["emitted_median_s"] for r in results]), 3),
        "run_medians_s": [round(r["median_s"], 3) for r in results],
    }


def bench_capacity(counts: str, seconds: float) -> dict[str, Any]:
    """One sweep of ``tools/bench_live.py capacity``; the last count that held up."""
    script = ROOT / "tools" / "bench_live.py"
    if not script.exists():
        return {"error": "tools/bench_live.py is missing"}
    command = [
        sys.executable,
        str(script),
        "capacity",
        "--counts",
        counts,
        "--seconds",
        str(seconds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 and not rows:
        return {"error": f"bench_live.py exited {done.returncode}: {done.stderr[-500:]}"}
    sustained = [
        r["participants"]
        for r in rows
        if r["drop_fraction"] <= MAX_DROP_FRACTION
        and (r.get("lag_growth_s") is None or r["lag_growth_s"] <= MAX_LAG_GROWTH_S)
    ]
    # The largest count such that it and every smaller count held up.
    best = 0
    for r in sorted(rows, key=lambda r: r["participants"]):
        if r["participants"] not in sustained:
            break
        best = r["participants"]
    return {"seconds": seconds, "sweep": rows, "max_sessions": best}


def worker_syncnet() -> int:
    """SyncNet's architecture against the learned model (:mod:`monitor.evaluation.sync_speed`).

    Its full benchmark also times the trained model's ONNX export; where that fails (the
    weights are missing), both architectures are timed in torch alone with random weights
    (the cost does not depend on them).
    """
    import torch

    from monitor.evaluation import sync_speed

    torch.set_num_threads(1)
    try:
        data = sync_speed.benchmark(1, 5, 3, False)
        data["mode"] = "monitor.evaluation.sync_speed.benchmark()"
    except Exception as exc:  # the trained model's files are missing
        data = _syncnet_torch_only()
        data["mode"] = f"torch only, random weights (benchmark failed: {exc})"
    _emit_result(data)
    return 0


def _syncnet_torch_only() -> dict[str, Any]:
    import torch

    from monitor.evaluation import sync_speed
    from monitor.sync.model import SyncNetLite, macs_per_video_frame, parameter_count
    from monitor.sync.reference import SyncNetReference, syncnet_inputs, syncnet_macs_per_frame

    torch.manual_seed(0)
    ours, reference = SyncNetLite().eval(), SyncNetReference().eval()
    cases = {
        "ours": (ours, sync_speed.ours_inputs(1), macs_per_video_frame(ours), 5),
        "syncnet": (
            reference,
            syncnet_inputs(sync_speed.VIDEO_STACKS, sync_speed.AUDIO_WINDOWS),
            syncnet_macs_per_frame(reference),
            3,
        ),
    }
    data: dict[str, Any] = {"threads": 1}
    for name, (model, window, macs, repeats) in cases.items():
        with torch.inference_mode():
            times = sync_speed.time_calls(lambda m=model, w=window: m(*w), repeats)
        data[name] = {
            "parameters": parameter_count(model),
            "macs_per_video_frame": macs,
            "gmacs_per_second_of_video": round(macs * sync_speed.FPS / 1e9, 3),
            "torch_cpu": sync_speed.summarize_times(times),
        }
    return data


def bench_syncnet() -> dict[str, Any]:
    """SyncNet's architecture vs the learned model on core 0, one thread."""
    try:
        data, _ = _run_worker(["syncnet"], one_core=True, timeout=900)
    except RuntimeError as exc:
        return {"error": str(exc)}
    return data


# ----- report ----------------------------------------------------------------------------------


def learned_model_available() -> bool:
    """Whether ``--lip-sync learned`` really gets the learned model (not the fallback)."""
    from monitor.config import load_config
    from monitor.detectors.registry import create_lip_sync_detector

    detector = create_lip_sync_detector(load_config(lip_sync={"model": "learned"}))
    return not detector.version.startswith("baseline")


def _replay_section(replay: dict[str, Any]) -> list[str]:
    base = replay.get("baseline")
    runs = next(iter(replay.values()))["runs"]
    lines = [
        f"### Replay on one core (`taskset -c 0`), median of {runs} runs",
        "",
        "| lip-sync | x real time | vs baseline | decode | landmarks | audio features "
        "| detectors | fusion | total ms/frame | detector ms/window | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, r in replay.items():
        ratio = r["x_realtime"] / base["x_realtime"] if base else 1.0
        stages = " | ".join(f"{r['ms_per_frame'][s]:.2f}" for s in STAGES)
        per_window = ", ".join(f"{k} {v:.1f}" for k, v in r["detector_ms_per_window"].items())
        lines.append(
            f"| {model} | {r['x_realtime']:.2f} | {ratio:.2f}x | {stages} | "
            f"{r['ms_per_frame_total']:.2f} | {per_window} | {r['peak_rss_mib']:.0f} |"
        )
    return lines


def _latency_section(latency: dict[str, Any]) -> list[str]:
    lines = [
        "### End-to-end latency: window end to websocket (`--realtime --serve-alerts`)",
        "",
        "| lip-sync | windows/run | median s | p95 s | until emitted (median) | run medians |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for model, r in latency.items():
        medians = ", ".join(f"{x:.3f}" for x in r["run_medians_s"])
        lines.append(
            f"| {model} | {r['windows_per_run']} | {r['median_s']:.3f} | {r['p95_s']:.3f} | "
            f"{r['emitted_median_s']:.3f} | {medians} |"
        )
    return lines


def _capacity_section(capacity: dict[str, Any]) -> list[str]:
    lines = ["### Concurrent live sessions (tools/bench_live.py capacity, one sweep)", ""]
    if "error" in capacity:
        return [*lines, f"Not measured: {capacity['error']}"]
    lines += [
        f"Largest count with drops <= {MAX_DROP_FRACTION:.0%} and latency growth <= "
        f"{MAX_LAG_GROWTH_S} s: **{capacity['max_sessions']}** "
        f"({capacity['seconds']:.0f} s of media each).",
        "",
        "| sessions | server CPU cores | drop fraction | latency median s | p95 s | growth s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in capacity["sweep"]:
        lines.append(
            f"| {r['participants']} | {r['server_cpu_cores']} | {r['drop_fraction']:.4f} | "
            f"{r['latency_median_s']} | {r['latency_p95_s']} | {r['lag_growth_s']} |"
        )
    return lines


def _syncnet_section(sync: dict[str, Any], replay: dict[str, Any]) -> list[str]:
    lines = ["### SyncNet's architecture vs the learned model and the baseline (one core)", ""]
    if "error" in sync:
        return [*lines, f"Not measured: {sync['error']}"]
    lines += [f"Measured by: {sync['mode']}.", ""]
    syncnet_ms = sync["syncnet"]["torch_cpu"]["ms_per_window"]
    ours_ms = sync["ours"]["torch_cpu"]["ms_per_window"]
    base_ms = replay.get("baseline", {}).get("detector_ms_per_window", {}).get("lip_sync")
    window = sync.get("window")
    if isinstance(window, dict):
        lines += [f"One window: ours {window.get('ours')}; SyncNet {window.get('syncnet')}.", ""]
    lines += [
        "| per 2 s window | ms | GMACs per s of video | parameters | vs baseline detector |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = [("SyncNet architecture (random weights, torch)", "syncnet", syncnet_ms)]
    rows.append(("learned model (torch)", "ours", ours_ms))
    if "onnx_cpu" in sync["ours"]:
        rows.append(
            ("learned model (onnxruntime)", "ours", sync["ours"]["onnx_cpu"]["ms_per_window"])
        )
    for label, key, ms in rows:
        ratio = f"{ms / base_ms:.0f}x" if base_ms else "-"
        lines.append(
            f"| {label} | {ms:.1f} | {sync[key]['gmacs_per_second_of_video']} | "
            f"{sync[key]['parameters']:,} | {ratio} |"
        )
    if base_ms:
        lines.append(
            f"| baseline detector (measured in the replay runs) | {base_ms:.1f} | - | 0 | 1x |"
        )
    lines += [
        "",
        f"A window comes every 0.5 s (the hop): SyncNet's architecture needs "
        f"{syncnet_ms / 500:.2f} cores per live session for the sync model alone, the learned "
        f"model {ours_ms / 500:.3f}; SyncNet / learned = {syncnet_ms / ours_ms:.0f}x.",
    ]
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {machine_line(result['machine'])}.", f"Clip: {result['clip']}.", ""]
    replay = result.get("replay", {})
    sections = [
        _replay_section(replay) if replay else [],
        _latency_section(result["latency"]) if result.get("latency") else [],
        _syncnet_section(result["syncnet"], replay) if result.get("syncnet") else [],
        _capacity_section(result["capacity"]) if result.get("capacity") else [],
    ]
    for section in sections:
        if section:
            lines += [*section, ""]
    return "\n".join(lines)


def default_clip() -> Path:
    if SHARED_CLIP.exists():
        return SHARED_CLIP
    from monitor.synth.call import make_call

    path = Path("/tmp/dfmon-bench-call.mp4")
    if not path.exists():
        make_call(path, seed=3)
    return path


def run(args: argparse.Namespace) -> int:
    clip = Path(args.clip) if args.clip else default_clip()
    if not clip.exists():
        sys.stderr.write(f"bench: error: clip not found: {clip}\n")
        return 2
    if shutil.which("taskset") is None:
        sys.stderr.write("bench: error: taskset (util-linux) is needed for one-core figures\n")
        return 2
    started = time.monotonic()
    models = ["baseline"] + (["learned"] if learned_model_available() else [])
    skip = set(args.skip.split(",")) if args.skip else set()
    result: dict[str, Any] = {
        "clip": str(clip),
        "machine": describe_machine(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "learned_model_available": "learned" in models,
    }

    def step(name: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - started:5.0f} s] {name}\n")

    if "replay" not in skip:
        result["replay"] = {}
        reference = ref_tree(args.ref) if args.ref else None
        for model in models:
            step(f"replay on one core, {model}")
            result["replay"][model] = bench_replay(clip, model, args.runs)
            if reference is not None:  # the same model with the reference commit's code
                step(f"replay on one core, {model} at {reference[1]}")
                result["replay"][f"{model} at {reference[1]}"] = bench_replay(
                    clip, model, args.runs, tree=reference[0]
                )
    if "latency" not in skip:
        result["latency"] = {}
        for model in models:
            step(f"end-to-end latency, {model}")
            result["latency"][model] = bench_latency(clip, model, args.runs)
    if "syncnet" not in skip:
        step("SyncNet architecture")
        result["syncnet"] = bench_syncnet()
    if "capacity" not in skip:
        step("live capacity")
        result["capacity"] = bench_capacity(args.live_counts, args.live_seconds)
    result["runtime_seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    text = markdown(result) + f"\nBench runtime {result['runtime_seconds']:.0f} s.\n"
    (out / "bench.md").write_text(text)
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        kind, *rest = argv[1:]
        if kind == "replay":
            return worker_replay(rest[0], rest[1])
        if kind == "latency":
            return worker_latency(rest[0], rest[1], int(rest[2]))
        if kind == "syncnet":
            return worker_syncnet()
        raise SystemExit(f"unknown worker {kind}")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "clip", nargs="?", help="a call recording (default: a dev clip, or a synthetic call)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per measurement (median reported)"
    )
    parser.add_argument(
        "--out", default="/tmp/dfmon-bench", help="where bench.json and bench.md go"
    )
    parser.add_argument("--skip", help="comma-separated: replay,latency,syncnet,capacity")
    parser.add_argument("--ref", help="also replay with this commit's code (e.g. HEAD~1)")
    parser.add_argument("--live-counts", default="1,2,3,4,6,8", help="concurrent sessions to try")
    parser.add_argument("--live-seconds", type=float, default=15.0, help="seconds per count")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
