"""Face and lip tracking per video frame, behind a small swappable interface.

The models are MediaPipe's: the face detectors (BlazeFace short- and full-range) and the
face landmark model with attention (478 landmarks with refined lips, eyes and irises),
the models FaceMesh runs. Here they run as small graphs of MediaPipe's own subgraphs,
driven with regions of interest this module chooses. On one face the landmarks are
FaceMesh's to the pixel (the same first detection, the same regions from the landmarks,
the same whole frame at the same scale); beyond that:

- **one track per face**: each face keeps its own region and track id from frame to
  frame; the full-range detector looks for further faces once a second instead of the
  short-range one on every frame, which FaceMesh does as soon as it may track more than
  one face (it also finds a small speaker beside a large face);
- **a face that leaves and comes back** gets its old track id back when it reappears
  where it was last seen (within :data:`REACQUIRE_S`);
- **one copy of the models per core** (of the rarely called full-range detector, one in
  all), shared by every session of the process (:class:`FaceModels`), instead of a
  FaceMesh graph per session;
- **landmarks on every n-th frame** (``FaceConfig.landmark_interval``, default 1): the
  frames in between carry each track's landmarks by pyramidal Lucas-Kanade optical flow
  (the lips by their own flow, the rest of the mesh by a similarity fitted on stable
  points), and their crops are cut from their own pixels. Where flow is unsure (lips
  lost, a new face) the model runs on that frame. tools/eval_tracking.py measures what
  that costs in accuracy.

From the landmarks we derive size-normalized geometry (mouth aperture and width) and two
crops aligned so the eye line is horizontal, each cut with one affine warp straight from
the full frame (no intermediate copies).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
MESH_POINTS = 478

# Face crop: square around the landmarks' extent, this much larger than its longer side.
FACE_CROP_MARGIN = 1.25
# Mouth crop: cheek-to-cheek width times this, from just above the nose tip downwards.
MOUTH_CROP_WIDTH_SCALE = 1.2
MOUTH_CROP_TOP_OFFSET = 0.05  # of the crop width, above the nose tip
# The models get at most this many pixels on the long side; landmarks are normalized,
# so feeding a downscaled 1080p frame costs little accuracy and a lot less time.
MAX_TRACKING_SIDE = 640

# Seconds between searches for new faces while faces are tracked; shorter while a face
# that was lost may come back.
DETECT_INTERVAL_S = 1.0
LOST_DETECT_INTERVAL_S = 0.25
# A face lost for less than this and found again where it was keeps its track id.
REACQUIRE_S = 10.0
# Two tracks whose regions overlap this much (IoU) follow the same face: keep the older.
DUPLICATE_IOU = 0.5
# A detection overlapping a tracked region this much is that face, not a new one.
SAME_FACE_IOU = 0.3
# Faces the full-range search finds whose region (1.5 face heights) is smaller than this
# many model pixels are not tracked: the landmark model (192x192 input) would read them
# from a blur. (The short-range model finds none that small.)
MIN_FACE_SIDE = 64

# Points carried by optical flow between landmark frames: the lips move on their own,
# these move with the head (eye corners, nose bridge and tip, brow, cheeks, chin).
FLOW_ANCHORS = (33, 133, 263, 362, 168, 6, 1, 10, 151, 234, 454, 152, 70, 300, 105, 334)
FLOW_POINTS = tuple(LIP_INDICES) + FLOW_ANCHORS
FLOW_WINDOW = (15, 15)
FLOW_LEVELS = 2
# Flow whose forward-backward error exceeds this (tracking-image pixels) is not trusted.
FLOW_MAX_ERROR = 1.5
# Flow reads the face's region scaled to at most this many pixels on its long side, about
# the landmark model's own 192 px input: on 12 training-pool clips half scale gave the lip
# error of full resolution (0.45 % of face height against 0.42) at two thirds of the cost.
FLOW_SIDE = 256

# The two graphs: MediaPipe's own subgraphs (the ones FaceMesh is built from), driven
# with our regions of interest.
_LANDMARK_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
output_stream: "LANDMARKS:landmarks"
output_stream: "ROI_FROM_LANDMARKS:next_roi"
input_side_packet: "WITH_ATTENTION:with_attention"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image"
       output_stream: "SIZE:image_size" }
node { calculator: "FaceLandmarkCpu" input_stream: "IMAGE:image" input_stream: "ROI:roi"
       input_side_packet: "WITH_ATTENTION:with_attention" output_stream: "LANDMARKS:landmarks" }
node { calculator: "FaceLandmarkLandmarksToRoi" input_stream: "LANDMARKS:landmarks"
       input_stream: "IMAGE_SIZE:image_size" output_stream: "ROI:next_roi" }
"""
_DETECTION_GRAPH = """
input_stream: "IMAGE:image"
output_stream: "ROIS:rois"
node { calculator: "FaceDetectionShortRangeCpu" input_stream: "IMAGE:image"
       output_stream: "DETECTIONS:detections" }
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image"
       output_stream: "SIZE:image_size" }
node { calculator: "BeginLoopDetectionCalculator" input_stream: "ITERABLE:detections"
       input_stream: "CLONE:image_size" output_stream: "ITEM:detection"
       output_stream: "CLONE:loop_size" output_stream: "BATCH_END:end" }
node { calculator: "FaceDetectionFrontDetectionToRoi" input_stream: "DETECTION:detection"
       input_stream: "IMAGE_SIZE:loop_size" output_stream: "ROI:roi" }
node { calculator: "EndLoopNormalizedRectCalculator" input_stream: "ITEM:roi"
       input_stream: "BATCH_END:end" output_stream: "ITERABLE:rois" }
"""


