"""How fast the monitor is, against a baseline commit measured in the same run.

The measurements behind ``tools/bench.py`` (whose docstring says what each figure is).
Two source trees are measured side by side with the same interpreter and packages: the
current checkout and a baseline commit (a detached git worktree under /tmp). A tree is
chosen for a subprocess by ``PYTHONPATH``; the subprocesses are the tree's own
``python -m monitor`` and ``tools/bench_live.py``, and ``tools/bench.py --worker``, whose
worker imports only what every tree has (``monitor.cli``, ``monitor.replay``,
``monitor.pipeline``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.evaluation.metrics import percentile

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tools" / "bench.py"


def _shared_dev() -> Path:
    """../shared/data/dev beside the checkout (or beside the worktrees' directory)."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "data" / "dev").is_dir():
            return base / "shared" / "data" / "dev"
    return ROOT.parent / "shared" / "data" / "dev"


SHARED_DEV = _shared_dev()
CACHE = Path("/tmp/dfmon-bench")
STAGES = ("decode", "landmarks", "audio_features", "detectors", "fusion")
ONE_CORE_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DFMON_SYNC_THREADS": "1",
    "GLOG_minloglevel": "2",
}
HDTF_CLIPS = (
    "OpenTalker_SadTalker__examples_ref_video_WDA_AlexandriaOcasioCortez_000.mp4",
    "OpenTalker_SadTalker__examples_ref_video_WDA_KatieHill_000.mp4",
    "OpenTalker_SadTalker__test_examples_source_image_RD_Radio2_000.mp4",
)
REAL_720P = "semchan_HyperLips__test_video1_video1.mp4"
LONG_TEXT = (
    "Hello, can you hear me? I am calling about the budget for next year. Please send the "
    "figures before our meeting. We need the numbers for every department, and the plan "
    "for the new office. Call me back when you have them, or write to me this afternoon."
)
# The live sweep: a count holds up when drops stay under this fraction.
MAX_DROP_FRACTION = 0.0


# ----- clips -----------------------------------------------------------------------------------


def _talking_head_512(path: Path) -> Path | None:
    """The three 8 s HDTF dev clips back to back: 24 s of 512x512 25 fps talking head."""
    sources = [SHARED_DEV / "real" / name for name in HDTF_CLIPS]
    if not all(p.exists() for p in sources):
        return None
    import av
    import numpy as np

    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width = video.height = 512
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast"}
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        frames = samples = 0
        for source in sources:
            with av.open(str(source)) as clip:
                for frame in clip.decode(clip.streams.video[0]):
                    image = frame.to_ndarray(format="yuv420p")
                    picture = av.VideoFrame.from_ndarray(image, format="yuv420p")
                    picture.pts = frames
                    frames += 1
                    out.mux(video.encode(picture))
            with av.open(str(source)) as clip:
                resampler = av.AudioResampler(format="fltp", layout="mono", rate=16000)
                for frame in clip.decode(clip.streams.audio[0]):
                    for chunk in resampler.resample(frame):
                        chunk.pts = samples
                        samples += chunk.samples
                        out.mux(audio.encode(chunk))
            gap = round(frames / 25 * 16000) - samples  # keep the audio level with the video
            if gap > 0:
                silence = av.AudioFrame.from_ndarray(
                    np.zeros((1, gap), np.float32), format="fltp", layout="mono"
                )
                silence.sample_rate, silence.pts = 16000, samples
                samples += gap
                out.mux(audio.encode(silence))
        out.mux(video.encode())
        out.mux(audio.encode())
    tmp.rename(path)
    return path


def _synthetic(path: Path, size: tuple[int, int]) -> Path:
    from monitor.synth.call import make_call

    make_call(path, seed=3, size=size, text=LONG_TEXT)
    return path


