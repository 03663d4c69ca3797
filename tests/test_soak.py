"""tools/soak.py end to end, short: the real ``dfmon serve``, looping publishers, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_soak_reports_memory_threads_drops_and_verdicts(tmp_path: Path) -> None:
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    out = tmp_path / "soak"
    command = [
        sys.executable, str(ROOT / "tools" / "soak.py"), "--publishers", "2", "--seconds", "6",
        "--session-s", "4", "--settle-s", "2", "--sample-s", "1", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| sessions admitted (summaries) |" in result.stdout
    data = json.loads((out / "soak.json").read_text())
    samples = data["samples"]
    assert len(samples) >= 6
    assert all(s["rss_mb"] > 0 and s["threads"] > 0 and s["fds"] > 0 for s in samples)
    assert max(s["sessions"] for s in samples) >= 1
    sessions = data["sessions"]
    assert len(sessions) >= 2  # each publisher's first session reached its summary
    assert {s["participant"].split("-")[0] for s in sessions} == {"p0", "p1"}
    assert not [s for s in sessions if s["verdict"] == "alert"]  # genuine speech
    assert (out / "soak.png").stat().st_size > 10_000
    assert (out / "soak.md").read_text() == result.stdout
