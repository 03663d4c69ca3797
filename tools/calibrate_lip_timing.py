"""Fit the lip_timing evidence: dip sharpness of genuine speech against generated heads.

Every real clip of the training pool is replayed as recorded and as two calls (a 15 fps
VP8 call and one drawn from a seed by ``CallVariant.random``), every generated talking head
of the pool as recorded; each scored window's lip-sync lag curve gives its dip sharpness
(``monitor.sync.scoring.dip_sharpness``), and a Gaussian is fitted to each class::

    .venv/bin/python tools/calibrate_lip_timing.py --data ../shared/data/train --jobs 2

writes ``monitor/models/lip_timing_calibration.json`` (about 20 min on 2 cores; replays
are cached under ``--cache``). Never run it on ../shared/data/dev: dev is for measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.config import MonitorConfig  # noqa: E402
from monitor.detectors.lip_timing import CALIBRATION_PATH  # noqa: E402
from monitor.evaluation.sessions import evidence_fingerprint  # noqa: E402
from monitor.training.artifact_data import read_pool  # noqa: E402

LLR_RANGE = (-1.0, 1.0)  # nats a window may give either way
CONDITIONS = ("recorded", "call-15fps", "call-random")


def _variant(condition: str, seed: int):  # noqa: ANN202
    from monitor.training.call_variants import CallVariant

    if condition == "call-15fps":
        return CallVariant(condition, 15.0, 480, "libvpx", 400, 24, 0.0, 0.0, None)
    return CallVariant.random(seed, condition)


def window_sharpness(job: tuple[str, str, int, str, str]) -> tuple[str, str, list[float], str]:
    """(clip, condition, the dip sharpness of every scored window, error or ''). ``evidence``:
    the fingerprint of what shapes the values (models, config), which keys their cache."""
    path, condition, seed, cache, evidence = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from monitor.replay import replay_file
    from monitor.sync.scoring import dip_sharpness
    from monitor.training.call_variants import reencode_call

    source = Path(path)
    media = source
    out = Path(cache) / condition / evidence / f"{source.stem}.json"
    if out.exists():
        return source.stem, condition, json.loads(out.read_text()), ""
    try:
        if condition != "recorded":
            media = Path(cache) / condition / f"{source.stem}.mkv"
            media.parent.mkdir(parents=True, exist_ok=True)
            if not media.exists():
                reencode_call(source, media, _variant(condition, seed), seed)
        values: list[float] = []

        def collect(event: dict) -> None:
            for item in event.get("evidence", []) if event.get("type") == "score" else []:
                if item["detector"] == "lip_sync" and item.get("score") is not None:
                    values.append(dip_sharpness(np.asarray(item["lag_curve"])))

        replay_file(media, MonitorConfig(), collect)
    except Exception as exc:  # a damaged clip is reported, the rest go on
        return source.stem, condition, [], f"{type(exc).__name__}: {exc}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(values))
    return source.stem, condition, values, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dfmon_lip_timing"))
    parser.add_argument("--out", type=Path, default=CALIBRATION_PATH)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.data.resolve().name == "dev":
        parser.error("../shared/data/dev is for measuring only")
    clips = read_pool(args.data)
    # The values depend on the sync model and the config, not on the file this tool writes.
    evidence = evidence_fingerprint(MonitorConfig(), leave_out=(CALIBRATION_PATH.name,))
    jobs = [
        (str(c.path), condition, seed, str(args.cache), evidence)
        for seed, c in enumerate(clips)
        for condition in (CONDITIONS if c.kind == "real" else ("recorded",))
        if c.kind in ("real", "talking_head")
    ]
    kinds = {c.path.stem: c.kind for c in clips}
    genuine: list[float] = []
    generated: list[float] = []
    clip_counts = {"genuine": set(), "generated": set()}
    with ProcessPoolExecutor(args.jobs) as pool:
        for stem, condition, values, error in pool.map(window_sharpness, jobs):
            if error:
                print(f"{stem} {condition}: {error}", file=sys.stderr)
            side = "genuine" if kinds[stem] == "real" else "generated"
            (genuine if side == "genuine" else generated).extend(values)
            if values:
                clip_counts[side].add(stem)
    g, h = np.asarray(genuine), np.asarray(generated)
    if min(len(g), len(h)) < 2:
        print(
            f"too few scored windows to fit: {len(g)} genuine, {len(h)} generated; "
            f"{args.out} left as it was",
            file=sys.stderr,
        )
        return 1
    calibration = {
        "format": 1,
        "detector": "lip_timing",
        "detector_version": "1",
        "created": date.today().isoformat(),
        "data": str(args.data),
        "genuine_mean": round(float(g.mean()), 4),
        "genuine_sd": round(float(g.std()), 4),
        "generated_mean": round(float(h.mean()), 4),
        "generated_sd": round(float(h.std()), 4),
        "llr_min": LLR_RANGE[0],
        "llr_max": LLR_RANGE[1],
        "windows": {"genuine": len(g), "generated": len(h)},
        "clips": {side: len(stems) for side, stems in clip_counts.items()},
        "genuine_conditions": list(CONDITIONS),
    }
    args.out.write_text(json.dumps(calibration, indent=1) + "\n")
    print(json.dumps(calibration, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