# Graphs called so rarely that sessions share one copy (FaceModels' docstring says why).
SINGLE_COPY_GRAPHS = frozenset({"full_range"})

_GRAPHS = {
    "landmarks": _LANDMARK_GRAPH,
    "detection": _DETECTION_GRAPH,
    "full_range": _DETECTION_GRAPH.replace(
        "FaceDetectionShortRangeCpu", "FaceDetectionFullRangeCpu"
    ),
}


@runtime_checkable
class FaceTracker(Protocol):
    """Tracks the faces of one session across consecutive frames."""

    def track(self, frame: VideoFrame) -> FaceObservation | None:
        """The primary face in ``frame``, or None when there is none."""
        ...

    def close(self) -> None: ...


# ----- geometry and crops ----------------------------------------------------------------


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


def observe_face(
    image: np.ndarray, landmarks: np.ndarray, config: FaceConfig, track_id: int = 0
) -> FaceObservation:
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
        track_id=track_id,
    )


# ----- regions of interest -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    """A rotated rectangle in pixels of the frame (MediaPipe's region of interest)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (x0, y0, x1, y1) of the rotated region."""
        cos, sin = abs(math.cos(self.rotation)), abs(math.sin(self.rotation))
        half_w = (self.width * cos + self.height * sin) / 2.0
        half_h = (self.width * sin + self.height * cos) / 2.0
        return self.cx - half_w, self.cy - half_h, self.cx + half_w, self.cy + half_h

    def iou(self, other: Region) -> float:
        ax0, ay0, ax1, ay1 = self.box()
        bx0, by0, bx1, by1 = other.box()
        inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
        union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
        return inter / union if union > 0 else 0.0

    def moved(self, matrix: np.ndarray) -> Region:
        """The region carried by a 2x3 similarity transform (frame pixels)."""
        cx, cy = matrix @ np.array([self.cx, self.cy, 1.0])
        scale = math.hypot(matrix[0, 0], matrix[1, 0])
        angle = math.atan2(matrix[1, 0], matrix[0, 0])
        return Region(
            float(cx),
            float(cy),
            self.width * scale,
            self.height * scale,
            self.rotation + angle,
        )


