"""Per-frame quantities of one session, computed once and read by every window.

Windows overlap (2 s long, 0.5 s apart: every frame lies in four of them), so anything a
detector derives from one frame alone (the sync model's frame embedding, the temporal
cues' per-frame measures, an artifact score) is computed once per frame, stored here,
and read back by each window the frame falls in. The store is bounded: frames older
than the windows still to come are forgotten, and it never holds more than
``max_frames`` entries, dropping the oldest (counted) if timestamps misbehave.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from monitor.features.types import FrameFeatures

T = TypeVar("T")

# 60 s at 30 fps: far beyond any window, small next to a session's other state.
DEFAULT_MAX_FRAMES = 1800


def has_face_crop(frame: FrameFeatures) -> bool:
    """The frame's face still holds its crop (a session releases it once measured)."""
    return frame.face is not None and frame.face.face_crop is not None


def frame_key(frame: FrameFeatures) -> tuple[int, int]:
    """A frame's face is (frame index, face track): with several faces in view, the face
    a window scores decides what the frame contributes."""
    return frame.index, 0 if frame.face is None else frame.face.track_id


class FrameStore(Generic[T]):
    """(frame index, face track) -> value, computed by ``compute`` in batches of the frames
    not seen yet.

    ``compute`` gets the new frames (in the order given) and returns one value per frame.
    Not thread-safe: one session's analysis drives its stores.
    """

    def __init__(
        self,
        compute: Callable[[list[FrameFeatures]], Sequence[T]],
        max_frames: int = DEFAULT_MAX_FRAMES,
    ) -> None:
        self._compute = compute
        self._max_frames = max_frames
        self._values: OrderedDict[tuple[int, int], tuple[float, T]] = OrderedDict()
        self.computed = 0  # frames computed so far (each at most once while stored)
        self.evicted = 0  # entries dropped by the size bound, not by forget_before

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, frame: FrameFeatures) -> bool:
        return frame_key(frame) in self._values

    def add(self, frames: Sequence[FrameFeatures]) -> None:
        """Compute and keep the frames not stored yet (the arrival of new frames)."""
        self._add(self._missing(frames))

    def obtainable(
        self, frames: Sequence[FrameFeatures], computable: Callable[[FrameFeatures], bool]
    ) -> list[FrameFeatures]:
        """``frames`` whose value is stored or can still be computed from what they hold."""
        return [f for f in frames if f in self or computable(f)]

    def get(self, frames: Sequence[FrameFeatures]) -> list[T]:
        """The values of ``frames``, computing those not stored yet."""
        fresh = self._add(self._missing(frames))
        keys = [frame_key(f) for f in frames]
        return [fresh[k] if k in fresh else self._values[k][1] for k in keys]

    def _missing(self, frames: Sequence[FrameFeatures]) -> list[FrameFeatures]:
        """Frames not stored yet, each once (a slow call's grid repeats frames)."""
        missing = {frame_key(f): f for f in frames}
        return [f for key, f in missing.items() if key not in self._values]

    def _add(self, new: list[FrameFeatures]) -> dict[tuple[int, int], T]:
        if not new:
            return {}
        values = self._compute(new)
        if len(values) != len(new):
            raise ValueError(f"computed {len(values)} values for {len(new)} frames")
        fresh = {}
        for frame, value in zip(new, values, strict=True):
            key = frame_key(frame)
            self._values[key] = (frame.t, value)
            fresh[key] = value
        self.computed += len(new)
        while len(self._values) > self._max_frames:
            self._values.popitem(last=False)
            self.evicted += 1
        return fresh

    def forget_before(self, t: float) -> None:
        """Drop frames before media time ``t``: no window still to come starts earlier."""
        stale = [key for key, (frame_t, _) in self._values.items() if frame_t < t]
        for key in stale:
            del self._values[key]
