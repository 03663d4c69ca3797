"""Training and evaluation data of the learned sync model, extracted as the pipeline does.

Every clip goes through the real path: ``FileSource`` -> face tracker -> per-frame mouth
crops and lip geometry, plus the 16 kHz samples; windows are then cut from the cached
arrays by the session's windower (:func:`clip_windows`), audio features and noise floor
included. Call conditions are made by re-encoding a clip first
(:mod:`monitor.training.call_variants`). Results are cached as npz files under
``$DFMON_SYNC_CACHE`` (default /tmp/dfmon_sync_cache; never in the repository).

Splits (see monitor/models/MODEL_CARD.md); nothing from ../shared/data/dev is trained on:
* train: the real clips of ../shared/data/train except those listed below (near-silent,
  out of sync, the calibration speakers, the decision's held-out sources), plus the train
  pool's video lip-sync fakes as extra in-sync positives (their mouths were generated from
  their own audio);
* calibration: four train-pool speakers kept out of training, for the in-sync probability;
* decision held out: every real clip of the sources in ``DECISION_HELDOUT``, never trained
  on, for the sequential decision's calibration (``tools/calibrate_decision.py``);
* evaluation: every dev real clip with audio; rows marked DUPLICATE SOURCE are the same
  speech as another clip and are used nowhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from monitor.evaluation.dataset import default_data_root, is_lipsync_fake, manifest_rows
from monitor.training.call_variants import CallVariant, reencode_call

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = default_data_root(REPO)
CACHE_DIR = Path(os.environ.get("DFMON_SYNC_CACHE", "/tmp/dfmon_sync_cache"))
EXTRACTOR_VERSION = 4  # bump when extraction changes, to invalidate the cache

# Train-pool real clips not trained on: near-silent audio (no speech to align with), and
# SyncNet's own demo clip, whose audio runs 3 frames (120 ms) ahead of the lips by
# SyncNet's reading: a sync model must not learn that as "in sync".
TRAIN_EXCLUDE = (
    "darsh200214_AIML-assignment-LipSync__demo_1",
    "darsh200214_AIML-assignment-LipSync__demo_2",
    "QinSy77_syncnet_python__data_example",
)
# Sources (manifest ``source_repo``) whose real clips are held out of training for the
# sequential decision's calibration: 17 clips of 12 sources the temporal detector's
# calibration did not use either, from interviews, talk shows, webcams and phones.
DECISION_HELDOUT = (
    "georgeretsi/smirk",
    "johndpope/VASA-1-hack",
    "skrantidatta/LIPINC",
    "KwaiVGI/LivePortrait",
    "presence-io/One-Shot_Free-View_Neural_Talking_Head_Synthesis",
    "GipalLee/Deepfake_detection",
    "ayhm23/DeepfakeDetection",
    "Kutabarea/voice_clone_EN",
    "midhunsomu/Video-Translate",
    "vishnuwadkar/Deepfake-Detection-Project",
    "CunyangWei/T3_AV",
    "sanskarmishra479/lipika",
)
# Train-pool clips kept out of training to calibrate the in-sync probability on people the
# model has not seen (four different speakers, about 24 s).
CALIBRATION = (
    "sibozhang_Text2Video__phoneme_data_VidTIMIT_fadg0_fadgo_sa1",
    "astorfi_lip-reading-deeplearning__data_sample_video",
    "VladTomici14_PodcastClipExtractor__input_buhnici-1",
    "amrkh97_Lipify-LipReading__DataSet-Trial_bbab8n",
)


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str  # "real" | "fake"
    notes: str
    source: str = ""  # the manifest's source_repo

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def lipsync_fake(self) -> bool:
        return is_lipsync_fake(self.notes)

    @property
    def video_lipsync_fake(self) -> bool:
        """A real video whose mouth was regenerated from the clip's own audio (in sync by
        design), not a head generated from a photo and not a face swap."""
        notes = self.notes.upper()
        if self.label != "fake" or "NOT VIDEO LIP-SYNC" in notes or "STATIC" in notes:
            return False
        if notes.startswith(("TALKING-HEAD", "FACESWAP")):
            return False
        return any(mark in notes for mark in ("LIP-SYNC", "LIPSYNC", "LIP EDIT", "WAV2LIP"))

    @property
    def duplicate(self) -> bool:
        # Only notes that start with the mark: the rule sync_v2's training record was drawn
        # with (is_duplicate also counts "DUPLICATE SOURCE of" later in the notes, which
        # would drop one of its training clips and change what train_sync.py reproduces).
        return self.notes.startswith("DUPLICATE SOURCE")

    @property
    def manifest_file(self) -> str:
        """The clip as ``pool/real/x.mp4``, relative to the data root."""
        return str(self.path.relative_to(DATA_ROOT))


def read_manifest(pool: str) -> list[Clip]:
    if not (DATA_ROOT / pool / "MANIFEST.tsv").exists():
        return []
    return [
        Clip(DATA_ROOT / pool / row["file"], row["label"], row["notes"], row.get("source_repo", ""))
        for row in manifest_rows(DATA_ROOT / pool)
        if row["has_audio"] == "yes"
    ]


def decision_heldout_clips() -> list[Clip]:
    """The real clips kept for the sequential decision's calibration."""
    return [
        c
        for c in read_manifest("train")
        if c.label == "real" and c.source in DECISION_HELDOUT and not c.duplicate
    ]