def _region_from_rect(rect: Any, width: int, height: int, x0: int = 0, y0: int = 0) -> Region:
    """A NormalizedRect of an image region of ``width`` x ``height`` placed at (x0, y0)."""
    return Region(
        rect.x_center * width + x0,
        rect.y_center * height + y0,
        rect.width * width,
        rect.height * height,
        rect.rotation,
    )


def _rect_from_region(region: Region, width: int, height: int, x0: int, y0: int) -> Any:
    from mediapipe.framework.formats import rect_pb2

    return rect_pb2.NormalizedRect(
        x_center=(region.cx - x0) / width,
        y_center=(region.cy - y0) / height,
        width=region.width / width,
        height=region.height / height,
        rotation=region.rotation,
    )


# ----- MediaPipe graphs ------------------------------------------------------------------


def import_mediapipe_runtime() -> None:
    """Make ``mediapipe``'s graph runtime importable without running the package's
    ``__init__``, which also imports ``solutions`` (and with it matplotlib) and ``tasks``:
    about 0.65 s of CPU at every process start that the tracker never uses.

    The package is registered unexecuted; its submodules import as usual. The first read
    of anything else on it (``mediapipe.solutions``, as monitor.synth uses) runs the real
    ``__init__`` then, so other users of the package see it whole.
    """
    if "mediapipe" in sys.modules:
        return
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("mediapipe is not installed", name="mediapipe")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = complete
    sys.modules["mediapipe"] = package
    # A graph config's calculator options are protobuf extensions, parsed only when their
    # modules are loaded (the package's __init__ loads them through ``solutions``).
    for name in _GRAPH_OPTION_MODULES:
        importlib.import_module(f"mediapipe.{name}")


_GRAPH_OPTION_MODULES = (
    "calculators.core.constant_side_packet_calculator_pb2",
    "calculators.core.split_vector_calculator_pb2",
    "calculators.image.image_transformation_calculator_pb2",
    "calculators.tensor.image_to_tensor_calculator_pb2",
    "calculators.tensor.inference_calculator_pb2",
    "calculators.tensor.tensors_to_classification_calculator_pb2",
    "calculators.tensor.tensors_to_detections_calculator_pb2",
    "calculators.tensor.tensors_to_floats_calculator_pb2",
    "calculators.tensor.tensors_to_landmarks_calculator_pb2",
    "calculators.tflite.ssd_anchors_calculator_pb2",
    "calculators.util.association_calculator_pb2",
    "calculators.util.detections_to_rects_calculator_pb2",
    "calculators.util.landmark_projection_calculator_pb2",
    "calculators.util.landmarks_refinement_calculator_pb2",
    "calculators.util.logic_calculator_pb2",
    "calculators.util.non_max_suppression_calculator_pb2",
    "calculators.util.rect_transformation_calculator_pb2",
    "calculators.util.thresholding_calculator_pb2",
    "modules.face_detection.face_detection_pb2",
)


def _landmark_array(message: Any) -> np.ndarray:
    """(N, 3) normalized landmarks of a NormalizedLandmarkList, read straight from its
    wire format when every landmark has exactly x, y and z (as MediaPipe's mesh does)."""
    data = message.SerializeToString()
    count = len(message.landmark)
    if count and len(data) == 17 * count:
        raw = np.frombuffer(data, np.uint8).reshape(count, 17)
        # Each entry: 0a 0f | 0d x4 | 15 y4 | 1d z4 (field tags, then little-endian floats).
        if (raw[:, [0, 1, 2, 7, 12]] == (0x0A, 0x0F, 0x0D, 0x15, 0x1D)).all():
            values = raw[:, [3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16]]
            return np.ascontiguousarray(values).view("<f4").astype(np.float32)
    return np.array([(p.x, p.y, p.z) for p in message.landmark], dtype=np.float32)


def _image_packet(image: np.ndarray) -> Any:
    """An RGB image packet that shares ``image``'s pixels instead of copying them (a
    read-only view is passed by reference); a graph call ends before the frame does."""
    from mediapipe.python import packet_creator
    from mediapipe.python._framework_bindings import image_frame

    view = np.ascontiguousarray(image).view()
    view.flags.writeable = False
    return packet_creator.create_image_frame(image_format=image_frame.ImageFormat.SRGB, data=view)


