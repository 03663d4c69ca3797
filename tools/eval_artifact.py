#!/usr/bin/env python3
"""Evaluate the artifact detector, alone and fused, on a labelled clip set (dev by default).

    .venv/bin/python tools/eval_artifact.py [--data ../shared/data/dev] [--out DIR] [--jobs 2]

Every clip of the MANIFEST (DUPLICATE SOURCE rows are scored but left out of every
aggregate) is measured in two conditions: as recorded, and through tools/eval.py's
call-like re-encode (x264 crf 23, fit in 960x540, first 12 s; video-only clips get the
same video settings). Per clip and condition:

- the detector alone: its session score and z (the ``summary`` evidence), every window's
  value, z and score, the region its strongest window names;
- the fused session: a full SessionAnalyzer run with the default detectors and fusion
  (faces tracked once and replayed), its summary risk and level, and its alerts.

Reported: per-clip AUC, real against fake, for lip-sync fakes on real video, face swaps
and reenactment, generated talking heads, and all fakes, with counts; how many fakes
score above their own real input (pairs in the notes); the levels genuine clips end in;
and shortcut checks (sample rate, frame rate, leading silence, resolution against the
score). ``windows.json`` keeps every window's value on every clip, reproducibly, for
fusion work. Measure here; never train or tune here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from monitor.training.artifact import WORKER_ENVIRONMENT, auc

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("eval_artifact")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dev"
CONDITIONS = ("recorded", "eval_reencode")
CATEGORIES = ("lipsync", "faceswap", "talking_head", "all_fakes")


@dataclass(frozen=True)
class DevClip:
    file: str
    label: str
    category: str  # real | lipsync | faceswap | talking_head | other
    duplicate: bool
    has_audio: bool
    notes: str
    pair_of: str | None  # a fake's real input named in the notes ("PAIRED real = ...")


def category(label: str, notes: str) -> str:
    if label == "real":
        return "real"
    upper = notes.upper()
    if upper.startswith("LIPSYNC-FAKE"):
        return "lipsync"
    if "FACE-SWAP" in upper or "FACE SWAP" in upper or "NEURALTEXTURES" in upper:
        return "faceswap"
    lowered = notes.lower()
    if "wav2lip" in lowered:
        return "lipsync_nonphotoreal"  # Wav2Lip on an animated painting
    return "talking_head"


def read_set(data: Path) -> list[DevClip]:
    from monitor.evaluation.dataset import is_duplicate, manifest_rows

    clips = []
    for row in manifest_rows(data):
        notes = row.get("notes") or ""
        match = re.search(r"PAIRED real(?: input)? = (\S+)", notes)
        clips.append(
            DevClip(
                file=row["file"],
                label=row["label"],
                category=category(row["label"], notes),
                duplicate=is_duplicate(notes),
                has_audio=row.get("has_audio", "yes") == "yes",
                notes=notes,
                pair_of=match.group(1).rstrip(";,.)") if match else None,
            )
        )
    return clips


@dataclass
class Result:
    file: str
    condition: str
    score: float | None = None
    z: float | None = None
    region: str | None = None
    rationale: str = ""
    windows: list[dict[str, Any]] = field(default_factory=list)
    fused_risk: float | None = None
    fused_level: str | None = None
    fused_peak_level: str | None = None
    fused_alerts: list[str] = field(default_factory=list)
    sample_rate: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    leading_silence_s: float | None = None
    errors: list[str] = field(default_factory=list)


def encode_video_only(source: Path, cache: Path) -> Path:
    """A clip without audio through eval.py's video settings (prepare_clip needs audio)."""
    from monitor.evaluation.variants import EncodeSettings, _VideoWriter, exact_rate, fit_size
    from monitor.media import VideoFrame
    from monitor.sources.file import FileSource

    settings = EncodeSettings()
    out = cache / "video_only" / f"{source.stem}.mp4"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.mp4")
    with FileSource(source) as media:
        info = media.info
        rate = exact_rate(info.fps or 25.0)
        writer = _VideoWriter(
            tmp, rate, fit_size(info.width or 2, info.height or 2, settings), settings
        )
        limit = int(settings.max_seconds * rate)
        try:
            for item in media:
                if isinstance(item, VideoFrame):
                    if writer.frames >= limit:
                        break
                    writer.add_rgb(item.image)
        finally:
            writer.close()
    tmp.replace(out)
    return out


