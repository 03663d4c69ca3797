"""The calibration run of ``tools/calibrate_decision.py``: clips, sessions, maps, thresholds.

Which clips: the training pool's (never dev). A detector's own training or calibration
clips would read more genuine than new speakers do and make the maps overconfident, so the
real clips are the sources the sync model's training split holds out for this
(``monitor.training.sync_data.DECISION_HELDOUT``), checked against every training record
(:func:`detector_training_files`), and the fakes are those no detector's record lists.
They are split into folds by source; every figure in the report is out of fold.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import FaceConfig, MonitorConfig, load_config
from monitor.decision import (
    CALIBRATION_PATH,
    LEVEL_RANK,
    EvidenceCalibration,
    FaceReadingCalibration,
    ScoreCalibration,
    SequentialDecision,
)
from monitor.detectors.temporal.calibration import calibration_file
from monitor.evaluation import calibrate, decide, genuine_calls
from monitor.evaluation.corpus import CorpusClip, collect_records, pick_donor, read_pool
from monitor.evaluation.sessions import (
    GENUINE,
    SessionRecord,
    detector_versions,
    shifts_and_swap,
)

PACKAGE = Path(__file__).resolve().parents[1]
# What each default detector is calibrated against (see calibrate.window_rows).
TARGETS = {"lip_sync": "audio", "temporal": "video"}
# Detectors whose map is fitted by their own tool and carried over unchanged: the artifact
# network trained on this pool's fakes, so its scores on them say nothing about fakes it
# never saw (tools/train_artifact.py fits a conservative map on held-out sources);
# lip_timing's score is already the logistic of its log-likelihood ratio, its map the
# identity with a cap chosen on the genuine-call corpus (docs/LIP_TIMING.md). Left out,
# either would be read as uncalibrated (clipped to uncalibrated_llr_limit).
FITTED_ELSEWHERE = {
    "artifact": "tools/train_artifact.py",
    "lip_timing": "tools/calibrate_lip_timing.py",
}
CALIBRATION_SHIFTS_MS = (200, 400)
# Thresholds are searched on this grid (nats).
THRESHOLD_GRID = tuple(round(0.25 * i, 2) for i in range(4, 121))
# Random orders in which the genuine sessions are chained into long calls.
CHAIN_ORDERS = 8


def detector_training_files(face: FaceConfig) -> set[str]:
    """Clips (``pool/real/x.mp4``) that the default detectors were trained or calibrated on:
    the list of the temporal calibration read under ``face``'s tracking and every training
    record's ``train_files`` (``monitor/models/*.training.json``)."""
    files: set[str] = set()
    temporal = calibration_file(face)
    if temporal.exists():
        data = json.loads(temporal.read_text())
        files.update(f"train/{name}" for name in data.get("real_clips", []))
        files.update(f"train/{name}" for name in data.get("fake_clips", []))
    files.update(listed_training_files((PACKAGE / "models").glob("*.training.json")))
    return files


def listed_training_files(records: Iterable[Path]) -> set[str]:
    """Clips (``pool/real/x.mp4``) that these training records (``NAME.training.json``) list."""
    return {f for record in records for f in json.loads(record.read_text()).get("train_files", [])}


def clip_file(clip: CorpusClip, data_root: Path) -> str:
    """The clip as ``pool/real/x.mp4``."""
    return str(Path(clip.path).relative_to(data_root))


def calibration_clips(data_root: Path, face: FaceConfig) -> list[CorpusClip]:
    """The sync model's held-out real clips (``DECISION_HELDOUT`` in its training split) and
    the pool's fakes that no detector trained or was calibrated on."""
    from monitor.training.sync_data import DECISION_HELDOUT

    used = detector_training_files(face)
    clips = read_pool(data_root, "train")
    reals = [c for c in clips if c.label == "real" and c.group in DECISION_HELDOUT]
    fakes = [c for c in clips if c.label == "fake" and clip_file(c, data_root) not in used]
    leaked = [c.key for c in reals if clip_file(c, data_root) in used]
    if leaked:
        raise RuntimeError(f"held-out clips a detector trained on: {leaked}")
    return reals + fakes


@dataclass
class CalibrationResult:
    calibration: EvidenceCalibration
    report: dict[str, Any]


