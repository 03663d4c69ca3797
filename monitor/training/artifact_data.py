"""Training samples for the artifact detector: real clips, self-blended pseudo-fakes, calls.

A lip-sync generator or a face swap takes genuine footage, regenerates a region of the face
and pastes it back; the call then scales and compresses the result. This module replays
that chain on the real clips of the training pool, so the detector learns the traces of
pasting rather than any one generator:

1. **Chunks.** A clip is decoded with the pipeline's own :class:`FileSource` and its face
   tracked with the pipeline's tracker. Short runs of consecutive frames (``CHUNK_FRAMES``,
   plus ``DONOR_FRAMES`` after them as donors of "another moment") are cut to a region
   around the face (the rest of the frame, corners and captions included, is never kept).
2. **Pseudo-fakes** (:func:`blend_chunk`). Every parameter is drawn once per chunk and kept
   over its frames, as a generator keeps its settings over a video: which region is
   replaced (a hard rectangle over the lower half of the face box or over the whole box,
   a feathered jaw hull, a dilated mouth hull, the whole face hull), what is pasted there
   (the same frame or the face of another moment of the chunk, aligned on the stable
   landmarks so its mouth no longer follows the head; then resampled through the
   generator's working size, sharpened or smoothed as face restorers do, colour-shifted,
   JPEG'd, slightly misaligned), the mask's feather and the blend ratio.
3. **Call conditions** (:func:`render_call`), the same for a chunk's real and fake
   renditions: low light and sensor noise, a frame rate of 15-30 fps, the scale of a
   360p-1080p call, then a real encoder (x264 or libvpx VP8) at call bitrates, decoded
   again. The codec acts after the blend, as it does in a call.
4. **Crops** (:func:`cut_samples`). The decoded frames are tracked afresh and cut with
   :func:`monitor.features.face.observe_face`, exactly as a live session cuts them. The
   blend mask goes through the same warp and becomes the boundary target 4·M·(1-M) on the
   model's output grid.

Fakes of the pool go through steps 1, 3 and 4 unchanged (label fake, no mask).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from monitor.config import FaceConfig
from monitor.detectors.artifact.crops import GRID, INPUT_SIDE, boundary_target
from monitor.detectors.temporal.geometry import FACE_OVAL, LIP_OUTLINE, STABLE, face_crop_points
from monitor.errors import InputError
from monitor.evaluation.dataset import is_duplicate_row, manifest_rows
from monitor.features.face import (
    EYE_OUTER_LEFT,
    EYE_OUTER_RIGHT,
    NOSE_TIP,
    MediaPipeFaceTracker,
    observe_face,
)
from monitor.media import VideoFrame

log = logging.getLogger(__name__)

# Bump when samples change meaning: cached files of another version are not reused.
DATA_VERSION = 3
CHUNK_FRAMES = 12  # frames rendered (encoded) per chunk
DONOR_FRAMES = 12  # frames after the chunk, only as donors of "another moment"
SAMPLES_PER_CHUNK = 3  # the last frames of a rendition kept as samples (codec settled)
MIN_FACE_SHARE = 0.8  # chunks where fewer frames show a face are skipped
ROI_SCALE = 2.0  # region kept around the face, per side of the landmarks' extent
MAX_ROI_SIDE = 640  # larger regions are shrunk to this (a 1080p call at most)
CALL_SHORT_SIDES = (360, 480, 540, 720, 1080)
CALL_FPS = (15, 20, 24, 25, 30)
REGIONS = ("lower_rect", "face_rect", "jaw_hull", "mouth_hull", "face_hull")
REGION_WEIGHTS = (0.3, 0.1, 0.25, 0.15, 0.2)
# The generators' working sizes (Wav2Lip/TalkLip 96, HyperLips 128, DINet/MuseTalk 256).
RESAMPLE_SIDES = (96, 128, 256)
# Jaw and chin of the face oval, cheek to cheek through the chin.
JAW = FACE_OVAL[FACE_OVAL.index(454) : FACE_OVAL.index(234) + 1]


# ----- the pool ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolClip:
    """One clip of a MANIFEST: its file, its label, and who is in it (for held-out splits)."""

    path: Path
    label: str  # "real" or "fake"
    group: str  # clips of one group share people or scenes: never split across train/held-out
    kind: str  # real | lipsync | faceswap | talking_head | other
    notes: str = ""

    @property
    def name(self) -> str:
        return self.path.stem


def fake_kind(notes: str) -> str:
    """The kind of a fake from its MANIFEST notes."""
    upper = notes.upper()
    if upper.startswith("LIPSYNC-FAKE") or "LIP-SYNC" in upper or "LIP EDIT" in upper:
        return "lipsync"
    if upper.startswith("FACESWAP") or "FACE-SWAP" in upper or "FACE SWAP" in upper:
        return "faceswap"
    if upper.startswith("TALKING-HEAD") or "TALKING HEAD" in upper or "ONE-SHOT" in upper:
        return "talking_head"
    lowered = notes.lower()
    if "wav2lip" in lowered or "lip-sync" in lowered or "re-lipped" in lowered:
        return "lipsync"
    return "other"


def read_pool(data: Path) -> list[PoolClip]:
    """The MANIFEST's clips, DUPLICATE SOURCE rows left out (they repeat another row)."""
    clips = []
    for row in manifest_rows(data):
        if is_duplicate_row(row):
            continue
        notes = row.get("notes") or ""
        label = row["label"].strip().lower()
        kind = "real" if label == "real" else fake_kind(notes)
        group = (row.get("source_repo") or row["file"]).strip()
        clips.append(PoolClip(data / row["file"], label, group, kind, notes))
    return clips


