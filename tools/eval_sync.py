"""Evaluate the lip-sync detectors on held-out dev clips: learned model vs baseline.

Conditions per held-out real clip (every dev real clip with audio that the shipped model's
training record does not list, nor any record given with ``--also-leave-out``):
genuine, audio shifted by -400/-200/+200/+400 ms (positive: audio later), and audio
swapped with two other held-out clips of different sources. Windows are built exactly
as the pipeline builds them (2 s, hop 0.5 s, 0.6 s audio context, session noise floor).

Reported, per detector:
* window AUC of the score, genuine vs each manipulation (higher score = manipulated);
* offset accuracy: share of windows whose offset is within one frame (40 ms) of the truth
  (0 for genuine audio, the shift otherwise), and the same relative to the clip's own
  session-level offset with genuine audio (real recordings have offsets of their own);
* the same at clip level from each detector's session summary (mean lag curve);
* the dev lip-sync fakes (LIPSYNC-FAKE rows, with their own audio) vs the held-out real
  clips: AUC of the score, of low confidence, and of |offset|.

    .venv/bin/python tools/eval_sync.py [--backend onnx] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from monitor.evaluation.calibration_run import listed_training_files
from monitor.evaluation.metrics import auc_or_nan as auc
from monitor.sync.checkpoint import MODEL_NAME, WEIGHTS_PATH
from monitor.training import sync_data

log = logging.getLogger("eval_sync")

SHIFTS_S = (-0.4, -0.2, 0.2, 0.4)
FRAME_MS = 40.0


def make_detectors(backend: str, with_baseline: bool) -> dict:
    from monitor.config import MonitorConfig
    from monitor.detectors.lip_sync_learned import LearnedSyncDetector
    from monitor.sync.backends import BatchingRunner

    config = MonitorConfig()
    runner = BatchingRunner(backend)
    factories = {"learned": lambda: LearnedSyncDetector(config, runner=runner)}
    if with_baseline:
        try:
            from monitor.detectors.baseline_sync import BaselineSyncDetector

            factories["baseline"] = lambda: BaselineSyncDetector(config)
        except ImportError:
            log.warning("baseline detector not available")
    return factories


def source_of(clip: sync_data.CachedClip) -> str:
    return clip.name.split("__")[0]


def run_condition(factories: dict, clip, frames, shift_s: float, donor) -> dict:  # noqa: ANN001
    """Per detector: window records and the session summary of one clip under one condition."""
    detectors = {name: make() for name, make in factories.items()}
    records: dict[str, list] = {name: [] for name in detectors}
    for window in sync_data.clip_windows(clip, shift_s=shift_s, donor=donor, frames=frames):
        for name, detector in detectors.items():
            evidence = detector.analyze(window)
            if evidence.score is None:
                continue
            records[name].append(
                {
                    "t": window.t_start,
                    "score": evidence.score,
                    "offset_ms": evidence.fields.get("offset_ms"),
                    "confidence": evidence.fields.get("confidence"),
                }
            )
    summaries = {}
    for name, detector in detectors.items():
        summary = detector.summarize() if hasattr(detector, "summarize") else None
        if summary is not None and summary.score is not None:
            summaries[name] = {
                "score": summary.score,
                "offset_ms": summary.fields.get("offset_ms"),
                "confidence": summary.fields.get("confidence"),
            }
    return {"windows": records, "summary": summaries}


def offset_hits(rows: list[dict], truth_ms: float) -> list[bool]:
    return [r["offset_ms"] is not None and abs(r["offset_ms"] - truth_ms) <= FRAME_MS for r in rows]


def evaluate(
    backend: str, with_baseline: bool, limit: int | None = None, seen: frozenset[str] = frozenset()
) -> dict:
    heldout_jobs = [
        j
        for j in sync_data.evaluation_jobs()
        if j.split == "heldout" and str(Path(j.source).relative_to(sync_data.DATA_ROOT)) not in seen
    ]
    fake_jobs = [j for j in sync_data.evaluation_jobs() if j.split == "fake"]
    sync_data.run_jobs(heldout_jobs + fake_jobs, 2)
    all_clips = [sync_data.load_cached(j.cache_path) for j in heldout_jobs]
    clips = all_clips[-limit:] if limit else all_clips
    fakes = [sync_data.load_cached(j.cache_path) for j in fake_jobs][:limit]
    factories = make_detectors(backend, with_baseline)
    names = list(factories)

    # results[detector][condition] -> list of window records; clip summaries likewise.
    windows: dict[str, dict[str, list]] = {n: defaultdict(list) for n in names}
    clip_level: dict[str, dict[str, list]] = {n: defaultdict(list) for n in names}
    per_clip: list[dict] = []
    started = time.perf_counter()
    for i, clip in enumerate(clips):
        frames = clip.frame_features()
        donors = [c for c in all_clips if source_of(c) != source_of(clip)]
        conditions: list[tuple[str, float, object, float | None]] = [("genuine", 0.0, None, 0.0)]
        conditions += [(f"shift{int(s * 1000):+d}", s, None, s * 1000.0) for s in SHIFTS_S]
        for k in (1, 2):
            donor = donors[(i + k) % len(donors)]
            conditions.append((f"swap{k}", 0.0, donor, None))
        row: dict = {"clip": clip.name, "frames": len(frames)}
        for condition, shift, donor, truth in conditions:
            result = run_condition(factories, clip, frames, shift, donor)
            for name in names:
                recs = result["windows"][name]
                for r in recs:
                    r["truth_ms"] = truth
                    r["clip"] = clip.name
                windows[name][condition] += recs
                summary = result["summary"].get(name)
                if summary is not None:
                    summary = {**summary, "truth_ms": truth, "clip": clip.name}
                    clip_level[name][condition].append(summary)
                if condition == "genuine":
                    row[f"{name}_windows"] = len(recs)
                    row[f"{name}_mean_score"] = _mean([r["score"] for r in recs])
                    row[f"{name}_offset_ms"] = summary["offset_ms"] if summary else None
                    row[f"{name}_confidence"] = summary["confidence"] if summary else None
        per_clip.append(row)
        log.info(
            "%d/%d %s done (%.0f s)", i + 1, len(clips), clip.name, time.perf_counter() - started
        )

    report: dict = {
        "backend": backend,
        "heldout_clips": [c.name for c in clips],
        "per_clip": per_clip,
    }
    for name in names:
        report[name] = _metrics(windows[name], clip_level[name])

    # Lip-sync fakes (own audio) against the held-out real clips (genuine).
    fake_windows: dict[str, list] = {n: [] for n in names}
    fake_summaries: dict[str, list] = {n: [] for n in names}
    for clip in fakes:
        result = run_condition(factories, clip, clip.frame_features(), 0.0, None)
        for name in names:
            fake_windows[name] += result["windows"][name]
            if name in result["summary"]:
                fake_summaries[name].append({**result["summary"][name], "clip": clip.name})
    for name in names:
        real = windows[name]["genuine"]
        real_clips = clip_level[name]["genuine"]
        fake = fake_windows[name]
        report[name]["lipsync_fakes"] = {
            "fake_clips": len(fakes),
            "fake_windows": len(fake),
            "real_windows": len(real),
            "window_auc_score": auc([r["score"] for r in fake], [r["score"] for r in real]),
            "window_auc_low_confidence": auc(
                [-r["confidence"] for r in fake if r["confidence"] is not None],
                [-r["confidence"] for r in real if r["confidence"] is not None],
            ),
            "window_auc_abs_offset": auc(
                [abs(r["offset_ms"]) for r in fake if r["offset_ms"] is not None],
                [abs(r["offset_ms"]) for r in real if r["offset_ms"] is not None],
            ),
            "clip_auc_score": auc(
                [s["score"] for s in fake_summaries[name]], [s["score"] for s in real_clips]
            ),
            "clip_auc_low_confidence": auc(
                [-s["confidence"] for s in fake_summaries[name] if s["confidence"] is not None],
                [-s["confidence"] for s in real_clips if s["confidence"] is not None],
            ),
            "fake_clip_summaries": fake_summaries[name],
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _metrics(windows: dict[str, list], clips: dict[str, list]) -> dict:
    genuine = [r["score"] for r in windows["genuine"]]
    shifted200 = [r["score"] for c in ("shift-200", "shift+200") for r in windows[c]]
    shifted400 = [r["score"] for c in ("shift-400", "shift+400") for r in windows[c]]
    swapped = [r["score"] for c in ("swap1", "swap2") for r in windows[c]]
    out: dict = {
        "windows": {c: len(v) for c, v in windows.items()},
        "window_auc": {
            "shift_200": auc(shifted200, genuine),
            "shift_400": auc(shifted400, genuine),
            "shifted": auc(shifted200 + shifted400, genuine),
            "swapped": auc(swapped, genuine),
            "all": auc(shifted200 + shifted400 + swapped, genuine),
        },
        "window_offset_accuracy": {},
        "clip_auc": {},
        "clip_offset_accuracy": {},
    }
    for condition in ("genuine", "shift-400", "shift-200", "shift+200", "shift+400"):
        hits = [h for r in windows[condition] for h in offset_hits([r], r["truth_ms"])]
        out["window_offset_accuracy"][condition] = _mean([float(h) for h in hits])
        clip_hits = [h for r in clips[condition] for h in offset_hits([r], r["truth_ms"])]
        out["clip_offset_accuracy"][condition] = _mean([float(h) for h in clip_hits])
    # Relative to each clip's own offset (its session-level offset with genuine audio):
    # real recordings carry constant audio-video offsets of their own (encoding, AVAD's
    # observation), so this isolates how well a shift is tracked.
    own = {s["clip"]: s["offset_ms"] for s in clips["genuine"] if s["offset_ms"] is not None}
    out["window_relative_offset_accuracy"] = {}
    for condition in ("genuine", "shift-400", "shift-200", "shift+200", "shift+400"):
        hits = [
            abs(r["offset_ms"] - (own[r["clip"]] + r["truth_ms"])) <= FRAME_MS
            for r in windows[condition]
            if r["offset_ms"] is not None and r["clip"] in own
        ]
        out["window_relative_offset_accuracy"][condition] = _mean([float(h) for h in hits])
    clip_genuine = [s["score"] for s in clips["genuine"]]
    clip_shift = [
        s["score"] for c in ("shift-400", "shift-200", "shift+200", "shift+400") for s in clips[c]
    ]
    clip_swap = [s["score"] for c in ("swap1", "swap2") for s in clips[c]]
    out["clip_auc"] = {
        "shifted": auc(clip_shift, clip_genuine),
        "swapped": auc(clip_swap, clip_genuine),
    }
    return out


def format_table(report: dict) -> str:
    names = [n for n in ("learned", "baseline") if n in report]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, getter) -> None:  # noqa: ANN001
        values = []
        for n in names:
            value = getter(report[n])
            values.append("-" if value is None or value != value else f"{value:.3f}")
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    for key in ("shift_200", "shift_400", "swapped", "all"):
        row(f"window AUC {key}", lambda r, k=key: r["window_auc"][k])
    for key in ("genuine", "shift-400", "shift-200", "shift+200", "shift+400"):
        row(f"window offset acc {key}", lambda r, k=key: r["window_offset_accuracy"][k])
    for key in ("genuine", "shift-400", "shift-200", "shift+200", "shift+400"):
        row(
            f"window offset acc {key}, relative to the clip's own offset",
            lambda r, k=key: r["window_relative_offset_accuracy"][k],
        )
    row("clip AUC shifted", lambda r: r["clip_auc"]["shifted"])
    row("clip AUC swapped", lambda r: r["clip_auc"]["swapped"])
    for key in ("genuine", "shift-400", "shift-200", "shift+200", "shift+400"):
        row(f"clip offset acc {key}", lambda r, k=key: r["clip_offset_accuracy"][k])
    row("lip-sync fakes window AUC (score)", lambda r: r["lipsync_fakes"]["window_auc_score"])
    row(
        "lip-sync fakes window AUC (low conf)",
        lambda r: r["lipsync_fakes"]["window_auc_low_confidence"],
    )
    row(
        "lip-sync fakes window AUC (|offset|)",
        lambda r: r["lipsync_fakes"]["window_auc_abs_offset"],
    )
    row("lip-sync fakes clip AUC (score)", lambda r: r["lipsync_fakes"]["clip_auc_score"])
    row(
        "lip-sync fakes clip AUC (low conf)",
        lambda r: r["lipsync_fakes"]["clip_auc_low_confidence"],
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate lip-sync detectors on held-out dev clips."
    )
    parser.add_argument("--backend", default="onnx", help="learned model backend (default onnx)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument(
        "--limit", type=int, help="only the first N held-out and fake clips (smoke)"
    )
    parser.add_argument(
        "--also-leave-out",
        type=Path,
        action="append",
        default=[],
        metavar="RECORD",
        help="another model's training record (NAME.training.json): leave its clips out too, "
        "so that two models are compared on clips neither trained on",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not sync_data.DATA_ROOT.exists():
        log.error("no data at %s", sync_data.DATA_ROOT)
        return 2
    shipped = WEIGHTS_PATH.with_name(f"{MODEL_NAME}.training.json")
    seen = listed_training_files(
        [shipped, *args.also_leave_out] if shipped.exists() else args.also_leave_out
    )
    report = evaluate(args.backend, not args.no_baseline, args.limit, frozenset(seen))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    for row in report["per_clip"]:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