def _carried_maps(
    packaged: EvidenceCalibration | None, versions: dict[str, str]
) -> dict[str, ScoreCalibration]:
    """The packaged maps of FITTED_ELSEWHERE detectors, where fitted on the running version."""
    if packaged is None:
        return {}
    carried = {}
    for detector in FITTED_ELSEWHERE:
        if detector in versions:
            found = packaged.for_detector(detector, versions[detector])
            if found is not None:
                carried[detector] = found
    return carried


def _fold_calibrations(
    rows: list[calibrate.WindowRow], fold_of_group: dict[str, int], folds: int, versions: dict
) -> dict[int, EvidenceCalibration]:
    """For each fold, maps fitted on the other folds' windows."""
    out = {}
    for fold in range(folds):
        maps = {}
        for detector in sorted({r.detector for r in rows}):
            train = [r for r in rows if r.detector == detector and fold_of_group[r.group] != fold]
            if len({r.manipulated for r in train}) == 2:
                maps[detector] = calibrate.fit_score_calibration(
                    [r.score for r in train], [r.manipulated for r in train]
                )
        out[fold] = EvidenceCalibration(maps, {d: versions[d] for d in maps if d in versions})
    return out


def _paths(
    sessions: Sequence[SessionRecord],
    calibrations: dict[str, EvidenceCalibration],
    config: MonitorConfig,
    versions: dict[str, str],
) -> list[list[float | None]]:
    """Each session's weighted window log-likelihood ratios (None: no evidence), out of fold."""
    out = []
    for record in sessions:
        decision = SequentialDecision.for_session(config, versions, calibrations[record.clip])
        out.append(
            [
                decision.update(evidence, span=(t_start, t_end)).weighted_llr
                for t_start, t_end, evidence in decide.record_windows(record)
            ]
        )
    return out


def face_side_llrs(record: SessionRecord, probe: SequentialDecision) -> list[float]:
    """The session's face-side nats, window by window (windows with face evidence only), as
    ``probe`` maps and splits them."""
    out = []
    for _, _, evidence in decide.record_windows(record):
        _, face = probe.split(probe.contributions(evidence)[0])
        if face is not None:
            out.append(face)
    return out


def fit_face_reading(
    records: Sequence[SessionRecord],
    clips: dict[str, CorpusClip],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    versions: dict[str, str],
) -> tuple[FaceReadingCalibration, dict[str, Any]]:
    """attack_model "per_face"'s face reading, from the genuine sessions of real clips and
    the sessions of fakes (each a face), read through the final maps; and its report.

    The spread between genuine faces is what the reading rests on, so it is fitted on every
    real clip of the pool, not only the held-out ones (17 clips put it at the fit's floor of
    0.05 nats, where a genuine face a little off the norm would read forged); those clips'
    face-side evidence is partly in-sample for the temporal and lip-timing calibrations."""
    probe = SequentialDecision.for_session(config, versions, calibration)
    genuine = [
        face_side_llrs(r, probe)
        for r in records
        if not r.manipulated and clips[r.clip].label == "real"
    ]
    forged = [face_side_llrs(r, probe) for r in records if clips[r.clip].label == "fake"]
    audio = set(config.decision.audio_attack_detectors)
    face_versions = {d: v for d, v in versions.items() if d not in audio}
    reading = calibrate.fit_face_reading(genuine, forged, probe.window_weight, face_versions)
    means = [[float(np.mean(x)) for x in faces if x] for faces in (genuine, forged)]
    report = {
        "sessions": {"genuine": len(genuine), "forged": len(forged)},
        "session_mean_auc": round(calibrate.auc(means[0], means[1]), 3),
        **reading.to_dict(),
    }
    return reading, report


