"""Put a live session's audio and video on one media clock.

aiortc rebases each track's pts to 0 at the first frame it releases, on the track's own
RTP clock, and does not expose the RTCP sender reports that would relate the two. So
each track is paired with the receiver's wall clock instead:

    arrival(frame) = capture(frame) + delay(frame)

where ``capture`` runs on the sender's clock and ``delay`` is the one-way network delay
plus queueing. ``arrival - pts`` is therefore the track's capture origin plus a delay
that is never below the path's floor; its running minimum over the first seconds
estimates ``origin + floor``, and the floor is (nearly) the same for both tracks on one
path, so it cancels out of the audio/video offset.

One term does not cancel: aiortc's jitter buffers hold frames back until later packets
arrive. A video frame is released when the first packet of the *next* frame arrives, an
audio frame when the packet of the frame ``4`` frames later arrives (``prefetch=4`` in
``RTCRtpReceiver``). Pairing frame k's arrival with the pts of the frame whose packet
released it (``k + lag``) removes that hold exactly, whatever the frame rate. The
remaining error (encode/decode time, Opus look-ahead) is measured in docs/LIVE.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Frames later than frame k whose packet makes aiortc 1.16's jitter buffer release frame k.
AIORTC_RELEASE_LAG = {"audio": 4, "video": 1}


@dataclass(slots=True)
class _Arrival:
    pts_s: float
    arrival_s: float


class TrackClock:
    """One track's ``pts -> common clock`` offset, estimated during a warm-up, then frozen.

    Freezing keeps timestamps continuous: a later, slightly lower minimum would
    otherwise move frames backwards in time after they were analysed.
    """

    def __init__(self, kind: str, *, warmup_s: float, release_lag: int | None = None) -> None:
        self.kind = kind
        self.warmup_s = warmup_s
        self.release_lag = AIORTC_RELEASE_LAG.get(kind, 0) if release_lag is None else release_lag
        self.first_arrival_s: float | None = None
        self.offset_s: float | None = None  # capture origin + delay floor, on the wall clock
        self.frozen = False
        self.samples = 0
        self._recent: deque[_Arrival] = deque(maxlen=self.release_lag + 1)
        self._last_pts_s: float | None = None

    def observe(self, pts_s: float, arrival_s: float) -> None:
        """Record one frame's pts (seconds on the track's clock) and receive wall time."""
        if self.first_arrival_s is None:
            self.first_arrival_s = arrival_s
        if self._last_pts_s is not None and pts_s < self._last_pts_s:
            self._recent.clear()  # the track restarted its clock: old pairs no longer hold
        self._last_pts_s = pts_s
        self._recent.append(_Arrival(pts_s, arrival_s))
        if self.frozen or len(self._recent) <= self.release_lag:
            return
        # The oldest entry's arrival was triggered by the newest entry's packet.
        released = self._recent[0]
        sample = released.arrival_s - pts_s
        if self.offset_s is None or sample < self.offset_s:
            self.offset_s = sample
        self.samples += 1

    def maybe_freeze(self, now_s: float) -> bool:
        """Freeze once the warm-up has passed since this track's first frame."""
        if (
            not self.frozen
            and self.offset_s is not None
            and self.first_arrival_s is not None
            and now_s - self.first_arrival_s >= self.warmup_s
        ):
            self.frozen = True
        return self.frozen


class SessionClock:
    """Maps each track's pts to media seconds from the start of the call.

    The origin (media time 0) is the earliest track offset known when the first track
    becomes ready; a track that starts later lands at its true place after it.
    """

    def __init__(self, kinds: tuple[str, ...], *, warmup_s: float) -> None:
        self.tracks = {kind: TrackClock(kind, warmup_s=warmup_s) for kind in kinds}
        self.origin_s: float | None = None

    def observe(self, kind: str, pts_s: float, arrival_s: float) -> None:
        self.tracks[kind].observe(pts_s, arrival_s)

    def ready(self, kind: str, now_s: float) -> bool:
        track = self.tracks[kind]
        if not track.maybe_freeze(now_s):
            return False
        if self.origin_s is None:
            # Fix the origin now, from every track frozen so far (often both together).
            offsets = [
                t.offset_s
                for t in self.tracks.values()
                if t.maybe_freeze(now_s) and t.offset_s is not None
            ]
            self.origin_s = min(offsets)
        return True

    def media_time(self, kind: str, pts_s: float) -> float:
        """Media seconds of a frame; only valid once ``ready(kind)`` returned True."""
        offset = self.tracks[kind].offset_s
        if offset is None or self.origin_s is None:
            raise RuntimeError(f"{kind} clock is not ready")
        return pts_s + offset - self.origin_s

    def relative_offset_s(self) -> float | None:
        """Estimated video-minus-audio capture offset (what alignment corrects for)."""
        audio, video = self.tracks.get("audio"), self.tracks.get("video")
        if audio is None or video is None or audio.offset_s is None or video.offset_s is None:
            return None
        return video.offset_s - audio.offset_s
