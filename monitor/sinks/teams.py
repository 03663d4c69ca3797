"""``teams-report``: each notice mapped onto Microsoft Graph's ``reportSyntheticMedia`` body.

The action (beta) is ``POST /communications/calls/{call-id}/participants/{participant-id}/
reportSyntheticMedia``; Graph takes at most one report per participant per minute, which
the default 60 s throttle keeps. The mapping (docs/ALERTS.md):

- ``id``: the notice's idempotency key (a GUID); ``detectionDateTime``: its ``ts``.
- ``severity``: ``alert`` high, ``suspicious`` medium, else low; ``overallConfidence``: the
  risk; ``isMalicious``: only at ``alert``.
- ``contentMetadata``: ``multimodal`` (video alone without audio), ``isRealTime`` for live
  (WHIP) sessions, the MIME type and codecs, the analysed duration, and for live sessions
  ``streamingMetadata`` (``frameDropRate`` from the frames the analysis dropped,
  ``latencyMs`` and ``networkJitterMs`` 0: not measured).
- ``detections``: one per detector with a score, ``modelName`` ``dfmon-<detector>``,
  ``modelTasks`` (lip-sync: ``lipSync``), the window as ``segment`` (whole seconds of the
  live stream; 0 and 0 for recordings, as Graph asks) and the score as ``confidence``.

Graph's body has no field for reasons. A URL target gets exactly the body (with
``Authorization: Bearer`` from ``DFMON_TEAMS_TOKEN`` when set; ``{session}`` and
``{participant}`` in the URL are filled in). A FILE target gets one JSON line per report
with the body *and* the participant, rationale and evidence, for a person or a bot that
holds the call id and credentials to submit.
"""

from __future__ import annotations

import math
import mimetypes
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from monitor.events import dumps
from monitor.sinks.delivery import Outcome
from monitor.sinks.http import HttpPoster
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.notices import notice_level
from monitor.sinks.targets import is_url, shown

GRAPH_PATH = "/communications/calls/{call-id}/participants/{participant-id}/reportSyntheticMedia"
SEVERITY = {"alert": "high", "suspicious": "medium"}
MODEL_TASKS = {
    "lip_sync": ["lipSync"],
    "temporal": ["faceSwap", "temporalConsistency"],
    "artifact": ["faceSwap", "faceGeneration"],
}
# RTP media types of the codecs WebRTC sessions negotiate.
LIVE_MIME = {"vp8": "video/VP8", "h264": "video/H264"}


def _iso_duration(seconds: float) -> str:
    return f"PT{max(0.0, seconds):.3f}".rstrip("0").rstrip(".") + "S"


def _mime_type(stream: dict[str, Any]) -> str:
    if stream.get("live"):
        return LIVE_MIME.get(str(stream.get("video_codec")), "video/*")
    guessed, _ = mimetypes.guess_type(str(stream.get("source") or ""))
    return guessed or "video/*"


def _byte_size(stream: dict[str, Any]) -> int:
    """0 for live streams (unknown), the file's size for recordings."""
    source = stream.get("source")
    if stream.get("live") or not source:
        return 0
    try:
        return os.path.getsize(source)
    except OSError:
        return 0


def synthetic_media_report(notice: dict[str, Any]) -> dict[str, Any]:
    stream = notice.get("stream", {})
    live = bool(stream.get("live"))
    level = notice_level(notice)
    fps = stream.get("fps")
    t_start, t_end = notice.get("t_start"), notice.get("t_end")
    metadata: dict[str, Any] = {
        "modality": "multimodal" if stream.get("has_audio", True) else "video",
        "isRealTime": live,
        "mimeType": _mime_type(stream),
        "byteSize": _byte_size(stream),
        "duration": _iso_duration(float(t_end or 0.0)),
        "videoMetadata": {"codec": stream.get("video_codec"), "frameRate": fps},
    }
    if stream.get("has_audio", True) and stream.get("sample_rate"):
        metadata["audioMetadata"] = {"sampleRateHz": stream["sample_rate"]}
    if live:
        covered = (fps or 0) * float(t_end or 0.0)
        dropped = stream.get("dropped_frames", 0)
        metadata["streamingMetadata"] = {
            "latencyMs": 0,
            "frameDropRate": round(min(1.0, dropped / covered), 4) if covered else 0.0,
            "networkJitterMs": 0,
        }
    segment = {"startTimeSec": 0, "endTimeSec": 0, "frameIndices": []}
    if t_start is not None and t_end is not None:
        if live:
            segment["startTimeSec"] = math.floor(t_start)
            segment["endTimeSec"] = math.ceil(t_end)
        if fps:
            segment["frameIndices"] = list(range(round(t_start * fps), round(t_end * fps)))
    detections = [
        {
            "modelName": f"dfmon-{item['detector']}",
            "modelTasks": MODEL_TASKS.get(item["detector"], [item["detector"]]),
            "modality": "multimodal" if item["detector"] == "lip_sync" else "video",
            "segment": segment,
            "confidence": item["score"],
        }
        for item in notice.get("evidence", [])
        if isinstance(item, dict) and item.get("score") is not None
    ]
    return {
        "id": notice["id"],
        "detectionDateTime": notice["ts"],
        "severity": SEVERITY.get(level, "low"),
        "overallConfidence": float(notice.get("risk") or 0.0),
        "isMalicious": level == "alert",
        "contentMetadata": metadata,
        "detections": detections,
    }


class TeamsReportSink:
    def __init__(self, target: str, *, token: str | None, timeout_s: float) -> None:
        self.target = target
        self.name = f"teams-report:{shown(target)}"
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http = HttpPoster(timeout_s) if is_url(target) else None
        self._file: JsonlSink | None = None

    async def deliver(self, payload: dict[str, Any]) -> Outcome:
        report = synthetic_media_report(payload)
        if self._http is not None:
            url = self.target.replace("{session}", quote(payload["session"], safe=""))
            url = url.replace("{participant}", quote(payload["participant"], safe=""))
            return await self._http.post(url, dumps(report).encode(), self._headers)
        if self._file is None:
            self._file = JsonlSink(Path(self.target), append=True)
        self._file.write(
            {
                "request": f"POST {GRAPH_PATH}",
                "session": payload["session"],
                "participant": payload["participant"],
                "rationale": payload.get("rationale", ""),
                "evidence": payload.get("evidence", []),
                "body": report,
            }
        )
        return Outcome.ok("written")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._file is not None:
            self._file.close()
            self._file = None