def run(
    data_root: Path,
    *,
    cache_dir: Path,
    jobs: int,
    folds: int,
    calls_per_clip: int,
    max_seconds: float | None,
    config_path: str | None = None,
    log_path: Path | None = None,
) -> CalibrationResult:
    config = load_config(config_path)
    clips = calibration_clips(data_root, config.face)
    by_key = {c.key: c for c in clips}
    reals = [c for c in clips if c.label == "real"]
    fakes = [c for c in clips if c.label == "fake"]

    def variants_for(clip: CorpusClip, donors: dict[str, str]) -> tuple:
        if clip.label == "fake":
            return (GENUINE,)
        return shifts_and_swap(CALIBRATION_SHIFTS_MS, pick_donor(clip, reals, donors))

    records, _, skipped, timings = collect_records(
        reals + fakes,
        calls_per_clip=calls_per_clip,
        variants_for=variants_for,
        cache_dir=cache_dir,
        jobs=jobs,
        config_path=config_path,
        max_seconds=max_seconds,
        log_path=log_path,
    )
    # The face reading needs many faces: every real clip of the pool, as it is.
    more_faces = [c for c in read_pool(data_root, "train") if c.label == "real" and c not in reals]
    face_records, _, face_skipped, _ = collect_records(
        more_faces,
        calls_per_clip=calls_per_clip,
        variants_for=lambda clip, donors: (GENUINE,),
        cache_dir=cache_dir,
        jobs=jobs,
        config_path=config_path,
        max_seconds=max_seconds,
        log_path=log_path,
    )
    face_clips = {**by_key, **{c.key: c for c in more_faces}}
    versions = detector_versions(records)
    targets = {d: t for d, t in TARGETS.items() if d in versions}
    rows = calibrate.window_rows(records, by_key, targets)
    groups = sorted({c.group for c in clips})
    fold_of_group = dict(zip(groups, calibrate.group_folds(groups, folds).tolist(), strict=True))
    fold_maps = _fold_calibrations(rows, fold_of_group, folds, versions)
    final_maps = {}
    detectors_report = {}
    packaged = EvidenceCalibration.load(CALIBRATION_PATH) if CALIBRATION_PATH.exists() else None
    carried = _carried_maps(packaged, versions)
    for fold_map in fold_maps.values():
        fold_map.detectors.update(carried)
        fold_map.versions.update({d: versions[d] for d in carried})
    for detector in sorted(targets):
        mine = [r for r in rows if r.detector == detector]
        if len({r.manipulated for r in mine}) < 2:
            continue
        final_maps[detector] = calibrate.fit_score_calibration(
            [r.score for r in mine], [r.manipulated for r in mine]
        )
        oof = np.array(
            [
                fold_maps[fold_of_group[r.group]]
                .detectors.get(detector, ScoreCalibration(0, 0, 0, 0))
                .llr(r.score)
                for r in mine
            ]
        )
        labels = np.array([r.manipulated for r in mine])
        detectors_report[detector] = {
            "target": targets[detector],
            "windows": {"genuine": int((~labels).sum()), "manipulated": int(labels.sum())},
            "clips": {
                "genuine": len({r.clip for r in mine if not r.manipulated}),
                "manipulated": len({r.clip for r in mine if r.manipulated}),
            },
            "score_auc": round(
                calibrate.auc(
                    [r.score for r in mine if not r.manipulated],
                    [r.score for r in mine if r.manipulated],
                ),
                3,
            ),
            "out_of_fold_auc": round(calibrate.auc(oof[~labels], oof[labels]), 3),
            "out_of_fold_log_loss": round(calibrate.balanced_log_loss(oof, labels), 3),
            "reliability": calibrate.reliability(oof, labels),
            "map": final_maps[detector].to_dict(),
        }
    calibration_of_clip = {c.key: fold_maps[fold_of_group[c.group]] for c in clips}
    genuine = [r for r in records if not r.manipulated and by_key[r.clip].label == "real"]
    genuine_paths = _paths(genuine, calibration_of_clip, config, versions)
    hours = sum(r.media_seconds for r in genuine) / 3600.0
    d = config.decision
    # Genuine sessions whose lip-sync evidence reads the audio off the lips in most windows
    # (a recording whose audio really runs ahead): no noise excursion that a threshold
    # controls. Read on lip-sync alone: a face side that reads a little forged window after
    # window is what the drift allowance is for, and must stay in the fit.
    persistent = [
        i
        for i, record in enumerate(genuine)
        if genuine_calls.lip_sync_reads_off(record, config, calibration_of_clip[record.clip])
    ]
    noise_paths = [p for i, p in enumerate(genuine_paths) if i not in persistent]
    tail = calibrate.fit_tail(calibrate.excursion_peaks(noise_paths, d.floor_nats), hours)
    orders = calibrate.chained(noise_paths, CHAIN_ORDERS, seed=0)

    def rises(threshold: float) -> int:
        # The worst of the chain orders: a threshold must hold whatever the order.
        return max(
            calibrate.count_rises(o, threshold, d.hysteresis_nats, d.floor_nats, math.inf)
            for o in orders
        )

    def threshold(
        level: str, target: float, grid: Sequence[float], configured: float
    ) -> dict[str, Any]:
        grid = grid or THRESHOLD_GRID[:1]  # the alert threshold left no room below it
        counted = calibrate.choose_threshold(rises, hours, target, grid, level)
        modelled = tail.threshold_for(target) if tail else counted.threshold_nats
        nats = round(max(counted.threshold_nats, modelled) * 4) / 4  # to the grid's 0.25
        # Too few genuine excursions to fit a tail: the counts only say that none of these
        # few sessions reached the threshold, which is no evidence for a lower one.
        kept = tail is None and nats < configured
        return {
            "nats": configured if kept else nats,
            "kept_configured": kept,
            "target_per_hour": target,
            "counted_threshold": counted.threshold_nats,
            "modelled_threshold": round(modelled, 2),
            "raises_at_threshold": rises(nats),
            "modelled_rate_per_hour": round(tail.rate(nats), 4) if tail else None,
        }

    alert = threshold("alert", d.target_false_alerts_per_hour, THRESHOLD_GRID, d.alert_nats)
    suspicious = threshold(
        "suspicious",
        d.target_false_suspicious_per_hour,
        [h for h in THRESHOLD_GRID if h <= alert["nats"] - d.hysteresis_nats],
        d.suspicious_nats,
    )
    suspicious["nats"] = min(suspicious["nats"], alert["nats"] - d.hysteresis_nats)
    chosen = dataclasses.replace(
        d,
        suspicious_nats=suspicious["nats"],
        alert_nats=alert["nats"],
        ceiling_nats=alert["nats"] + (alert["nats"] - suspicious["nats"]),
    )
    attacks = _attack_figures(records, by_key, calibration_of_clip, config, chosen, versions)
    info = {
        "pool": "train",
        "clips": {"real": len(reals), "fake": len(fakes)},
        "folds": folds,
        "excluded_training_files": len(detector_training_files(config.face)),
        "calls_per_clip": calls_per_clip,
        "max_seconds": max_seconds,
    }
    final_maps.update(carried)
    detectors_report.update(carried_report(packaged, carried))
    maps = EvidenceCalibration(final_maps, {k: versions[k] for k in final_maps})
    face_reading, face_report = fit_face_reading(
        records + face_records, face_clips, config, maps, versions
    )
    calibration = EvidenceCalibration(
        final_maps,
        {k: versions[k] for k in final_maps},
        {**info, "detectors": detectors_report, "face_reading": face_report},
        face_reading,
    )
    report = {
        **info,
        "skipped": skipped + face_skipped,
        **timings,
        "detectors": detectors_report,
        "face_reading": face_report,
        "genuine_hours": round(hours, 3),
        "genuine_sessions": len(genuine),
        "thresholds": {"suspicious": suspicious, "alert": alert},
        "tail": dataclasses.asdict(tail) if tail else None,
        "persistent_genuine_sessions": [
            f"{genuine[i].clip} ({genuine[i].condition})" for i in persistent
        ],
        "config": {
            "suspicious_nats": chosen.suspicious_nats,
            "alert_nats": chosen.alert_nats,
            "ceiling_nats": chosen.ceiling_nats,
            "hysteresis_nats": chosen.hysteresis_nats,
        },
        "attacks": attacks,
    }
    return CalibrationResult(calibration, report)


