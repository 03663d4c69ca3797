"""The long genuine-call corpus of tools/eval_calls.py: its clips, its figures, its table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from monitor.config import load_config
from monitor.decision import load_calibration
from monitor.evaluation import decide, genuine_calls
from monitor.evaluation.baseline import baseline_records, checkout_commit
from monitor.evaluation.calibration_run import clip_file, detector_training_files
from monitor.evaluation.corpus import CorpusClip, collect_records, pick_donor, read_pool
from monitor.evaluation.decide import RULES
from monitor.evaluation.machine import describe_machine, machine_line
from monitor.evaluation.sessions import GENUINE, shifts_and_swap

ATTACK_SHIFTS_MS = (200, 400)
WORST_SESSIONS = 8


def evaluate(
    data_root: Path,
    *,
    pools: list[str],
    cache_dir: Path,
    jobs: int,
    calls_per_clip: int,
    calls: int,
    call_minutes: float,
    attacks: bool,
    max_seconds: float | None,
    config_path: str | None,
    log_path: Path | None,
    before: Path | None = None,
) -> dict[str, Any]:
    """Figures per decision rule. ``before``: another checkout whose own pipeline replays
    the genuine sessions too (its model, its decision), reported as rule ``before``."""
    config = load_config(config_path)
    calibration = load_calibration(config.decision)
    machine = describe_machine()
    clips = [c for pool in pools for c in read_pool(data_root, pool) if c.label == "real"]
    trained = detector_training_files(config.face)
    held_out_dev = [c for c in clips if c.pool == "dev" and clip_file(c, data_root) not in trained]
    attacked = {c.key for c in held_out_dev} if attacks else set()

    def variants_for(clip: CorpusClip, donors: dict[str, str]) -> tuple:
        if clip.key not in attacked:
            return (GENUINE,)
        return shifts_and_swap(ATTACK_SHIFTS_MS, pick_donor(clip, held_out_dev, donors))

    records, prepared, skipped, timings = collect_records(
        clips,
        calls_per_clip=calls_per_clip,
        variants_for=variants_for,
        cache_dir=cache_dir,
        jobs=jobs,
        config_path=config_path,
        max_seconds=max_seconds,
        log_path=log_path,
    )
    by_key = {c.key: c for c in clips}
    genuine = [r for r in records if not r.manipulated]
    sessions_by_rule = {rule: genuine for rule in RULES}
    if before is not None:
        started = time.monotonic()
        sessions_by_rule = {"before": baseline_records(prepared, before, cache_dir, jobs, log_path)}
        sessions_by_rule.update({rule: genuine for rule in RULES})
        timings["before_seconds"] = round(time.monotonic() - started, 1)
    results: dict[str, Any] = {
        "machine": machine,
        "machine_line": machine_line(machine),
        "pools": pools,
        "clips": len(clips),
        "conditions": sorted({r.condition for r in records}),
        "skipped": skipped,
        **timings,
        "decision": {
            "suspicious_nats": config.decision.suspicious_nats,
            "alert_nats": config.decision.alert_nats,
            "drift_allowance_nats": config.decision.drift_allowance_nats,
            "attack_model": config.decision.attack_model,
            "calibrated": sorted(calibration.detectors),
        },
        "detectors": sorted({f"{k} {v}" for r in records for k, v in r.detectors.items()}),
        "rules": {},
    }
    for rule, sessions in sessions_by_rule.items():
        if rule == "before":
            traces = [decide.pipeline_trace(r) for r in sessions]
            replayed = genuine_calls.session_traces(sessions, config, calibration, "legacy")
            results["before"] = {
                "checkout": str(before),
                "commit": checkout_commit(before) if before else None,
                "legacy_replay_matches": sum(
                    t.levels == r.levels for t, r in zip(traces, replayed, strict=True)
                ),
                "sessions": len(sessions),
            }
        else:
            traces = genuine_calls.session_traces(sessions, config, calibration, rule)
        pairs = list(zip(sessions, traces, strict=True))

        def figures(select: Any, pairs: list = pairs) -> dict[str, Any]:
            chosen = [(r, t) for r, t in pairs if select(r)]
            return genuine_calls.genuine_figures([r for r, _ in chosen], [t for _, t in chosen])

        worst = sorted(pairs, key=lambda p: -p[1].peak_score)[:WORST_SESSIONS]
        dev_alert_endings = sorted(
            f"{r.clip} ({r.condition})"
            for r, t in pairs
            if by_key[r.clip].pool == "dev" and t.final_level == "alert"
        )
        results["rules"][rule] = {
            "sessions": {
                "all": figures(lambda r: True),
                **{f"pool {p}": figures(lambda r, p=p: by_key[r.clip].pool == p) for p in pools},
                **{
                    f"condition {c}": figures(lambda r, c=c: r.condition == c)
                    for c in results["conditions"]
                },
            },
            "dev_sessions_ending_in_alert": dev_alert_endings,
            "worst_sessions": [
                {
                    "session": f"{r.clip} ({r.condition})",
                    "peak_score": round(t.peak_score, 3),
                    "peak_level": t.peak_level,
                    "final_level": t.final_level,
                }
                for r, t in worst
            ],
            "long_calls": genuine_calls.long_calls(
                sessions,
                config,
                calibration,
                "legacy" if rule == "before" else rule,
                call_minutes=call_minutes,
                calls=calls,
            ),
        }
        if rule != "before":
            results["rules"][rule]["same_speaker_calls"] = genuine_calls.same_speaker_calls(
                sessions, config, calibration, rule, call_minutes=call_minutes
            )
        if rule == "sequential" and "train" in pools:
            results["rules"][rule]["drift_allowance"] = genuine_calls.choose_drift_allowance(
                [r for r in sessions if by_key[r.clip].pool == "train"],
                config,
                calibration,
                rule,
                call_minutes=call_minutes,
            )
        if attacks and rule != "before":
            attacked_records = [r for r in records if r.clip in attacked]
            results["rules"][rule]["attacks"] = genuine_calls.attack_figures(
                attacked_records, config, calibration, rule
            )
    return results


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(results: dict[str, Any]) -> str:
    before = results.get("before")
    lines = [
        f"Genuine-call corpus: {results['clips']} real clips of {', '.join(results['pools'])}, "
        f"conditions {', '.join(results['conditions'])}; detectors "
        f"{', '.join(results['detectors'])}. Machine: {results['machine_line']}. "
        f"Runtime {results.get('runtime_seconds', 0):.0f} s (preparing "
        f"{results.get('prepare_seconds', 0):.0f} s, sessions "
        f"{results.get('sessions_seconds', 0):.0f} s).",
        "",
        "| rule | sessions | hours | reached suspicious | reached alert | ended in alert "
        "| false alerts / h | false suspicious / h | long calls (h) | long calls reaching "
        "suspicious / alert | long-call false alerts / h |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if before:
        lines[1:1] = [
            "",
            f"`before`: the pipeline of {before['checkout']} at {before['commit'][:10]} "
            f"replaying the same files ({before['sessions']} sessions; the legacy rule "
            f"replayed on its evidence matches its own levels in "
            f"{before['legacy_replay_matches']}).",
        ]
    for rule, data in results["rules"].items():
        for name, f in data["sessions"].items():
            long = data["long_calls"] if name == "all" else None
            lines.append(
                f"| {rule} {name} | {f['sessions']} | {f['hours']:.2f} "
                f"| {_pct(f['reached_suspicious'])} | {_pct(f['reached_alert'])} "
                f"| {_pct(f['ended_in_alert'])} | {f['false_alerts_per_hour']} "
                f"| {f['false_suspicious_per_hour']} "
                + (
                    f"| {long['hours']} | {long['calls_reaching_suspicious']}/{long['calls']} / "
                    f"{long['calls_reaching_alert']}/{long['calls']} "
                    f"| {long['false_alerts_per_hour']} |"
                    if long
                    else "| | | |"
                )
            )
    for rule, data in results["rules"].items():
        lines += [
            "",
            f"{rule}: dev sessions ending in alert: "
            f"{', '.join(data['dev_sessions_ending_in_alert']) or 'none'}.",
        ]
        same = data.get("same_speaker_calls")
        if same:
            lines += [
                "",
                f"{rule}: each genuine session looped into one call of {same['call_minutes']:g} "
                f"min ({same['calls']} calls, {same['hours']} h): "
                f"{same['calls_reaching_suspicious']} reach suspicious, "
                f"{same['calls_reaching_alert']} alert, {same['false_alerts_per_hour']} false "
                f"alerts per hour; alerting: {', '.join(same['alerting']) or 'none'}.",
            ]
        allowance = data.get("drift_allowance")
        if allowance:
            tried = "; ".join(
                f"{t['allowance_nats']:g}: {t['calls_reaching_suspicious']} reach suspicious"
                for t in allowance["tried"]
            )
            lines += [
                "",
                f"{rule}: drift allowance for same-speaker calls of the train pool "
                f"({allowance['sessions']} sessions; left apart, their lip-sync evidence "
                f"reading the audio off the lips: "
                f"{', '.join(allowance['lip_sync_off_sessions']) or 'none'}): {tried}; "
                f"smallest that keeps them all below suspicious: {allowance['chosen_nats']} "
                f"(configured {results['decision']['drift_allowance_nats']}).",
            ]
        if "attacks" in data:
            lines += [
                "",
                f"| {rule}: condition | manipulation | n | genuine n | AUC | alarmed "
                "| reached alert | median time to alarm (s) | offset error median / p90 (ms) "
                "| from the clip's own offset: median / p90 (ms) |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for condition, table in data["attacks"].items():
                for variant, row in table.items():
                    offset = (
                        f"{row['offset_error_median_ms']} / {row['offset_error_p90_ms']} "
                        f"| {row['relative_offset_error_median_ms']} / "
                        f"{row['relative_offset_error_p90_ms']}"
                        if "offset_error_median_ms" in row
                        else "- | -"
                    )
                    lines.append(
                        f"| {condition} | {variant} | {row['n']} | {row['genuine_n']} "
                        f"| {row['auc']} | {row['alarmed']} | {row['reached_alert']} "
                        f"| {row['median_time_to_alarm_s']} | {offset} |"
                    )
    return "\n".join(lines) + "\n"
