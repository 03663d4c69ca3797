"""Quiet by default: stderr carries the program's own messages, not native start-up chatter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from monitor.native_log import NATIVE_LINE, filtered_native_stderr

# What logging.basicConfig in monitor.cli writes: "2026-01-01 10:00:00,000 INFO monitor.x: ..."
OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ monitor(\.\w+)*: ")


def test_replay_stderr_holds_only_the_programs_own_lines(
    synthetic_calls: dict[str, Path], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DFMON_NATIVE_LOGS"}
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", str(synthetic_calls["short"])]
        + ["--out", str(tmp_path / "events.jsonl")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "replay logs its own progress"
    strangers = [line for line in lines if not OWN_LINE.match(line)]
    assert strangers == []
    assert (tmp_path / "events.jsonl").read_text().count('"type":"summary"') == 1


def test_the_filter_drops_native_lines_and_keeps_the_rest(capfd) -> None:  # noqa: ANN001
    native = (
        b"W0000 00:00:1796155744.092416   18102 inference_feedback_manager.cc:114] Feedback\n"
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    )
    with filtered_native_stderr():
        os.write(2, native[:40])  # native writers do not write whole lines at once
        os.write(2, native[40:] + b"our own message\n")
    assert all(NATIVE_LINE.match(line) for line in native.splitlines())
    assert capfd.readouterr().err == "our own message\n"