def bench_clips() -> dict[str, Path]:
    """name -> clip, made once into the cache (the dev clips only where they exist)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    clips: dict[str, Path] = {}
    head = CACHE / "talking-head-512.mp4"
    if head.exists() or _talking_head_512(head) is not None:
        clips["talking-head-512"] = head
    real = SHARED_DEV / "real" / REAL_720P
    if real.exists():
        clips["real-720p"] = real
    for name, size in (("synthetic-720p", (720, 1280)), ("synthetic-480p", (480, 640))):
        path = CACHE / f"{name}.mp4"
        clips[name] = path if path.exists() else _synthetic(path, size)
    return clips


# ----- trees -----------------------------------------------------------------------------------


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def baseline_tree(commit: str) -> tuple[Path, str]:
    """A detached worktree of ``commit`` under /tmp (made once), and its short hash."""
    full = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    short = full[:7]
    tree = Path("/tmp") / f"dfmon-bench-baseline-{short}"
    if not (tree / "monitor").is_dir():
        if tree.exists():
            shutil.rmtree(tree)
        _git("worktree", "prune")
        _git("worktree", "add", "--detach", str(tree), full)
    return tree, short


def _tree_env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes ``import monitor`` load ``tree``'s code."""
    return {**os.environ, "PYTHONPATH": str(tree), "DFMON_BENCH_TREE": str(tree), **(extra or {})}


# ----- replay on one core ---------------------------------------------------------------------


