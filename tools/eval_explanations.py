"""White-box vs black-box attribution of the learned sync model, measured on the dev clips.

For every held-out real dev clip with its audio delayed by 400 ms (so that alerts fire)
and every lip-sync fake of the dev set, windows are built exactly as the pipeline builds
them (``tools/prepare_sync_data.py``: same clip selection, same cached extraction, same
windows). In each chosen window the learned model's sync-mismatch score is explained by

* white-box integrated gradients (torch weights, gradients to pixels / lips / mel bins),
* black-box occlusion (only the backend's ``embed`` call: ONNX when available),

and each explanation is checked by the deletion test against random deletion
(:mod:`monitor.explain.faithfulness`). Output: one JSON record per window and a Markdown
summary (the numbers in docs/EXPLANATIONS.md).

Run: ``.venv/bin/python tools/eval_explanations.py [--per-clip 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import WindowConfig
from monitor.detectors.base import GENUINE_OFFSET_MS
from monitor.sync.features import GRID_STEP_S
from monitor.training import sync_data

log = logging.getLogger("eval_explanations")

SHIFT_S = 0.4
FRAME_MS = GRID_STEP_S * 1000.0
# Deletion tests: time units -> baseline, time units swapped in time, regions -> baseline.
FAMILIES = ("time", "time-swap", "region")


def load_model(weights: Path, backend: str) -> tuple[Any, Any, str]:
    """(torch model, backend embed call, backend name)."""
    from monitor.explain.sync_target import torch_embed
    from monitor.sync.checkpoint import load_checkpoint

    model, _ = load_checkpoint(weights)
    if backend == "torch":
        return model, torch_embed(model), "torch"
    from monitor.sync.backends import create_backend

    runner = create_backend(backend)
    return model, runner.embed, runner.name


def choose_windows(
    windows: list[Any],
    curves: list[np.ndarray | None],
    lags: list[Any],
    shifted: bool,
    per_clip: int,
) -> list[int]:
    """Windows with sufficient evidence; for delayed audio only those the model flags
    (best lag outside the genuine band), i.e. the windows alerts rest on."""
    eligible = []
    for i, (curve, lag) in enumerate(zip(curves, lags, strict=True)):
        if curve is None:
            continue
        offset_ms = float(lag[int(np.argmin(curve))]) * FRAME_MS
        if shifted and abs(offset_ms) <= GENUINE_OFFSET_MS:
            continue
        eligible.append(i)
    if len(eligible) <= per_clip:
        return eligible
    picks = np.linspace(0, len(eligible) - 1, per_clip).round().astype(int)
    return [eligible[p] for p in picks]


def explain_clip(
    clip: Any, model: Any, embed: Any, args: argparse.Namespace, group: str
) -> list[dict[str, Any]]:
    from monitor.explain.explainer import explain_example
    from monitor.explain.sync_target import (
        SyncMismatchScorer,
        distance_curve_fn,
        prepare_target,
        sync_mismatch_module,
    )
    from monitor.sync.features import track_from_frames, window_inputs

    shifted = group == "real+400ms"
    config = WindowConfig()
    curve_fn = distance_curve_fn(embed)
    windows = list(
        sync_data.clip_windows(clip, shift_s=SHIFT_S if shifted else 0.0, hop_s=args.hop)
    )
    curves: list[np.ndarray | None] = []
    lags: list[Any] = []
    for window in windows:
        inputs = None
        if (
            window.face_fraction >= config.min_face_fraction
            and window.speech_fraction() >= config.min_speech_fraction
        ):
            inputs = window_inputs(window)
        if inputs is None:
            curves.append(None)
            lags.append(None)
            continue
        curves.append(curve_fn(inputs).mean(axis=0))
        lags.append(inputs.lags)
    scored = sum(c is not None for c in curves)
    flagged = sum(
        c is not None and abs(float(lag[int(np.argmin(c))]) * FRAME_MS) > GENUINE_OFFSET_MS
        for c, lag in zip(curves, lags, strict=True)
    )
    records = []
    for i in choose_windows(windows, curves, lags, shifted, args.per_clip):
        window = windows[i]
        curve = curves[i]
        assert curve is not None
        offset_ms = float(lags[i][int(np.argmin(curve))]) * FRAME_MS
        target = prepare_target(
            track_from_frames(window.frames),
            window.audio,
            window.t_start,
            window.t_end,
            curve_fn,
            offset_ms=offset_ms,
        )
        started = time.perf_counter()
        explanation = explain_example(
            target.example,
            SyncMismatchScorer(target, embed),
            white_box=sync_mismatch_module(model, target),  # type: ignore[arg-type]
            target=target.describe(),
            ig_steps=args.ig_steps,
            n_random=args.random,
            seed=i,
        )
        record = {
            "clip": clip.name,
            "group": group,
            "t_start": window.t_start,
            "t_end": window.t_end,
            "mode": target.mode,
            "offset_ms": offset_ms,
            "windows_scored": scored,
            "windows_flagged": flagged,
            "seconds": time.perf_counter() - started,
            **explanation.to_json(),
        }
        records.append(record)
        faith = {m["kind"]: m["deletion"]["time"]["faithfulness"] for m in record["methods"]}
        log.info(
            "%s %.1f-%.1f s (%s, offset %+.0f ms): faithfulness white %s black %s, %.1f s",
            clip.name,
            window.t_start,
            window.t_end,
            target.mode,
            offset_ms,
            _fmt(faith.get("white-box")),
            _fmt(faith.get("black-box")),
            record["seconds"],
        )
    return records


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summarize(records: list[dict[str, Any]]) -> str:
    """Markdown tables: faithfulness per group, family and method; agreement; cost."""
    lines = [
        "| clips | windows | units | method | faithfulness mean (sd) | median "
        "| removed by top 20 % | by random 20 % | beats random | seconds / window |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        # Offset mode (score -> 0 when the desync evidence is gone) and distance mode
        # (a distance with no natural zero) are not comparable: summarize them apart.
        groups[f"{record['group']}, {record['mode']} mode"].append(record)
    for record in records:
        groups[f"all, {record['mode']} mode"].append(record)
    for group, items in groups.items():
        for family in FAMILIES:
            for kind in ("white-box", "black-box"):
                faith, top, rand, secs = [], [], [], []
                for record in items:
                    method = next(m for m in record["methods"] if m["kind"] == kind)
                    deletion = method["deletion"][family]
                    if deletion["faithfulness"] is None:
                        continue
                    faith.append(deletion["faithfulness"])
                    top.append(deletion["removed_by_method"][1])
                    rand.append(deletion["removed_by_random"][1])
                    secs.append(method["seconds"])
                if not faith:
                    continue
                f = np.array(faith)
                lines.append(
                    f"| {group} | {len(f)} | {family} | {kind} | {f.mean():.2f} ({f.std():.2f}) "
                    f"| {np.median(f):.2f} | {np.mean(top):.0%} | {np.mean(rand):.0%} "
                    f"| {np.mean(f > 0):.0%} | {np.mean(secs):.1f} |"
                )
    lines.append("")
    lines.append("| clips | units | white-box more faithful | rank agreement (Spearman) mean |")
    lines.append("|---|---|---|---|")
    for group, items in groups.items():
        for family in FAMILIES:
            wins, agree = [], []
            for record in items:
                by_kind = {
                    m["kind"]: m["deletion"][family]["faithfulness"] for m in record["methods"]
                }
                if None not in by_kind.values():
                    wins.append(by_kind["white-box"] > by_kind["black-box"])
                units = family.removesuffix("-swap")
                if record["agreement"][units] is not None:
                    agree.append(record["agreement"][units])
            if wins:
                lines.append(
                    f"| {group} | {family} | {np.mean(wins):.0%} of {len(wins)} "
                    f"| {np.mean(agree):.2f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, help="sync checkpoint (default: installed)")
    parser.add_argument("--backend", default="onnx", help="black-box backend (default onnx)")
    parser.add_argument("--per-clip", type=int, default=3, help="windows explained per clip")
    parser.add_argument("--hop", type=float, default=1.0, help="window hop in seconds")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--random", type=int, default=8, help="random deletion orders")
    parser.add_argument("--limit", type=int, help="at most this many clips (smoke runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="write every window's record here")
    parser.add_argument("--jobs", type=int, default=1, help="extraction processes (cache misses)")
    parser.add_argument("--from-json", type=Path, help="only summarize an earlier --json run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.from_json:
        print(summarize(json.loads(args.from_json.read_text())["records"]))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    if not sync_data.DATA_ROOT.exists():
        log.error("no data at %s", sync_data.DATA_ROOT)
        return 2
    from monitor.sync.checkpoint import WEIGHTS_PATH

    weights = args.weights or WEIGHTS_PATH
    try:
        model, embed, backend = load_model(weights, args.backend)
    except Exception as exc:  # missing weights or backend: say which, exit 2
        log.error("cannot load the sync model: %s", exc)
        return 2
    log.info("weights %s; black-box backend %s", weights, backend)

    jobs = sync_data.evaluation_jobs()
    if args.limit:
        jobs = jobs[: args.limit]
    paths = sync_data.run_jobs(jobs, args.jobs)
    records: list[dict[str, Any]] = []
    for job, path in zip(jobs, paths, strict=True):
        clip = sync_data.load_cached(path)
        group = "real+400ms" if job.split == "heldout" else "lip-sync fake"
        records.extend(explain_clip(clip, model, embed, args, group))
        if args.json:
            args.json.write_text(json.dumps({"backend": backend, "records": records}, indent=1))
    print(summarize(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
