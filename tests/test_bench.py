"""The speed and tracking evaluations' own arithmetic (what the bench tabulates)."""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from monitor.evaluation import bench
from monitor.evaluation.speaker import CompositeResult, score_composite, table
from monitor.evaluation.tracking import compare
from tests.windows_factory import face_with_aperture

ROOT = Path(__file__).resolve().parents[1]


def test_memory_per_session_is_the_slope_of_peak_rss() -> None:
    assert bench._slope([(1, 400.0), (2, 430.0), (3, 460.0), (4, 490.0)]) == 30.0
    assert bench._slope([(1, 400.0)]) is None


def test_capacity_sweep_separates_sessions_that_fell_behind_and_says_when_it_ended_early(
    tmp_path: Path,
) -> None:
    """A stand-in for a tree's tools/bench_live.py (a real process): its server grows by
    50 MiB a session while it keeps up, then by far more (the backlog of sessions that
    drop frames), and it dies before the last count."""
    (tmp_path / "tools").mkdir()
    script = """
import json, sys, time
hold = []
for n, drops in ((1, 0.0), (2, 0.0), (3, 0.0), (4, 0.05)):
    hold.append(bytearray((50 if drops == 0 else 150) << 20))  # touched: resident
    time.sleep(0.6)
    row = {"participants": n, "drop_fraction": drops, "server_cpu_cores": 0.4 * n,
           "latency_median_s": 0.7, "latency_p95_s": 0.8}
    print(json.dumps(row), flush=True)
sys.stderr.write("killed at 5 sessions")
sys.exit(3)
"""
    (tmp_path / "tools" / "bench_live.py").write_text(script)
    result = bench.bench_capacity(tmp_path, "1,2,3,4,5", 1.0)
    assert [r["participants"] for r in result["sweep"]] == [1, 2, 3, 4]
    assert result["max_sessions_without_drops"] == 3
    assert 45 <= result["mib_per_session_without_drops"] <= 55
    assert result["mib_per_session"] > 70
    assert "exited 3 after 4 counts" in result["ended_early"]
    assert "killed at 5 sessions" in result["ended_early"]
    section = "\n".join(bench._capacity_section({"current": result}))
    assert "exited 3 after 4 counts" in section and "| 4 |" in section


def test_replay_summary_and_table_set_current_against_baseline() -> None:
    def run(process_s: float) -> dict:
        return {
            "media_seconds": 24.0, "video_frames": 600, "windows": 45, "level": "clear",
            "process_seconds": process_s, "replay_seconds": process_s - 1.0,
            "cpu_seconds": process_s / 2,
            "marks": {"imported": 0.5, "first_frame": 1.2},
            "stage_seconds": {"decode": 0.6, "landmarks": 1.8, "detectors": 1.2},
            "detector_seconds": {"lip_sync": 0.45}, "peak_rss_mib": 300.0,
            "thread_cpu_seconds": {"main": process_s / 10, "mediapipe": 1.2, "gone": 0.001},
        }  # fmt: skip

    base = bench.summarize_replay([run(12.0), run(10.0), run(11.0)])
    current = bench.summarize_replay([run(4.0), run(5.0), run(6.0)])
    assert base["x_realtime"] == round(24 / 11, 2) and current["x_realtime"] == round(24 / 5, 2)
    assert current["ms_per_frame"]["landmarks"] == 3.0
    assert current["detector_ms_per_window"]["lip_sync"] == 10.0
    lines = bench._replay_section({"clip": {"baseline": base, "current": current}}, 3)
    row = next(line for line in lines if "| current |" in line)
    assert (
        f"| {current['x_realtime']:.2f} | 2.20x | {current['x_realtime_cpu']:.2f} | 2.20x |" in row
    )
    assert current["x_realtime_cpu"] == round(24 / 2.5, 2)
    # CPU per frame by thread kind: medians of the runs, the largest kind first.
    assert current["cpu_ms_per_frame"] == {
        "mediapipe": 2.0,
        "main": round(500 / 600, 2),
        "gone": 0.0,
    }
    table = lines[lines.index("| clip | tree | mediapipe | main | total |") :]
    assert "| clip | baseline | 2.00 | 1.83 | 3.83 |" in table[2:]
    assert "| clip | current | 2.00 | 0.83 | 2.83 |" in table[2:]


def test_speaker_composite_scoring_reads_the_score_events() -> None:
    def score(track: int | None) -> dict:
        return {
            "type": "score",
            "speaker": {
                "track": track, "faces": 2, "scores": {"1": 2.9, "2": 0.5}, "reason": "r",
                "boxes": {"1": [10.0, 0, 200.0, 200], "2": [500.0, 0, 700.0, 200]},
            },
        }  # fmt: skip

    events = [score(1), score(1), score(None), score(2), {"type": "summary", "level": "clear"}]
    result = score_composite(events, CompositeResult("a", "b", True, False), width=800)
    assert (result.windows, result.right, result.wrong, result.none) == (4, 2, 1, 1)
    assert result.level == "clear" and result.scores[0] == (2.9, 0.5)
    assert "| speaker left, other face speaking | 4 | 2 | 1 | 1 | 0 of 1 |" in table([result])


def test_tracking_comparison_skips_frames_the_model_ran_on() -> None:
    def face(aperture: float, shift: float = 0.0):  # noqa: ANN202
        landmarks = np.zeros((478, 2), np.float32) + shift
        return replace(face_with_aperture(aperture), landmarks=landmarks)

    reference = [(face(0.05), True), (face(0.06), True), (face(0.07), True)]
    carried = [(face(0.05), True), (face(0.08, shift=2.4), False), (face(0.07), True)]
    row = compare(reference, carried)
    assert row is not None and row["frames_compared"] == 1
    assert abs(row["aperture_error_median"] - 0.02) < 1e-6
    assert abs(row["lip_error_pct_median"] - 100 * np.hypot(2.4, 2.4) / 240.0) < 1e-3


def test_live_capacity_without_analysis_serves_the_media_alone() -> None:
    """`bench_live.py capacity --analysis none`: real publishers and server on loopback,
    every frame taken, none analysed (what the WebRTC side costs on its own)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable, str(root / "tools" / "bench_live.py"), "capacity",
        "--counts", "2", "--seconds", "3", "--analysis", "none",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert row["participants"] == 2 and row["windows"] == 0
    assert row["frames_in"]["video"] >= 2 * 3 * 25 * 0.8 and row["drop_fraction"] == 0
    assert row["levels"] == ["unknown", "unknown"]
    assert row["server_peak_rss_mib"] > 30


def _bench_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tool", ROOT / "tools" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_replay_worker_counts_cpu_of_threads_that_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _bench_tool()
    monkeypatch.setattr(threading.Thread, "run", threading.Thread.run)  # undone after
    thread_cpu = tool.ThreadCpu()
    thread_cpu.start()

    def busy() -> None:
        started = time.thread_time()
        while time.thread_time() - started < 0.2:
            pass

    before = thread_cpu.read()
    worker = threading.Thread(target=busy, name="dfmon-detector-busy")
    worker.start()
    worker.join()
    seconds = thread_cpu.read()
    assert seconds["detector-busy"] >= 0.2
    # Not counted a second time as a native thread while the OS still lists it.
    assert seconds.get("other native", 0.0) - before.get("other native", 0.0) < 0.1
    assert seconds["main"] > 0
    assert tool.thread_kind("mediapipe/4521") == "mediapipe"
    assert tool.thread_kind("dfmon-detector-temporal") == "detector-temporal"