def replay_once(tree: Path, clip: Path) -> dict[str, Any]:
    """One process: spawn to exit on core 0, the worker's figures (a JSON file) inside it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        spawned = time.time()
        command = [
            "taskset", "-c", "0", sys.executable, str(WORKER),
            "--worker", "replay", str(clip), repr(spawned), str(out),
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, env=_tree_env(tree, ONE_CORE_ENV)
        )
        process_s = time.time() - spawned
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"replay of {clip.name} in {tree} failed: {done.stderr[-800:]}")
        result = json.loads(out.read_text())
    result["process_seconds"] = process_s
    # CPU seconds of the process (and any it spawned), start-up included: on a shared
    # machine the wall time counts other jobs' turns on the core, this does not.
    result["cpu_seconds"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize_replay(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    frames = max(1, first["video_frames"])
    windows = max(1, first["windows"])
    media = first["media_seconds"]
    return {
        "runs": len(runs),
        "media_seconds": round(media, 2),
        "video_frames": first["video_frames"],
        "windows": first["windows"],
        "level": first["level"],
        "x_realtime": round(_median([media / r["process_seconds"] for r in runs]), 2),
        "x_realtime_runs": [round(media / r["process_seconds"], 2) for r in runs],
        "x_realtime_cpu": round(_median([media / r["cpu_seconds"] for r in runs]), 2),
        "x_realtime_replay_only": round(_median([media / r["replay_seconds"] for r in runs]), 2),
        "process_seconds": round(_median([r["process_seconds"] for r in runs]), 2),
        "first_frame_seconds": round(_median([r["marks"]["first_frame"] for r in runs]), 2),
        "import_seconds": round(_median([r["marks"]["imported"] for r in runs]), 2),
        "ms_per_frame": {
            stage: round(
                _median([1000 * r["stage_seconds"].get(stage, 0.0) / frames for r in runs]), 2
            )
            for stage in STAGES
        },
        "cpu_ms_per_frame": _cpu_ms_per_frame(runs, frames),
        "detector_ms_per_window": {
            name: round(
                _median([1000 * r["detector_seconds"].get(name, 0.0) / windows for r in runs]), 1
            )
            for name in first["detector_seconds"]
        },
        "peak_rss_mib": round(_median([r["peak_rss_mib"] for r in runs]), 1),
    }


def _cpu_ms_per_frame(runs: list[dict[str, Any]], frames: int) -> dict[str, float]:
    """Median CPU milliseconds per video frame of each kind of thread during the replay
    loop, largest first (runs of a worker that did not measure them give nothing)."""
    kinds = {kind for r in runs for kind in r.get("thread_cpu_seconds", {})}
    medians = {
        kind: round(
            _median([1000 * r.get("thread_cpu_seconds", {}).get(kind, 0.0) / frames for r in runs]),
            2,
        )
        for kind in kinds
    }
    return dict(sorted(medians.items(), key=lambda item: -item[1]))


def bench_replay(
    trees: dict[str, Path], clips: dict[str, Path], runs: int, step: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for name, clip in clips.items():
        samples: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
        for run in range(runs):
            for tree_name, tree in trees.items():  # alternate: load falls on both alike
                step(f"replay {name}, {tree_name}, run {run + 1}/{runs}")
                samples[tree_name].append(replay_once(tree, clip))
        out[name] = {tree: summarize_replay(s) for tree, s in samples.items()}
    return out


# ----- live sweep ------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples a process's resident set size (MiB) until stopped."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop_event.wait(self.period_s):
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append((time.monotonic(), int(line.split()[1]) / 1024))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


def bench_capacity(tree: Path, counts: str, seconds: float) -> dict[str, Any]:
    """One sweep of the tree's own tools/bench_live.py capacity, its server RSS sampled."""
    command = [
        sys.executable, str(tree / "tools" / "bench_live.py"), "capacity",
        "--counts", counts, "--seconds", str(seconds),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tree, env=_tree_env(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    sampler = RssSampler(process.pid)
    sampler.start()
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("{"):
            row = json.loads(line)
            ended = time.monotonic()
            peak = [mib for t, mib in sampler.samples if started <= t <= ended]
            row["server_peak_rss_mib"] = round(max(peak), 1) if peak else None
            rows.append(row)
            started = ended
    stderr = process.stderr.read() if process.stderr else ""
    process.wait()
    sampler.stop()
    if not rows:
        return {"error": f"bench_live.py exited {process.returncode}: {stderr[-500:]}"}
    held = 0
    for row in sorted(rows, key=lambda r: r["participants"]):
        if row["drop_fraction"] > MAX_DROP_FRACTION:
            break
        held = row["participants"]
    ended_early = (
        {"ended_early": f"bench_live.py exited {process.returncode} after {len(rows)} "
         f"counts: {stderr[-500:]}"}
        if process.returncode != 0
        else {}
    )  # fmt: skip
    measured = [(r["participants"], r["server_peak_rss_mib"], r["drop_fraction"]) for r in rows]
    measured = [m for m in measured if m[1]]
    return {
        **ended_early,
        "seconds": seconds,
        "sweep": rows,
        "max_sessions_without_drops": held,
        "mib_per_session": _slope([(n, mib) for n, mib, _ in measured]),
        # Sessions that fall behind also hold their backlog of frames (up to
        # live.max_frame_age_s of video): this slope is what a session costs when served.
        "mib_per_session_without_drops": _slope(
            [(n, mib) for n, mib, drops in measured if drops <= MAX_DROP_FRACTION]
        ),
    }


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return None
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / var, 1)


# ----- end-to-end latency of a replay (optional) -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _latency_once(tree: Path, clip: Path) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    port = _free_port()
    command = [
        sys.executable, "-m", "monitor", "replay", str(clip), "--realtime",
        "--serve-alerts", f"127.0.0.1:{port}", "--out", os.devnull,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, cwd=tree, env=_tree_env(tree, {"GLOG_minloglevel": "2"}),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    received: list[tuple[float, dict[str, Any]]] = []
    websocket = None
    deadline = time.monotonic() + 60
    while websocket is None:
        try:
            websocket = await connect(f"ws://127.0.0.1:{port}/alerts", open_timeout=2)
        except OSError:
            if time.monotonic() > deadline or process.returncode is not None:
                process.kill()
                raise RuntimeError("the replay's alert channel never came up") from None
            await asyncio.sleep(0.05)
    connected = time.time()
    try:
        async for message in websocket:
            received.append((time.time(), json.loads(message)))
    except Exception:  # the server closing at the end of the replay ends the stream
        pass
    await process.wait()
    started = next((_epoch(e["ts"]) for _, e in received if e["type"] == "session_started"), None)
    latencies = [
        arrival - (started + float(e["t_end"]))
        for arrival, e in received
        if e["type"] == "score" and started is not None and _epoch(e["ts"]) >= connected
    ]
    if not latencies:
        raise RuntimeError("no score event arrived on the websocket")
    return {"median_s": _median(latencies), "p95_s": percentile(latencies, 95.0)}


def bench_latency(tree: Path, clip: Path, runs: int) -> dict[str, Any]:
    results = [asyncio.run(_latency_once(tree, clip)) for _ in range(runs)]
    return {
        "runs": runs,
        "median_s": round(_median([r["median_s"] for r in results]), 3),
        "p95_s": round(_median([r["p95_s"] for r in results]), 3),
    }


# ----- report ------------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def _replay_section(replay: dict[str, Any], runs: int) -> list[str]:
    lines = [
        f"### Replay on one core (`taskset -c 0`, process start included), median of {runs} runs",
        "",
        "| clip | tree | x real time | vs baseline | x real time of CPU time | vs baseline "
        "| replay loop only | first analysed frame s "
        "| decode | landmarks | audio features | detectors | ms/frame total "
        "| detector ms/window | peak RSS MiB | level |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for clip, trees in replay.items():
        base = trees.get("baseline", {})
        for tree, r in trees.items():
            ms = r["ms_per_frame"]
            per_window = ", ".join(f"{k} {v:.1f}" for k, v in r["detector_ms_per_window"].items())
            lines.append(
                f"| {clip} ({r['media_seconds']:.1f} s) | {tree} | {r['x_realtime']:.2f} | "
                f"{_ratio(r['x_realtime'], base.get('x_realtime'))} | {r['x_realtime_cpu']:.2f} | "
                f"{_ratio(r['x_realtime_cpu'], base.get('x_realtime_cpu'))} | "
                f"{r['x_realtime_replay_only']:.2f} | {r['first_frame_seconds']:.2f} | "
                f"{ms['decode']:.2f} | {ms['landmarks']:.2f} | {ms['audio_features']:.2f} | "
                f"{ms['detectors']:.2f} | {sum(ms.values()):.2f} | {per_window} | "
                f"{r['peak_rss_mib']:.0f} | {r['level']} |"
            )
    lines += [
        "",
        "x real time = media seconds / process wall seconds (spawn to exit: interpreter start, "
        "imports and model loading included); 'x real time of CPU time' = media seconds / the "
        "process's CPU seconds (user + system, start-up included: what a core of its own would "
        "give where other jobs share it); 'replay loop only' leaves start-up out. Stages are "
        "the session's own timers (detectors: the wall time the session waited for them), "
        "wall time on one shared core: a stage's figure holds whatever other threads ran "
        "while it waited. The CPU table below does not.",
        *_thread_cpu_table(replay),
    ]
    return lines


def _thread_cpu_table(replay: dict[str, Any]) -> list[str]:
    rows = [(clip, tree, r["cpu_ms_per_frame"]) for clip, trees in replay.items()
            for tree, r in trees.items() if r.get("cpu_ms_per_frame")]  # fmt: skip
    if not rows:
        return []
    totals: dict[str, float] = {}
    for _, _, cpu in rows:
        for kind, ms in cpu.items():
            totals[kind] = totals.get(kind, 0.0) + ms
    kinds = sorted((k for k in totals if totals[k] >= 0.01), key=lambda kind: -totals[kind])
    lines = [
        "",
        "CPU milliseconds per video frame during the replay loop, by thread (each thread's "
        "own CPU time; main: decoding, the tracker's Python side and the crops, windows, "
        "fusion; mediapipe: the landmark and face detection models, on MediaPipe's threads):",
        "",
        "| clip | tree | " + " | ".join(kinds) + " | total |",
        "|---|---|" + "---:|" * (len(kinds) + 1),
    ]
    for clip, tree, cpu in rows:
        cells = " | ".join(f"{cpu.get(kind, 0.0):.2f}" for kind in kinds)
        lines.append(f"| {clip} | {tree} | {cells} | {sum(cpu.values()):.2f} |")
    return lines


def _capacity_section(capacity: dict[str, Any]) -> list[str]:
    lines = ["### Live sweep (each tree's tools/bench_live.py capacity, one sweep)", ""]
    for tree, result in capacity.items():
        if "error" in result:
            lines.append(f"{tree}: not measured: {result['error']}")
        elif "ended_early" in result:
            lines.append(f"{tree}: {result['ended_early']}")
    trees = [t for t, r in capacity.items() if "error" not in r]
    if not trees:
        return lines
    lines += [
        "| sessions | "
        + " | ".join(
            f"{t} CPU cores | {t} drops | {t} latency median s | {t} p95 s | {t} RSS MiB"
            for t in trees
        )
        + " |",
        "|---:|" + "---:|" * (5 * len(trees)),
    ]
    by_count: dict[int, dict[str, dict[str, Any]]] = {}
    for tree in trees:
        for row in capacity[tree]["sweep"]:
            by_count.setdefault(row["participants"], {})[tree] = row
    for count in sorted(by_count):
        cells = []
        for tree in trees:
            row = by_count[count].get(tree)
            if row is None:
                cells += ["-"] * 5
                continue
            cells += [
                f"{row['server_cpu_cores']:.2f}",
                f"{row['drop_fraction']:.4f}",
                str(row["latency_median_s"]),
                str(row["latency_p95_s"]),
                str(row.get("server_peak_rss_mib")),
            ]
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    lines.append("")
    for tree in trees:
        result = capacity[tree]
        lines.append(
            f"- {tree}: up to **{result['max_sessions_without_drops']}** sessions without a "
            f"dropped frame; {result['mib_per_session']} MiB of server RSS per extra session "
            f"(slope of peak RSS over the counts; over the counts without drops "
            f"{result.get('mib_per_session_without_drops')}), {result['seconds']:.0f} s of "
            "media per count."
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    from monitor.evaluation.machine import machine_line

    trees = ", ".join(f"{k} = `{v['commit']}` ({v['path']})" for k, v in result["trees"].items())
    lines = [
        f"Machine: {machine_line(result['machine'])}; load average at the end "
        f"{result['load_average_end']}.",
        f"Trees: {trees}.",
        "",
    ]
    if result.get("replay"):
        lines += [*_replay_section(result["replay"], result["runs"]), ""]
    if result.get("capacity"):
        lines += [*_capacity_section(result["capacity"]), ""]
    if result.get("latency"):
        lines += ["### Replay --realtime --serve-alerts: window end to websocket", ""]
        lines += ["| tree | median s | p95 s |", "|---|---:|---:|"]
        for tree, r in result["latency"].items():
            lines.append(f"| {tree} | {r['median_s']:.3f} | {r['p95_s']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def run(args: Any) -> int:
    """The whole bench for ``tools/bench.py``'s parsed arguments; writes bench.json/.md."""
    from monitor.evaluation.machine import describe_machine, source_version

    if shutil.which("taskset") is None:
        sys.stderr.write("bench: error: taskset (util-linux) is needed for one-core figures\n")
        return 2
    started = time.monotonic()

    def step(name: str) -> None:
        load = os.getloadavg()[0]
        sys.stderr.write(f"[{time.monotonic() - started:5.0f} s, load {load:.1f}] {name}\n")

    base_path, base_commit = baseline_tree(args.baseline)
    trees = {"baseline": base_path, "current": ROOT}
    skip = set(args.skip.split(",")) if args.skip else set()
    include = set(args.include.split(",")) if args.include else set()
    result: dict[str, Any] = {
        "machine": describe_machine(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "runs": args.runs,
        "trees": {
            "baseline": {"commit": base_commit, "path": str(base_path)},
            "current": {"commit": source_version(ROOT), "path": str(ROOT)},
        },
    }
    clips = bench_clips()
    if args.clips:
        clips = {k: v for k, v in clips.items() if k in args.clips.split(",")}
    result["clips"] = {k: str(v) for k, v in clips.items()}
    if "replay" not in skip:
        result["replay"] = bench_replay(trees, clips, args.runs, step)
    if "capacity" not in skip:
        result["capacity"] = {}
        for name, tree in trees.items():
            step(f"live sweep {args.live_counts}, {name}")
            result["capacity"][name] = bench_capacity(tree, args.live_counts, args.live_seconds)
    if "latency" in include:
        clip = clips.get("real-720p") or clips["synthetic-720p"]
        result["latency"] = {}
        for name, tree in trees.items():
            step(f"replay latency, {name}")
            result["latency"][name] = bench_latency(tree, clip, args.runs)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["runtime_seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    text = markdown(result) + f"\nBench runtime {result['runtime_seconds']:.0f} s.\n"
    (out / "bench.md").write_text(text)
    sys.stdout.write(text)
    return 0
