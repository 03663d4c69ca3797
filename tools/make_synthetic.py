"""Write the standard set of synthetic calls and print what each one holds.

    python tools/make_synthetic.py OUT_DIR [--fps 25] [--seconds 7] [--seed 0]

Files: sync.mp4, shift_plus300.mp4 (audio 300 ms late), shift_minus300.mp4 (audio
300 ms early), swap.mp4 (the audio says something else), video_only.mp4 with
sync_audio.wav beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from monitor.errors import InputError
from monitor.synth.examples import make_example_set


def _size(value: str) -> tuple[int, int]:
    """HEIGHTxWIDTH, e.g. 480x640."""
    try:
        height, width = (int(part) for part in value.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, got {value!r}") from exc
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the files (created)")
    parser.add_argument("--fps", type=float, default=25.0, help="25, 29.97 or 30 (default 25)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default ~7.6)")
    parser.add_argument("--seed", type=int, default=0, help="head motion and lighting seed")
    parser.add_argument("--size", type=_size, default=(480, 640), help="HEIGHTxWIDTH")
    parser.add_argument("--voice", default="en", help="espeak-ng voice (en, en-us, de, fr, es)")
    parser.add_argument(
        "--container", choices=(".mp4", ".mkv", ".webm"), default=".mp4", help="file type"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        calls = make_example_set(
            args.out_dir,
            fps=args.fps,
            seconds=args.seconds,
            seed=args.seed,
            size=args.size,
            voice=args.voice,
            container=args.container,
        )
    except InputError as exc:
        sys.stderr.write(f"make_synthetic: error: {exc}\n")
        return 2
    print(f"{'file':<22}{'seconds':>8}{'fps':>8}{'frames':>7}{'shift ms':>9}  audio")
    for call in calls.values():
        if not call.has_audio:
            audio = f"none (wav: {call.audio_path.name})" if call.audio_path else "none"
        elif call.audio_text != call.text:
            audio = "other utterance"
        else:
            audio = "same utterance"
        print(
            f"{call.path.name:<22}{call.duration:>8.2f}{call.fps:>8.3f}{call.n_frames:>7}"
            f"{call.audio_shift_s * 1000:>+9.0f}  {audio}"
        )
    print(f"lips say: {next(iter(calls.values())).text}")
    print(f"written to {args.out_dir} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