# ----- chunks ------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Consecutive frames around a face: the region kept, with landmarks in its pixels."""

    clip: str
    start_index: int
    fps: float
    frames: list[np.ndarray]  # RGB uint8, all the same size
    landmarks: list[np.ndarray | None]  # (478, 2) float32 per frame, region pixels
    source_short_side: int  # of the clip's frames
    region_scale: float  # region pixels per source pixel (<= 1)

    @property
    def face_side(self) -> float:
        """Median extent of the landmarks (region pixels)."""
        sides = [float(np.max(lm.max(0) - lm.min(0))) for lm in self.landmarks if lm is not None]
        return float(np.median(sides)) if sides else 0.0


def _fill_landmarks(landmarks: list[np.ndarray | None]) -> list[np.ndarray] | None:
    """Missing frames take the nearest tracked frame's landmarks; None when none is tracked."""
    known = [i for i, lm in enumerate(landmarks) if lm is not None]
    if not known:
        return None
    out = []
    for i in range(len(landmarks)):
        nearest = min(known, key=lambda k: abs(k - i))
        out.append(landmarks[nearest])  # type: ignore[arg-type]
    return out


def _region_box(
    landmarks: list[np.ndarray], width: int, height: int
) -> tuple[int, int, int, int] | None:
    """An even-sided box (x0, y0, x1, y1) holding the face of every frame with room around it."""
    stacked = np.concatenate(landmarks)
    lo, hi = stacked.min(0), stacked.max(0)
    side = float(np.median([np.max(lm.max(0) - lm.min(0)) for lm in landmarks]))
    if side < 24:
        return None
    center = (lo + hi) / 2.0
    half = max(ROI_SCALE * side, float(np.max(hi - lo)) + side * 0.5) / 2.0
    x0, y0 = int(max(center[0] - half, 0)), int(max(center[1] - half, 0))
    x1, y1 = int(min(center[0] + half, width)), int(min(center[1] + half, height))
    x1 -= (x1 - x0) % 2
    y1 -= (y1 - y0) % 2
    if x1 - x0 < 32 or y1 - y0 < 32:
        return None
    return x0, y0, x1, y1