def reencoded(path: Path, has_audio: bool, cache: Path) -> Path:
    from monitor.evaluation.variants import (
        EncodeSettings,
        VariantSpec,
        build_variant,
        prepare_clip,
    )

    if not has_audio:
        return encode_video_only(path, cache)
    clip = prepare_clip(path, cache / "eval", EncodeSettings(), kinds=("original",))
    spec = VariantSpec("genuine", clip.name, manipulated=False)
    return build_variant(spec, {clip.name: clip}, EncodeSettings())


def leading_silence(path: Path) -> float | None:
    """Seconds before the audio first reaches -40 dBFS in 20 ms frames (None: no audio)."""
    from monitor.media import AUDIO_RATE, AudioChunk
    from monitor.sources.file import FileSource

    with FileSource(path) as media:
        if not media.info.has_audio:
            return None
        t = 0.0
        for item in media:
            if isinstance(item, AudioChunk):
                frame = AUDIO_RATE // 50
                samples = item.samples
                for start in range(0, len(samples) - frame + 1, frame):
                    rms = float(np.sqrt(np.mean(samples[start : start + frame] ** 2)))
                    if rms > 0.01:
                        return round(item.t + start / AUDIO_RATE, 2)
                t = item.t_end
                if t > 20:
                    break
        return round(t, 2)


def evaluate_or_fail(job: tuple[DevClip, str, str, str]) -> Result:
    """:func:`evaluate`, a failure kept as the clip's error instead of ending the run."""
    try:
        return evaluate(job)
    except Exception as exc:  # noqa: BLE001 - one broken clip must not lose the others
        return Result(job[0].file, job[1], errors=[f"{type(exc).__name__}: {exc}"])


def evaluate(job: tuple[DevClip, str, str, str]) -> Result:
    clip, condition, data, cache_dir = job
    from monitor.config import load_config
    from monitor.detectors.artifact.detector import ArtifactDetector
    from monitor.pipeline import SessionAnalyzer
    from monitor.sources.file import FileSource
    from monitor.training.faces import CachedFaceTracker, clip_frames, iter_windows

    cache = Path(cache_dir)
    path = Path(data) / clip.file
    result = Result(clip.file, condition)
    if condition == "eval_reencode":
        path = reencoded(path, clip.has_audio, cache)
    config = load_config()
    frames = clip_frames(path, cache / "faces", config.face)
    detector = ArtifactDetector(config)
    for window in iter_windows(frames, config.window):
        evidence = detector.analyze(window)
        if evidence.score is not None:
            result.windows.append(
                {
                    "t": [round(window.t_start, 2), round(window.t_end, 2)],
                    "logit": evidence.fields["logit"],
                    "z": evidence.fields["z"],
                    "score": round(evidence.score, 4),
                    "region": evidence.fields["region"],
                }
            )
    summary = detector.summarize()
    if summary is not None:
        result.score = summary.score
        result.z = summary.fields.get("z")
        result.region = summary.fields.get("region")
        result.rationale = summary.rationale
    events: list[dict[str, Any]] = []
    with FileSource(path) as source:
        info = source.info
        result.sample_rate, result.fps = info.sample_rate, info.fps
        result.width, result.height = info.width, info.height
        analyzer = SessionAnalyzer(
            config,
            session="eval",
            participant=clip.file[:60],
            emit=events.append,
            face_tracker=CachedFaceTracker(frames),
        )
        analyzer.start(info)
        for item in source:
            analyzer.add(item)
        fused = analyzer.finish(reason="end of input")
    # Schema 2: the verdict is the highest level reached, final_level where it ended.
    result.fused_risk = fused["risk"] if fused["verdict"] != "unknown" else None
    result.fused_level = fused["final_level"]
    result.fused_peak_level = fused["verdict"]
    result.fused_alerts = [
        f"{e['previous_level']}->{e['level']} at {e['t_end']}"
        for e in events
        if e["type"] == "alert"
    ]
    result.errors = [e["message"] for e in events if e["type"] == "error"]
    result.leading_silence_s = leading_silence(path)
    return result