def train_clips() -> list[Clip]:
    excluded = TRAIN_EXCLUDE + CALIBRATION
    return [
        c
        for c in read_manifest("train")
        if c.label == "real"
        and c.stem not in excluded
        and c.source not in DECISION_HELDOUT
        and not c.duplicate
    ]


def train_fake_clips() -> list[Clip]:
    """Train-pool video lip-sync fakes, used as extra in-sync positives (see the model card):
    their mouths were generated from their own audio, and they bring more faces. Heads
    generated from a photo, photo-driven Wav2Lip and face swaps are left out."""
    return [c for c in read_manifest("train") if c.video_lipsync_fake]


def calibration_clips() -> list[Clip]:
    return [c for c in read_manifest("train") if c.stem in CALIBRATION]


def heldout_real_clips() -> list[Clip]:
    return [c for c in read_manifest("dev") if c.label == "real" and not c.duplicate]


def training_files() -> list[str]:
    """Every clip the model's training or its in-sync calibration reads (``pool/...``):
    the record later calibrations and evaluations leave out."""
    clips = train_clips() + train_fake_clips() + calibration_clips()
    return sorted({c.manifest_file for c in clips})


def dev_lipsync_fakes() -> list[Clip]:
    return [c for c in read_manifest("dev") if c.lipsync_fake]


def extract_clip(path: Path) -> dict[str, np.ndarray]:
    """Per-frame face features and the 16 kHz samples of one file, via the pipeline's parts."""
    from monitor.config import FaceConfig
    from monitor.features.face import create_face_tracker
    from monitor.media import VideoFrame, contiguous_samples
    from monitor.sources.file import FileSource
    from monitor.sync.features import gray_crop

    times, faces, crops, boxes, lip_marks, marks, apertures, widths = ([] for _ in range(8))
    chunks = []
    frame_size = (0, 0)
    tracker = create_face_tracker(FaceConfig())
    try:
        with FileSource(path) as source:
            for item in source:
                if not isinstance(item, VideoFrame):
                    chunks.append(item)
                    continue
                frame_size = item.image.shape[:2]
                face = tracker.track(item)
                times.append(item.t)
                faces.append(face is not None)
                if face is None:
                    crops.append(np.zeros((48, 96), np.uint8))
                    boxes.append(np.zeros(4, np.float32))
                    lip_marks.append(np.zeros((40, 2), np.float32))
                    marks.append(np.zeros((478, 2), np.float16))
                    apertures.append(0.0)
                    widths.append(0.0)
                    continue
                crops.append(gray_crop(face))
                boxes.append(np.asarray(face.face_box, np.float32))
                lip_marks.append(face.lip_landmarks.astype(np.float32))
                marks.append(face.landmarks.astype(np.float16))
                apertures.append(face.aperture)
                widths.append(face.mouth_width)
    finally:
        tracker.close()
    samples, t_audio = contiguous_samples(chunks)
    return {
        "times": np.asarray(times, np.float64),
        "face": np.asarray(faces, bool),
        "crops": np.asarray(crops, np.uint8).reshape(-1, 48, 96),
        "face_box": np.asarray(boxes, np.float32).reshape(-1, 4),
        "lip_landmarks": np.asarray(lip_marks, np.float32).reshape(-1, 40, 2),
        "landmarks": np.asarray(marks, np.float16).reshape(-1, 478, 2),
        "aperture": np.asarray(apertures, np.float32),
        "mouth_width": np.asarray(widths, np.float32),
        "frame_size": np.asarray(frame_size, np.int32),
        "samples": samples,
        "audio_t0": np.asarray(t_audio, np.float64),
    }


