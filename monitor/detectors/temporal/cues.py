"""The temporal detector's cues: what is measured per frame and summarised per window.

Every cue compares the mouth with the rest of the same face (or with the same face a frame
earlier), so that who the person is, the camera and the codec largely cancel out:

- ``mouth_blur``: sharpness of the lips against the eyes. A regenerated mouth box is
  rendered at a low resolution (Wav2Lip: 96x96 for the whole face) or denoised, so it is
  often blurrier than the genuine eyes around it.
- ``face_blur``: how sharp edges are inside the face outline against edges just outside it
  (hair, ears, jaw line, collar). Tools that regenerate the whole face box (Wav2Lip,
  TalkLip) leave a blurry face in a sharp head. Edge sharpness is measured as fine-scale
  over coarse-scale detail on structured pixels only, so how much texture a region has
  (a plain wall, a bald head) matters little.
- ``mouth_interior``: sharpness of the mouth opening (teeth, tongue) against the eyes when
  the mouth is open; generators smear teeth.
- ``lip_jitter``: frame-to-frame acceleration of the lip landmarks after removing head
  motion, against that of the stable landmarks (tracking noise). A mouth generated frame
  by frame wobbles more than the face it is pasted into.
- ``lip_smoothness``: lip acceleration per unit of lip speed (the reverse view: over-smooth,
  exaggerated articulation gives low values).
- ``lip_head_ratio``: lip speed against head speed. Lips that move while the head is frozen
  (a still photo driven by audio) are unnatural.
- ``mouth_flicker``: brightness flicker of the skin around the mouth against the skin of
  the upper face.
- ``mouth_colour``: YCbCr chroma offset of the skin around the mouth against the upper face.
- ``boundary_seam``: the sharpest step in how much the lower face changes between frames,
  going down from the lips: a pasted box changes inside and not outside its edge.
- ``texture_flicker``: how much the fine-detail sharpness of the skin around the mouth jumps
  from frame to frame, against the same for the upper face. A generator renders the mouth
  box afresh in every frame, so its detail comes and goes; a camera's does not. Of the
  training pool's fakes paired with their own real input, all 8 read higher than the
  input. It needs fine detail (read at 256 px), which strong call compression removes.

The detail cue (``texture_flicker``) reads the face crop at its full resolution; the others
read it at :data:`COARSE_SIDE` pixels, the resolution they were designed and calibrated at.

The functions here are pure (arrays in, numbers out) so each can be tested on synthetic
input with a known answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from monitor.detectors.temporal import geometry
from monitor.features.types import FaceObservation

# Sharpness is mean |Laplacian| in grey levels; this floor keeps ratios finite on flat crops.
SHARPNESS_FLOOR = 1.0
# A mouth opening smaller than this many mouth-crop pixels has no interior to look at.
MIN_OPENING_PIXELS = 8
# Mouth counts as open above this aperture (inner-lip gap / face height).
OPEN_APERTURE = 0.02
# Skin patches are squares of this half-size in face-crop pixels (112 px crop).
PATCH_RADIUS = 3
# Edge sharpness: fine and coarse blur scales (face-crop pixels), the band left out on each
# side of the face outline, and which pixels count as structured.
FINE_SIGMA, COARSE_SIGMA = 0.7, 2.0
EDGE_MARGIN = 5
STRUCTURE_PERCENTILE = 60
MIN_STRUCTURED_PIXELS = 30
# Landmark motion is measured per frame at this reference rate.
REFERENCE_FPS = 25.0
# Every cue but the detail cue reads the face crop resampled to this side.
COARSE_SIDE = 112
# Skin texture sharpness: fine detail (grey minus a 1 px blur) per unit of mid-scale detail
# (1 px minus 3 px blur), over skin patches this fraction of the crop side across.
TEXTURE_FINE_SIGMA, TEXTURE_MID_SIGMA = 1.0, 3.0
TEXTURE_PATCH_FRACTION = 20 / 256
# Fewer runs of three consecutive frames than this: no texture flicker for the window.
MIN_FLICKER_TRIPLES = 10


@dataclass(frozen=True, slots=True)
class CueInfo:
    name: str
    label: str  # how the rationale names it


CUES: tuple[CueInfo, ...] = (
    CueInfo("mouth_blur", "mouth sharpness relative to the eyes"),
    CueInfo("face_blur", "edge sharpness inside the face relative to around it"),
    CueInfo("mouth_interior", "mouth-interior (teeth) sharpness relative to the eyes"),
    CueInfo("lip_jitter", "perioral landmark jitter"),
    CueInfo("lip_smoothness", "lip acceleration per unit of lip speed"),
    CueInfo("lip_head_ratio", "lip motion relative to head motion"),
    CueInfo("mouth_flicker", "brightness flicker around the mouth relative to the upper face"),
    CueInfo("mouth_colour", "chroma offset of the mouth region relative to the upper face"),
    CueInfo("boundary_seam", "seam in frame-to-frame change below the mouth"),
    CueInfo(
        "texture_flicker",
        "frame-to-frame sharpness flicker of the skin around the mouth relative to the upper face",
    ),
)
CUE_NAMES = tuple(cue.name for cue in CUES)
CUE_LABELS = {cue.name: cue.label for cue in CUES}


@dataclass(frozen=True, slots=True)
class FrameMeasure:
    """What one face frame contributes to the cues (computed once, reused by every window)."""

    t: float
    index: int  # frame number in the stream: consecutive frames differ by one
    eye_sharpness: float
    mouth_sharpness: float
    face_blur: float  # log ratio of edge sharpness inside vs outside the face outline
    interior_sharpness: float  # nan when the mouth is closed
    aperture: float
    lower_skin: np.ndarray  # (3,) mean Y, Cr, Cb beside the mouth and on the chin
    upper_skin: np.ndarray  # (3,) mean Y, Cr, Cb on the upper cheeks and forehead
    landmarks: np.ndarray  # (N, 2) pixels
    face_grey: np.ndarray  # (S, S) uint8 (a quarter of float32's memory), for frame change
    face_points: np.ndarray  # (N, 2) landmarks in coarse face-crop pixels
    lower_texture: float  # log fine/mid detail of the skin around the mouth (full resolution)
    upper_texture: float  # the same on the upper cheeks and forehead


# ----- per-frame measurements ---------------------------------------------------------------


def laplacian_energy(grey: np.ndarray) -> np.ndarray:
    """|Laplacian| per pixel: high-frequency energy, which blur removes first."""
    return np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))


def box_mean(image: np.ndarray, points: np.ndarray, pad: float) -> float:
    """Mean of ``image`` over the bounding box of ``points`` grown by ``pad`` of its size."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    pad_x, pad_y = (x1 - x0) * pad, (y1 - y0) * pad
    height, width = image.shape[:2]
    top, bottom = max(int(y0 - pad_y), 0), min(int(math.ceil(y1 + pad_y)) + 1, height)
    left, right = max(int(x0 - pad_x), 0), min(int(math.ceil(x1 + pad_x)) + 1, width)
    region = image[top:bottom, left:right]
    return float(region.mean()) if region.size else float("nan")