def metrics(clips: list[DevClip], results: list[Result], condition: str) -> dict[str, Any]:
    by_file = {r.file: r for r in results if r.condition == condition}
    usable = [c for c in clips if not c.duplicate and c.file in by_file]
    reals = [c for c in usable if c.label == "real"]
    out: dict[str, Any] = {}

    def values(group: list[DevClip], attribute: str) -> list[float]:
        return [
            math.nan
            if getattr(by_file[c.file], attribute) is None
            else getattr(by_file[c.file], attribute)
            for c in group
        ]

    groups = {
        "lipsync": [c for c in usable if c.category == "lipsync"],
        "faceswap": [c for c in usable if c.category == "faceswap"],
        "talking_head": [c for c in usable if c.category == "talking_head"],
        "all_fakes": [c for c in usable if c.label == "fake"],
    }
    for name, fakes in groups.items():
        block: dict[str, Any] = {"fakes": len(fakes), "reals": len(reals)}
        for attribute in ("score", "z", "fused_risk"):
            block[f"{attribute}_auc"] = round(
                auc(values(fakes, attribute), values(reals, attribute)), 3
            )
        with_audio = [c for c in reals if c.has_audio]
        block["fused_risk_auc_reals_with_audio"] = round(
            auc(values(fakes, "fused_risk"), values(with_audio, "fused_risk")), 3
        )
        block["flagged_detector_0.5"] = sum((by_file[c.file].score or 0) >= 0.5 for c in fakes)
        block["fused_suspicious_or_alert"] = sum(
            by_file[c.file].fused_peak_level in ("suspicious", "alert") for c in fakes
        )
        out[name] = block
    pairs = []
    for fake in usable:
        if fake.pair_of is None:
            continue
        real = next((c for c in clips if c.file.endswith(fake.pair_of) and c.label == "real"), None)
        if real is None or real.file not in by_file:
            continue
        fz, rz = by_file[fake.file].z, by_file[real.file].z
        pairs.append({"fake": fake.file, "real": real.file, "fake_z": fz, "real_z": rz})
    out["pairs"] = pairs
    out["pairs_fake_above_real"] = sum(
        p["fake_z"] is not None and p["real_z"] is not None and p["fake_z"] > p["real_z"]
        for p in pairs
    )
    out["genuine"] = {
        "clips": len(reals),
        "final_levels": {
            level: sum(by_file[c.file].fused_level == level for c in reals)
            for level in ("clear", "suspicious", "alert", "unknown")
        },
        "verdicts": {
            level: sum(by_file[c.file].fused_peak_level == level for c in reals)
            for level in ("clear", "suspicious", "alert", "unknown")
        },
        "ended_in_alert": [c.file for c in reals if by_file[c.file].fused_level == "alert"],
        "verdict_alert": [c.file for c in reals if by_file[c.file].fused_peak_level == "alert"],
        "detector_sessions_over_0.5": [
            c.file for c in reals if (by_file[c.file].score or 0) >= 0.5
        ],
        "windows": sum(len(by_file[c.file].windows) for c in reals),
        "windows_over_0.5": sum(w["score"] >= 0.5 for c in reals for w in by_file[c.file].windows),
    }
    # Shortcuts: would a file property alone separate fakes from reals here, and does the
    # detector's score follow it?
    everyone = [c for c in usable]
    labels = np.array([c.label == "fake" for c in everyone])
    scores = np.array(values(everyone, "z"), dtype=float)
    shortcut: dict[str, Any] = {}
    for attribute in ("sample_rate", "fps", "leading_silence_s", "height"):
        prop = np.array(
            [
                math.nan
                if getattr(by_file[c.file], attribute) is None
                else float(getattr(by_file[c.file], attribute))
                for c in everyone
            ]
        )
        ok = np.isfinite(prop) & np.isfinite(scores)
        entry: dict[str, Any] = {
            "property_auc_fake_vs_real": round(auc(prop[labels & ok], prop[~labels & ok]), 3)
        }
        if ok.sum() > 3:
            from scipy.stats import spearmanr

            entry["spearman_with_z"] = round(float(spearmanr(prop[ok], scores[ok]).statistic), 3)
            entry["spearman_with_z_reals_only"] = round(
                float(spearmanr(prop[ok & ~labels], scores[ok & ~labels]).statistic), 3
            )
        shortcut[attribute] = entry
    out["shortcuts"] = shortcut
    return out


