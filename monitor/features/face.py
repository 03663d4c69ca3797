"""Face and lip tracking per video frame, behind a small swappable interface.

The implementation is MediaPipe FaceMesh in tracking mode (478 landmarks with the
refined lips/eyes/irises). From the landmarks we derive size-normalized geometry
(mouth aperture and width) and two crops aligned so the eye line is horizontal,
each cut with one affine warp straight from the full frame (no intermediate copies).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from monitor import native_log
from monitor.config import FaceConfig
from monitor.features.types import FaceObservation
from monitor.media import VideoFrame

# FACEMESH_LIPS's 40 unique landmarks in a fixed order: outer upper lip from mouth
# corner 61 to corner 291, outer lower lip between them (61 side first), then the inner
# upper lip from inner corner 78 to 308 and the inner lower lip between them.
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_OUTER_LOWER = (146, 91, 181, 84, 17, 314, 405, 321, 375)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
LIP_INDICES = LIP_OUTER_UPPER + LIP_OUTER_LOWER + LIP_INNER_UPPER + LIP_INNER_LOWER

# Landmarks used for geometry and alignment.
INNER_LIP_TOP, INNER_LIP_BOTTOM = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
FOREHEAD, CHIN = 10, 152
CHEEK_LEFT, CHEEK_RIGHT = 234, 454
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 33, 263  # image-left eye, image-right eye
NOSE_TIP = 1

# Face crop: square around the landmarks' extent, this much larger than its longer side.
FACE_CROP_MARGIN = 1.25
# Mouth crop: cheek-to-cheek width times this, from just above the nose tip downwards.
MOUTH_CROP_WIDTH_SCALE = 1.2
MOUTH_CROP_TOP_OFFSET = 0.05  # of the crop width, above the nose tip
# FaceMesh gets at most this many pixels on the long side; landmarks are normalized,
# so feeding a downscaled 1080p frame costs little accuracy and a lot less time.
MAX_TRACKING_SIDE = 640


@runtime_checkable
class FaceTracker(Protocol):
    """Tracks one face across consecutive frames of one session."""

    def track(self, frame: VideoFrame) -> FaceObservation | None:
        """The face in ``frame``, or None when there is none."""
        ...

    def close(self) -> None: ...


def _distance(points: np.ndarray, a: int, b: int) -> float:
    return float(np.hypot(*(points[a] - points[b])))


def _crop_warp(
    center: np.ndarray, angle: float, size_src: tuple[float, float], size_dst: tuple[int, int]
) -> np.ndarray:
    """Affine map taking a rotated (``angle`` rad) box of ``size_src`` (w, h) source pixels
    centred at ``center`` onto an upright ``size_dst`` (w, h) image."""
    sx = size_dst[0] / size_src[0]
    sy = size_dst[1] / size_src[1]
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotate by -angle about the centre, scale, then move the centre to the middle.
    linear = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]], dtype=np.float64)
    offset = np.array(size_dst, dtype=np.float64) / 2.0 - linear @ center
    return np.hstack([linear, offset[:, None]])


def _warp(image: np.ndarray, matrix: np.ndarray, size_dst: tuple[int, int]) -> np.ndarray:
    """One bilinear warp. Bilinear sampling at under half size aliases (flicker between
    frames), so a strong downscale first halves just the crop's region with a Gaussian
    pyramid (cheap, unlike INTER_AREA at non-integer ratios) until the warp is gentle."""
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if 0 < scale < 0.5:
        inverse = cv2.invertAffineTransform(matrix)
        w, h = size_dst
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64)
        src = corners @ inverse.T
        x0 = max(int(np.floor(src[:, 0].min())) - 4, 0)
        y0 = max(int(np.floor(src[:, 1].min())) - 4, 0)
        x1 = min(int(np.ceil(src[:, 0].max())) + 4, image.shape[1])
        y1 = min(int(np.ceil(src[:, 1].max())) + 4, image.shape[0])
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            region = image[y0:y1, x0:x1]
            factor = 1
            while scale * factor < 0.5 and min(region.shape[:2]) >= 8:
                region = cv2.pyrDown(region)  # pixel j of the result sits at 2j
                factor *= 2
            linear = matrix[:, :2]
            offset = linear @ np.array([x0, y0], dtype=np.float64) + matrix[:, 2]
            matrix = np.hstack([linear * factor, offset[:, None]])
            image = region
    return cv2.warpAffine(
        image, matrix, size_dst, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _mouth_box(
    upright: np.ndarray, to_image: np.ndarray, config: FaceConfig
) -> tuple[np.ndarray, tuple[float, float]]:
    """Centre (image pixels) and (w, h) of the lower-face box the mouth crop shows."""
    crop_h, crop_w = config.mouth_crop_size
    mouth_w = abs(float(upright[CHEEK_RIGHT, 0] - upright[CHEEK_LEFT, 0])) * MOUTH_CROP_WIDTH_SCALE
    mouth_w = max(mouth_w, 1.0)
    mouth_h = mouth_w * crop_h / crop_w
    top = float(upright[NOSE_TIP, 1]) - MOUTH_CROP_TOP_OFFSET * mouth_w
    center_upright = np.array(
        [(upright[CHEEK_LEFT, 0] + upright[CHEEK_RIGHT, 0]) / 2.0, top + mouth_h / 2.0]
    )
    return to_image @ center_upright, (mouth_w, mouth_h)


def mouth_crop_matrix(
    landmarks: np.ndarray, config: FaceConfig, scale: float = 1.0
) -> tuple[np.ndarray, tuple[int, int]]:
    """The affine map of :func:`observe_face`'s mouth crop (times ``scale``) and its size,
    so landmarks can be drawn where they are in the crop the model sees."""
    eye_dx, eye_dy = landmarks[EYE_OUTER_RIGHT] - landmarks[EYE_OUTER_LEFT]
    angle = math.atan2(float(eye_dy), float(eye_dx))
    cos, sin = math.cos(angle), math.sin(angle)
    to_image = np.array([[cos, -sin], [sin, cos]], dtype=np.float64)
    upright = landmarks.astype(np.float64) @ to_image
    center, box = _mouth_box(upright, to_image, config)
    crop_h, crop_w = config.mouth_crop_size
    size = (int(round(crop_w * scale)), int(round(crop_h * scale)))
    return _crop_warp(center, angle, box, size), size


def observe_face(image: np.ndarray, landmarks: np.ndarray, config: FaceConfig) -> FaceObservation:
    """Geometry and aligned crops from pixel landmarks (any tracker with the FaceMesh topology)."""
    height, width = image.shape[:2]
    x0, y0 = np.maximum(landmarks.min(axis=0), 0.0)
    x1, y1 = landmarks.max(axis=0)
    face_box = (float(x0), float(y0), float(min(x1, width)), float(min(y1, height)))

    face_height = max(_distance(landmarks, FOREHEAD, CHIN), 1e-6)
    face_width = max(_distance(landmarks, CHEEK_LEFT, CHEEK_RIGHT), 1e-6)
    aperture = _distance(landmarks, INNER_LIP_TOP, INNER_LIP_BOTTOM) / face_height
    mouth_width = _distance(landmarks, MOUTH_LEFT, MOUTH_RIGHT) / face_width

    eye_dx, eye_dy = landmarks[EYE_OUTER_RIGHT] - landmarks[EYE_OUTER_LEFT]
    angle = math.atan2(float(eye_dy), float(eye_dx))
    cos, sin = math.cos(angle), math.sin(angle)
    # Landmarks in the face's upright frame (rotated by -angle about the origin).
    upright = landmarks @ np.array([[cos, -sin], [sin, cos]], dtype=np.float32)
    to_image = np.array([[cos, -sin], [sin, cos]], dtype=np.float64)  # upright -> image

    u_min, u_max = upright.min(axis=0), upright.max(axis=0)
    face_side = float(max(u_max - u_min)) * FACE_CROP_MARGIN
    face_center = to_image @ ((u_min + u_max) / 2.0)
    face_size = (config.face_crop_size, config.face_crop_size)
    face_matrix = _crop_warp(face_center, angle, (face_side, face_side), face_size)
    face_crop = _warp(image, face_matrix, face_size)

    crop_h, crop_w = config.mouth_crop_size
    mouth_center, mouth_size = _mouth_box(upright, to_image, config)
    mouth_matrix = _crop_warp(mouth_center, angle, mouth_size, (crop_w, crop_h))
    mouth_crop = _warp(image, mouth_matrix, (crop_w, crop_h))

    return FaceObservation(
        face_box=face_box,
        landmarks=landmarks,
        lip_landmarks=np.ascontiguousarray(landmarks[list(LIP_INDICES)]),
        mouth_crop=mouth_crop,
        face_crop=face_crop,
        aperture=aperture,
        mouth_width=mouth_width,
    )


class MediaPipeFaceTracker:
    """MediaPipe FaceMesh (legacy solutions API) in tracking mode, one face.

    Not thread-safe; one instance per session, fed frames in time order.
    """

    def __init__(self, config: FaceConfig | None = None) -> None:
        self.config = config or FaceConfig()
        # MediaPipe's graph logs from its own threads from its start to the first face
        # it tracks (see monitor.native_log): filtered until then.
        self._quiet: native_log.Hold | None = None
        self._mesh = self._new_mesh()
        self._aspect: float | None = None

    def _new_mesh(self) -> Any:  # mp.solutions.face_mesh.FaceMesh
        if self._quiet is None:
            self._quiet = native_log.hold()
        import mediapipe as mp

        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=self.config.min_detection_confidence,
            min_tracking_confidence=0.5,
        )

    def track(self, frame: VideoFrame) -> FaceObservation | None:
        image = frame.image
        height, width = image.shape[:2]
        aspect = width / max(height, 1)
        if self._aspect is not None and abs(aspect / self._aspect - 1.0) > 0.01:
            # The tracked region is kept in normalized coordinates, which a new aspect
            # ratio (a resolution switch mid-call) would distort for a frame: start over.
            self._mesh.close()
            self._mesh = self._new_mesh()
        self._aspect = aspect
        tracked = image
        long_side = max(height, width)
        if long_side > MAX_TRACKING_SIDE:
            scale = MAX_TRACKING_SIDE / long_side
            tracked = cv2.resize(
                image,
                (max(1, round(width * scale)), max(1, round(height * scale))),
                interpolation=cv2.INTER_LINEAR,
            )
        result = self._mesh.process(np.ascontiguousarray(tracked))
        faces = result.multi_face_landmarks
        if not faces:
            return None
        self._end_quiet()
        points = faces[0].landmark
        landmarks = np.array([(p.x, p.y) for p in points], dtype=np.float32)
        landmarks *= np.array([width, height], dtype=np.float32)
        return observe_face(image, landmarks, self.config)

    def _end_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.release()
            self._quiet = None

    def close(self) -> None:
        self._mesh.close()
        self._end_quiet()

    def __enter__(self) -> MediaPipeFaceTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def create_face_tracker(config: FaceConfig | None = None) -> FaceTracker:
    """The default tracker; the one place to swap in another implementation."""
    return MediaPipeFaceTracker(config or FaceConfig())