def _attack_figures(
    records: Sequence[SessionRecord],
    clips: dict[str, CorpusClip],
    calibration_of_clip: dict[str, EvidenceCalibration],
    config: MonitorConfig,
    decision_config: Any,
    versions: dict[str, str],
) -> dict[str, Any]:
    """Out of fold, at the chosen thresholds: how often and how fast each manipulation alarms."""
    chosen = dataclasses.replace(config, decision=decision_config)
    out: dict[str, Any] = {}
    by_variant: dict[str, list[SessionRecord]] = {}
    for record in records:
        key = "fake_clip" if clips[record.clip].label == "fake" else record.variant
        by_variant.setdefault(key, []).append(record)
    for variant, members in sorted(by_variant.items()):
        reached = {"suspicious": 0, "alert": 0}
        times = []
        for record in members:
            decision = SequentialDecision.for_session(
                chosen, versions, calibration_of_clip[record.clip]
            )
            first = None
            for t_start, t_end, evidence in decide.record_windows(record):
                step = decision.update(evidence, span=(t_start, t_end))
                if first is None and step.level in ("suspicious", "alert"):
                    first = t_end
            for level in reached:
                if LEVEL_RANK[decision.peak_level] >= LEVEL_RANK[level]:
                    reached[level] += 1
            if first is not None:
                times.append(first)
        out[variant] = {
            "sessions": len(members),
            "reached_suspicious": reached["suspicious"],
            "reached_alert": reached["alert"],
            "median_time_to_first_alarm_s": round(float(np.median(times)), 2) if times else None,
        }
    return out