def patch_means(
    image: np.ndarray, point_sets: tuple[np.ndarray, ...], radius: int = PATCH_RADIUS
) -> tuple[np.ndarray, ...]:
    """Per point set: the mean over small squares centred on each point, averaged over the
    points (channels kept). One box blur serves every set."""
    size = 2 * radius + 1
    local_mean = cv2.blur(image, (size, size), borderType=cv2.BORDER_REFLECT)
    height, width = image.shape[:2]
    means = []
    for points in point_sets:
        xs = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
        ys = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
        means.append(local_mean[ys, xs].reshape(len(points), -1).mean(axis=0))
    return tuple(means)


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (its default, linear method) to the bit, from a
    partition: numpy's general path costs six times as much on one frame's pixels."""
    flat = values.ravel()
    virtual = (q / 100.0) * (flat.size - 1)
    lower = int(math.floor(virtual))
    upper = min(lower + 1, flat.size - 1)
    part = np.partition(flat, [lower, upper] if upper != lower else [lower])
    a, b = part[lower], part[upper]
    t = virtual - lower
    diff = np.subtract(b, a)
    # numpy's lerp: from the nearer end, so that t = 1 gives b exactly
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def edge_sharpness_ratio(grey: np.ndarray, face_points: np.ndarray) -> float:
    """log(edge sharpness inside the face outline / just outside it); nan without structure.

    Edge sharpness is fine-scale detail (grey minus a 0.7 px blur) per unit of coarse-scale
    detail (0.7 px minus 2 px blur), summed over the 40 % most structured pixels of the crop:
    a blurred region keeps its coarse structure and loses the fine one.
    """
    fine_blur = cv2.GaussianBlur(grey, (0, 0), FINE_SIGMA)
    fine = np.abs(grey - fine_blur)
    coarse = np.abs(fine_blur - cv2.GaussianBlur(grey, (0, 0), COARSE_SIGMA))
    outline = polygon_mask(grey.shape, face_points[list(geometry.FACE_OVAL)]).astype(np.uint8)
    kernel = np.ones((EDGE_MARGIN, EDGE_MARGIN), np.uint8)
    inside = cv2.erode(outline, kernel).astype(bool)
    outside = ~cv2.dilate(outline, kernel).astype(bool)
    # The threshold from every other pixel: the same answer at a quarter of the cost.
    structured = coarse > percentile(coarse[::2, ::2], STRUCTURE_PERCENTILE)
    ratios = []
    for region in (inside & structured, outside & structured):
        coarse_sum = float(coarse[region].sum())
        if region.sum() < MIN_STRUCTURED_PIXELS or coarse_sum <= 0:
            return float("nan")
        ratios.append(float(fine[region].sum()) / coarse_sum)
    if ratios[0] <= 0 or ratios[1] <= 0:
        return float("nan")
    return math.log(ratios[0] / ratios[1])


def _detail_ratio(fine_sum: float, mid_sum: float) -> float:
    """log(fine / mid-scale detail); nan if flat.

    Contrast and lighting scale both alike and cancel; what is left is how much of the
    detail sits at the finest scale, which an upscaled or denoised region lacks.
    """
    if fine_sum <= 0 or mid_sum <= 0:
        return math.nan
    return math.log(fine_sum / mid_sum)


def _kernel_radius(sigma: float) -> int:
    """Half the size of the kernel cv2.GaussianBlur(float32, (0, 0), sigma) uses."""
    return (int(round(sigma * 8 + 1)) | 1) // 2


def skin_textures(
    grey: np.ndarray, point_sets: tuple[np.ndarray, ...], radius: int
) -> tuple[float, ...]:
    """log(fine / mid-scale detail) of ``grey`` summed over squares of ``radius`` centred
    on each point set's points (nan if flat), one value per point set.

    The two blurs run once per point set, on the box around its squares (with the kernels'
    reach as margin, or the image's own border): the same numbers as blurring the whole
    crop at a fraction of the cost.
    """
    height, width = grey.shape
    margin = max(_kernel_radius(TEXTURE_MID_SIGMA), _kernel_radius(TEXTURE_FINE_SIGMA))
    values = []
    for points in point_sets:
        squares = []
        for x, y in np.round(points).astype(int):
            y0, y1 = max(y - radius, 0), min(max(y + radius + 1, 0), height)
            x0, x1 = max(x - radius, 0), min(max(x + radius + 1, 0), width)
            if y1 > y0 and x1 > x0:
                squares.append((y0, y1, x0, x1))
        if not squares:
            values.append(math.nan)
            continue
        top = max(min(s[0] for s in squares) - margin, 0)
        bottom = min(max(s[1] for s in squares) + margin, height)
        left = max(min(s[2] for s in squares) - margin, 0)
        right = min(max(s[3] for s in squares) + margin, width)
        region = grey[top:bottom, left:right]
        mask = np.zeros(region.shape, bool)
        for y0, y1, x0, x1 in squares:
            mask[y0 - top : y1 - top, x0 - left : x1 - left] = True
        fine_blur = cv2.GaussianBlur(region, (0, 0), TEXTURE_FINE_SIGMA)[mask]
        mid_blur = cv2.GaussianBlur(region, (0, 0), TEXTURE_MID_SIGMA)[mask]
        fine_sum = float(np.abs(region[mask] - fine_blur).sum())
        mid_sum = float(np.abs(fine_blur - mid_blur).sum())
        values.append(_detail_ratio(fine_sum, mid_sum))
    return tuple(values)


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def measure_frame(t: float, index: int, face: FaceObservation) -> FrameMeasure:
    """The per-frame numbers every cue is built from."""
    detail_grey = cv2.cvtColor(face.face_crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail_side = detail_grey.shape[0]
    rotated = geometry.upright(face.landmarks)
    detail_points = geometry.face_crop_points(rotated, detail_side, rotated=True)
    radius = max(int(round(TEXTURE_PATCH_FRACTION * detail_side / 2)), 1)
    lower_texture, upper_texture = skin_textures(
        detail_grey,
        (detail_points[list(geometry.LOWER_SKIN)], detail_points[list(geometry.UPPER_SKIN)]),
        radius,
    )

    coarse_crop = face.face_crop
    if detail_side != COARSE_SIDE:
        coarse_crop = cv2.resize(
            face.face_crop, (COARSE_SIDE, COARSE_SIDE), interpolation=cv2.INTER_AREA
        )
    face_points = geometry.face_crop_points(rotated, COARSE_SIDE, rotated=True)
    crop_h, crop_w = face.mouth_crop.shape[:2]
    mouth_points = geometry.mouth_crop_points(rotated, crop_h, crop_w, rotated=True)

    face_grey_u8 = cv2.cvtColor(coarse_crop, cv2.COLOR_RGB2GRAY)
    face_grey = face_grey_u8.astype(np.float32)
    face_detail = laplacian_energy(face_grey)
    eyes = 0.5 * (
        box_mean(face_detail, face_points[list(geometry.LEFT_EYE)], 0.2)
        + box_mean(face_detail, face_points[list(geometry.RIGHT_EYE)], 0.2)
    )
    mouth = box_mean(face_detail, face_points[list(geometry.LIP_OUTLINE)], 0.15)

    interior = float("nan")
    if face.aperture >= OPEN_APERTURE:
        opening = polygon_mask((crop_h, crop_w), mouth_points[list(geometry.MOUTH_OPENING)])
        if opening.sum() >= MIN_OPENING_PIXELS:
            mouth_grey = cv2.cvtColor(face.mouth_crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
            interior = float(laplacian_energy(mouth_grey)[opening].mean())

    ycrcb = cv2.cvtColor(coarse_crop, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    lower_skin, upper_skin = patch_means(
        ycrcb, (face_points[list(geometry.LOWER_SKIN)], face_points[list(geometry.UPPER_SKIN)])
    )
    return FrameMeasure(
        t=t,
        index=index,
        eye_sharpness=eyes,
        mouth_sharpness=mouth,
        face_blur=edge_sharpness_ratio(face_grey, face_points),
        interior_sharpness=interior,
        aperture=face.aperture,
        lower_skin=lower_skin,
        upper_skin=upper_skin,
        landmarks=face.landmarks,
        face_grey=face_grey_u8,
        face_points=face_points,
        lower_texture=lower_texture,
        upper_texture=upper_texture,
    )


# ----- window cues ----------------------------------------------------------------------------


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log((a + SHARPNESS_FLOOR) / (b + SHARPNESS_FLOOR))


def mouth_blur(mouth_sharpness: np.ndarray, eye_sharpness: np.ndarray) -> float:
    """Median log ratio of lip to eye sharpness (lower: blurrier mouth)."""
    return float(np.nanmedian(_log_ratio(mouth_sharpness, eye_sharpness)))


def mouth_interior(
    interior_sharpness: np.ndarray, eye_sharpness: np.ndarray, min_frames: int = 3
) -> float:
    """Median log ratio of mouth-opening to eye sharpness over open-mouth frames; nan if too few."""
    open_frames = np.isfinite(interior_sharpness)
    if open_frames.sum() < min_frames:
        return float("nan")
    return float(np.median(_log_ratio(interior_sharpness[open_frames], eye_sharpness[open_frames])))


def _mean_speed(tracks: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(tracks, axis=0), axis=-1).mean())


def _mean_acceleration(tracks: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(tracks, 2, axis=0), axis=-1).mean())


def landmark_kinematics(tracks: np.ndarray, fps: float) -> dict[str, float]:
    """``lip_jitter``, ``lip_smoothness`` and ``lip_head_ratio`` from landmark tracks (T, N, 2).

    Head motion is removed with a similarity fit on the stable points; all lengths are in
    face sizes, and per-frame rates are rescaled to 25 fps.
    """
    if len(tracks) < 4:
        return {"lip_jitter": math.nan, "lip_smoothness": math.nan, "lip_head_ratio": math.nan}
    aligned = geometry.remove_head_motion(tracks)
    lips = aligned[:, list(geometry.LIPS)]
    stable = aligned[:, list(geometry.STABLE)]
    rate = fps / REFERENCE_FPS  # > 1: per-frame steps are shorter than at 25 fps
    lip_speed = _mean_speed(lips) * rate
    lip_acc = _mean_acceleration(lips) * rate**2
    stable_acc = _mean_acceleration(stable) * rate**2
    size = max(geometry.interocular(tracks[len(tracks) // 2]), 1e-6)
    head = tracks[:, list(geometry.STABLE)].astype(np.float64).mean(axis=1, keepdims=True) / size
    head_speed = _mean_speed(head) * rate
    return {
        "lip_jitter": math.log((lip_acc + 1e-4) / (stable_acc + 1e-4)),
        "lip_smoothness": lip_acc / (lip_speed + 1e-4),
        "lip_head_ratio": math.log((lip_speed + 1e-4) / (head_speed + 1e-4)),
    }


def _rms_second_difference(series: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.diff(series, 2) ** 2)))


def mouth_flicker(lower_luma: np.ndarray, upper_luma: np.ndarray) -> float:
    """Log ratio of brightness flicker (RMS second difference) around the mouth vs upper face."""
    if len(lower_luma) < 4:
        return math.nan
    return math.log(
        (_rms_second_difference(lower_luma) + 0.1) / (_rms_second_difference(upper_luma) + 0.1)
    )


def mouth_colour(lower_skin: np.ndarray, upper_skin: np.ndarray) -> float:
    """Distance in the Cr/Cb plane between the median skin colour around the mouth and above."""
    offset = np.nanmedian(lower_skin[:, 1:] - upper_skin[:, 1:], axis=0)
    return float(np.hypot(*offset))


def boundary_seam(face_grey: np.ndarray, face_points: np.ndarray) -> float:
    """Sharpest relative drop, going down from the lower lip, in frame-to-frame change.

    ``face_grey`` is (T, S, S), ``face_points`` the mean landmark positions in the crop.
    Genuine change (the jaw moving) fades smoothly downwards; a pasted box stops at an edge.
    """
    if len(face_grey) < 3:
        return math.nan
    side = face_grey.shape[1]
    top = int(np.clip(face_points[geometry.LOWER_LIP_BOTTOM, 1], 0, side - 1))
    chin = face_points[geometry.CHIN, 1]
    bottom = int(np.clip(chin + 0.15 * (chin - top), top + 1, side))
    left = int(np.clip(face_points[geometry.JAW_LEFT, 0], 0, side - 1))
    right = int(np.clip(face_points[geometry.JAW_RIGHT, 0], left + 1, side))
    region = face_grey[:, top:bottom, left:right]
    profile = np.abs(np.diff(region, axis=0)).mean(axis=(0, 2))
    step = 3
    if len(profile) < 2 * step:
        return math.nan
    drops = (profile[:-step] - profile[step:]) / (profile.mean() + 1e-3)
    return float(drops.max())


def texture_flicker(lower: np.ndarray, upper: np.ndarray, indices: np.ndarray) -> float:
    """log(mean |second difference| of the lower-face texture sharpness over that of the upper
    face), over runs of three consecutive frames; nan with too few runs.

    Second differences ignore slow drifts (focus, lighting, the face turning); what is
    left is frame-to-frame flicker. Codec effects (a sharper key frame) hit the whole face
    and cancel in the ratio.
    """
    consecutive = (np.diff(indices)[1:] == 1) & (np.diff(indices)[:-1] == 1)
    lower_jumps = np.abs(lower[2:] - 2 * lower[1:-1] + lower[:-2])[consecutive]
    upper_jumps = np.abs(upper[2:] - 2 * upper[1:-1] + upper[:-2])[consecutive]
    measured = np.isfinite(lower_jumps) & np.isfinite(upper_jumps)
    if measured.sum() < MIN_FLICKER_TRIPLES:
        return math.nan
    return math.log((lower_jumps[measured].mean() + 1e-4) / (upper_jumps[measured].mean() + 1e-4))


def window_cues(frames: list[FrameMeasure], fps: float) -> dict[str, float]:
    """Every cue's raw value for one window of face frames (nan where it cannot be measured)."""
    eyes = np.array([f.eye_sharpness for f in frames])
    face_blur = np.array([f.face_blur for f in frames])
    cues = {
        "mouth_blur": mouth_blur(np.array([f.mouth_sharpness for f in frames]), eyes),
        "face_blur": float(np.nanmedian(face_blur)) if np.isfinite(face_blur).any() else math.nan,
        "mouth_interior": mouth_interior(np.array([f.interior_sharpness for f in frames]), eyes),
    }
    cues.update(landmark_kinematics(np.stack([f.landmarks for f in frames]), fps))
    lower = np.stack([f.lower_skin for f in frames])
    upper = np.stack([f.upper_skin for f in frames])
    cues["mouth_flicker"] = mouth_flicker(lower[:, 0], upper[:, 0])
    cues["mouth_colour"] = mouth_colour(lower, upper)
    mean_points = np.mean([f.face_points for f in frames], axis=0)
    greys = np.stack([f.face_grey for f in frames]).astype(np.float32)
    cues["boundary_seam"] = boundary_seam(greys, mean_points)
    cues["texture_flicker"] = texture_flicker(
        np.array([f.lower_texture for f in frames]),
        np.array([f.upper_texture for f in frames]),
        np.array([f.index for f in frames]),
    )
    return {name: float(cues[name]) for name in CUE_NAMES}
