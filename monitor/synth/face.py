"""A still portrait whose mouth opens, closes, rounds and spreads on command.

The portrait's lip contours come from MediaPipe FaceMesh (static image mode). For the
default face, ``skimage.data.astronaut()``, they were measured once with
:func:`measure_portrait` and are stored below, so rendering needs no MediaPipe at all
(tests check the stored numbers against a fresh measurement).

Rendering one frame is one small ``cv2.remap`` around the mouth, in the portrait's own
pixels: everything below the upper inner lip (lower lip, jaw, chin) moves down by the
wanted gap minus the gap the portrait already has, fading out under the chin and
towards the cheeks; the opened gap is filled with a dark mouth interior and a hint of
upper teeth. A negative move closes the portrait's own smile over its teeth. Width
(rounding, spreading) is a horizontal scaling around the mouth centre. Then one
``cv2.warpAffine`` crops, scales and moves the head into the call-sized frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import cv2
import numpy as np

from monitor.errors import InputError
from monitor.native_log import filtered_native_stderr

# FaceMesh indices: inner lip contours, left to right (image left), outer corners, face.
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
CORNERS = (61, 291)
FOREHEAD, CHIN = 10, 152


@dataclass(frozen=True)
class Portrait:
    """A face picture and where its mouth is (pixels of ``image``)."""

    image: np.ndarray  # HxWx3 uint8 RGB
    upper_lip: np.ndarray  # (11, 2) inner upper lip contour, corner to corner
    lower_lip: np.ndarray  # (11, 2) inner lower lip contour, same corners
    corners: np.ndarray  # (2, 2) outer mouth corners
    forehead: np.ndarray  # (2,) landmark 10
    chin: np.ndarray  # (2,) landmark 152
    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the whole mesh

    @property
    def face_height(self) -> float:
        return float(np.linalg.norm(self.chin - self.forehead))

    @property
    def mouth_center(self) -> np.ndarray:
        return (self.upper_lip[5] + self.lower_lip[5]) / 2.0

    @property
    def mouth_half_width(self) -> float:
        return float(np.linalg.norm(self.corners[1] - self.corners[0]) / 2.0)


# Measured with measure_portrait(skimage.data.astronaut()) (MediaPipe 0.10.21, FaceMesh
# static_image_mode=True, refine_landmarks=False).
_ASTRONAUT_UPPER = [
    (204.7, 140.2), (207.1, 139.5), (210.1, 140.1), (213.7, 141.0), (218.1, 142.0), (223.5, 142.7),
    (229.1, 142.7), (233.6, 142.3), (237.3, 141.8), (240.6, 141.7), (243.0, 142.6),
]  # fmt: skip
_ASTRONAUT_LOWER = [
    (204.7, 140.2), (207.3, 143.4), (209.6, 145.2), (213.2, 147.2), (217.7, 148.8), (223.1, 149.6),
    (228.6, 149.5), (233.3, 148.5), (237.2, 147.0), (239.8, 145.5), (243.0, 142.6),
]  # fmt: skip
_ASTRONAUT_CORNERS = [(201.8, 139.5), (245.9, 142.2)]
_ASTRONAUT_FOREHEAD, _ASTRONAUT_CHIN = (227.5, 72.4), (221.3, 175.5)
_ASTRONAUT_BOX = (178.3, 72.0, 271.9, 175.5)


@cache
def astronaut_portrait() -> Portrait:
    """The default face: NASA's public-domain portrait of Eileen Collins, from scikit-image."""
    from skimage import data

    def points(values: list[tuple[float, float]]) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    return Portrait(
        image=np.ascontiguousarray(data.astronaut()[:, :, :3]),
        upper_lip=points(_ASTRONAUT_UPPER),
        lower_lip=points(_ASTRONAUT_LOWER),
        corners=points(_ASTRONAUT_CORNERS),
        forehead=np.array(_ASTRONAUT_FOREHEAD),
        chin=np.array(_ASTRONAUT_CHIN),
        face_box=_ASTRONAUT_BOX,
    )


