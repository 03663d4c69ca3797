"""Detector plugins: discovery from files and entry points, and failure isolation in a session."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.cli import main as cli_main
from monitor.config import load_config
from monitor.detectors.plugins import ENTRY_POINT_GROUP, discover_plugins
from monitor.detectors.registry import discover, enabled_specs
from monitor.events import validate_event
from monitor.media import AudioChunk, StreamInfo, VideoFrame
from monitor.pipeline import SessionAnalyzer

# Three detectors in one plugin file: one that works, one that raises, one that is slow.
PLUGIN_SOURCE = textwrap.dedent(
    """
    import time
    from monitor.detectors.base import Evidence

    class Good:
        name = "good"
        version = "g-1"

        def __init__(self, config):
            self.windows = 0

        def analyze(self, window):
            self.windows += 1
            text = f"good window {window.index}"
            return Evidence(self.name, 0.1, text, fields={"n": self.windows})

    class Failing:
        name = "failing"
        version = "f-1"

        def __init__(self, config):
            pass

        def analyze(self, window):
            raise RuntimeError("plugin bug")

    class Slow:
        name = "slow"
        version = "s-1"

        def __init__(self, config):
            pass

        def analyze(self, window):
            time.sleep(0.2)
            return Evidence(self.name, 0.2, "slow but done")

    DETECTORS = [Good, Failing, Slow]
    """
)


def write_plugin(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(source)
    return path


def config_for(folder: Path, **detectors: Any) -> Any:
    return load_config(detectors={"plugin_dirs": [str(folder)], **detectors})


def test_file_plugin_is_discovered_with_version_and_source(tmp_path: Path) -> None:
    write_plugin(tmp_path, "trio.py", PLUGIN_SOURCE)
    config = config_for(tmp_path)
    specs = discover(config)
    assert {"good", "failing", "slow"} <= set(specs)
    good = specs["good"]
    assert (good.version, good.error) == ("g-1", None)
    assert good.source.endswith("trio.py")
    detector = good.factory(config)
    assert detector.name == "good"
    # lip_sync stays available through the same spec path.
    assert specs["lip_sync"].source == "builtin"


def test_file_without_detectors_list_exports_its_own_classes(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "implicit.py",
        textwrap.dedent(
            """
            from monitor.detectors.base import Evidence
            from monitor.detectors.temporal import TemporalDetector  # imported: not exported

            class Helper:  # no analyze: not a detector
                name = "helper"
                version = "0"

            class Implicit:
                name = "implicit"
                version = "i-2"

                def __init__(self, config):
                    pass

                def analyze(self, window):
                    return Evidence(self.name, None, "nothing")
            """
        ),
    )
    names = {spec.name: spec for spec in discover_plugins(config_for(tmp_path))}
    assert "implicit" in names and names["implicit"].version == "i-2"
    assert "helper" not in names
    # The temporal class imported into the file is not re-exported from it.
    assert all(
        not spec.source.endswith("implicit.py") for n, spec in names.items() if n == "temporal"
    )


def test_private_files_are_skipped(tmp_path: Path) -> None:
    write_plugin(tmp_path, "_helper.py", "raise RuntimeError('must not be imported')\n")
    assert all(not s.source.endswith("_helper.py") for s in discover_plugins(config_for(tmp_path)))


def test_broken_file_is_listed_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_plugin(tmp_path, "broken.py", "import no_such_module_for_dfmon\n")
    write_plugin(tmp_path, "empty.py", "X = 1\n")
    write_plugin(tmp_path, "trio.py", PLUGIN_SOURCE)
    config = config_for(tmp_path)
    specs = discover(config)
    assert specs["broken"].version == "broken"
    assert "ModuleNotFoundError" in (specs["broken"].error or "")
    assert "exports no detector" in (specs["empty"].error or "")
    assert specs["good"].error is None  # the others still load

    config_file = tmp_path / "dfmon.toml"
    config_file.write_text(f'[detectors]\nplugin_dirs = ["{tmp_path}"]\n')
    assert cli_main(["--config", str(config_file), "detectors"]) == 0
    out = capsys.readouterr().out
    broken_line = next(line for line in out.splitlines() if line.startswith("broken "))
    assert "BROKEN" in broken_line and "no_such_module_for_dfmon" in broken_line
    good_line = next(line for line in out.splitlines() if line.startswith("good "))
    assert "g-1" in good_line and "trio.py" in good_line


def test_broken_plugin_does_not_shadow_a_working_detector(tmp_path: Path) -> None:
    write_plugin(tmp_path, "lip_sync.py", "raise ImportError('half-installed')\n")
    spec = discover(config_for(tmp_path))["lip_sync"]
    assert spec.error is None and spec.source == "builtin"


@pytest.fixture
def entry_point_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module with a detector class, on sys.path for this test only."""
    name = "dfmon_test_ep_plugin"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from monitor.detectors.base import Evidence

            class FromEntryPoint:
                name = "from_ep"
                version = "ep-3"

                def __init__(self, config):
                    pass

                def analyze(self, window):
                    return Evidence(self.name, 0.0, "entry point detector")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, *points: importlib.metadata.EntryPoint
) -> None:
    """importlib.metadata.entry_points answering our group with real EntryPoint objects."""
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == ENTRY_POINT_GROUP:
            return importlib.metadata.EntryPoints(points)
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_entry_point_plugin_is_discovered(
    entry_point_module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point = importlib.metadata.EntryPoint(
        name="from_ep", value=f"{entry_point_module}:FromEntryPoint", group=ENTRY_POINT_GROUP
    )
    fake_entry_points(monkeypatch, point)
    specs = discover(config_for(tmp_path / "no_plugins_here"))
    spec = specs["from_ep"]
    assert (spec.version, spec.error) == ("ep-3", None)
    assert spec.source.startswith("entry point")
    evidence = spec.factory(load_config()).analyze(None)  # type: ignore[arg-type]
    assert evidence.detector == "from_ep"


def test_broken_entry_point_is_listed_not_fatal(
    entry_point_module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    points = (
        importlib.metadata.EntryPoint(
            name="gone", value="dfmon_no_such_module:X", group=ENTRY_POINT_GROUP
        ),
        importlib.metadata.EntryPoint(
            name="from_ep", value=f"{entry_point_module}:FromEntryPoint", group=ENTRY_POINT_GROUP
        ),
    )
    fake_entry_points(monkeypatch, *points)
    config = config_for(tmp_path / "none", enabled=["gone", "from_ep"])
    specs = discover(config)
    assert specs["gone"].version == "broken" and specs["from_ep"].error is None
    events: list[dict[str, Any]] = []
    analyzer = SessionAnalyzer(
        config, session="s", participant="p", emit=events.append, face_tracker=NoFace()
    )
    assert set(analyzer.detectors) == {"from_ep"}
    assert any(e["type"] == "error" and "gone" in e["message"] for e in events)


def test_temporal_is_registered_through_the_entry_point() -> None:
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    if "temporal" not in points.names:
        pytest.skip("dfmon is not installed (pip install -e .): no entry points")
    spec = discover(load_config())["temporal"]
    assert spec.source.startswith("entry point") and spec.error is None
    assert "temporal" in [s.name for s in enabled_specs(load_config())]


class NoFace:
    """A face tracker for sessions whose detectors do not look at faces."""

    def track(self, frame: VideoFrame) -> None:
        return None

    def close(self) -> None:
        pass


def run_session(config: Any, seconds: float = 4.0) -> tuple[list[dict[str, Any]], SessionAnalyzer]:
    events: list[dict[str, Any]] = []
    analyzer = SessionAnalyzer(
        config, session="plugins", participant="p", emit=events.append, face_tracker=NoFace()
    )
    analyzer.start(StreamInfo("synthetic", 25.0, 64, 48, 16000, seconds))
    rng = np.random.default_rng(0)
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(int(seconds * 25)):
        analyzer.add_audio(
            AudioChunk(i * 0.04, (0.1 * rng.standard_normal(640)).astype(np.float32))
        )
        analyzer.add_video(VideoFrame(i * 0.04, i, image))
    analyzer.finish(reason="end of input")
    for event in events:
        validate_event(event)
    return events, analyzer


def test_failing_and_slow_plugins_are_disabled_and_the_session_goes_on(tmp_path: Path) -> None:
    write_plugin(tmp_path, "trio.py", PLUGIN_SOURCE)
    config = config_for(tmp_path, enabled=["good", "failing", "slow"], time_budget_s=0.05)
    events, analyzer = run_session(config)

    errors = [e for e in events if e["type"] == "error"]
    by_detector = {e["detector"]: e["message"] for e in errors}
    assert set(by_detector) == {"failing", "slow"}
    assert "RuntimeError" in by_detector["failing"] and "plugin bug" in by_detector["failing"]
    assert "budget" in by_detector["slow"]
    assert set(analyzer.detectors) == {"good"}

    scores = [e for e in events if e["type"] == "score"]
    assert len(scores) >= 4  # windows at 0, 0.5, 1.0, 1.5 (and more) of a 4 s call
    for score in scores:
        detectors = [item["detector"] for item in score["evidence"]]
        assert "good" in detectors and "failing" not in detectors
    # The slow one was abandoned at the budget on its first window and never ran again.
    assert all("slow" not in [i["detector"] for i in s["evidence"]] for s in scores)
    numbers = [next(i["n"] for i in s["evidence"] if i["detector"] == "good") for s in scores]
    assert numbers == list(range(1, len(scores) + 1))
    assert events[-1]["type"] == "summary"


# Detectors that never return until the test releases them: one in analyze, one in summarize.
HUNG_SOURCE = textwrap.dedent(
    """
    import threading
    from monitor.detectors.base import Evidence

    RELEASE = threading.Event()  # set by the test at teardown, so the threads end

    class Hung:
        name = "hung"
        version = "h-1"

        def __init__(self, config):
            pass

        def analyze(self, window):
            RELEASE.wait()
            return Evidence(self.name, 0.9, "too late")

    class HungSummary:
        name = "hung_summary"
        version = "hs-1"

        def __init__(self, config):
            pass

        def analyze(self, window):
            return Evidence(self.name, 0.1, "quick")

        def summarize(self):
            RELEASE.wait()

    DETECTORS = [Hung, HungSummary]
    """
)


@pytest.fixture
def hung_plugin(tmp_path: Path) -> Iterator[Path]:
    """The folder with the hung plugins; teardown releases every copy of them that was loaded."""
    write_plugin(tmp_path, "trio.py", PLUGIN_SOURCE)
    write_plugin(tmp_path, "hung.py", HUNG_SOURCE)
    yield tmp_path
    release_hung_plugins()


def release_hung_plugins() -> None:
    """Every discovery loads hung.py afresh, as its own module: release them all."""
    for name, module in list(sys.modules.items()):
        if name.startswith("dfmon_plugin_hung_"):
            module.RELEASE.set()


def detector_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dfmon-detector-")}


def test_hung_plugin_is_abandoned_at_the_budget_and_the_session_goes_on(
    hung_plugin: Path,
) -> None:
    config = config_for(hung_plugin, enabled=["good", "hung"], time_budget_s=0.2)
    before = detector_threads()
    started = time.perf_counter()
    events, analyzer = run_session(config)
    # One wait of 0.2 s, not forever; generous for a loaded machine.
    assert time.perf_counter() - started < 3.0

    errors = [e for e in events if e["type"] == "error"]
    assert [e["detector"] for e in errors] == ["hung"]
    message = errors[0]["message"]
    assert "hung took more than 0.20 s for one window (budget 0.20 s)" in message
    assert message.endswith("disabled for this session")
    assert set(analyzer.detectors) == {"good"}
    assert analyzer.stats.detector_seconds["hung"] >= 0.2

    after_error = events[events.index(errors[0]) + 1 :]
    scores = [e for e in after_error if e["type"] == "score"]
    assert len(scores) >= 4
    for score in scores:
        assert [item["detector"] for item in score["evidence"]] == ["good"]
    assert events[-1]["type"] == "summary"

    # Only the hung thread is left, and it ends once its call returns.
    (left,) = detector_threads() - before
    assert left.name == "dfmon-detector-hung" and left.daemon
    release_hung_plugins()
    left.join(timeout=5.0)
    assert not left.is_alive()


def test_hung_summarize_does_not_hang_finish(hung_plugin: Path) -> None:
    config = config_for(hung_plugin, enabled=["good", "hung_summary"], time_budget_s=0.2)
    started = time.perf_counter()
    events, _ = run_session(config, seconds=2.0)
    assert time.perf_counter() - started < 3.0
    errors = [e for e in events if e["type"] == "error"]
    assert [e["detector"] for e in errors] == ["hung_summary"]
    assert "to summarize" in errors[0]["message"]
    assert events[-1]["type"] == "summary"


def test_detector_threads_end_with_the_session_even_when_it_fails(tmp_path: Path) -> None:
    write_plugin(tmp_path, "trio.py", PLUGIN_SOURCE)
    config = config_for(tmp_path, enabled=["good", "failing"])
    before = detector_threads()
    run_session(config, seconds=2.0)
    assert not detector_threads() - before

    def emit(event: dict[str, Any]) -> None:
        if event["type"] == "score":
            raise OSError("sink gone")

    analyzer = SessionAnalyzer(
        config, session="s", participant="p", emit=emit, face_tracker=NoFace()
    )
    analyzer.start(StreamInfo("synthetic", 25.0, 64, 48, 16000, 2.0))
    image = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(OSError, match="sink gone"):
        for i in range(100):
            analyzer.add_audio(AudioChunk(i * 0.04, np.zeros(640, np.float32)))
            analyzer.add_video(VideoFrame(i * 0.04, i, image))
    assert detector_threads() - before  # the good detector's thread is running
    with pytest.raises(OSError, match="sink gone"):
        analyzer.finish("error")  # scoring the rest fails again; the threads end anyway
    assert not detector_threads() - before


def test_plugin_that_fails_to_start_gives_an_error_event(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "nostart.py",
        textwrap.dedent(
            """
            class NoStart:
                name = "nostart"
                version = "1"

                def __init__(self, config):
                    raise OSError("model file missing")

                def analyze(self, window):
                    raise AssertionError("never called")
            """
        ),
    )
    write_plugin(tmp_path, "trio.py", PLUGIN_SOURCE)
    config = config_for(tmp_path, enabled=["nostart", "good"])
    events, analyzer = run_session(config, seconds=2.5)
    assert any(e["type"] == "error" and "nostart" in e["message"] for e in events)
    assert set(analyzer.detectors) == {"good"}
    assert any(e["type"] == "score" and e["evidence"] for e in events)
