"""Two real speakers side by side: does the session score the speaker, and never alert?

For a pair of real clips with audio (speaker A, another person B) four composites are
written as issue 16 describes (:func:`monitor.synth.composite.side_by_side`: both 320 px
high, A's audio): A left of B, A right of B, and both again with B frozen on its first
frame (a still photo beside the speaker). Each goes through the product's own replay, and
its score events say which face was scored (``speaker``: track, boxes, scores). Reported
per composite: of the windows with both faces, how many scored A (right), B (wrong) or no
face (insufficient evidence); the speaker-choice scores (sync confidence) of A's and B's
faces; and the session's summary level, which must never be ``alert`` on these genuine
calls.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import MonitorConfig
from monitor.evaluation.dataset import manifest_rows
from monitor.synth.composite import side_by_side


@dataclass
class CompositeResult:
    speaker: str
    other: str
    speaker_left: bool
    still: bool
    windows: int = 0  # windows with both faces named
    right: int = 0
    wrong: int = 0
    none: int = 0
    level: str = ""
    scores: list[tuple[float, float]] = field(default_factory=list)  # (A, B) per window

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "scores": [list(pair) for pair in self.scores]}


def real_clips_with_audio(data: Path) -> list[Path]:
    rows = manifest_rows(data)
    return [data / r["file"] for r in rows if r["label"] == "real" and r["has_audio"] == "yes"]


def pairs(clips: list[Path], count: int) -> list[tuple[Path, Path]]:
    """Each clip with the one half the list away (another source, another person)."""
    step = max(1, len(clips) // 2)
    return [(clips[i], clips[(i + step) % len(clips)]) for i in range(min(count, len(clips)))]


def replay_events(path: Path, config: MonitorConfig | None = None) -> list[dict[str, Any]]:
    from monitor.replay import replay_file

    events: list[dict[str, Any]] = []
    replay_file(path, config or MonitorConfig(), events.append)
    return events


def score_composite(
    events: list[dict[str, Any]], result: CompositeResult, width: float
) -> CompositeResult:
    """Fill ``result`` from a composite's events; the speaker is the face on its side."""
    for event in events:
        if event["type"] == "summary":
            result.level = event["level"]
        speaker = event.get("speaker") if event["type"] == "score" else None
        if not speaker or speaker["faces"] < 2:
            continue
        sides = {}
        for track, (x0, _, x1, _) in speaker["boxes"].items():
            left = (x0 + x1) / 2 < width / 2
            sides[track] = "A" if left == result.speaker_left else "B"
        result.windows += 1
        chosen = speaker["track"]
        if chosen is None:
            result.none += 1
        elif sides.get(str(chosen)) == "A":
            result.right += 1
        else:
            result.wrong += 1
        by_side = {sides[t]: v for t, v in speaker["scores"].items() if t in sides}
        if "A" in by_side and "B" in by_side:
            result.scores.append((by_side["A"], by_side["B"]))
    return result


def evaluate_pair(speaker: Path, other: Path, seconds: float) -> list[CompositeResult]:
    """The four composites of one pair, each replayed through the session."""
    import av

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for speaker_left in (True, False):
            for still in (False, True):
                path = side_by_side(
                    speaker, other, Path(tmp) / "two.mp4",
                    speaker_left=speaker_left, still=still, max_seconds=seconds,
                )  # fmt: skip
                with av.open(str(path)) as container:
                    width = container.streams.video[0].codec_context.width
                result = CompositeResult(speaker.name, other.name, speaker_left, still)
                results.append(score_composite(replay_events(path), result, width))
    return results


def table(results: list[CompositeResult]) -> str:
    lines = [
        "| composite | windows with both faces | speaker scored | other face scored "
        "| none chosen | sessions ending in alert |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for still in (False, True):
        for speaker_left in (True, False):
            group = [r for r in results if r.still == still and r.speaker_left == speaker_left]
            if not group:
                continue
            label = (
                f"speaker {'left' if speaker_left else 'right'}, "
                f"other face {'still' if still else 'speaking'}"
            )
            lines.append(
                f"| {label} | {sum(r.windows for r in group)} | {sum(r.right for r in group)} "
                f"| {sum(r.wrong for r in group)} | {sum(r.none for r in group)} "
                f"| {sum(r.level == 'alert' for r in group)} of {len(group)} |"
            )
    speaking = [pair for r in results if not r.still for pair in r.scores]
    if speaking:
        a, b = np.array(speaking).T
        lines += [
            "",
            f"Speaker-choice score (sync confidence) with the other face speaking: speaker "
            f"median {np.median(a):.2f} (p10 {np.percentile(a, 10):.2f}), other face median "
            f"{np.median(b):.2f} (p90 {np.percentile(b, 90):.2f}); the speaker above the other "
            f"face in {np.mean(a > b):.0%} of {len(a)} windows.",
        ]
    return "\n".join(lines) + "\n"
