"""Synthetic video calls with known ground truth: a real portrait whose lips follow
espeak-ng speech, written with real codecs, optionally shifted or dubbed."""

from monitor.synth.call import DEFAULT_TEXT, SyntheticCall, derive_call, make_call
from monitor.synth.examples import EXAMPLE_NAMES, SYNC_AUDIO_NAME, make_example_set
from monitor.synth.speech import PhonemeSegment, Speech, synthesize

__all__ = [
    "DEFAULT_TEXT",
    "EXAMPLE_NAMES",
    "SYNC_AUDIO_NAME",
    "PhonemeSegment",
    "Speech",
    "SyntheticCall",
    "derive_call",
    "make_call",
    "make_example_set",
    "synthesize",
]
