"""Mangled recordings of a genuine call: every one must end cleanly (exit 0 with its events,
or exit 2 with one line), and none may end in a confident verdict against the speaker.

The clip is a synthetic genuine call re-encoded with a keyframe every half second and
the index first (faststart), as call recorders write; the mangles are the ones users
hit: files cut short, bit flips in the header (``moov``) and in the media data
(``mdat``), no video frames, a single video frame, and a gap in the video.
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from monitor.cli import main
from monitor.sources.file import FileSource

pytestmark = pytest.mark.slow

TEXT = "Please send me the figures before our meeting on Monday morning."
CONFIDENT = ("suspicious", "alert")


def _reencode(src: Path, dst: Path, *, keep_video=lambda t: True, faststart: bool = True) -> None:
    """Re-encode ``src`` (H.264 every 12 frames, AAC) keeping the video frames ``keep_video``
    accepts (by time); audio is copied through the encoder untouched."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout = out.add_stream("libx264", rate=25)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.options = {"preset": "veryfast", "g": "12", "keyint_min": "12"}
        vout.time_base = Fraction(1, 25)
        aout = out.add_stream("aac", rate=ain.rate)
        for frame in inp.decode(vin, ain):
            if isinstance(frame, av.VideoFrame):
                if keep_video(frame.time):
                    frame.pict_type = av.video.frame.PictureType.NONE
                    frame.pts, frame.time_base = round(frame.time * 25), Fraction(1, 25)
                    out.mux(vout.encode(frame))
            else:
                frame.pts = None
                out.mux(aout.encode(frame))
        out.mux(vout.encode(None))
        out.mux(aout.encode(None))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from monitor.synth.call import make_call
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    out = tmp_path_factory.mktemp("fuzz")
    call = make_call(out / "call.mp4", text=TEXT, seed=4, size=(240, 320)).path
    clips = {"faststart": out / "faststart.mp4", "moov_last": out / "moov_last.mp4"}
    _reencode(call, clips["faststart"])
    _reencode(call, clips["moov_last"], faststart=False)
    clips["single_frame"] = out / "single.mp4"
    _reencode(call, clips["single_frame"], keep_video=lambda t: t < 0.02)
    clips["gap"] = out / "gap.mp4"
    _reencode(call, clips["gap"], keep_video=lambda t: not 1.0 <= t < 2.2)
    return clips


def _boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level mp4 boxes: {type: (start, end)}."""
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        boxes[data[pos + 4 : pos + 8]] = (pos, pos + size)
        if size < 8:
            break
        pos += size
    return boxes


def _flip(data: bytes, start: int, end: int, flips: int, seed: int) -> bytes:
    rng = random.Random(seed)
    mangled = bytearray(data)
    for _ in range(flips):
        mangled[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
    return bytes(mangled)


def _zero_video_frames(path: Path, src: Path) -> None:
    """Audio, and a video stream that holds no frame."""
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        ain = inp.streams.audio[0]
        vout = out.add_stream("libx264", rate=25)
        vout.width, vout.height, vout.pix_fmt = 320, 240, "yuv420p"
        aout = out.add_stream("aac", rate=ain.rate)
        for frame in inp.decode(ain):
            frame.pts = None
            out.mux(aout.encode(frame))
        out.mux(aout.encode(None))


def _mangled(genuine: dict[str, Path], case: str, tmp_path: Path) -> Path:
    if case in ("single_frame", "gap"):
        return genuine[case]
    path = tmp_path / f"{case}.mp4"
    if case == "zero_frames":
        _zero_video_frames(path, genuine["faststart"])
        return path
    kind, _, arg = case.rpartition("_")
    source = genuine["moov_last" if kind == "cut_moov_last" else "faststart"]
    data = source.read_bytes()
    boxes = _boxes(data)
    if kind in ("cut_faststart", "cut_moov_last"):
        data = data[: len(data) * int(arg) // 100]
    elif kind == "header_flips":
        data = _flip(data, *boxes[b"moov"], flips=8, seed=int(arg))
    elif kind == "data_flips":
        start, end = boxes[b"mdat"]
        data = _flip(data, start + 8, end, flips=6, seed=int(arg))
    else:
        raise AssertionError(case)
    path.write_bytes(data)
    return path


CASES = [
    "cut_faststart_40",
    "cut_faststart_75",
    "cut_moov_last_60",
    *(f"header_flips_{seed}" for seed in range(4)),
    *(f"data_flips_{seed}" for seed in range(4)),
    "zero_frames",
    "single_frame",
    "gap",
]


@pytest.mark.parametrize("case", CASES)
def test_mangled_genuine_call_ends_cleanly_without_a_verdict_against_it(
    genuine: dict[str, Path], case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = _mangled(genuine, case, tmp_path)
    events_path = tmp_path / "events.jsonl"
    status = main(["replay", str(path), "--out", str(events_path)])
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    assert status in (0, 2), err[-2000:]
    if status == 2:
        errors = [line for line in err.splitlines() if line.startswith("dfmon replay: error:")]
        assert len(errors) == 1, err[-2000:]
        assert str(path) in errors[0]
        return
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary["level"] not in CONFIDENT, summary["rationale"]
    assert not [e for e in events if e["type"] == "alert" and e["level"] in CONFIDENT]


def test_damage_is_counted_by_the_source(genuine: dict[str, Path], tmp_path: Path) -> None:
    """What the fuzz cases above survive on: the source skips and records the damage."""
    cut = _mangled(genuine, "cut_faststart_75", tmp_path)
    with FileSource(cut) as source:
        frames = [item for item in source if hasattr(item, "image")]
    assert frames and "video" in source.damage.truncated_s
    assert source.damage.lost["video", "truncated"] > 0
    lost = source.damage.take_lost()
    assert lost and lost[-1].reason in ("truncated", "undecodable")
    assert source.damage.take_lost() == []  # taken once

    flipped = tmp_path / "flipped.mp4"
    data = genuine["faststart"].read_bytes()
    start, end = _boxes(data)[b"mdat"]
    flipped.write_bytes(_flip(data, start + 8, end, flips=40, seed=7))
    with FileSource(flipped) as source:
        decoded = [item for item in source if hasattr(item, "image")]
    with FileSource(genuine["faststart"]) as clean:
        clean_frames = [item for item in clean if hasattr(item, "image")]
    assert not clean.damage.any
    damaged = (
        source.damage.lost["video", "undecodable"]
        + source.damage.lost["video", "damaged_reference"]
    )
    assert damaged > 0
    # Every frame the source let through is one the clean file has at the same time,
    # and (but for encoder noise) the same picture: damage is not analysed.
    clean_by_t = {round(f.t, 3): f.image for f in clean_frames}
    assert len(decoded) + damaged <= len(clean_frames)
    for frame in decoded:
        reference = clean_by_t[round(frame.t, 3)].astype(np.int16)
        assert np.abs(frame.image.astype(np.int16) - reference).mean() < 3.0


def test_damaged_header_in_push_is_one_line_exit_2(
    genuine: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "damaged.mp4"
    data = genuine["faststart"].read_bytes()
    path.write_bytes(data[: _boxes(data)[b"moov"][0] + 200])  # the index is cut off
    status = main(["push", str(path), "--url", "http://127.0.0.1:9/whip"])
    err = capfd.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("dfmon push: error:")]