def print_table(clips: list[DevClip], results: list[Result], report: dict[str, Any]) -> None:
    info = {c.file: c for c in clips}
    for condition in CONDITIONS:
        print(f"\n== {condition}")
        print(f"{'category':22} {'z':>6} {'score':>6} {'fused':>6} {'level':10} region       clip")
        rows = [r for r in results if r.condition == condition]
        rows.sort(key=lambda r: (info[r.file].category, -(r.z or -99)))
        for r in rows:
            c = info[r.file]
            z = "-" if r.z is None else f"{r.z:+.2f}"
            score = "-" if r.score is None else f"{r.score:.3f}"
            fused = "-" if r.fused_risk is None else f"{r.fused_risk:.3f}"
            tag = " (dup)" if c.duplicate else ""
            print(
                f"{c.category:22} {z:>6} {score:>6} {fused:>6} {r.fused_level or '-':10} "
                f"{(r.region or '-'):12} {Path(r.file).name[:60]}{tag}"
            )
        block = report[condition]
        for name in CATEGORIES:
            b = block[name]
            print(
                f"  {name:13s} {b['fakes']:2d} fakes vs {b['reals']} reals: detector AUC "
                f"{b['z_auc']:.3f}, fused risk AUC {b['fused_risk_auc']:.3f} "
                f"(reals with audio {b['fused_risk_auc_reals_with_audio']:.3f}); "
                f"flagged {b['fused_suspicious_or_alert']}"
            )
        above, pairs = block["pairs_fake_above_real"], len(block["pairs"])
        print(f"  pairs with the fake above its real input: {above}/{pairs}")
        print(f"  genuine: {block['genuine']}")
        print(f"  shortcuts: {block['shortcuts']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dfmon_artifact_eval"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/dfmon_artifact_eval/out"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (args.data / "MANIFEST.tsv").exists():
        sys.stderr.write(f"eval_artifact: {args.data} has no MANIFEST.tsv\n")
        return 2
    started = time.monotonic()
    clips = read_set(args.data)
    conditions = [c for c in args.conditions.split(",") if c]
    jobs = [
        (c, condition, str(args.data), str(args.cache)) for condition in conditions for c in clips
    ]
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    results: list[Result] = []
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        for i, result in enumerate(pool.map(evaluate_or_fail, jobs), start=1):
            results.append(result)
            sys.stderr.write(f"\r{i}/{len(jobs)} ({time.monotonic() - started:.0f} s)")
    sys.stderr.write("\n")
    report = {condition: metrics(clips, results, condition) for condition in conditions}
    report["runtime_s"] = round(time.monotonic() - started, 1)
    report["load_average"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    windows = {
        f"{r.file}|{r.condition}": {
            "label": next(c.label for c in clips if c.file == r.file),
            "category": next(c.category for c in clips if c.file == r.file),
            "windows": r.windows,
        }
        for r in results
    }
    (args.out / "windows.json").write_text(json.dumps(windows))
    (args.out / "clips.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    print_table(clips, results, {k: v for k, v in report.items() if k in conditions})
    print(f"\n{report['runtime_s']} s; load average {report['load_average']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