def carried_report(
    packaged: EvidenceCalibration | None, carried: dict[str, ScoreCalibration]
) -> dict[str, dict[str, Any]]:
    """The report entries of the maps carried over: what their own tool recorded, and the
    map itself (lip_timing's packaged entry records only how its cap was chosen)."""
    report = {}
    for detector, score_map in carried.items():
        previous = packaged.info.get("detectors", {}).get(detector) if packaged else None
        report[detector] = {
            **(previous or {"fitted_by": FITTED_ELSEWHERE[detector]}),
            "map": score_map.to_dict(),
        }
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Calibration on the training pool: {report['clips']['real']} real and "
        f"{report['clips']['fake']} fake clips (those no default detector trained on), "
        f"{report['folds']} folds by source, {report['calls_per_clip']} call condition(s) per "
        f"clip besides the recording.",
        "",
        "| detector | against | windows genuine / manipulated | clips genuine / manipulated "
        "| score AUC | out-of-fold AUC | out-of-fold log loss | map (slope, intercept, range) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, d in report["detectors"].items():
        m = d["map"]
        if "target" not in d:  # carried over from the detector's own training tool
            lines.append(
                f"| {name} | carried over from {d.get('fitted_by', '?')} | | | | | "
                f"| {m['slope']:.2f}, {m['intercept']:.2f}, [{m['llr_min']:.2f}, "
                f"{m['llr_max']:.2f}] |"
            )
            continue
        lines.append(
            f"| {name} | {d['target']} | {d['windows']['genuine']} / {d['windows']['manipulated']} "
            f"| {d['clips']['genuine']} / {d['clips']['manipulated']} | {d['score_auc']} "
            f"| {d['out_of_fold_auc']} | {d['out_of_fold_log_loss']} | {m['slope']:.2f}, "
            f"{m['intercept']:.2f}, [{m['llr_min']:.2f}, {m['llr_max']:.2f}] |"
        )
    face = report.get("face_reading")
    if face:
        g, f = face["genuine"], face["forged"]
        lines += [
            "",
            f"Face reading (attack_model per_face) from {face['sessions']['genuine']} genuine "
            f"and {face['sessions']['forged']} forged sessions' face-side nats a window: "
            f"genuine faces {g['mean']:+.2f} (between faces sd {g['between_sd']:.2f}, within "
            f"{g['within_sd']:.2f}), forged {f['mean']:+.2f} ({f['between_sd']:.2f}, "
            f"{f['within_sd']:.2f}); session means AUC {face['session_mean_auc']}; reading "
            f"within [{face['llr_min']:.2f}, {face['llr_max']:.2f}] nats.",
        ]
    lines += [
        "",
        f"Genuine sessions: {report['genuine_sessions']} ({report['genuine_hours']:.2f} h).",
        "",
        "| level | threshold (nats) | target per hour | lowest the counts allow | from the tail "
        "| raises on the genuine sessions at it | modelled rate per hour |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level, t in report["thresholds"].items():
        kept = " (kept: too few genuine excursions)" if t.get("kept_configured") else ""
        lines.append(
            f"| {level} | {t['nats']}{kept} "
            f"| {t['target_per_hour']} | {t['counted_threshold']} "
            f"| {t['modelled_threshold']} | {t['raises_at_threshold']} "
            f"| {t['modelled_rate_per_hour']} |"
        )
    tail = report.get("tail")
    if tail:
        lines += [
            "",
            f"Tail: {tail['exceedances']} excursions above {tail['base']} nat "
            f"({tail['rate_per_hour']:.1f} per hour), decaying by e^-{tail['decay_per_nat']:.2f} "
            "per nat beyond.",
        ]
    if report.get("persistent_genuine_sessions"):
        lines += [
            "",
            "Genuine sessions whose evidence points to manipulation throughout (left out of the "
            "tail fit, counted everywhere else): "
            + ", ".join(report["persistent_genuine_sessions"])
            + ".",
        ]
    lines += [
        "",
        "| sessions (out of fold) | n | reached suspicious | reached alert "
        "| median time to first alarm (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, a in report["attacks"].items():
        lines.append(
            f"| {variant} | {a['sessions']} | {a['reached_suspicious']} | {a['reached_alert']} "
            f"| {a['median_time_to_first_alarm_s']} |"
        )
    return "\n".join(lines) + "\n"
