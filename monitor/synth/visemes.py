"""Phonemes -> mouth shape over time (aperture and width), with coarticulation.

Each phoneme has a viseme target: ``aperture`` in [0, 1] (0 closed lips, 1 widest jaw
drop) and ``width`` (mouth corner distance relative to rest; < 1 rounded, > 1 spread),
and a dominance: how strongly it holds its target against its neighbours
(Cohen & Massaro 1993). Bilabials dominate, so /p b m/ really close the lips even
when short; /h k g/ barely dominate and take the shape of the next vowel.

The blend is symmetric in time (no causal filter), so the mouth is at its target
when the phoneme sounds, not later: the synthetic call's true offset stays zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.synth.speech import PhonemeSegment


@dataclass(frozen=True, slots=True)
class Viseme:
    aperture: float
    width: float
    dominance: float
    spread_s: float = 0.025  # how far the dominance reaches outside the segment


REST = Viseme(0.0, 1.0, 0.6, 0.04)  # pauses: lips together at rest

# espeak-ng mnemonics (English first; other languages share most symbols).
_CONSONANTS: dict[str, Viseme] = {
    "p": Viseme(0.0, 0.97, 8.0, 0.02),
    "b": Viseme(0.0, 0.97, 8.0, 0.02),
    "m": Viseme(0.0, 0.98, 8.0, 0.02),
    "f": Viseme(0.08, 1.0, 5.0, 0.02),
    "v": Viseme(0.08, 1.0, 5.0, 0.02),
    "T": Viseme(0.2, 1.02, 1.5),
    "D": Viseme(0.2, 1.02, 1.2),
    "s": Viseme(0.14, 1.06, 1.5),
    "z": Viseme(0.14, 1.06, 1.2),
    "S": Viseme(0.18, 0.86, 1.5),
    "Z": Viseme(0.18, 0.86, 1.2),
    "tS": Viseme(0.16, 0.86, 1.5),
    "dZ": Viseme(0.16, 0.86, 1.5),
    "t": Viseme(0.18, 1.02, 0.8),
    "d": Viseme(0.18, 1.02, 0.8),
    "n": Viseme(0.18, 1.02, 0.8),
    "l": Viseme(0.28, 1.0, 0.6),
    "r": Viseme(0.22, 0.9, 0.8),
    "R": Viseme(0.3, 0.95, 0.6),
    "w": Viseme(0.1, 0.75, 2.0),
    "j": Viseme(0.18, 1.08, 0.8),
    "k": Viseme(0.32, 1.0, 0.4),
    "g": Viseme(0.32, 1.0, 0.4),
    "N": Viseme(0.3, 1.0, 0.5),
    "x": Viseme(0.32, 1.0, 0.4),
    "h": Viseme(0.35, 1.0, 0.2),
    "B": Viseme(0.08, 0.97, 3.0, 0.02),  # Spanish approximant b
    "Q": Viseme(0.2, 1.0, 0.6),
}

# Vowels by their first letter: open, mid, close-front (spread), close-back (rounded).
_VOWELS: dict[str, Viseme] = {
    "a": Viseme(0.95, 1.04, 1.0, 0.035),
    "A": Viseme(1.0, 1.0, 1.0, 0.035),
    "V": Viseme(0.8, 1.0, 1.0, 0.035),
    "0": Viseme(0.85, 0.88, 1.0, 0.035),
    "O": Viseme(0.8, 0.82, 1.0, 0.035),
    "E": Viseme(0.65, 1.08, 1.0, 0.035),
    "e": Viseme(0.55, 1.1, 1.0, 0.035),
    "3": Viseme(0.5, 0.95, 1.0, 0.035),
    "@": Viseme(0.45, 1.0, 0.8, 0.035),
    "I": Viseme(0.35, 1.1, 1.0, 0.035),
    "i": Viseme(0.3, 1.14, 1.0, 0.035),
    "y": Viseme(0.3, 0.78, 1.0, 0.035),
    "Y": Viseme(0.35, 0.8, 1.0, 0.035),
    "2": Viseme(0.45, 0.8, 1.0, 0.035),
    "9": Viseme(0.55, 0.84, 1.0, 0.035),
    "o": Viseme(0.55, 0.78, 1.0, 0.035),
    "U": Viseme(0.4, 0.8, 1.0, 0.035),
    "u": Viseme(0.32, 0.74, 1.0, 0.035),
}

_NEUTRAL = Viseme(0.3, 1.0, 0.3)  # markers and symbols we do not know


def viseme_for(phoneme: str) -> Viseme:
    """The viseme target of one espeak-ng phoneme mnemonic."""
    if phoneme.startswith("_"):
        return REST
    if phoneme in _CONSONANTS:
        return _CONSONANTS[phoneme]
    if phoneme[:2] in _CONSONANTS:
        return _CONSONANTS[phoneme[:2]]
    head = phoneme[0]
    if head in _VOWELS:
        return _VOWELS[head]
    if head in _CONSONANTS:
        return _CONSONANTS[head]
    return _NEUTRAL


def mouth_tracks(
    phonemes: Sequence[PhonemeSegment], times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Aperture and width at ``times`` (seconds, the phonemes' clock).

    A phoneme's dominance is flat over its own segment and decays like a gaussian of
    its viseme's ``spread_s`` outside it; the shape is the dominance-weighted mean of
    the targets.
    Before the first and after the last phoneme the mouth is at rest.
    """
    times = np.asarray(times, dtype=np.float64)
    segments = [(p, viseme_for(p.phoneme)) for p in phonemes]
    if times.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    total = np.full(times.shape, 1e-3)  # a faint rest everywhere: defined far from speech
    aperture = total * REST.aperture
    width = total * REST.width
    for segment, viseme in segments:
        outside = np.maximum(segment.t_start - times, 0.0) + np.maximum(times - segment.t_end, 0.0)
        weight = viseme.dominance * np.exp(-0.5 * (outside / viseme.spread_s) ** 2)
        total += weight
        aperture += weight * viseme.aperture
        width += weight * viseme.width
    return (aperture / total).astype(np.float32), (width / total).astype(np.float32)
