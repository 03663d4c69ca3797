"""The HTML report for a synthetic call whose audio arrives 400 ms after the lips."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from monitor.cli import main
from monitor.config import MonitorConfig, load_config
from monitor.errors import EventsError, OutputError
from monitor.events import dumps, validate_event
from monitor.features.face import mouth_crop_matrix
from monitor.report import AttributionOptions, write_report
from monitor.report.confidence import LearnedSync
from tests.browser import open_page, require_chromium
from tests.factories import NARROW_SYNC

ARTIFACTS = Path(__file__).parent / "artifacts"
TEXT = "Hello, can you hear me? I am calling about the budget for next year."
SECTIONS = {
    "summary",
    "timeline",
    "contributions",
    "lip-sync",
    "filmstrip",
    "rationale",
    "attribution",
    "method",
}
PLOTS = {
    "timeline",
    "contributions",
    "lag-curves",
    "frame-confidence",
    "audio-lips",
    "offset-zoom",
    "filmstrip",
    "attribution-time",
    "attribution-maps",
    "deletion",
}
FAST = AttributionOptions(max_alerts=1, ig_steps=2, n_random=2)


class ReportParser(HTMLParser):
    """Collects what the tests look at: sections, figures, images, links, the data block."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.plots: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.meta: list[dict[str, str | None]] = []
        self._in_data = False
        self.data = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self.sections.append(str(attributes.get("id")))
        if tag == "figure":
            self.plots.append(str(attributes.get("data-plot")))
        if tag == "img":
            self.images.append(str(attributes.get("src")))
        if tag == "meta":
            self.meta.append(attributes)
        for name in ("href", "src"):
            value = attributes.get(name)
            if value and not value.startswith(("#", "data:")):
                self.urls.append(value)
        self._in_data = tag == "script" and attributes.get("id") == "report-data"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data += data


