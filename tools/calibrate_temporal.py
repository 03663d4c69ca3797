#!/usr/bin/env python3
"""Calibrate the temporal detector's cues against genuine speech in the training pool.

    .venv/bin/python tools/calibrate_temporal.py [--data ../shared/data/train] [--cache DIR]

For every clip of the pool's MANIFEST (rows marked DUPLICATE SOURCE count once: they are
skipped) the face is tracked, cut into the pipeline's windows, and every cue measured.
Genuine-speech statistics come from the REAL clips only: per cue the mean and standard
deviation over windows (each clip weighing the same, however long) and over clips' medians.
The pool's fakes decide only each cue's direction and whether it is fused at all; no
threshold is fitted to them. A cue is fused when (1) its per-clip AUC, fake against real, reaches
--min-auc in one direction, and (2) where the pool has fakes PAIRED with their own real input,
at least --min-pair-agreement of those pairs move the cue the same way. The pairs matter most:
they show what the manipulation does to one person, free of who the person is. The result,
with the clip list and the date, goes to monitor/detectors/temporal_calibration.json; with
``--landmark-interval 2`` (landmarks on every second frame) to the file beside it that the
detector reads under that setting, temporal_calibration_landmark_interval_2.json.

A call does not deliver the camera's pixels: it scales and compresses them, harder when the
network is poor. So every real clip is measured twice, as recorded and re-encoded the way a
constrained call would carry it (``CALL_ENCODING``), and both count as genuine speech. A cue
that compression alone moves gets a wider genuine spread, hence smaller z-scores, instead
of raising alarms on every low-bandwidth participant. Which cues are fused, and in which
direction, is decided on the recordings as they are, where a manipulation's trace is
clearest (the call copies of the fakes are measured and reported, not used to decide).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.config import FaceConfig, MonitorConfig, load_config
from monitor.detectors.temporal.calibration import (
    DEFAULT_PATH,
    TRACKING_KEYS,
    Calibration,
    CueCalibration,
    Stats,
    variant_path,
)
from monitor.detectors.temporal.cues import CUE_NAMES
from monitor.detectors.temporal.detector import TemporalDetector
from monitor.errors import InputError
from monitor.evaluation.dataset import is_duplicate_row, manifest_rows
from monitor.evaluation.metrics import auc_or_nan as auc
from monitor.evaluation.variants import EncodeSettings, prepare_clip
from monitor.training.faces import clip_frames, iter_windows

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("calibrate_temporal")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train"
# A constrained call: 640x360 at most, H.264 at a quality a few hundred kb/s gives.
CALL_ENCODING = EncodeSettings(crf=28, max_long_side=640, max_short_side=360, max_seconds=20.0)
CONDITIONS = ("recorded", "call")


@dataclass
class ClipCues:
    file: str
    label: str
    notes: str
    windows: list[dict[str, float]]  # raw cue values per sufficient window
    condition: str = "recorded"  # or "call": re-encoded with CALL_ENCODING

    def median(self, cue: str) -> float:
        values = np.array([w[cue] for w in self.windows])
        values = values[np.isfinite(values)]
        return float(np.median(values)) if len(values) else math.nan


def call_copy(clip: Path, cache: Path) -> Path:
    """``clip`` re-encoded with CALL_ENCODING (video only matters here), cached."""
    return prepare_clip(clip, cache / "call", CALL_ENCODING, kinds=("original",)).video_tracks[
        "original"
    ]


def measure_clips(
    data: Path, rows: list[dict[str, str]], config: MonitorConfig, cache: Path, condition: str
) -> list[ClipCues]:
    """Raw cue values of every sufficient window of every clip, in one condition."""
    neutral = Calibration(cues={})  # measure only: no statistics needed yet
    clips = []
    for row in rows:
        path = data / row["file"]
        if condition == "call":
            try:
                path = call_copy(path, cache)
            except InputError as exc:
                log.warning("%s: no call copy (%s)", row["file"], exc)
                continue
        frames = clip_frames(path, cache, config.face)
        detector = TemporalDetector(config, calibration=neutral)
        windows = []
        for window in iter_windows(frames, config.window):
            cues = detector.measure_window(window)
            if cues is not None:
                windows.append(cues)
        log.info("%s (%s): %d windows", row["file"], condition, len(windows))
        if windows:
            clips.append(
                ClipCues(row["file"], row["label"], row.get("notes", ""), windows, condition)
            )
    return clips


def find_pairs(
    rows: list[dict[str, str]], clips: list[ClipCues]
) -> list[tuple[ClipCues, ClipCues]]:
    """(fake, its real input) for fake rows whose notes say 'PAIRED with real <file>'.

    The manifest abbreviates some names ('..._AVLips_0_real_1.mp4'): the real clip whose file
    name ends with the named tail is the pair."""
    by_file = {c.file: c for c in clips}
    pairs = []
    for row in rows:
        match = re.search(r"PAIRED with real (\S+)", row.get("notes", ""))
        fake = by_file.get(row["file"])
        if match is None or fake is None or row["label"] != "fake":
            continue
        tail = match.group(1).lstrip(".").rstrip(".,;)")
        reals = [c for c in clips if c.label == "real" and Path(c.file).name.endswith(tail)]
        if len(reals) == 1:
            pairs.append((fake, reals[0]))
    return pairs


def pair_agreement(pairs: list[tuple[ClipCues, ClipCues]], cue: str, direction: int) -> float:
    """Fraction of pairs whose fake moves the cue (session median) in ``direction``; nan if none."""
    deltas = [fake.median(cue) - real.median(cue) for fake, real in pairs]
    deltas = [d for d in deltas if math.isfinite(d)]
    if not deltas:
        return math.nan
    return sum(direction * d > 0 for d in deltas) / len(deltas)


def balanced_stats(per_clip: list[np.ndarray]) -> Stats:
    """Mean and std over values pooled from clips, each clip weighing the same."""
    values, weights = [], []
    for clip_values in per_clip:
        clip_values = clip_values[np.isfinite(clip_values)]
        if len(clip_values):
            values.append(clip_values)
            weights.append(np.full(len(clip_values), 1.0 / len(clip_values)))
    pooled, w = np.concatenate(values), np.concatenate(weights)
    mean = float(np.average(pooled, weights=w))
    std = float(np.sqrt(np.average((pooled - mean) ** 2, weights=w)))
    return Stats(mean, max(std, 1e-6))


def calibrate(
    clips: list[ClipCues],
    pairs: list[tuple[ClipCues, ClipCues]],
    min_auc: float,
    min_pair_agreement: float,
) -> tuple[Calibration, dict[str, dict[str, float]]]:
    """``pairs`` are the recorded fakes with their recorded real inputs."""
    real = [c for c in clips if c.label == "real"]  # genuine speech: every condition
    recorded_real = [c for c in real if c.condition == "recorded"]
    fake = [c for c in clips if c.label == "fake" and c.condition == "recorded"]
    if len(real) < 3:
        raise SystemExit(f"need at least 3 real clips with a face, got {len(real)}")
    cues: dict[str, CueCalibration] = {}
    evidence: dict[str, dict[str, float]] = {}
    for name in CUE_NAMES:
        window_stats = balanced_stats([np.array([w[name] for w in c.windows]) for c in real])
        medians = np.array([c.median(name) for c in real])
        medians = medians[np.isfinite(medians)]
        session_stats = Stats(float(medians.mean()), max(float(medians.std()), 1e-6))
        value = auc([c.median(name) for c in fake], [c.median(name) for c in recorded_real])
        direction = 1 if not math.isfinite(value) or value >= 0.5 else -1
        directed = max(value, 1 - value) if math.isfinite(value) else 0.5
        agreement = pair_agreement(pairs, name, direction)
        pairs_agree = len(pairs) < 3 or (
            math.isfinite(agreement) and agreement >= min_pair_agreement
        )
        weight = 1.0 if directed >= min_auc and pairs_agree else 0.0
        call_auc = auc(
            [c.median(name) for c in clips if c.label == "fake" and c.condition == "call"],
            [c.median(name) for c in real if c.condition == "call"],
        )
        evidence[name] = {"auc": value, "pair_agreement": agreement, "call_auc": call_auc}
        cues[name] = CueCalibration(
            {"window": window_stats, "session": session_stats}, direction, weight
        )
    calibration = Calibration(cues)
    if not any(c.weight > 0 for c in cues.values()):
        raise SystemExit("no cue reached --min-auc on this pool; nothing to fuse")
    # Standardise the fused value itself against genuine speech, at both levels.
    window_combined = [
        np.array(
            [calibration.combine(calibration.z_scores(w, "window"), "window") for w in c.windows],
            float,
        )
        for c in real
    ]
    session_combined = np.array(
        [
            calibration.combine(
                calibration.z_scores({n: c.median(n) for n in CUE_NAMES}, "session"), "session"
            )
            for c in real
        ],
        float,
    )
    calibration.combined = {
        "window": balanced_stats(window_combined),
        "session": Stats(
            float(np.nanmean(session_combined)), max(float(np.nanstd(session_combined)), 1e-6)
        ),
    }
    return calibration, evidence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pool with MANIFEST.tsv")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/dfmon_temporal_cache"),
        help="cache of tracked faces and call copies (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="calibration JSON to write (default: the committed file for the tracking settings, "
        f"{DEFAULT_PATH.name} for the product's)",
    )
    parser.add_argument("--min-auc", type=float, default=0.6, help="fuse cues at least this good")
    parser.add_argument(
        "--min-pair-agreement",
        type=float,
        default=0.75,
        help="fraction of PAIRED fakes that must move a fused cue its way",
    )
    parser.add_argument(
        "--landmark-interval",
        type=int,
        default=FaceConfig.landmark_interval,
        help="[face] landmark_interval to track with (default %(default)s, the product's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not (args.data / "MANIFEST.tsv").exists():
        parser.error(f"{args.data} has no MANIFEST.tsv")
    config = load_config(face={"landmark_interval": args.landmark_interval})
    out = args.out or variant_path(config.face)
    rows = [r for r in manifest_rows(args.data) if not is_duplicate_row(r)]
    clips = [
        clip
        for condition in CONDITIONS
        for clip in measure_clips(args.data, rows, config, args.cache, condition)
    ]
    pairs = find_pairs(rows, [c for c in clips if c.condition == "recorded"])
    calibration, evidence = calibrate(clips, pairs, args.min_auc, args.min_pair_agreement)
    calibration.meta = {
        "detector": TemporalDetector.name,
        "detector_version": TemporalDetector.version,
        "created": dt.date.today().isoformat(),
        "data": "/".join(args.data.resolve().parts[-3:]),
        "window_s": config.window.window_s,
        "hop_s": config.window.hop_s,
        "tracking": {key: getattr(config.face, key) for key in TRACKING_KEYS},
        "min_auc": args.min_auc,
        "min_pair_agreement": args.min_pair_agreement,
        "train_evidence": {
            cue: {k: (round(v, 3) if math.isfinite(v) else None) for k, v in values.items()}
            for cue, values in evidence.items()
        },
        "conditions": {"recorded": "as in the pool", "call": CALL_ENCODING.describe()},
        "pairs": [[fake.file, real.file] for fake, real in pairs],
        "real_clips": [c.file for c in clips if c.label == "real" and c.condition == "recorded"],
        "fake_clips": [c.file for c in clips if c.label == "fake" and c.condition == "recorded"],
        "clips_per_condition": {
            condition: sum(c.condition == condition for c in clips) for condition in CONDITIONS
        },
        "real_windows": sum(len(c.windows) for c in clips if c.label == "real"),
    }
    out.write_text(json.dumps(calibration.to_json(), indent=1) + "\n")
    for name in CUE_NAMES:
        cue = calibration.cues[name]
        stats = cue.stats["window"]
        print(
            f"{name:16s} train AUC {evidence[name]['auc']:.3f} "
            f"(call copies {evidence[name]['call_auc']:.3f}) "
            f"pairs agree {evidence[name]['pair_agreement']:.2f} direction {cue.direction:+d} "
            f"weight {cue.weight:g} window {stats.mean:.3f}+-{stats.std:.3f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