def _scaled(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized by ``factor`` (< 1), or as it is; contiguous either way."""
    if factor >= 1.0:
        return np.ascontiguousarray(image)
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def _flow_grey(image: np.ndarray, bounds: tuple[int, int, int, int]) -> np.ndarray:
    """The box ``bounds`` of ``image`` in grey, scaled to at most FLOW_SIDE pixels."""
    x0, y0, x1, y1 = bounds
    factor = min(1.0, FLOW_SIDE / max(x1 - x0, y1 - y0))
    return cv2.cvtColor(_scaled(image[y0:y1, x0:x1], factor), cv2.COLOR_RGB2GRAY)


def _bounds(region: Region, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Integer bounds (x0, y0, x1, y1) of a region's bounding box within an image."""
    height, width = shape[:2]
    bx0, by0, bx1, by1 = region.box()
    x0, y0 = max(int(math.floor(bx0)) - 1, 0), max(int(math.floor(by0)) - 1, 0)
    x1, y1 = min(int(math.ceil(bx1)) + 1, width), min(int(math.ceil(by1)) + 1, height)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return x0, y0, x1, y1


class _Graph:
    """One MediaPipe graph, fed one timestamp at a time; not thread-safe (the pool is).

    MediaPipe and TensorFlow Lite log from their own threads while a graph starts and on
    its first packets (see :mod:`monitor.native_log`): filtered until the first run ends.
    """

    def __init__(
        self,
        text: str,
        side_packets: dict[str, Any],
        min_score: dict[str, float] | None = None,
    ) -> None:
        self._quiet: native_log.Hold | None = native_log.hold()
        try:
            self._start(text, side_packets, min_score or {})
        except BaseException:
            self._end_quiet()
            raise

    def _start(self, text: str, side_packets: dict[str, Any], min_score: dict[str, float]) -> None:
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.python._framework_bindings import (
            calculator_graph,
            resource_util,
            validated_graph_config,
        )

        # Model files are found relative to the package root, as mediapipe's solutions do.
        package_file = sys.modules["mediapipe"].__file__ or ""
        resource_util.set_resource_dir(os.path.dirname(os.path.dirname(package_file)))
        validated = validated_graph_config.ValidatedGraphConfig()
        validated.initialize(
            graph_config=text_format.Parse(text, calculator_pb2.CalculatorGraphConfig())
        )
        config = calculator_pb2.CalculatorGraphConfig()
        config.ParseFromString(validated.binary_config)
        _set_options(config, min_score)
        self._graph = calculator_graph.CalculatorGraph(graph_config=config)
        self._outputs: dict[str, Any] = {}
        for name in config.output_stream:
            stream = name.split(":")[-1]
            self._graph.observe_output_stream(stream, self._outputs.__setitem__, True)
        self._graph.start_run(side_packets)
        self._timestamp = 0

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self._timestamp += 1
        self._outputs.clear()
        for stream, packet in inputs.items():
            self._graph.add_packet_to_input_stream(stream=stream, packet=packet.at(self._timestamp))
        self._graph.wait_until_idle()
        self._end_quiet()
        return dict(self._outputs)

    def _end_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.release()
            self._quiet = None

    def close(self) -> None:
        self._graph.close()
        self._end_quiet()


def _set_options(config: Any, min_score: dict[str, float]) -> None:
    """Detection score thresholds, and one XNNPACK thread per model: sessions run in
    parallel, each model call on its own core."""
    from mediapipe.calculators.tensor import (
        inference_calculator_pb2,
        tensors_to_detections_calculator_pb2,
    )
    from mediapipe.calculators.util import thresholding_calculator_pb2

    for node in config.node:
        if node.calculator == "InferenceCalculatorCpu":
            for any_options in node.node_options:
                options = inference_calculator_pb2.InferenceCalculatorOptions()
                if any_options.Unpack(options):
                    options.delegate.xnnpack.num_threads = 1
                    any_options.Pack(options)
            if node.options.HasExtension(inference_calculator_pb2.InferenceCalculatorOptions.ext):
                ext = node.options.Extensions[
                    inference_calculator_pb2.InferenceCalculatorOptions.ext
                ]
                ext.delegate.xnnpack.num_threads = 1
        if node.calculator == "TensorsToDetectionsCalculator" and "detection" in min_score:
            for any_options in node.node_options:
                options = (
                    tensors_to_detections_calculator_pb2.TensorsToDetectionsCalculatorOptions()
                )
                if any_options.Unpack(options):
                    options.min_score_thresh = min_score["detection"]
                    any_options.Pack(options)
        if node.calculator == "ThresholdingCalculator" and "presence" in min_score:
            ext_type = thresholding_calculator_pb2.ThresholdingCalculatorOptions.ext
            if node.options.HasExtension(ext_type):
                node.options.Extensions[ext_type].threshold = min_score["presence"]


class FaceModels:
    """MediaPipe's face detector and landmark model, shared by every session of a process.

    A graph serves one call at a time; the pool holds up to one landmark and one
    short-range graph per core, so sessions on different threads run in parallel without
    each loading its own copy (about 28 MiB per FaceMesh instance). The full-range
    detector runs only on the periodic search for further faces (once a second per
    session, a few ms), so one copy serves every session (each further one cost 16 MiB).
    """

    def __init__(self, min_detection_confidence: float, min_presence: float = 0.5) -> None:
        import_mediapipe_runtime()
        self._min_score = {"detection": min_detection_confidence, "presence": min_presence}
        cores = max(1, len(os.sched_getaffinity(0)))
        self._size = {kind: 1 if kind in SINGLE_COPY_GRAPHS else cores for kind in _GRAPHS}
        self._free: dict[str, list[_Graph]] = {kind: [] for kind in _GRAPHS}
        self._made = dict.fromkeys(_GRAPHS, 0)
        self._lock = threading.Condition()

    def graphs_made(self, kind: str) -> int:
        """How many graphs of ``kind`` the pool holds (free or in use)."""
        with self._lock:
            return self._made[kind]

    @contextmanager
    def _graph(self, kind: str) -> Iterator[_Graph]:
        with self._lock:
            while not self._free[kind] and self._made[kind] >= self._size[kind]:
                self._lock.wait()
            graph = self._free[kind].pop() if self._free[kind] else None
            if graph is None:
                self._made[kind] += 1
        if graph is None:
            try:
                graph = self._new(kind)
            except BaseException:
                with self._lock:
                    self._made[kind] -= 1
                    self._lock.notify()
                raise
        try:
            yield graph
        finally:
            with self._lock:
                self._free[kind].append(graph)
                self._lock.notify()

    def _new(self, kind: str) -> _Graph:
        from mediapipe.python import packet_creator

        side = {"with_attention": packet_creator.create_bool(True)} if kind == "landmarks" else {}
        return _Graph(_GRAPHS[kind], side, self._min_score)

    def detect(
        self, image: np.ndarray, frame_size: tuple[int, int] | None = None, *,
        full_range: bool = False,
    ) -> list[Region]:  # fmt: skip
        """Regions (pixels of a frame of ``frame_size`` (h, w), by default ``image``'s own)
        of the faces the detector finds in ``image``, the frame at the models' scale. The
        short-range model (128x128 input) finds faces that fill a good part of the frame,
        as FaceMesh does; ``full_range`` (192x192, a few times the cost) also finds smaller
        ones, such as a speaker beside a large second face."""
        # rect_pb2 registers NormalizedRect, which get_proto_list looks up by name.
        from mediapipe.framework.formats import rect_pb2  # noqa: F401
        from mediapipe.python import packet_getter

        height, width = frame_size or image.shape[:2]
        packet = _image_packet(image)
        with self._graph("full_range" if full_range else "detection") as graph:
            out = graph.run({"image": packet})
        if "rois" not in out or out["rois"].is_empty():
            return []
        # Normalized coordinates do not depend on the scale the detector saw.
        rects = packet_getter.get_proto_list(out["rois"])
        return [_region_from_rect(rect, width, height) for rect in rects]

    def landmarks(
        self, image: np.ndarray, region: Region, frame_size: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, Region] | None:
        """(478, 2) landmarks (frame pixels) of the face in ``region`` (frame pixels) and the
        region to look in next, or None when the model finds no face there.

        ``image`` is the whole frame at the models' scale, as FaceMesh gets it: handing the
        model only the region's box was measured to move the landmarks by a tenth of a pixel
        (MediaPipe projects a rotated region in normalized coordinates, exact only for the
        frame's own aspect), enough to shift the temporal detector's landmark-jitter cue."""
        from mediapipe.python import packet_creator, packet_getter

        height, width = frame_size or image.shape[:2]
        inputs = {
            "image": _image_packet(image),
            "roi": packet_creator.create_proto(_rect_from_region(region, width, height, 0, 0)),
        }
        with self._graph("landmarks") as graph:
            out = graph.run(inputs)
        if any(name not in out or out[name].is_empty() for name in ("landmarks", "next_roi")):
            return None
        points = _landmark_array(packet_getter.get_proto(out["landmarks"]))[:, :2]
        pixels = points * np.array([width, height], np.float32)
        next_rect = packet_getter.get_proto(out["next_roi"])
        return pixels, _region_from_rect(next_rect, width, height)

    def warm(self) -> None:
        """Start one graph of each kind and run a blank frame through it, so that the first
        real frame (a live session's, most of all) does not wait for model loading."""
        blank = np.zeros((192, 192, 3), np.uint8)
        self.detect(blank)
        self.detect(blank, full_range=True)
        self.landmarks(blank, Region(96.0, 96.0, 160.0, 160.0, 0.0))

    def close(self) -> None:
        with self._lock:
            for graphs in self._free.values():
                for graph in graphs:
                    graph.close()
                graphs.clear()


_shared_models: dict[tuple[float, float], FaceModels] = {}
_shared_lock = threading.Lock()


def shared_face_models(min_detection_confidence: float) -> FaceModels:
    """The process-wide models for a detection threshold (loaded on first use)."""
    key = (float(min_detection_confidence), 0.5)
    with _shared_lock:
        models = _shared_models.get(key)
        if models is None:
            models = _shared_models[key] = FaceModels(*key)
            models.warm()
        return models


# ----- tracks ----------------------------------------------------------------------------


@dataclass
class FaceTrack:
    """One face followed across frames (coordinates in pixels of the frame)."""

    id: int
    region: Region  # where to look for the face on the next landmark frame
    landmarks: np.ndarray  # (478, 2) on the last frame it was seen
    first_t: float
    last_t: float
    frames: int = 1
    # The last frame's region in grey at model scale and its bounds (image pixels), for
    # optical flow to the next frame.
    grey: tuple[np.ndarray, tuple[int, int, int, int]] | None = field(default=None, repr=False)


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Least-squares 2x3 similarity (rotation, scale, shift) taking source onto target."""
    if len(source) < 3:
        return None
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    a, b = source - source_mean, target - target_mean
    norm = float((a * a).sum())
    if norm <= 1e-9:
        return None
    cos_s = float((a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]).sum()) / norm
    sin_s = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / norm
    linear = np.array([[cos_s, -sin_s], [sin_s, cos_s]])
    return np.hstack([linear, (target_mean - linear @ source_mean)[:, None]])


class MediaPipeFaceTracker:
    """Every face of one session, each on its own track (see the module docstring).

    ``track`` returns the primary face: the one followed longest that is still in frame
    (the pipeline decides per window which face speaks, from all of ``last_faces``).
    Not thread-safe; one instance per session, fed frames in time order.
    """

    def __init__(self, config: FaceConfig | None = None, models: FaceModels | None = None) -> None:
        self.config = config or FaceConfig()
        self.models = (
            models
            if models is not None
            else shared_face_models(self.config.min_detection_confidence)
        )
        self.tracks: list[FaceTrack] = []
        self.lost: list[FaceTrack] = []
        self.last_faces: tuple[FaceObservation, ...] = ()
        self._next_id = 1
        self._frame_size: tuple[int, int] | None = None
        self._last_detect_t = -math.inf
        self._frames_since_landmarks = 0
        self.landmark_frames = 0  # frames the landmark model ran on (the rest: flow)
        self.flow_frames = 0
        self.last_by_model = True  # the last frame's faces all came from the model

    # ----- public ----------------------------------------------------------------------

    def track(self, frame: VideoFrame) -> FaceObservation | None:
        faces = self.track_faces(frame)
        return faces[0] if faces else None

    def track_faces(self, frame: VideoFrame) -> tuple[FaceObservation, ...]:
        """Every tracked face in ``frame``, the primary one first."""
        image = frame.image
        height, width = image.shape[:2]
        if self._frame_size != (height, width):
            # Regions are in pixels of the old size: a resolution switch starts over.
            self.tracks, self.lost = [], []
            self._frame_size = (height, width)
            self._last_detect_t = -math.inf
        # The models see the frame at most MAX_TRACKING_SIDE pixels on the long side.
        factor = min(1.0, MAX_TRACKING_SIDE / max(height, width))
        small: np.ndarray | None = None

        def model_image() -> np.ndarray:
            nonlocal small
            if small is None:
                small = _scaled(image, factor)
            return small

        interval = max(1, int(self.config.landmark_interval))
        use_model = self._frames_since_landmarks + 1 >= interval or not self.tracks
        if use_model:
            self._frames_since_landmarks = 0
            self.landmark_frames += 1
        else:
            self._frames_since_landmarks += 1
            self.flow_frames += 1
        kept: list[FaceTrack] = []
        self.last_by_model = True
        for track in self.tracks:
            if not use_model and self._flow(track, image):
                self.last_by_model = False
                kept.append(track)
                continue
            found = self.models.landmarks(model_image(), track.region, (height, width))
            if found is None:
                self._lose(track)
                continue
            track.landmarks, track.region = found
            kept.append(track)
        self.tracks = kept
        detect_every = LOST_DETECT_INTERVAL_S if self.lost else DETECT_INTERVAL_S
        periodic = frame.t - self._last_detect_t >= detect_every
        if periodic or not self.tracks:
            self._detect(model_image(), (height, width), factor, frame.t, periodic)
        self.tracks = self._without_duplicates(self.tracks)
        self.lost = [t for t in self.lost if frame.t - t.last_t <= REACQUIRE_S]
        flow_next = self._frames_since_landmarks + 1 < interval
        faces = []
        for track in sorted(self.tracks, key=lambda t: (t.first_t, t.id)):
            track.last_t = frame.t
            track.frames += 1
            track.grey = self._grey(image, track.region) if flow_next else None
            faces.append(observe_face(image, track.landmarks, self.config, track.id))
        self.last_faces = tuple(faces)
        return self.last_faces

    def close(self) -> None:
        self.tracks, self.lost, self.last_faces = [], [], ()

    def __enter__(self) -> MediaPipeFaceTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----- steps -----------------------------------------------------------------------

    def _detect(
        self, small: np.ndarray, frame_size: tuple[int, int], factor: float, t: float,
        periodic: bool,
    ) -> None:  # fmt: skip
        """Look for faces not tracked yet in ``small`` (the frame at the models' scale):
        with the short-range model while none is tracked (as FaceMesh does, every frame),
        and with the full-range one on the periodic search while faces are tracked."""
        if len(self.tracks) >= self.config.max_faces:
            return
        if periodic:
            self._last_detect_t = t
        full_range = periodic and bool(self.tracks)
        min_side = MIN_FACE_SIDE / factor  # frame pixels for MIN_FACE_SIDE model pixels
        for region in self.models.detect(small, frame_size, full_range=full_range):
            if full_range and min(region.width, region.height) < min_side:
                continue
            if any(region.iou(track.region) >= SAME_FACE_IOU for track in self.tracks):
                continue
            found = self.models.landmarks(small, region, frame_size)
            if found is None:
                continue
            landmarks, next_region = found
            track = self._reacquire(landmarks, next_region, t)
            self.tracks.append(track)
            if len(self.tracks) >= self.config.max_faces:
                return

    def _reacquire(self, landmarks: np.ndarray, region: Region, t: float) -> FaceTrack:
        """A new track, or a lost one when this face shows up where that one was last."""
        best, best_iou = None, SAME_FACE_IOU
        for old in self.lost:
            overlap = old.region.iou(region)
            if overlap >= best_iou:
                best, best_iou = old, overlap
        if best is not None:
            self.lost.remove(best)
            best.landmarks, best.region, best.grey = landmarks, region, None
            return best
        track = FaceTrack(self._next_id, region, landmarks, first_t=t, last_t=t)
        self._next_id += 1
        return track

    def _lose(self, track: FaceTrack) -> None:
        track.grey = None
        self.lost.append(track)

    @staticmethod
    def _without_duplicates(tracks: list[FaceTrack]) -> list[FaceTrack]:
        kept: list[FaceTrack] = []
        for track in sorted(tracks, key=lambda t: (t.first_t, t.id)):
            if all(track.region.iou(other.region) < DUPLICATE_IOU for other in kept):
                kept.append(track)
        return kept

    @staticmethod
    def _grey(
        image: np.ndarray, region: Region
    ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        """The region's bounding box in grey at flow scale, with its bounds in ``image``."""
        bounds = _bounds(region, image.shape)
        if bounds is None:
            return None
        return _flow_grey(image, bounds), bounds

    def _flow(self, track: FaceTrack, image: np.ndarray) -> bool:
        """Carry the track's landmarks onto this frame by optical flow; False if unsure."""
        if track.grey is None:
            return False
        before_grey, (x0, y0, x1, y1) = track.grey
        current = _flow_grey(image, (x0, y0, x1, y1))
        if current.shape != before_grey.shape:
            return False
        origin = np.array([x0, y0], np.float64)
        to_model = np.array(current.shape[::-1], np.float64) / np.array([x1 - x0, y1 - y0])
        points = track.landmarks[list(FLOW_POINTS)].astype(np.float64)
        before = ((points - origin) * to_model).astype(np.float32)[:, None]
        after, status, _ = cv2.calcOpticalFlowPyrLK(
            before_grey, current, before, None, winSize=FLOW_WINDOW, maxLevel=FLOW_LEVELS
        )
        back, back_status, _ = cv2.calcOpticalFlowPyrLK(
            current, before_grey, after, None, winSize=FLOW_WINDOW, maxLevel=FLOW_LEVELS
        )
        error = np.linalg.norm(back[:, 0] - before[:, 0], axis=1)
        good = (status[:, 0] == 1) & (back_status[:, 0] == 1) & (error <= FLOW_MAX_ERROR)
        moved_points = after[:, 0].astype(np.float64) / to_model + origin
        n_lips = len(LIP_INDICES)
        anchors = np.arange(n_lips, len(FLOW_POINTS))
        trusted = anchors[good[anchors]]
        head = _similarity(points[trusted], moved_points[trusted])
        if head is None or good[:n_lips].mean() < 0.75:
            return False
        # The mesh moves with the head; the lips (articulation) by their own flow.
        landmarks = track.landmarks.astype(np.float64) @ head[:, :2].T + head[:, 2]
        lips = np.array(LIP_INDICES)[good[:n_lips]]
        landmarks[lips] = moved_points[:n_lips][good[:n_lips]]
        track.landmarks = landmarks.astype(np.float32)
        track.region = track.region.moved(head)
        return True


def create_face_tracker(config: FaceConfig | None = None) -> MediaPipeFaceTracker:
    """The default tracker; the one place to swap in another implementation."""
    return MediaPipeFaceTracker(config or FaceConfig())
