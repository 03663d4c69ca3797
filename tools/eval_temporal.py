#!/usr/bin/env python3
"""Evaluate the temporal detector, alone and fused with lip-sync, on a labelled clip set.

    .venv/bin/python tools/eval_temporal.py [--data ../shared/data/dev] [--cache DIR] [--json OUT]

Labels come from the set's MANIFEST.tsv; rows marked DUPLICATE SOURCE are scored but left
out of every aggregate (they repeat another row's recording). Reported, per clip (each clip
one number):

- the AUC, real against fake, of each cue's session z (turned towards its calibrated
  suspicious direction), of the temporal session score, and of the fused session risk
  (the ``summary`` event of a full SessionAnalyzer run with every enabled detector);
- the same with only the lip-sync fakes on real video (notes contain LIPSYNC-FAKE) as
  positives, since that is the likeliest fake in a fraud call;
- the false-alert rate on real clips: temporal session score >= 0.5 and >= 0.7, windows
  scoring >= 0.7, and sessions whose fused level reached suspicious or alert.

Calibrate on the training pool (tools/calibrate_temporal.py), measure here; never tune here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monitor.config import MonitorConfig, load_config
from monitor.detectors.temporal.cues import CUE_NAMES
from monitor.detectors.temporal.detector import TemporalDetector
from monitor.evaluation.dataset import is_duplicate_row, is_lipsync_fake, manifest_rows
from monitor.evaluation.metrics import auc_or_nan as auc
from monitor.features.types import FrameFeatures
from monitor.training.faces import (
    CachedFaceTracker,
    clip_frames,
    iter_windows,
)

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("eval_temporal")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dev"


@dataclass
class ClipResult:
    file: str
    label: str
    lipsync_fake: bool
    duplicate: bool
    has_audio: bool
    score: float | None = None  # temporal session score
    combined_z: float | None = None
    cue_z: dict[str, float | None] = field(default_factory=dict)
    window_scores: list[float] = field(default_factory=list)
    rationale: str = ""
    fused_risk: float | None = None
    fused_level: str | None = None
    fused_alerts: int | None = None
    detector_errors: list[str] = field(default_factory=list)


def score_temporal(frames: list[FrameFeatures], config: MonitorConfig, result: ClipResult) -> None:
    detector = TemporalDetector(config)
    for window in iter_windows(frames, config.window):
        evidence = detector.analyze(window)
        if evidence.score is not None:
            result.window_scores.append(evidence.score)
    summary = detector.summarize()
    if summary is None:
        result.rationale = "no scored window"
        return
    result.score = summary.score
    result.rationale = summary.rationale
    result.combined_z = summary.fields.get("combined_z")
    result.cue_z = dict(summary.fields.get("cue_z", {}))


def score_fused(
    clip: Path, frames: list[FrameFeatures], config: MonitorConfig, result: ClipResult
) -> None:
    """The whole pipeline (all enabled detectors, fusion) with the already tracked faces."""
    from monitor.pipeline import SessionAnalyzer
    from monitor.sources.file import FileSource

    events: list[dict[str, Any]] = []
    with FileSource(clip) as source:
        analyzer = SessionAnalyzer(
            config,
            session="eval",
            participant=clip.stem,
            emit=events.append,
            face_tracker=CachedFaceTracker(frames),
        )
        analyzer.start(source.info)
        for item in source:
            analyzer.add(item)
        summary = analyzer.finish(reason="end of input")
    result.fused_risk = summary["risk"] if summary["verdict"] != "unknown" else None
    result.fused_level = summary["verdict"]
    result.fused_alerts = summary["alerts"]
    result.detector_errors = [e["message"] for e in events if e.get("type") == "error"]


def directed(result: ClipResult, cue: str, directions: dict[str, int]) -> float:
    value = result.cue_z.get(cue)
    return math.nan if value is None else directions[cue] * value


def metric_block(
    results: list[ClipResult], positives: list[ClipResult], directions: dict[str, int]
) -> dict[str, Any]:
    reals = [r for r in results if r.label == "real" and not r.duplicate]
    block: dict[str, Any] = {"positives": len(positives), "reals": len(reals), "cue_auc": {}}
    for cue in CUE_NAMES:
        block["cue_auc"][cue] = auc(
            [directed(r, cue, directions) for r in positives],
            [directed(r, cue, directions) for r in reals],
        )
    nan = math.nan
    block["temporal_auc"] = auc(
        [nan if r.score is None else r.score for r in positives],
        [nan if r.score is None else r.score for r in reals],
    )
    block["fused_auc"] = auc(
        [nan if r.fused_risk is None else r.fused_risk for r in positives],
        [nan if r.fused_risk is None else r.fused_risk for r in reals],
    )
    with_audio = [r for r in positives if r.has_audio]
    block["fused_auc_with_audio"] = auc(
        [nan if r.fused_risk is None else r.fused_risk for r in with_audio],
        [nan if r.fused_risk is None else r.fused_risk for r in reals if r.has_audio],
    )
    scored = [r for r in positives if r.score is not None]
    block["temporal_detect_rate_0.5"] = (
        sum(r.score >= 0.5 for r in scored) / len(scored) if scored else nan  # type: ignore[operator]
    )
    return block


def false_alerts(results: list[ClipResult]) -> dict[str, Any]:
    reals = [r for r in results if r.label == "real" and not r.duplicate]
    scored = [r for r in reals if r.score is not None]
    windows = [s for r in reals for s in r.window_scores]
    fused = [r for r in reals if r.fused_level is not None]
    return {
        "real_clips": len(reals),
        "temporal_scored": len(scored),
        "temporal_session_ge_0.5": sum(r.score >= 0.5 for r in scored) / max(len(scored), 1),  # type: ignore[operator]
        "temporal_session_ge_0.7": sum(r.score >= 0.7 for r in scored) / max(len(scored), 1),  # type: ignore[operator]
        "temporal_windows": len(windows),
        "temporal_windows_ge_0.7": sum(s >= 0.7 for s in windows) / max(len(windows), 1),
        "fused_sessions": len(fused),
        "fused_level_suspicious_or_alert": sum(
            r.fused_level in ("suspicious", "alert") for r in fused
        )
        / max(len(fused), 1),
        "fused_level_alert": sum(r.fused_level == "alert" for r in fused) / max(len(fused), 1),
    }


def print_report(results: list[ClipResult], report: dict[str, Any]) -> None:
    print(f"{'label':5} {'temporal':>8} {'comb_z':>6} {'fused':>6} {'level':10} clip")
    for r in sorted(results, key=lambda r: (r.label, -(r.score or 0))):
        tag = " (duplicate)" if r.duplicate else (" LIPSYNC" if r.lipsync_fake else "")
        score = "-" if r.score is None else f"{r.score:.3f}"
        comb = "-" if r.combined_z is None else f"{r.combined_z:+.2f}"
        fused = "-" if r.fused_risk is None else f"{r.fused_risk:.3f}"
        name = Path(r.file).name[:70]
        print(f"{r.label:5} {score:>8} {comb:>6} {fused:>6} {r.fused_level or '-':10} {name}{tag}")
    for group in ("all_fakes", "lipsync_fakes"):
        block = report[group]
        print(f"\n== {group}: {block['positives']} fakes vs {block['reals']} reals (per clip AUC)")
        for cue, value in block["cue_auc"].items():
            print(f"  cue {cue:16s} {value:.3f}")
        print(f"  temporal session score {block['temporal_auc']:.3f}")
        fused, with_audio = block["fused_auc"], block["fused_auc_with_audio"]
        print(f"  fused session risk     {fused:.3f} (with audio only: {with_audio:.3f})")
        print(f"  temporal detection rate at 0.5: {block['temporal_detect_rate_0.5']:.2f}")
    print("\n== false alerts on real clips")
    for key, value in report["false_alerts"].items():
        print(f"  {key:34s} {value:.3f}" if isinstance(value, float) else f"  {key:34s} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="set with MANIFEST.tsv")
    parser.add_argument("--cache", type=Path, help="cache tracked faces here (npz per clip)")
    parser.add_argument("--config", type=Path, help="monitor config TOML for the fused run")
    parser.add_argument("--no-fused", action="store_true", help="skip the full-pipeline run")
    parser.add_argument("--json", type=Path, help="write per-clip results and metrics here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if not (args.data / "MANIFEST.tsv").exists():
        parser.error(f"{args.data} has no MANIFEST.tsv")
    config = load_config(args.config)
    results = []
    for row in manifest_rows(args.data):
        clip = args.data / row["file"]
        result = ClipResult(
            file=row["file"],
            label=row["label"],
            lipsync_fake=is_lipsync_fake(row.get("notes") or ""),
            duplicate=is_duplicate_row(row),
            has_audio=row.get("has_audio", "yes") == "yes",
        )
        frames = clip_frames(clip, args.cache, config.face)
        score_temporal(frames, config, result)
        if not args.no_fused:
            score_fused(clip, frames, config, result)
        print(f"{row['label']} {result.score} {result.fused_risk} {row['file']}", file=sys.stderr)
        results.append(result)

    directions = {
        name: cue.direction
        for name, cue in TemporalDetector(MonitorConfig()).calibration.cues.items()
    }
    fakes = [r for r in results if r.label == "fake" and not r.duplicate]
    report = {
        "data": str(args.data),
        "all_fakes": metric_block(results, fakes, directions),
        "lipsync_fakes": metric_block(results, [r for r in fakes if r.lipsync_fake], directions),
        "false_alerts": false_alerts(results),
    }
    print_report(results, report)
    if args.json:
        args.json.write_text(
            json.dumps({"report": report, "clips": [asdict(r) for r in results]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
