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
            else:  # with its own timestamps: re-encoding must not move the audio
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
    assert summary["verdict"] not in CONFIDENT, summary["rationale"]
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

    # A P-frame's data overwritten in the second GOP (of 12 frames): the decoder
    # notices, and what follows up to the next keyframe is predicted from the damage.
    # (Random bit flips are not all noticed: CABAC decodes most bit strings to some
    # picture. The cases above check what the verdicts make of those.)
    with av.open(str(genuine["faststart"])) as container:
        packets = [
            (p.pos, p.size, p.is_keyframe)
            for p in container.demux(container.streams.video[0])
            if p.size
        ]
    keyframes = [i for i, p in enumerate(packets) if p[2]]
    pos, size, _ = packets[keyframes[1] + 3]
    data = bytearray(genuine["faststart"].read_bytes())
    data[pos + size // 3 : pos + size] = bytes(size - size // 3)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with FileSource(damaged) as source:
        decoded = [item for item in source if hasattr(item, "image")]
    with FileSource(genuine["faststart"]) as clean:
        clean_frames = [item for item in clean if hasattr(item, "image")]
    assert not clean.damage.any
    lost = source.damage.lost
    assert lost["video", "undecodable"] >= 1 and lost["video", "damaged_reference"] >= 8
    assert len(decoded) + lost["video", "undecodable"] + lost["video", "damaged_reference"] == len(
        clean_frames
    )
    # Every frame let through is the clean file's frame at that time: damage is not analysed.
    clean_by_t = {round(f.t, 3): f.image for f in clean_frames}
    for frame in decoded:
        assert np.array_equal(frame.image, clean_by_t[round(frame.t, 3)]), frame.t


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


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake: the same call with its audio 300 ms late."""
    from monitor.synth.call import make_call

    out = tmp_path_factory.mktemp("fuzz-fake")
    long_text = f"{TEXT} I will call you again when I have read them all."  # about 7 s
    call = make_call(out / "call.mp4", text=long_text, seed=4, size=(240, 320), audio_shift_s=0.3)
    path = out / "plus300.mp4"
    _reencode(call.path, path)
    return path


def _replay(path: Path) -> list[dict]:
    from monitor.config import load_config
    from monitor.events import validate_event
    from monitor.replay import replay_file

    events: list[dict] = []
    replay_file(path, load_config(), events.append)
    for event in events:
        validate_event(event)
    return events


@pytest.mark.parametrize("frames_in_gap", [0, 1, 2])
def test_a_frozen_stretch_neither_disables_lip_sync_nor_hides_the_fake(
    shifted: Path, tmp_path: Path, frames_in_gap: int
) -> None:
    """Issue 16 case 1: one frame, then nothing until 2.6 s (a frozen or starved
    stream). With exactly one frame in a window lip-sync raised IndexError, was disabled,
    and the fake ended clear on the temporal detector alone (0 or 2 frames: alert)."""
    kept = {0: (), 1: (0.48,), 2: (0.48, 0.52)}[frames_in_gap]
    frozen = tmp_path / "frozen.mp4"
    _reencode(
        shifted, frozen, keep_video=lambda t: t >= 2.6 or any(abs(t - k) < 0.01 for k in kept)
    )
    events = _replay(frozen)
    assert not [e for e in events if e["type"] == "error"]
    scores = [e for e in events if e["type"] == "score"]
    early = [s for s in scores if s["t_end"] <= 2.6]
    assert early and all(s["level"] == "unknown" for s in early)
    assert all("video" in s["rationale"] for s in early)  # too little / no video, said so
    summary = events[-1]
    assert summary["verdict"] in CONFIDENT, summary["rationale"]  # the fake is still caught
    (lip_sync,) = [e for e in summary["evidence"] if e["detector"] == "lip_sync"]
    assert lip_sync["offset_ms"] == pytest.approx(300, abs=80)


def test_decode_errors_are_in_the_events(genuine: dict[str, Path], tmp_path: Path) -> None:
    """Issue 16 case 4: damage in the media data appeared in no event."""
    data = bytearray(genuine["faststart"].read_bytes())
    with av.open(str(genuine["faststart"])) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    pos, size = packets[15]  # a P-frame of the second GOP
    data[pos + size // 3 : pos + size] = bytes(size - size // 3)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    events = _replay(damaged)
    hit = [e for e in events if e["type"] == "score" and e["quality"]["frames_undecodable"]]
    assert hit
    assert all("undecodable" in e["rationale"] for e in hit)
    summary = events[-1]
    assert summary["quality"]["frames_undecodable"] >= 9
    assert summary["verdict"] not in CONFIDENT


def test_a_cut_file_reports_what_its_index_promised(
    genuine: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 16 case 4: a truncated faststart file was scored over what is left with no
    warning. Now the windows past the data are reported, unknown, and the summary says
    how much is missing."""
    events = _replay(_mangled(genuine, "cut_faststart_40", tmp_path))
    scores = [e for e in events if e["type"] == "score"]
    summary = events[-1]
    assert summary["quality"]["truncated_s"] > 2.0
    assert "before its index says" in summary["rationale"]
    assert scores[-1]["t_end"] >= 3.5  # windows up to where the index says the call ends
    assert [s for s in scores if "no video arrived" in s["rationale"]]


@pytest.mark.parametrize("command", ["replay", "push"])
def test_an_unknown_codec_in_the_header_is_one_line_exit_2(
    genuine: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str], command: str
) -> None:
    """Issue 16 case 4: bit flips in moov gave ``AttributeError: 'NoneType' object has no
    attribute ...`` and exit 1 in replay and push: FFmpeg then lists an audio stream it
    has no decoder for. One such flip, made on purpose: the top bit of the audio track's
    handler box size."""
    data = bytearray(genuine["faststart"].read_bytes())
    moov_start, moov_end = _boxes(bytes(data))[b"moov"]
    handler = data.rindex(b"hdlr", moov_start, data.index(b"mp4a", moov_start, moov_end))
    data[handler - 4] ^= 0x01
    path = tmp_path / "unknown-codec.mp4"
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context is None  # what used to crash
    args = [command, str(path)]
    args += (
        ["--out", str(tmp_path / "e.jsonl")]
        if command == "replay"
        else ["--url", "http://127.0.0.1:9/whip"]
    )
    status = main(args)
    err = capfd.readouterr().err
    assert status == 2 and "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith(f"dfmon {command}: error:")]
    assert len(errors) == 1 and "audio stream cannot be decoded" in errors[0]