def chunk_starts(n_frames: int, n_chunks: int, rng: np.random.Generator) -> list[int]:
    """Chunk start indices spread over the clip, with some jitter. The rendered frames of
    two chunks never overlap; a chunk's donor frames may be the next chunk's frames."""
    span = CHUNK_FRAMES + DONOR_FRAMES
    if n_frames < span:
        return []
    count = min(n_chunks, (n_frames - DONOR_FRAMES) // CHUNK_FRAMES)
    width = (n_frames - DONOR_FRAMES) / count  # >= CHUNK_FRAMES
    starts = []
    for k in range(count):
        lo = int(math.ceil(k * width))
        hi = min(int((k + 1) * width) - CHUNK_FRAMES, n_frames - span)
        starts.append(int(rng.integers(lo, max(lo, hi) + 1)))
    return starts


def decode_chunks(
    path: Path, n_chunks: int, rng: np.random.Generator, max_seconds: float = 40.0
) -> list[Chunk]:
    """Up to ``n_chunks`` chunks of ``path``'s first ``max_seconds``, faces tracked.

    Every frame a chunk needs is tracked once, in order; the tracker starts afresh after a
    gap, as it would after a cut."""
    from monitor.sources.file import FileSource

    face_config = FaceConfig()
    chunks: list[Chunk] = []
    span = CHUNK_FRAMES + DONOR_FRAMES
    with FileSource(path) as source:
        info = source.info
        fps = info.fps or 25.0
        duration = min(info.duration_s or max_seconds, max_seconds)
        starts = chunk_starts(int(duration * fps) - 1, n_chunks, rng)
        if not starts:
            return []
        needed = {i for s in starts for i in range(s, s + span)}
        kept: dict[int, tuple[VideoFrame, np.ndarray | None]] = {}
        tracker: MediaPipeFaceTracker | None = None
        previous = -2
        try:
            for item in source:
                if not isinstance(item, VideoFrame):
                    continue
                if item.index not in needed:
                    if item.index > starts[-1] + span:
                        break
                    continue
                if tracker is None or item.index != previous + 1:
                    if tracker is not None:
                        tracker.close()
                    tracker = MediaPipeFaceTracker(face_config)
                previous = item.index
                face = tracker.track(item)
                kept[item.index] = (item, None if face is None else face.landmarks)
                for start in starts:
                    if item.index == start + span - 1:
                        frames = [kept[i] for i in range(start, start + span)]
                        chunk = _cut_chunk(
                            path.stem, start, fps, [f for f, _ in frames], [lm for _, lm in frames]
                        )
                        if chunk is not None:
                            chunks.append(chunk)
                upcoming = [s for s in starts if s + span - 1 > item.index]
                oldest = min(upcoming, default=item.index + 1)
                for index in [i for i in kept if i < oldest]:
                    del kept[index]
        finally:
            if tracker is not None:
                tracker.close()
    return chunks


def _cut_chunk(
    clip: str,
    start: int,
    fps: float,
    frames: list[VideoFrame],
    landmarks: list[np.ndarray | None],
) -> Chunk | None:
    rendered = landmarks[:CHUNK_FRAMES]
    if sum(lm is not None for lm in rendered) < MIN_FACE_SHARE * CHUNK_FRAMES:
        return None
    filled = _fill_landmarks(landmarks)
    assert filled is not None
    height, width = frames[0].image.shape[:2]
    box = _region_box(filled, width, height)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    scale = min(1.0, MAX_ROI_SIDE / max(x1 - x0, y1 - y0))
    size = (max(2, int((x1 - x0) * scale) // 2 * 2), max(2, int((y1 - y0) * scale) // 2 * 2))
    images = []
    for frame in frames:
        region = frame.image[y0:y1, x0:x1]
        if scale < 1.0 or region.shape[1::-1] != size:
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        images.append(np.ascontiguousarray(region))
    factor = np.array([size[0] / (x1 - x0), size[1] / (y1 - y0)], np.float32)
    offset = np.array([x0, y0], np.float32)
    return Chunk(
        clip=clip,
        start_index=start,
        fps=fps,
        frames=images,
        landmarks=[(lm - offset) * factor for lm in filled],
        source_short_side=min(width, height),
        region_scale=float(factor.mean()),
    )


# ----- pseudo-fakes -----------------------------------------------------------------------


@dataclass(frozen=True)
class BlendParams:
    """One pseudo-fake's recipe, drawn once per chunk (see the module doc)."""

    region: str
    source: str  # "same" | "shifted" | "reversed": which frame's face is pasted
    shift: int  # frames ahead, for "shifted"
    resample_side: int | None  # generator working size the pasted face went through
    # The generator's face box, per side of the landmarks' extent; its edges stay inside
    # the detector's crop (1.25 times that extent), where a pasted box shows its seam.
    box_scale: float
    sharpen: float  # unsharp-mask amount (0: none)
    smooth: float  # Gaussian smoothing sigma in pixels (0: none)
    colour: tuple[float, float, float]  # RGB offsets in grey levels
    contrast: float  # gain about the region's mean
    jpeg_quality: int | None
    misalign: tuple[float, float, float]  # dx, dy (face sides), scale
    feather: float  # mask blur sigma per face side (0: hard edge)
    grow: float  # mask dilation (+) or erosion (-) per face side
    ratio: float  # blend ratio: the pasted content's weight inside the mask

    def describe(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def draw_blend(rng: np.random.Generator) -> BlendParams:
    region = str(rng.choice(REGIONS, p=REGION_WEIGHTS))
    hard = region in ("lower_rect", "face_rect")
    source = str(rng.choice(("same", "shifted", "reversed"), p=(0.45, 0.4, 0.15)))
    resample = None
    if rng.random() < 0.7:
        resample = int(rng.choice(RESAMPLE_SIDES, p=(0.45, 0.3, 0.25)))
    colour = (0.0, 0.0, 0.0)
    contrast = 1.0
    if rng.random() < 0.5:
        colour = tuple(float(v) for v in rng.uniform(-12, 12, 3))  # type: ignore[assignment]
        contrast = float(rng.uniform(0.9, 1.1))
    sharpen = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.25 else 0.0
    smooth = float(rng.uniform(0.6, 1.6)) if sharpen == 0 and rng.random() < 0.25 else 0.0
    jpeg = int(rng.integers(40, 90)) if rng.random() < 0.3 else None
    misalign = (0.0, 0.0, 1.0)
    if rng.random() < 0.4:
        misalign = (
            float(rng.uniform(-0.03, 0.03)),
            float(rng.uniform(-0.015, 0.015)),
            float(rng.uniform(0.96, 1.04)),
        )
    # Something must differ from the frame it is pasted into.
    altered = resample or sharpen or smooth or jpeg or colour != (0.0, 0.0, 0.0)
    if source == "same" and not altered:
        resample = 96
    feather = float(rng.uniform(0.0, 0.01)) if hard else float(rng.uniform(0.02, 0.1))
    grow = float(rng.uniform(-0.03, 0.05))
    ratio = float(rng.choice((0.5, 0.75, 1.0, 1.0, 1.0, 1.0)))
    return BlendParams(
        region=region,
        source=source,
        shift=int(rng.integers(4, DONOR_FRAMES + 1)),
        resample_side=resample,
        box_scale=float(rng.uniform(0.95, 1.2)),
        sharpen=sharpen,
        smooth=smooth,
        colour=colour,
        contrast=contrast,
        jpeg_quality=jpeg,
        misalign=misalign,
        feather=feather,
        grow=grow,
        ratio=ratio,
    )


def _face_box(landmarks: np.ndarray, scale: float) -> np.ndarray:
    """A face detector's axis-aligned square box: x0, y0, x1, y1 (float)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    center = (lo + hi) / 2.0
    half = float(np.max(hi - lo)) * scale / 2.0
    return np.array([center[0] - half, center[1] - half, center[0] + half, center[1] + half])


def _smoothed_boxes(landmarks: list[np.ndarray], scale: float) -> list[np.ndarray]:
    """Face boxes averaged over 5 frames, as Wav2Lip smooths its detections."""
    boxes = np.array([_face_box(lm, scale) for lm in landmarks])
    out = []
    for i in range(len(boxes)):
        lo, hi = max(0, i - 2), min(len(boxes), i + 3)
        out.append(boxes[lo:hi].mean(0))
    return out


def _fill(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def region_mask(
    params: BlendParams, landmarks: np.ndarray, box: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """The unit-peak blend mask (float32, ``shape``) of one frame."""
    height, width = shape
    side = float(np.max(landmarks.max(0) - landmarks.min(0)))
    if params.region in ("lower_rect", "face_rect"):
        x0, y0, x1, y1 = box
        if params.region == "lower_rect":
            y0 = (y0 + y1) / 2.0
        mask = np.zeros(shape, np.uint8)
        xa, ya = int(round(max(x0, 0))), int(round(max(y0, 0)))
        xb, yb = int(round(min(x1, width))), int(round(min(y1, height)))
        mask[ya:yb, xa:xb] = 1
    elif params.region == "jaw_hull":
        # Below a line just under the nose tip, within the jaw line.
        nose_y = float(landmarks[NOSE_TIP, 1])
        eye_y = float((landmarks[EYE_OUTER_LEFT, 1] + landmarks[EYE_OUTER_RIGHT, 1]) / 2)
        cut = nose_y + 0.15 * (nose_y - eye_y)
        jaw = landmarks[list(JAW)]
        points = np.vstack([jaw, [[jaw[:, 0].min(), cut], [jaw[:, 0].max(), cut]]])
        mask = _fill(shape, points)
        mask[: int(max(cut, 0))] = 0
    elif params.region == "mouth_hull":
        mask = _fill(shape, landmarks[list(LIP_OUTLINE)])
        lips = landmarks[list(LIP_OUTLINE)]
        radius = max(1, int(round((0.2 + max(params.grow, 0) * 6) * np.ptp(lips[:, 0]))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel)
    else:  # face_hull
        mask = _fill(shape, landmarks[list(FACE_OVAL)])
    if params.region != "mouth_hull" and abs(params.grow) * side >= 1:
        radius = int(round(abs(params.grow) * side))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel) if params.grow > 0 else cv2.erode(mask, kernel)
    result = mask.astype(np.float32)
    sigma = params.feather * side
    if sigma >= 4.0:  # a wide blur at a quarter of the size: the mask is smooth anyway
        small = cv2.resize(result, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / 4)
        result = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    elif sigma >= 0.5:
        result = cv2.GaussianBlur(result, (0, 0), sigma)
        # Feathering spreads the mask outwards; renormalise so its core is full strength.
        peak = float(result.max())
        if peak > 0:
            result = np.minimum(result / max(peak, 1e-6) * 1.2, 1.0)
    return result


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    matrix, _ = cv2.estimateAffinePartial2D(
        src[list(STABLE)].astype(np.float32), dst[list(STABLE)].astype(np.float32)
    )
    return matrix if matrix is not None else np.array([[1, 0, 0], [0, 1, 0]], np.float64)


def _alter(image: np.ndarray, params: BlendParams, box: np.ndarray) -> np.ndarray:
    """The pasted content: ``image`` (already aligned) through the generator's alterations,
    computed over the face box and a margin (nothing outside it is pasted)."""
    full_h, full_w = image.shape[:2]
    margin = 0.3 * (box[2] - box[0])
    x0, y0 = int(max(box[0] - margin, 0)), int(max(box[1] - margin, 0))
    x1, y1 = int(min(box[2] + margin, full_w)), int(min(box[3] + margin, full_h))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return image
    box = box - np.array([x0, y0, x0, y0])
    out = np.ascontiguousarray(image[y0:y1, x0:x1])
    height, width = out.shape[:2]
    if params.resample_side is not None:
        side = box[2] - box[0]
        if side > params.resample_side * 1.15:
            # Resize the generator's face box down to its working size and back, in one
            # warp each way (the box may reach past the region's edge).
            factor = params.resample_side / side
            down = np.array([[factor, 0, -box[0] * factor], [0, factor, -box[1] * factor]])
            small = cv2.warpAffine(
                cv2.GaussianBlur(out, (0, 0), 0.5 * side / params.resample_side),
                down,
                (params.resample_side, params.resample_side),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
            up = cv2.invertAffineTransform(down)
            out = cv2.warpAffine(
                small, up, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
    if params.smooth > 0:
        out = cv2.GaussianBlur(out, (0, 0), params.smooth)
    if params.sharpen > 0:
        blurred = cv2.GaussianBlur(out, (0, 0), 1.5)
        out = cv2.addWeighted(out, 1 + params.sharpen, blurred, -params.sharpen, 0)
    if params.colour != (0.0, 0.0, 0.0) or params.contrast != 1.0:
        values = out.astype(np.float32)
        mean = values.reshape(-1, 3).mean(0)
        values = (values - mean) * params.contrast + mean + np.array(params.colour, np.float32)
        out = np.clip(values, 0, 255).astype(np.uint8)
    if params.jpeg_quality is not None:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, params.jpeg_quality])
        if ok:
            out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    dx, dy, scale = params.misalign
    if (dx, dy, scale) != (0.0, 0.0, 1.0):
        side = box[2] - box[0]
        center = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        matrix = cv2.getRotationMatrix2D(center, 0.0, scale)
        matrix[:, 2] += (dx * side, dy * side)
        out = cv2.warpAffine(out, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    result = image.copy()
    result[y0:y1, x0:x1] = out
    return result


def blend_chunk(chunk: Chunk, params: BlendParams) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The chunk's first CHUNK_FRAMES frames with ``params``' region pasted in, and each
    frame's unit-peak mask."""
    landmarks = chunk.landmarks
    boxes = _smoothed_boxes(landmarks[:CHUNK_FRAMES], params.box_scale)
    shape = chunk.frames[0].shape[:2]
    last = len(chunk.frames) - 1
    frames, masks = [], []
    for i in range(CHUNK_FRAMES):
        target = chunk.frames[i]
        lm = landmarks[i]
        donor_index = {"same": i, "shifted": min(i + params.shift, last), "reversed": last - i}[
            params.source
        ]
        donor = chunk.frames[donor_index]
        if donor_index != i:
            matrix = _similarity(landmarks[donor_index], lm)
            donor = cv2.warpAffine(
                donor, matrix, shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
        content = _alter(donor, params, boxes[i])
        mask = region_mask(params, lm, boxes[i], shape)
        weight = (mask * params.ratio)[..., None]
        blended = content.astype(np.float32) * weight + target.astype(np.float32) * (1 - weight)
        frames.append(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
        masks.append(mask)
    return frames, masks


# ----- call conditions ---------------------------------------------------------------------


@dataclass(frozen=True)
class CallConditions:
    """How a call carries a chunk: light, noise, frame rate, scale, codec and bitrate."""

    codec: str  # "libx264" or "libvpx"
    short_side: int  # the call's frame size (short side); never upscaled
    fps: int
    bits_per_pixel: float  # per frame; None-like 0 means a near-lossless "as recorded" copy
    crf: int | None  # x264 constant quality instead of a bitrate ("as recorded" copies)
    light_gain: float  # 1: as filmed; < 1: low light
    noise_sigma: float  # sensor noise in grey levels, added after the light gain
    seed: int

    def describe(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def draw_call(rng: np.random.Generator) -> CallConditions:
    recorded = rng.random() < 0.25
    low_light = rng.random() < 0.2
    return CallConditions(
        codec="libx264" if recorded or rng.random() < 0.6 else "libvpx",
        short_side=int(rng.choice(CALL_SHORT_SIDES)) if not recorded else 10_000,
        fps=int(rng.choice(CALL_FPS)),
        bits_per_pixel=float(np.exp(rng.uniform(np.log(0.03), np.log(0.25)))),
        crf=int(rng.integers(16, 24)) if recorded else None,
        light_gain=float(rng.uniform(0.35, 0.7)) if low_light else 1.0,
        noise_sigma=float(rng.uniform(2.0, 8.0)) if low_light or rng.random() < 0.2 else 0.0,
        seed=int(rng.integers(2**31)),
    )


def kept_frames(n: int, source_fps: float, call_fps: int) -> list[int]:
    """Which of ``n`` frames at ``source_fps`` a ``call_fps`` stream carries."""
    if call_fps >= source_fps - 0.5:
        return list(range(n))
    step = source_fps / call_fps
    return sorted({int(math.floor(k * step)) for k in range(int(math.ceil(n / step)))} - {n})


def _encoder(codec: str, size: tuple[int, int], fps: int, conditions: CallConditions) -> Any:
    context = av.CodecContext.create(codec, "w")
    context.width, context.height = size
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, fps)
    context.framerate = Fraction(fps, 1)
    context.thread_count = 1
    if conditions.crf is not None:
        context.options = {"crf": str(conditions.crf), "preset": "veryfast"}
    else:
        rate = int(conditions.bits_per_pixel * size[0] * size[1] * fps)
        context.bit_rate = max(rate, 20_000)
        if codec == "libx264":
            context.options = {"preset": "veryfast", "tune": "zerolatency"}
        else:
            context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return context


def render_call(
    frames: list[np.ndarray], source_short_side: int, region_scale: float,
    source_fps: float, conditions: CallConditions,
) -> tuple[list[int], list[np.ndarray], float]:  # fmt: skip
    """Frames as the far end of the call decodes them: (kept indices, RGB frames, scale)."""
    rng = np.random.default_rng(conditions.seed)
    indices = kept_frames(len(frames), source_fps, conditions.fps)
    # The call scales the whole source frame; the region (already ``region_scale`` of the
    # source) scales with it, never up.
    call_scale = min(1.0, conditions.short_side / max(source_short_side, 1))
    scale = min(1.0, call_scale / max(region_scale, 1e-6))
    height, width = frames[0].shape[:2]
    size = (max(16, int(width * scale) // 2 * 2), max(16, int(height * scale) // 2 * 2))
    actual = size[0] / width
    noise = None
    if conditions.noise_sigma > 0:
        noise = rng.standard_normal((len(indices), size[1], size[0], 1), dtype=np.float32)
        noise *= conditions.noise_sigma
    encoder = _encoder(conditions.codec, size, conditions.fps, conditions)
    decoder = av.CodecContext.create("h264" if conditions.codec == "libx264" else "vp8", "r")
    decoded: list[np.ndarray] = []

    def drain(packets: list[Any]) -> None:
        for packet in packets:
            for picture in decoder.decode(packet):
                decoded.append(picture.to_ndarray(format="rgb24"))

    for k, index in enumerate(indices):
        image = frames[index]
        if size != (width, height):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if conditions.light_gain != 1.0 or noise is not None:
            values = image.astype(np.float32) * conditions.light_gain
            if noise is not None:
                values += noise[k]
            image = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        picture = picture.reformat(format="yuv420p")
        picture.pts = k
        drain(encoder.encode(picture))
    drain(encoder.encode(None))
    decoded.extend(picture.to_ndarray(format="rgb24") for picture in decoder.decode(None))
    if len(decoded) != len(indices):
        raise InputError(f"codec returned {len(decoded)} of {len(indices)} frames")
    return indices, decoded, actual


# ----- crops and targets -------------------------------------------------------------------


def crop_matrix(landmarks: np.ndarray, side: int = INPUT_SIDE) -> np.ndarray:
    """The affine map of observe_face's face crop (frame pixels -> crop pixels)."""
    points = face_crop_points(landmarks, side).astype(np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), points)
    return matrix


@dataclass
class Samples:
    """Model inputs with their targets (``boundary`` is nan where no mask is known)."""

    crops: list[np.ndarray] = field(default_factory=list)  # (S, S, 3) uint8
    boundary: list[np.ndarray] = field(default_factory=list)  # (GRID, GRID) float32
    label: list[int] = field(default_factory=list)
    chunk: list[int] = field(default_factory=list)
    fake_rendition: list[int] = field(default_factory=list)  # 1 for the pseudo-fake

    def extend(self, other: Samples) -> None:
        for name in ("crops", "boundary", "label", "chunk", "fake_rendition"):
            getattr(self, name).extend(getattr(other, name))

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.label)
        return {
            "crops": np.array(self.crops, np.uint8).reshape(n, INPUT_SIDE, INPUT_SIDE, 3),
            "boundary": np.array(self.boundary, np.float16).reshape(n, GRID, GRID),
            "label": np.array(self.label, np.int8),
            "chunk": np.array(self.chunk, np.int16),
            "fake_rendition": np.array(self.fake_rendition, np.int8),
        }


def cut_samples(
    decoded: list[np.ndarray],
    masks: list[np.ndarray] | None,
    label: int,
    chunk_id: int,
    fake_rendition: int,
    scale: float,
) -> Samples:
    """Track the decoded frames afresh, cut the last SAMPLES_PER_CHUNK faces as the pipeline
    cuts them, and warp the masks along (``scale``: decoded pixels per region pixel)."""
    face_config = FaceConfig(face_crop_size=INPUT_SIDE)
    samples = Samples()
    keep_from = len(decoded) - SAMPLES_PER_CHUNK
    with MediaPipeFaceTracker(face_config) as tracker:
        # Two frames before the first kept one let the tracker settle, as in a live call.
        for k in range(max(0, keep_from - 2), len(decoded)):
            image = decoded[k]
            face = tracker.track(VideoFrame(k / 25.0, k, image))
            if k < keep_from or face is None:
                continue
            observed = observe_face(image, face.landmarks, face_config)
            target = np.full((GRID, GRID), np.nan, np.float32)
            if masks is not None:
                matrix = crop_matrix(face.landmarks)
                matrix = matrix @ np.diag([scale, scale, 1.0])  # region -> decoded -> crop
                mask = cv2.warpAffine(
                    masks[k], matrix, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR
                )
                target = boundary_target(mask)
            samples.crops.append(observed.face_crop)
            samples.boundary.append(target)
            samples.label.append(label)
            samples.chunk.append(chunk_id)
            samples.fake_rendition.append(fake_rendition)
    return samples


def clip_samples(
    clip: PoolClip, n_chunks: int, seed: int, blend: bool
) -> tuple[Samples, list[dict[str, Any]]]:
    """Every sample of one clip, and what was done to each chunk (for the record).

    ``blend``: also make a pseudo-fake of every chunk (real clips), rendered under the same
    call conditions as its real rendition."""
    rng = np.random.default_rng(seed)
    samples = Samples()
    record = []
    label = 0 if clip.label == "real" else 1
    for chunk_id, chunk in enumerate(decode_chunks(clip.path, n_chunks, rng)):
        conditions = draw_call(rng)
        entry: dict[str, Any] = {"start": chunk.start_index, "call": asdict(conditions)}
        renditions: list[tuple[list[np.ndarray], list[np.ndarray] | None, int, int]] = [
            (chunk.frames[:CHUNK_FRAMES], None, label, 0)
        ]
        if blend:
            params = draw_blend(rng)
            entry["blend"] = asdict(params)
            fake_frames, masks = blend_chunk(chunk, params)
            renditions.append((fake_frames, masks, 1, 1))
        for frames, masks, frame_label, is_fake in renditions:
            indices, decoded, scale = render_call(
                frames, chunk.source_short_side, chunk.region_scale, chunk.fps, conditions
            )
            kept_masks = None
            if masks is not None:
                kept_masks = [masks[i] for i in indices]
            elif frame_label == 0:
                kept_masks = [np.zeros(frames[0].shape[:2], np.float32)] * len(indices)
            samples.extend(cut_samples(decoded, kept_masks, frame_label, chunk_id, is_fake, scale))
        record.append(entry)
    return samples, record


def cache_file(cache: Path, clip: PoolClip, n_chunks: int, seed: int, blend: bool) -> Path:
    stat = clip.path.stat()
    key = f"{clip.path.resolve()}|{stat.st_size}|{n_chunks}|{seed}|{blend}|{DATA_VERSION}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache / f"{clip.name[:60]}-{digest}.npz"


def prepare_clip(clip: PoolClip, cache: Path, n_chunks: int, seed: int, blend: bool) -> Path | None:
    """The clip's samples as an ``.npz`` under ``cache`` (reused when present); None when the
    clip gave no sample (no face, too short)."""
    path = cache_file(cache, clip, n_chunks, seed, blend)
    empty = path.with_suffix(".none")  # the clip was tried and gave nothing
    if path.exists():
        return path
    if empty.exists():
        return None
    cache.mkdir(parents=True, exist_ok=True)
    try:
        samples, record = clip_samples(clip, n_chunks, seed, blend)
    except InputError as exc:
        log.warning("%s: %s", clip.name, exc)
        empty.write_text(str(exc))
        return None
    if not samples.label:
        log.warning("%s: no usable chunk", clip.name)
        empty.write_text("no usable chunk")
        return None
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **samples.arrays(), record=np.array(json.dumps(record)))
    tmp.replace(path)
    return path
