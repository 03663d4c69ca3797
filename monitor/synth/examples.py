"""The standard set of synthetic calls: one in sync, shifted both ways, dubbed, video only.

``dfmon demo``, the test fixtures and ``tools/make_synthetic.py`` all build it here so
that they agree on names and ground truth.
"""

from __future__ import annotations

from pathlib import Path

from monitor.errors import ConfigError
from monitor.synth.call import DEFAULT_TEXT, SyntheticCall, derive_call, make_call
from monitor.synth.speech import synthesize

# What the lips say (the first three are DEFAULT_TEXT), and what a dubbed audio says.
LIP_SENTENCES = (
    "Hello, can you hear me?",
    "I am calling about the budget for next year.",
    "Please send the figures before our meeting.",
    "We also need to talk about the new office in Boston.",
    "My manager wants a short summary by Friday.",
    "Could you share your screen for a moment?",
    "Thanks, that looks much better than last week.",
)
SWAP_SENTENCES = (
    "Good morning, this is the bank security team.",
    "We noticed an unusual payment from your account.",
    "Please confirm the transfer code to stop it now.",
    "Your card will be blocked within the next hour.",
    "Do not share this message with anyone else.",
    "Stay on the line while we check your details.",
    "We will send you a new card next week.",
)

EXAMPLE_NAMES = ("sync", "shift_plus300", "shift_minus300", "swap", "video_only")
SYNC_AUDIO_NAME = "sync_audio.wav"
SHIFT_S = 0.3


def text_for_seconds(
    seconds: float, sentences: tuple[str, ...], *, voice: str = "en", rate: int = 160
) -> str:
    """The shortest run of words from ``sentences`` whose speech lasts at least ``seconds``.

    Cut at a word boundary (binary search on the word count, a few syntheses); if even
    all the sentences are too short, they are repeated.
    """
    if seconds <= 0:
        raise ConfigError(f"speech length {seconds} s must be positive")

    def spoken_seconds(some_words: list[str]) -> float:
        return synthesize(_sentence(some_words), voice=voice, rate=rate).trimmed().duration

    words = " ".join(sentences).split()
    while spoken_seconds(words) < seconds:
        words = words + " ".join(sentences).split()
        if len(words) > 2000:
            raise ConfigError(f"speech length {seconds} s is too long")
    low, high = 1, len(words)
    while low < high:
        middle = (low + high) // 2
        if spoken_seconds(words[:middle]) >= seconds:
            high = middle
        else:
            low = middle + 1
    return _sentence(words[:low])


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text if text[-1] in ".?!" else text.rstrip(",;:") + "."


def make_example_set(
    out_dir: str | Path,
    *,
    fps: float = 25.0,
    seconds: float | None = None,
    seed: int = 0,
    size: tuple[int, int] = (480, 640),
    voice: str = "en",
    container: str = ".mp4",
) -> dict[str, SyntheticCall]:
    """Write the standard set into ``out_dir``; keys are :data:`EXAMPLE_NAMES`.

    ``seconds`` is the wanted clip length (default: the default text, about 7.6 s).
    All calls share one seed, so their video is the same and only the audio differs:
    in sync; delayed by 300 ms; advanced by 300 ms; another utterance; none
    (``video_only``, whose audio is written next to it as ``sync_audio.wav``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lead_s = tail_s = 0.3
    if seconds is None:
        text = DEFAULT_TEXT
        swap_text = " ".join(SWAP_SENTENCES[:3])
    else:
        speech_s = max(seconds - lead_s - tail_s, 0.5)
        text = text_for_seconds(speech_s, LIP_SENTENCES, voice=voice)
        swap_text = text_for_seconds(speech_s, SWAP_SENTENCES, voice=voice)
    sync = make_call(
        out_dir / f"sync{container}",
        text=text,
        fps=fps,
        seed=seed,
        size=size,
        voice=voice,
        lead_s=lead_s,
        tail_s=tail_s,
    )
    # The other four copy its encoded video: only their audio differs.
    return {
        "sync": sync,
        "shift_plus300": derive_call(
            sync, out_dir / f"shift_plus300{container}", audio_shift_s=SHIFT_S
        ),
        "shift_minus300": derive_call(
            sync, out_dir / f"shift_minus300{container}", audio_shift_s=-SHIFT_S
        ),
        "swap": derive_call(sync, out_dir / f"swap{container}", swap_text=swap_text),
        "video_only": derive_call(
            sync,
            out_dir / f"video_only{container}",
            video_only=True,
            audio_path=out_dir / SYNC_AUDIO_NAME,
        ),
    }