def measure_portrait(image: np.ndarray) -> Portrait:
    """Locate the mouth of the one face in ``image`` (RGB uint8) with MediaPipe FaceMesh."""
    import mediapipe as mp

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"portrait must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    with (
        filtered_native_stderr(),
        mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False
        ) as mesh,
    ):
        result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        raise InputError("no face found in the portrait")
    height, width = image.shape[:2]
    landmarks = result.multi_face_landmarks[0].landmark
    points = np.array([(p.x * width, p.y * height) for p in landmarks], dtype=np.float64)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return Portrait(
        image=np.ascontiguousarray(image),
        upper_lip=points[list(UPPER_INNER)],
        lower_lip=points[list(LOWER_INNER)],
        corners=points[list(CORNERS)],
        forehead=points[FOREHEAD],
        chin=points[CHIN],
        face_box=(float(x0), float(y0), float(x1), float(y1)),
    )


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _edge_window(n: int, ramp: int) -> np.ndarray:
    """1 inside, smoothly 0 at both ends: displacements vanish at the ROI border."""
    position = np.arange(n, dtype=np.float64)
    return _smoothstep(position / ramp) * _smoothstep((n - 1 - position) / ramp)


# Mouth interior colours (RGB): dark throat, tongue towards the bottom, upper teeth.
_THROAT = np.array([40.0, 12.0, 16.0])
_TONGUE = np.array([125.0, 55.0, 60.0])
_TEETH = np.array([212.0, 202.0, 190.0])


