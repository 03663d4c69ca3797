#!/usr/bin/env python3
"""Evaluate the monitor on manipulated variants of genuine clips (and on known fakes).

    .venv/bin/python tools/eval.py ../shared/data/dev --out /tmp/dfmon-eval --lip-sync baseline

From each genuine clip it builds: audio shifted by +-100/200/400/800 ms, audio swapped
from another speaker, an espeak-ng dub, a frozen and a looped video under the live audio,
and (clips of 6 s or more) a desync of +400 ms from the middle on. Every variant, genuine
included, is re-encoded the same way (see ``EncodeSettings``) and cached under ``--cache``.
Each is replayed in-process through the full pipeline; the report gives, per category vs
the genuine clips, ROC AUC / EER / TPR at 1% FPR of the summary risk, time to alert after
the onset, offset accuracy, and false alarms per hour of genuine media.

Writes into ``--out``: results.json (every variant and every figure), results.md (the
table), roc.png, and events/<variant>.jsonl. Exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from monitor.config import LIP_SYNC_MODELS
from monitor.errors import ConfigError, InputError
from monitor.evaluation import report, scoring
from monitor.evaluation.dataset import genuine_clips, known_fakes, read_inputs
from monitor.evaluation.machine import describe_machine, machine_line
from monitor.evaluation.pool import open_pool, run_all
from monitor.evaluation.variants import VIDEO_KINDS, EncodeSettings

log = logging.getLogger("eval")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "input", help="a directory of genuine clips, or a MANIFEST.tsv (or its directory)"
    )
    parser.add_argument(
        "--out", default="/tmp/dfmon-eval", help="output directory (default %(default)s)"
    )
    parser.add_argument(
        "--cache", default="/tmp/dfmon-eval-cache", help="variant cache (default %(default)s)"
    )
    parser.add_argument(
        "--lip-sync", choices=LIP_SYNC_MODELS, help="lip-sync model (default: the config's)"
    )
    parser.add_argument(
        "--detectors", help="comma-separated detectors to enable (default: the config's)"
    )
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--limit", type=int, help="use at most N genuine clips and N known fakes")
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes (default %(default)s)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=EncodeSettings.max_seconds, help="cut clips here"
    )
    parser.add_argument(
        "--shifts",
        default=",".join(str(s) for s in scoring.DEFAULT_SHIFTS_MS),
        help="shift magnitudes in ms",
    )
    parser.add_argument("--no-fakes", action="store_true", help="skip the manifest's known fakes")
    return parser.parse_args(argv)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.lip_sync:
        overrides["lip_sync"] = {"model": args.lip_sync}
    if args.detectors:
        overrides["detectors"] = {
            "enabled": [d.strip() for d in args.detectors.split(",") if d.strip()]
        }
    return overrides


def unique_names(paths: list[Path]) -> dict[Path, str]:
    """File stems, made unique with a counter where two folders hold the same name."""
    names: dict[Path, str] = {}
    seen: dict[str, int] = {}
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        names[path] = path.stem if count == 0 else f"{path.stem}-{count + 1}"
    return names


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    machine = describe_machine()
    settings = replace(EncodeSettings(), max_seconds=args.max_seconds)
    try:
        shifts = tuple(int(s) for s in args.shifts.split(",") if s.strip())
    except ValueError as exc:
        raise ConfigError(f"--shifts wants comma-separated integers, got {args.shifts!r}") from exc
    overrides = config_overrides(args)
    from monitor.config import load_config

    load_config(args.config, **overrides)  # fail early on a bad config
    entries = read_inputs(args.input)
    genuine = genuine_clips(entries)[: args.limit]
    fakes = [] if args.no_fakes else known_fakes(entries)[: args.limit]
    if not genuine:
        raise InputError(f"{args.input}: no genuine clip with audio to build variants from")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "events").mkdir(exist_ok=True)
    cache = Path(args.cache)
    log.info(
        "%d genuine clips, %d known fakes; %s", len(genuine), len(fakes), machine_line(machine)
    )

    names = unique_names([e.path for e in genuine + fakes])
    pool = open_pool(args.jobs, out / "workers.log")
    try:
        prepare = [
            scoring.PrepareTask(str(e.path), names[e.path], str(cache), settings, VIDEO_KINDS)
            for e in genuine
        ] + [
            scoring.PrepareTask(str(e.path), names[e.path], str(cache), settings, ("original",))
            for e in fakes
        ]
        prepared = run_all(pool, scoring.prepare_task, prepare, "decoding and re-encoding clips")
        prepare_s = time.monotonic() - started
        skipped = [p for p in prepared if isinstance(p, str)]
        for reason in skipped:
            log.warning("skipped %s", reason)
        usable_genuine = [p for p in prepared[: len(genuine)] if not isinstance(p, str)]
        usable_fakes = [
            (p, e)
            for p, e in zip(prepared[len(genuine) :], fakes, strict=True)
            if not isinstance(p, str)
        ]
        if not usable_genuine:
            raise InputError("no genuine clip could be decoded")
        clips = {clip.name: clip for clip in usable_genuine + [p for p, _ in usable_fakes]}
        from monitor.synth.speech import espeak_available

        tts = espeak_available()
        if not tts:
            log.warning("libespeak-ng is unavailable: no TTS dub variants")
        specs = scoring.plan_variants(usable_genuine, usable_fakes, shifts, tts=tts)
        tasks = [
            scoring.ScoreTask(
                spec,
                {name: clips[name] for name in (spec.clip, spec.donor) if name is not None},
                settings,
                overrides,
                args.config,
                str(out / "events"),
            )
            for spec in specs
        ]
        # Longest clips first: the pool then ends with short ones and idles less.
        tasks.sort(key=lambda t: -t.clips[t.spec.clip].duration_s)
        rows = run_all(pool, scoring.score_task, tasks, "replaying variants")
    finally:
        if pool is not None:
            pool.shutdown()
    rows.sort(key=lambda r: (r["category"], r["clip"]))
    summary = report.summarize(rows)
    detectors = sorted({f"{k} {v}" for r in rows for k, v in r["detectors"].items()})
    detector_sets = {json.dumps(r["detectors"], sort_keys=True) for r in rows}
    mixed = len(detector_sets) > 1  # the installed detectors changed during the run
    runtime = time.monotonic() - started
    result = {
        "input": str(args.input),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "jobs": args.jobs,
        "encoding": asdict(settings),
        "config_overrides": overrides,
        "detectors": detectors,
        "skipped": skipped,
        "mixed_detectors": mixed,
        "runtime_seconds": round(runtime, 1),
        "prepare_seconds": round(prepare_s, 1),
        "media_seconds": round(sum(r["media_seconds"] for r in rows), 1),
        **summary,
        "variants": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    title = f"dfmon on {Path(args.input).name}: {', '.join(detectors)}"
    report.roc_plot(rows, summary, out / "roc.png", title)
    table = report.markdown_table(summary)
    header = (
        f"Input {args.input}; detectors: {', '.join(detectors)}; {len(genuine)} genuine clips, "
        f"{len(rows)} replays, {result['media_seconds']:.0f} s of media; encoding: "
        f"{settings.describe()}.\nMachine: {machine_line(machine)}; {args.jobs} jobs; "
        f"{runtime:.0f} s in all ({prepare_s:.0f} s decoding and re-encoding).\n\n"
    )
    if mixed:
        header += "WARNING: not every replay ran the same detectors; rerun for clean figures.\n\n"
        log.warning("replays ran different detector sets: %s", sorted(detector_sets))
    (out / "results.md").write_text(header + table)
    sys.stdout.write(header + table)
    errors = sorted({e for r in rows for e in r["errors"]})
    for message in errors:
        log.warning("pipeline error event: %s", message)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        sys.stderr.write(f"eval: error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