@dataclass(frozen=True)
class Job:
    """One cache entry: a source file, optionally re-encoded as a call, or a synthetic call."""

    kind: str  # "file" | "call" | "synth"
    source: str  # file path, or the synth parameters as JSON
    variant: CallVariant | None = None
    seed: int = 0
    split: str = "train"

    def key(self) -> str:
        identity = {
            "v": EXTRACTOR_VERSION,
            "kind": self.kind,
            "source": self.source,
            "seed": self.seed,
        }
        if self.kind != "synth":
            stat = Path(self.source).stat()
            identity["size"] = stat.st_size
        if self.variant is not None:
            identity["variant"] = asdict(self.variant)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        name = Path(self.source).stem if self.kind != "synth" else "synth"
        tag = self.variant.name if self.variant else "orig"
        return f"{name[:60]}.{tag}.{digest}"

    @property
    def cache_path(self) -> Path:
        return CACHE_DIR / f"{self.key()}.npz"


def run_job(job: Job) -> Path:
    """Extract (and re-encode or synthesize first) unless the cache already has it."""
    target = job.cache_path
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scratch = CACHE_DIR / f"{job.key()}.tmp.mkv"
    try:
        if job.kind == "file":
            media = Path(job.source)
        elif job.kind == "call":
            assert job.variant is not None
            reencode_call(Path(job.source), scratch, job.variant, job.seed)
            media = scratch
        else:
            media = _synthesize(json.loads(job.source), scratch, job.seed)
        data = extract_clip(media)
    finally:
        scratch.unlink(missing_ok=True)
    meta = {"job": {"kind": job.kind, "source": job.source, "seed": job.seed, "split": job.split}}
    if job.variant is not None:
        meta["variant"] = asdict(job.variant)
    partial = target.with_suffix(".partial.npz")
    np.savez_compressed(partial, meta=np.asarray(json.dumps(meta)), **data)
    partial.rename(target)
    log.info(
        "%s: %d frames, %.0f%% face, %.1f s audio in %.1f s",
        target.name,
        len(data["times"]),
        100.0 * data["face"].mean() if len(data["face"]) else 0.0,
        len(data["samples"]) / 16000,
        time.perf_counter() - started,
    )
    return target


def _synthesize(params: dict[str, object], dst: Path, seed: int) -> Path:
    from monitor.synth.call import make_call

    if "size" in params:
        params = {**params, "size": tuple(params["size"])}  # type: ignore[arg-type]
    make_call(dst, seed=seed, **params)  # type: ignore[arg-type]
    return dst


# Synthetic calls: espeak-ng voices and languages with phoneme-timed visemes.
SYNTH_TEXTS = {
    "en": [
        "Could you confirm the transfer before the end of the day, please?",
        "I am calling about the invoice we discussed on Monday morning.",
        "The quarterly numbers look better than we expected at first.",
        "Please move the meeting to Thursday afternoon if that works for you.",
    ],
    "de": ["Können Sie mir bitte die Unterlagen bis morgen früh schicken?"],
    "fr": ["Pouvez-vous vérifier le virement avant la fin de la journée?"],
    "es": ["Necesito que me confirmes la reunión de mañana por la tarde."],
    "it": ["Ti richiamo appena ho controllato i documenti del contratto."],
}