class MouthRenderer:
    """Renders the portrait's mouth region at a given aperture and width.

    ``aperture`` 1.0 is a gap between the inner lips of ``max_gap`` face heights; the
    portrait's own gap corresponds to some aperture in between, 0 closes the lips.
    """

    def __init__(self, portrait: Portrait, *, max_gap: float = 0.17) -> None:
        # Contours left to right in the image, whatever the landmark order.
        portrait = replace(
            portrait,
            upper_lip=portrait.upper_lip[np.argsort(portrait.upper_lip[:, 0])],
            lower_lip=portrait.lower_lip[np.argsort(portrait.lower_lip[:, 0])],
            corners=portrait.corners[np.argsort(portrait.corners[:, 0])],
        )
        self.portrait = portrait
        image = portrait.image
        face_h = portrait.face_height
        half_w = portrait.mouth_half_width
        self.max_gap_px = max_gap * face_h
        center_x = float(portrait.mouth_center[0])
        inner_left, inner_right = portrait.upper_lip[0, 0], portrait.upper_lip[-1, 0]
        inner_cx = (inner_left + inner_right) / 2.0
        inner_hw = max((inner_right - inner_left) / 2.0, 1.0)
        self.line_y = float(np.interp(center_x, portrait.upper_lip[:, 0], portrait.upper_lip[:, 1]))
        chin_y = float(portrait.chin[1])

        # Region of interest, clipped to the image.
        x0 = int(max(0, np.floor(center_x - 3.0 * half_w)))
        x1 = int(min(image.shape[1], np.ceil(center_x + 3.0 * half_w)))
        y0 = int(max(0, np.floor(self.line_y - 2.2 * half_w)))
        y1 = int(min(image.shape[0], np.ceil(chin_y + 0.32 * face_h)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            raise InputError("the mouth is too close to the portrait's border")
        self.roi = (x0, y0, x1, y1)
        self.xs = np.arange(x0, x1, dtype=np.float64)
        self.ys = np.arange(y0, y1, dtype=np.float64)[:, None]

        # Column profiles: split line (upper inner lip, out to the outer corners), the
        # portrait's own gap, the shape of the opening, and how far the jaw carries.
        line_x = np.concatenate(([portrait.corners[0, 0]], portrait.upper_lip[:, 0]))
        line_y = np.concatenate(([portrait.corners[0, 1]], portrait.upper_lip[:, 1]))
        line_x = np.append(line_x, portrait.corners[1, 0])
        line_y = np.append(line_y, portrait.corners[1, 1])
        self._line_x, self._line_y = line_x, line_y
        lower_y = np.interp(self.xs, portrait.lower_lip[:, 0], portrait.lower_lip[:, 1])
        upper_y = np.interp(self.xs, portrait.upper_lip[:, 0], portrait.upper_lip[:, 1])
        inside = (self.xs > inner_left) & (self.xs < inner_right)
        self.rest_gap = np.where(inside, np.maximum(lower_y - upper_y, 0.0), 0.0)
        self.rest_gap_center = float(np.interp(center_x, self.xs, self.rest_gap))
        u = (self.xs - inner_cx) / inner_hw
        self.lens = np.clip(1.0 - u * u, 0.0, 1.0) ** 0.6
        window_x = _edge_window(len(self.xs), max(4, len(self.xs) // 6))
        self.jaw = np.exp(-0.5 * ((self.xs - center_x) / (1.1 * half_w)) ** 2) * window_x
        self.lens *= window_x
        self.rest_gap *= window_x
        self.center_x = center_x
        self.half_w = half_w
        self.chin_y = chin_y
        self.face_h = face_h
        self.window_x = window_x
        self.window_y = _edge_window(len(self.ys), max(4, len(self.ys) // 6))[:, None]

    def _split_y(self, x: np.ndarray) -> np.ndarray:
        return np.interp(x, self._line_x, self._line_y)

    def _jaw_fraction(self, y: np.ndarray) -> np.ndarray:
        """0 at the lip line, 1 at the chin: the lower lip's own shape gives way to the jaw's."""
        return _smoothstep((y - self.line_y) / max(self.chin_y - self.line_y, 1.0))

    def _under_chin_fade(self, y: np.ndarray) -> np.ndarray:
        start = self.chin_y - 0.05 * self.face_h
        return 1.0 - _smoothstep((y - start) / (0.3 * self.face_h))

    def render(self, aperture: float, width: float, out: np.ndarray) -> None:
        """Write the mouth region for this shape into ``out`` (a copy of the portrait)."""
        gap = float(aperture) * self.max_gap_px
        xs, ys = self.xs[None, :], self.ys
        # Undo the width change: a horizontal scaling around the mouth centre.
        bump = np.exp(
            -0.5
            * (
                ((xs - self.center_x) / (1.3 * self.half_w)) ** 2
                + ((ys - self.line_y) / (0.9 * self.half_w)) ** 2
            )
        )
        scale = 1.0 + (float(width) - 1.0) * bump * self.window_y * self.window_x[None, :]
        src_x = self.center_x + (xs - self.center_x) / scale
        col = src_x - self.xs[0]  # fractional column index for the column profiles
        grid = np.arange(len(self.xs), dtype=np.float64)
        lens = np.interp(col, grid, self.lens)
        rest_gap = np.interp(col, grid, self.rest_gap)
        jaw = np.interp(col, grid, self.jaw)
        line_move = gap * lens - rest_gap  # how far the lower lip moves, per column
        jaw_move = (gap - self.rest_gap_center) * jaw

        def moved(y: np.ndarray) -> np.ndarray:
            blend = self._jaw_fraction(y)
            fade = self._under_chin_fade(y) * self.window_y
            return (line_move * (1.0 - blend) + jaw_move * blend) * fade

        # Invert y_out = y_src + moved(y_src) by fixed-point iteration (|d moved/dy| < 1).
        ys_full = np.broadcast_to(ys, src_x.shape)
        src_y = ys_full - moved(ys_full)
        for _ in range(3):
            src_y = ys_full - moved(src_y)
        split = self._split_y(src_x)
        lower = ys_full > split
        src_y = np.where(lower, src_y, ys_full)
        warped = cv2.remap(
            self.portrait.image,
            src_x.astype(np.float32),
            src_y.astype(np.float32),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        ).astype(np.float32)

        # Where a lower-region pixel would come from above the split, the mouth is open.
        open_gap = np.maximum(line_move, 0.0)
        alpha = np.clip(split - src_y, 0.0, 1.0) * np.clip(ys_full - split, 0.0, 1.0)
        alpha = np.where(lower, alpha, 0.0)
        if gap > 0.5 and alpha.any():
            depth = np.clip((ys_full - split) / np.maximum(open_gap, 1.0), 0.0, 1.0)[..., None]
            interior = _THROAT + (_TONGUE - _THROAT) * _smoothstep((depth - 0.55) / 0.45)
            teeth_band = 1.0 - _smoothstep((depth - 0.12) / 0.18)
            teeth = teeth_band * np.clip(open_gap / 6.0, 0.0, 1.0)[..., None] * lens[..., None]
            interior = interior + (_TEETH - interior) * teeth * 0.85
            warped = warped + (interior - warped) * alpha[..., None]
        x0, y0, x1, y1 = self.roi
        out[y0:y1, x0:x1] = np.clip(warped + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Small rigid head motion in the output frame: roll (degrees), shift (pixels), zoom."""

    roll_deg: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    zoom: float = 1.0


def crop_transform(
    portrait: Portrait, size: tuple[int, int], face_fraction: float = 0.45
) -> np.ndarray:
    """3x3 matrix mapping portrait pixels into a ``size`` = (height, width) call frame.

    The mesh (brow to chin) fills ``face_fraction`` of the frame height, its centre a
    little below the middle so the hair fits, as in a webcam call. The crop stays inside
    the portrait.
    """
    out_h, out_w = size
    img_h, img_w = portrait.image.shape[:2]
    x0, y0, x1, y1 = portrait.face_box
    scale = face_fraction * out_h / max(y1 - y0, 1.0)
    scale = max(scale, out_w / img_w, out_h / img_h)  # never show past the portrait's edge
    src_w, src_h = out_w / scale, out_h / scale
    left = np.clip((x0 + x1) / 2.0 - src_w / 2.0, 0.0, img_w - src_w)
    top = np.clip((y0 + y1) / 2.0 - 0.52 * src_h, 0.0, img_h - src_h)
    return np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale], [0.0, 0.0, 1.0]])


def pose_transform(pose: HeadPose, center: tuple[float, float]) -> np.ndarray:
    """3x3 matrix of a head pose: rotate and zoom about ``center``, then shift."""
    rotation = cv2.getRotationMatrix2D(center, pose.roll_deg, pose.zoom)
    matrix = np.vstack([rotation, [0.0, 0.0, 1.0]])
    matrix[0, 2] += pose.shift_x
    matrix[1, 2] += pose.shift_y
    return matrix


class FaceAnimator:
    """Call-sized RGB frames of the portrait for given mouth shapes and head poses.

    The portrait should be upright and frontal. One animator draws into one canvas:
    use one per thread.
    """

    def __init__(
        self, portrait: Portrait | None = None, size: tuple[int, int] = (480, 640)
    ) -> None:
        if size[0] < 64 or size[1] < 64:
            raise InputError(f"frame size {size} too small (at least 64x64)")
        self.portrait = portrait or astronaut_portrait()
        self.size = (int(size[0]), int(size[1]))
        self.mouth = MouthRenderer(self.portrait)
        self.crop = crop_transform(self.portrait, self.size)
        face_center = self.crop @ np.array([*self.portrait.mouth_center, 1.0])
        self.pivot = (float(face_center[0]), float(face_center[1] - 0.3 * self.face_height_px))
        self._canvas = self.portrait.image.copy()

    @property
    def face_height_px(self) -> float:
        """Face height (landmark 10 to 152) in output pixels, at rest."""
        return self.portrait.face_height * float(self.crop[0, 0])

    def render(
        self, aperture: float, width: float = 1.0, pose: HeadPose | None = None, gain: float = 1.0
    ) -> np.ndarray:
        self.mouth.render(aperture, width, self._canvas)
        matrix = pose_transform(pose or HeadPose(), self.pivot) @ self.crop
        frame = cv2.warpAffine(
            self._canvas,
            matrix[:2],
            (self.size[1], self.size[0]),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )
        if gain != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=gain)
        return frame