def small_sync_model() -> LearnedSync:
    """A real (untrained, narrow) sync network, so attribution runs fast in tests."""
    from monitor.explain.sync_target import torch_embed
    from monitor.sync.model import SyncNetLite

    torch.manual_seed(0)
    model = SyncNetLite(NARROW_SYNC).eval()
    return LearnedSync(
        embed=torch_embed(model), backend="torch (test net)", model=model, genuine_confidence=0.5
    )


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def desynced(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic call with audio 400 ms late, replayed with the baseline detector."""
    from monitor.replay import replay_file
    from monitor.synth.call import make_call

    folder = tmp_path_factory.mktemp("report")
    call = make_call(folder / "call.mp4", text=TEXT, audio_shift_s=0.4, size=(360, 480))
    events: list[dict] = []
    # The baseline detector has no decision calibration (it counts at most 1 nat a window):
    # thresholds low enough for this short call's 400 ms shift to reach alert.
    config = load_config(
        lip_sync={"model": "baseline"}, decision={"suspicious_nats": 1.5, "alert_nats": 2.5}
    )
    replay_file(call.path, config, events.append, participant="caller")
    events_path = folder / "events.jsonl"
    events_path.write_text("".join(dumps(e) + "\n" for e in events))
    return {"folder": folder, "media": call.path, "events": events, "events_path": events_path}


@pytest.fixture(scope="module")
def report(desynced: dict) -> dict:
    torch.set_num_threads(1)
    out = desynced["folder"] / "report.html"
    write_report(
        desynced["events_path"],
        desynced["media"],
        out,
        learned=small_sync_model(),
        attribution=FAST,
    )
    text = out.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    return {"path": out, "text": text, "parsed": parser}


def decode_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix) :], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.mark.slow
def test_alerts_of_the_desynced_call_carry_a_live_explanation(desynced: dict) -> None:
    alerts = [e for e in desynced["events"] if e["type"] == "alert"]
    assert alerts, "a call 400 ms out of sync must raise an alert"
    for alert in alerts:
        validate_event(alert)
        explanation = alert["explanation"]
        curve = explanation["offset_curve"]
        assert curve["best_lag_ms"] == pytest.approx(400, abs=100)
        assert curve["in_genuine_band"] is False
        assert explanation["top_segments"]
        assert "ms" in explanation["summary"]


@pytest.mark.slow
def test_report_has_every_section_and_plot_as_embedded_png(report: dict) -> None:
    parser: ReportParser = report["parsed"]
    assert set(parser.sections) >= SECTIONS
    assert set(parser.plots) >= PLOTS, sorted(PLOTS - set(parser.plots))
    assert len(parser.images) == len(parser.plots)
    for uri in parser.images:
        image = decode_png(uri)
        assert image.shape[0] > 100 and image.shape[1] > 300
    # Self-contained: nothing is loaded from anywhere, and the policy forbids it.
    assert parser.urls == []
    assert not re.search(r"https?://", report["text"].split('id="report-data"')[0])
    csp = [m for m in parser.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in str(csp[0]["content"])
    assert report["path"].stat().st_size < 3_000_000
    assert "audio lags lips by" in report["text"]


@pytest.mark.slow
def test_report_states_attribution_and_faithfulness_of_both_methods(report: dict) -> None:
    data = json.loads(report["parsed"].data)
    assert data["frame_confidence_method"] == "baseline" and data["alerts"] >= 1
    (alert,) = data["attribution"]
    kinds = {m["kind"]: m for m in alert["methods"]}
    assert set(kinds) == {"white-box", "black-box"}
    for method in kinds.values():
        for family in ("time", "region"):
            deletion = method["deletion"][family]
            assert len(deletion["method_scores"]) == 4 and len(deletion["random_scores"]) == 4
            assert deletion["faithfulness"] is None or np.isfinite(deletion["faithfulness"])
        assert len(method["top"]["time"]) == 3
    assert "faithfulness: time segments" in report["text"]


@pytest.mark.slow
@pytest.mark.browser
def test_chromium_renders_the_report(report: dict) -> None:
    require_chromium()
    screenshot = ARTIFACTS / "report.png"
    with open_page(report["path"].resolve().as_uri(), window_size=(1100, 900)) as page:
        page.wait_for("document.readyState === 'complete'")
        loaded = page.evaluate(
            "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded and all(loaded)
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).length")
        assert headings >= len(SECTIONS)
        assert page.exceptions == []
        page.screenshot(screenshot)
    image = cv2.imread(str(screenshot))
    assert image is not None and image.shape[0] > 2000  # the full page, not one screen


def test_mouth_crop_matrix_reproduces_the_trackers_crop(tmp_path: Path) -> None:
    """Landmarks are drawn with the very warp that cut the model's mouth crop."""
    from monitor.features.face import create_face_tracker
    from monitor.media import VideoFrame
    from monitor.synth.face import FaceAnimator

    image = FaceAnimator(None, (360, 480)).render(0.6, 1.0, None, 1.0)
    config = MonitorConfig().face
    tracker = create_face_tracker(config)
    try:
        face = tracker.track(VideoFrame(0.0, 0, image))
    finally:
        tracker.close()
    assert face is not None
    matrix, size = mouth_crop_matrix(face.landmarks, config)
    crop = cv2.warpAffine(
        image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    assert np.abs(crop.astype(int) - face.mouth_crop.astype(int)).mean() < 2.0
    lips = face.lip_landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert (lips >= 0).all() and (lips[:, 0] < size[0]).all() and (lips[:, 1] < size[1]).all()


def test_long_calls_keep_plots_small_and_quick() -> None:
    """Two hours of windows and audio reduce to a bounded number of points."""
    import time

    from monitor.report import plots

    hours = 2.0
    windows = int(hours * 3600 / 0.5)
    rng = np.random.default_rng(0)
    scores = [
        {
            "t_start": i * 0.5,
            "t_end": i * 0.5 + 2,
            "risk": float(r),
            "window_risk": float(r),
            "level": "clear",
            "evidence": [{"detector": "lip_sync", "score": float(r)}],
        }
        for i, r in enumerate(rng.random(windows) * 0.4)
    ]
    rows = int(hours * 3600 * 100)
    started = time.perf_counter()
    timeline = plots.risk_timeline(scores, [], (0.5, 0.7), hours * 3600)
    audio = plots.audio_and_lips(
        rng.uniform(-1, 0, rows).astype(np.float32),
        rng.uniform(0, 1, rows).astype(np.float32),
        rng.normal(size=(1600, 80)),
        hours * 3600 / 1600,
        rng.random(rows) > 0.5,
        np.arange(int(hours * 3600 * 25)) / 25.0,
        rng.random(int(hours * 3600 * 25)) * 0.1,
        [(100.0, 102.0)],
        hours * 3600,
    )
    assert time.perf_counter() - started < 30
    assert len(timeline) < 200_000 and len(audio) < 400_000


def test_bad_events_and_outputs_are_input_errors(desynced: dict, tmp_path: Path) -> None:
    media = desynced["media"]
    with pytest.raises(EventsError, match="not found"):
        write_report(tmp_path / "missing.jsonl", media, tmp_path / "r.html", learned=None)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"schema": 1, "type": "score"\n')
    with pytest.raises(EventsError, match="not JSON"):
        write_report(garbage, media, tmp_path / "r.html", learned=None)
    with pytest.raises(EventsError, match="no score events"):
        write_report([], media, tmp_path / "r.html", learned=None)
    late = [dict(e) for e in desynced["events"]]
    for event in late:
        if event["type"] == "score":
            event["t_start"] += 100.0
            event["t_end"] += 100.0
    with pytest.raises(EventsError, match="not recorded from this media"):
        write_report(late, media, tmp_path / "r.html", learned=None)
    with pytest.raises(OutputError):
        write_report(desynced["events"], media, tmp_path / "no" / "r.html", learned=None)


def test_report_command_exits_2_on_bad_input(desynced: dict, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "report",
            str(tmp_path / "none.jsonl"),
            "--media",
            str(desynced["media"]),
            "-o",
            str(tmp_path / "r.html"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "events file not found" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_command_writes_a_report(desynced: dict, tmp_path: Path) -> None:
    """End to end through the CLI; alerts left out so no model-dependent work runs."""
    events = tmp_path / "scores.jsonl"
    events.write_text("".join(dumps(e) + "\n" for e in desynced["events"] if e["type"] != "alert"))
    out = tmp_path / "cli.html"
    code = main(["report", str(events), "--media", str(desynced["media"]), "-o", str(out)])
    assert code == 0
    parser = ReportParser()
    parser.feed(out.read_text(encoding="utf-8"))
    assert set(parser.sections) >= SECTIONS and {"timeline", "filmstrip"} <= set(parser.plots)
    for uri in parser.images:
        decode_png(uri)


@pytest.mark.slow
def test_replay_with_report_and_events_on_stdout(tmp_path: Path, capsys) -> None:
    """``dfmon replay --report`` keeps the events in memory: --out may be stdout."""
    from monitor.synth.call import make_call

    call = make_call(tmp_path / "in_sync.mp4", text="Good morning, this is Anna.", size=(240, 320))
    out = tmp_path / "replay.html"
    code = main(["replay", str(call.path), "--lip-sync", "baseline", "--report", str(out)])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    assert events[0]["type"] == "session_started" and events[-1]["type"] == "summary"
    parser = ReportParser()
    parser.feed(out.read_text(encoding="utf-8"))
    assert set(parser.sections) >= SECTIONS
    assert json.loads(parser.data)["session"] == events[0]["session"]