def synth_jobs(count: int, seed: int) -> list[Job]:
    """Synthetic calls with varied voice, language, rate, pitch, frame rate and size."""
    rng = np.random.default_rng(seed)
    languages = list(SYNTH_TEXTS)
    sizes = [(240, 320), (360, 480), (480, 640), (720, 1280)]
    jobs = []
    for i in range(count):
        language = languages[i % len(languages)] if i % 2 else "en"
        texts = SYNTH_TEXTS[language]
        # Two sentences: long enough for several 2 s windows.
        text = " ".join(str(t) for t in rng.choice(texts, size=2, replace=len(texts) < 2))
        variant = str(rng.choice(["", "+f2", "+m3", "+f4", "+m5"]))
        params = {
            "text": text,
            "fps": float(rng.choice([15.0, 20.0, 24.0, 25.0, 30.0])),
            "voice": language + variant,
            "rate": int(rng.integers(130, 210)),
            "pitch": int(rng.integers(25, 80)),
            "size": [int(v) for v in sizes[int(rng.integers(len(sizes)))]],
            "head_motion": bool(rng.random() < 0.8),
            "lighting": bool(rng.random() < 0.7),
        }
        jobs.append(Job("synth", json.dumps(params, sort_keys=True), seed=seed + i, split="train"))
    return jobs


def training_jobs(variants_per_clip: int = 2, synth_count: int = 0, seed: int = 0) -> list[Job]:
    jobs = []
    for index, clip in enumerate(train_clips()):
        jobs.append(Job("file", str(clip.path), split="train"))
        for v in range(variants_per_clip):
            variant_seed = seed * 1000 + index * 10 + v
            variant = CallVariant.random(variant_seed, f"call{v}")
            jobs.append(Job("call", str(clip.path), variant, variant_seed, split="train"))
    for index, clip in enumerate(train_fake_clips()):
        jobs.append(Job("file", str(clip.path), split="train_fake"))
        variant_seed = seed * 1000 + 700 + index
        variant = CallVariant.random(variant_seed, "call0")
        jobs.append(Job("call", str(clip.path), variant, variant_seed, split="train_fake"))
    jobs += synth_jobs(synth_count, seed + 7)
    return jobs


def calibration_jobs(seed: int = 0) -> list[Job]:
    jobs = []
    for index, clip in enumerate(calibration_clips()):
        jobs.append(Job("file", str(clip.path), split="calibration"))
        variant_seed = seed * 1000 + 500 + index
        variant = CallVariant.random(variant_seed, "call0")
        jobs.append(Job("call", str(clip.path), variant, variant_seed, split="calibration"))
    return jobs


def evaluation_jobs() -> list[Job]:
    jobs = [Job("file", str(c.path), split="heldout") for c in heldout_real_clips()]
    jobs += [Job("file", str(c.path), split="fake") for c in dev_lipsync_fakes()]
    return jobs


def run_jobs(jobs: Iterable[Job], workers: int) -> list[Path]:
    jobs = list(jobs)
    pending = [j for j in jobs if not j.cache_path.exists()]
    log.info(
        "%d jobs, %d cached, %d to run on %d workers",
        len(jobs),
        len(jobs) - len(pending),
        len(pending),
        workers,
    )
    if pending:
        # Longest first so the pool stays busy to the end.
        pending.sort(key=lambda j: -_job_weight(j))
        if workers <= 1:
            for job in pending:
                run_job(job)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run_job, pending))
    return [j.cache_path for j in jobs]


def _job_weight(job: Job) -> float:
    if job.kind == "synth":
        return 5.0
    size = Path(job.source).stat().st_size / 1e6
    return size * (1.5 if job.kind == "call" else 1.0)


# -- reading the cache back -----------------------------------------------------------


