"""numpy's BLAS pool is held to one thread once a session starts (monitor/native_threads.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json
from threadpoolctl import threadpool_info
from monitor.config import MonitorConfig
from monitor.detectors.base import Evidence
from monitor.pipeline import SessionAnalyzer

def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

class Silent:
    name, version = "silent", "1"
    def analyze(self, window):
        return Evidence(self.name, None, "nothing to say")

before = blas_threads()
SessionAnalyzer(MonitorConfig(), session="s", participant="p", emit=lambda e: None,
                detectors={"silent": Silent()})
print(json.dumps({"before": before, "after": blas_threads()}))
"""


def test_a_session_runs_numpys_blas_on_the_calling_thread() -> None:
    environment = {
        k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")
    }  # the library's own default: one thread per core
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment,
        timeout=120, check=True,
    )  # fmt: skip
    threads = json.loads(result.stdout.strip().splitlines()[-1])
    if not threads["before"]:
        pytest.skip("numpy was built without a BLAS library threadpoolctl knows")
    if len(os.sched_getaffinity(0)) > 1:
        assert max(threads["before"]) > 1
    # Every BLAS loaded by then (numpy's, and scipy's where a detector imported it).
    assert len(threads["after"]) >= len(threads["before"])
    assert set(threads["after"]) == {1}
