#!/usr/bin/env python3
"""Train the artifact detector from scratch and write monitor/models/artifact_v1.*.

    .venv/bin/python tools/train_artifact.py [--data ../shared/data/train] [--jobs 2]

Reproduces the committed weights and calibration on 2 CPU cores (seeded; torch on 2
threads): samples of every pool clip with self-blended pseudo-fakes under call
conditions (monitor/training/artifact_data.py), paired training (monitor/training/
artifact.py), ONNX export, then the calibration against genuine video: the real clips of
the held-out sources scored through the detector as recorded and re-encoded as a starved
call carries them. ``--heldout-share 0.2`` (the default) keeps a fifth of the sources, real
and fake, out of training: the pseudo-task and the pool's fakes are reported on them and
the calibration is measured on them, out of fold.
Caches (samples, tracked faces, call copies) go under ``--cache``, never the repository.
Method, data and figures: monitor/models/ARTIFACT_MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from monitor.detectors.artifact.detector import ArtifactDetector
from monitor.training import artifact as training
from monitor.training.artifact_data import DATA_VERSION, read_pool

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("train_artifact")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train"
MODELS = REPO / "monitor" / "models"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pool with MANIFEST.tsv")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("DFMON_ARTIFACT_CACHE", "/tmp/dfmon_artifact_cache")),
        help="samples, tracked faces and call copies (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=MODELS, help="where artifact_v1.* go")
    parser.add_argument("--jobs", type=int, default=2, help="data worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=training.TrainSettings.steps)
    parser.add_argument(
        "--real-fakes",
        type=int,
        default=training.TrainSettings.real_fakes_per_batch,
        help="pool fakes per batch as extra positives (0: pseudo-fakes only)",
    )
    parser.add_argument(
        "--heldout-share",
        type=float,
        default=0.2,
        help="share of sources kept out of training, reported and calibrated on (0: none)",
    )
    parser.add_argument(
        "--center-z",
        type=float,
        default=4.0,
        help="z where the score is 0.5 (held-out genuine call windows reach 3.45)",
    )
    parser.add_argument("--width-z", type=float, default=0.5, help="logistic width in z")
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument(
        "--decision-calibration",
        type=Path,
        default=MODELS / "decision_calibration.json",
        help="the sequential decision's maps; the artifact detector's is (re)written there",
    )
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="calibrate the weights already in --out (no data preparation, no training)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not (args.data / "MANIFEST.tsv").exists():
        sys.stderr.write(f"train_artifact: {args.data} has no MANIFEST.tsv\n")
        return 2
    import torch

    from monitor.detectors.artifact.backend import export_onnx
    from monitor.detectors.artifact.model import load_model, parameter_count, save_model

    started = time.monotonic()
    timings: dict[str, float] = {}
    clips = read_pool(args.data)
    weights = args.out / "artifact_v1.pt"
    onnx = args.out / "artifact_v1.onnx"
    if args.calibrate_only:
        _, checkpoint = load_model(weights)
        record = checkpoint["training"]
        held_groups = set(record["heldout_sources"])
        written = args.out / "artifact_v1.training.json"
        earlier = json.loads(written.read_text()) if written.exists() else record
        timings = {k: v for k, v in earlier.get("timings", {}).items() if k != "total_s"}
    else:
        prepared = training.prepare_pool(
            clips, args.cache / "samples", seed=args.seed, jobs=args.jobs
        )
        samples = training.load_samples(prepared)
        timings["prepare_s"] = round(time.monotonic() - started, 1)
        log.info("samples: %s", training.summarize_counts(samples))

        heldout = None
        train = samples
        held_groups = set()
        if args.heldout_share > 0:
            train, heldout, held_groups = training.split_heldout(
                samples, args.heldout_share, args.seed + 1, args.real_fakes > 0
            )
            log.info("held out %d sources: %s", len(held_groups), sorted(held_groups))
        settings = training.TrainSettings(
            steps=args.steps, real_fakes_per_batch=args.real_fakes, seed=args.seed
        )
        mark = time.monotonic()
        model, history = training.train_model(train, settings, heldout)
        timings["train_s"] = round(time.monotonic() - mark, 1)

        args.out.mkdir(parents=True, exist_ok=True)
        record = {
            "created": dt.date.today().isoformat(),
            "data": "/".join(args.data.resolve().parts[-3:]),
            "data_version": DATA_VERSION,
            "settings": asdict(settings),
            "parameters": parameter_count(model),
            "samples": training.summarize_counts(train),
            "heldout_sources": sorted(held_groups),
            "history": history,
            "torch": str(torch.__version__),
            "timings": timings,
        }
        save_model(weights, model, {"training": record})
        export_onnx(model, onnx)

    if not args.skip_calibration:
        mark = time.monotonic()
        # Out of fold: the network's own training clips would read more genuine than a
        # stranger does, so genuine video is measured on the held-out sources only; the
        # pool's fakes are all out of fold when none was trained on (as the weights record,
        # also under --calibrate-only).
        train_on_fakes = record["settings"]["real_fakes_per_batch"] > 0
        scored_clips = [
            c for c in clips
            if not held_groups or training.out_of_fold(c, held_groups, train_on_fakes)
        ]  # fmt: skip
        reals = [c for c in scored_clips if c.label == "real"]
        values = training.score_pool(reals, ["recorded", training.CALL_CONDITION], onnx,
                                     args.cache, args.jobs)  # fmt: skip
        fakes = [c for c in scored_clips if c.label == "fake"]
        values += training.score_pool(fakes, ["recorded"], onnx, args.cache, args.jobs)
        calibration = training.calibrate(values, scored_clips, args.center_z, args.width_z)
        report = training.pool_report(values, scored_clips, calibration)
        timings["calibrate_s"] = round(time.monotonic() - mark, 1)
        calibration.meta = {
            "detector": "artifact",
            "detector_version": ArtifactDetector.version,
            "created": record["created"],
            "data": record["data"],
            "conditions": {
                "recorded": "as in the pool",
                training.CALL_CONDITION: training.call_encoding().describe(),
            },
            "real_clips": sorted({v.name for v in values if v.name in {c.name for c in reals}}),
            "pool_report": report,
        }
        (args.out / "artifact_v1.calibration.json").write_text(
            json.dumps(calibration.to_json(), indent=1) + "\n"
        )
        record["pool_report"] = report
        # The sequential decision's map for this detector (monitor/decision.py), beside the
        # other detectors' maps that tools/calibrate_decision.py fits.
        from monitor.decision import EvidenceCalibration, ScoreCalibration

        fitted = training.decision_map(values, scored_clips, calibration)
        decision_file = args.decision_calibration
        decision = EvidenceCalibration.load(decision_file)
        decision.detectors["artifact"] = ScoreCalibration.from_dict(fitted)
        decision.versions["artifact"] = ArtifactDetector.version
        decision.info.setdefault("detectors", {})["artifact"] = {
            "map": {k: fitted[k] for k in ("slope", "intercept", "llr_min", "llr_max")},
            "fitted_by": "tools/train_artifact.py (held-out sources, conservative)",
            **fitted["fit"],
        }
        decision.save(decision_file)
        record["decision_map"] = fitted
        windows = {
            f"{v.name}|{v.condition}": [round(x, 4) for x in v.window_values] for v in values
        }
        (args.cache / "pool_windows.json").write_text(json.dumps(windows))
    timings["total_s"] = round(time.monotonic() - started, 1)
    record["timings"] = timings
    record["load_average_at_end"] = os.getloadavg()
    (args.out / "artifact_v1.training.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("done: %s", timings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