@dataclass
class CachedClip:
    """One extracted clip as arrays, plus what is needed to rebuild pipeline windows."""

    name: str
    split: str
    kind: str
    data: dict[str, np.ndarray]

    @property
    def times(self) -> np.ndarray:
        return self.data["times"]

    @property
    def samples(self) -> np.ndarray:
        return self.data["samples"]

    @property
    def audio_t0(self) -> float:
        return float(self.data["audio_t0"])

    def track(self, frames: list | None = None):  # noqa: ANN201 - FrameTrack, imported lazily
        """Per-frame model features, made from the stored observations exactly as
        :func:`monitor.sync.features.track_from_frames` makes them from a window."""
        from monitor.sync.features import track_from_frames

        return track_from_frames(frames if frames is not None else self.frame_features())

    def frame_features(self) -> list:
        """FrameFeatures as the pipeline would hold them (face crop not kept: zeros)."""
        from monitor.features.types import FaceObservation, FrameFeatures

        d = self.data
        size = (int(d["frame_size"][0]), int(d["frame_size"][1]))
        face_crop = np.zeros((112, 112, 3), np.uint8)
        frames = []
        for i, t in enumerate(d["times"]):
            face = None
            if d["face"][i]:
                gray = d["crops"][i]
                face = FaceObservation(
                    face_box=tuple(float(v) for v in d["face_box"][i]),  # type: ignore[arg-type]
                    landmarks=d["landmarks"][i].astype(np.float32),
                    lip_landmarks=d["lip_landmarks"][i],
                    mouth_crop=np.repeat(gray[:, :, None], 3, axis=2),
                    face_crop=face_crop,
                    aperture=float(d["aperture"][i]),
                    mouth_width=float(d["mouth_width"][i]),
                )
            frames.append(FrameFeatures(float(t), i, size, face))
        return frames


def load_cached(path: Path) -> CachedClip:
    with np.load(path) as archive:
        data = {k: archive[k] for k in archive.files}
    meta = json.loads(str(data.pop("meta")))
    job = meta["job"]
    name = Path(job["source"]).stem if job["kind"] != "synth" else f"synth{job['seed']}"
    if "variant" in meta:
        name += "." + meta["variant"]["name"]
    return CachedClip(name, job["split"], job["kind"], data)


def audio_track(clip: CachedClip, shift_s: float = 0.0, donor: CachedClip | None = None):  # noqa: ANN201
    """(samples, t0) of the audio a window gets: the clip's own audio delayed by ``shift_s``
    (positive: audio later than the lips), or a donor clip's audio (swapped), looped to
    cover the whole clip."""
    if donor is None:
        return clip.samples, clip.audio_t0 + shift_s
    needed = int((clip.times[-1] - clip.audio_t0 + 2.0) * 16000) if len(clip.times) else 0
    samples = donor.samples
    if len(samples) and len(samples) < needed:
        samples = np.tile(samples, needed // len(samples) + 1)
    return samples[: max(needed, 1)], clip.audio_t0 + shift_s


def clip_windows(
    clip: CachedClip,
    *,
    shift_s: float = 0.0,
    donor: CachedClip | None = None,
    window_s: float | None = None,
    hop_s: float | None = None,
    frames: list | None = None,
):  # noqa: ANN201 - Iterator[AnalysisWindow]
    """The session's AnalysisWindows over a cached clip, cut by the session's windower
    (same schedule, same buffers, same noise floor); window and hop default to the config's."""
    from monitor.config import MonitorConfig
    from monitor.media import AudioChunk
    from monitor.windows import Windower, WindowSchedule

    config = MonitorConfig()
    schedule = WindowSchedule(
        window_s if window_s is not None else config.window.window_s,
        hop_s if hop_s is not None else config.window.hop_s,
        config.window.max_lag_s,
    )
    samples, t0 = audio_track(clip, shift_s, donor)
    windower = Windower(schedule, config.audio, session=clip.name, has_audio=len(samples) > 0)
    if len(samples):
        windower.add_audio(AudioChunk(t0, samples))
    for frame in frames if frames is not None else clip.frame_features():
        windower.add_frame(frame)
        yield from windower.windows()
    windower.end_of_media()
    yield from windower.windows()
