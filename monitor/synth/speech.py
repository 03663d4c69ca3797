"""Text to speech with phoneme timings, through libespeak-ng's C API (ctypes).

The lips of a synthetic call must follow the exact phonemes the audio says, so we
need each phoneme's start in samples, which only the library's synthesis callback
gives (the ``espeak-ng`` command prints phonemes, not their timing; it is therefore
no usable fallback, and the library ships with the same Debian package).

libespeak-ng keeps global state and is not thread-safe: every call holds one lock.
It also carries waveform phase from one utterance to the next, so the same text comes
out a few milliseconds longer or shorter on a second call. Results are therefore cached
per (text, voice, rate, pitch): within a process the same request gives the very same
samples and timings, which keeps the files of one example set exactly comparable.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from monitor.errors import ConfigError, SynthesisError
from monitor.media import AUDIO_RATE

LIBRARY_NAME = "libespeak-ng.so.1"

# From espeak-ng/speak_lib.h (ABI stable since espeak 1.48).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

RATE_RANGE = (80, 450)  # words per minute that espeak-ng accepts
PITCH_RANGE = (0, 99)


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme mnemonic, NUL-terminated unless 8 long
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # sample index at the native rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True, slots=True)
class PhonemeSegment:
    """One phoneme on the audio clock; ``phoneme`` is espeak's mnemonic ("aI", "m", "_:")."""

    t_start: float
    t_end: float
    phoneme: str

    @property
    def is_pause(self) -> bool:
        return self.phoneme.startswith("_")

    def shifted(self, dt: float) -> PhonemeSegment:
        return replace(self, t_start=self.t_start + dt, t_end=self.t_end + dt)


@dataclass(frozen=True, slots=True)
class Speech:
    """Synthesized speech: float32 mono samples at 16 kHz and their phonemes."""

    samples: np.ndarray
    phonemes: tuple[PhonemeSegment, ...]
    text: str
    voice: str

    @property
    def duration(self) -> float:
        return len(self.samples) / AUDIO_RATE

    def trimmed(self, margin_s: float = 0.05) -> Speech:
        """Cut leading and trailing pauses, keeping ``margin_s`` around the spoken phonemes."""
        spoken = [p for p in self.phonemes if not p.is_pause]
        if not spoken:
            return self
        t0 = max(0.0, spoken[0].t_start - margin_s)
        t1 = min(self.duration, spoken[-1].t_end + margin_s)
        first, last = round(t0 * AUDIO_RATE), round(t1 * AUDIO_RATE)
        kept = tuple(
            PhonemeSegment(max(p.t_start, t0) - t0, min(p.t_end, t1) - t0, p.phoneme)
            for p in self.phonemes
            if p.t_end > t0 and p.t_start < t1
        )
        return replace(self, samples=self.samples[first:last], phonemes=kept)


class _Espeak:
    """The loaded library and the state of the one synthesis in progress."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(LIBRARY_NAME)
        except OSError as exc:
            raise SynthesisError(
                f"cannot load {LIBRARY_NAME} (install espeak-ng / libespeak-ng1): {exc}"
            ) from exc
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        self.native_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, options)
        if self.native_rate <= 0:
            raise SynthesisError("espeak_Initialize failed (espeak-ng-data missing?)")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []  # (sample, phoneme)
        self._callback = _Callback(self._on_synth)  # kept alive as long as the library
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: ctypes._Pointer, n_samples: int, events: ctypes._Pointer) -> int:
        if n_samples > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self.events.append((int(event.sample), name))
            i += 1
        return 0  # 0: go on synthesizing

    def languages(self) -> set[str]:
        """Every language code the installed voices speak ("en-us", "fr-fr", ...)."""
        voices = self.lib.espeak_ListVoices(None)
        codes: set[str] = set()
        i = 0
        while voices[i]:
            # ``languages`` is a list of (priority byte, NUL-terminated code), ended by 0.
            field = ctypes.addressof(voices[i].contents) + _Voice.languages.offset
            raw = ctypes.c_void_p.from_address(field).value  # c_char_p would stop at byte 0
            offset = 0
            while raw and ctypes.c_ubyte.from_address(raw + offset).value:
                code = ctypes.string_at(raw + offset + 1)
                codes.add(code.decode("ascii", "replace").lower())
                offset += len(code) + 2
            i += 1
        return codes

    def set_voice(self, voice: str) -> None:
        if self.lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return
        # Not a voice name; a language code only if some voice speaks it (espeak would
        # otherwise silently fall back to its default voice).
        if voice.lower() not in self.languages():
            raise ConfigError(f"unknown espeak-ng voice or language {voice!r}")
        spec = _Voice(languages=voice.encode())
        if self.lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != _EE_OK:
            raise ConfigError(f"espeak-ng cannot select a voice for {voice!r}")

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, list]:
        self.set_voice(voice)
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self.chunks, self.events = [], []
        data = ctypes.create_string_buffer(text.encode("utf-8"))
        status = self.lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed with status {status}")
        chunks = self.chunks or [np.zeros(0, np.int16)]
        return np.concatenate(chunks), list(self.events)


_lock = threading.Lock()
_engine: _Espeak | None = None


def _get_engine() -> _Espeak:
    global _engine
    if _engine is None:
        _engine = _Espeak()
    return _engine


def espeak_available() -> bool:
    """True when libespeak-ng loads and initializes here."""
    try:
        with _lock:
            _get_engine()
    except SynthesisError:
        return False
    return True


def synthesize(text: str, *, voice: str = "en", rate: int = 160, pitch: int = 50) -> Speech:
    """Speak ``text``; return 16 kHz float32 samples and phoneme segments on their clock.

    ``voice`` is an espeak-ng voice or language ("en", "en-us", "de", "fr", "es"),
    ``rate`` in words per minute, ``pitch`` 0-99. Raises :class:`ConfigError` for bad
    parameters and :class:`SynthesisError` when the library is missing or fails.
    The samples are read-only (shared by the cache).
    """
    return _synthesize_cached(text, voice, int(rate), int(pitch))


@lru_cache(maxsize=64)
def _synthesize_cached(text: str, voice: str, rate: int, pitch: int) -> Speech:
    if not text.strip():
        raise ConfigError("text to synthesize is empty")
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ConfigError(f"speech rate {rate} wpm outside {RATE_RANGE}")
    if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
        raise ConfigError(f"pitch {pitch} outside {PITCH_RANGE}")
    with _lock:
        engine = _get_engine()
        pcm, events = engine.synthesize(text, voice, rate, pitch)
        native_rate = engine.native_rate
    if len(pcm) == 0 or not events:
        raise SynthesisError(f"espeak-ng produced no speech for {text!r}")
    native = pcm.astype(np.float32) / 32768.0
    # Polyphase resampling is zero-phase, so phoneme times stay valid.
    divisor = np.gcd(AUDIO_RATE, native_rate)
    samples = resample_poly(native, AUDIO_RATE // divisor, native_rate // divisor)
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
    samples.flags.writeable = False
    return Speech(samples, _segments(events, len(pcm), native_rate), text, voice)


def _segments(events: list[tuple[int, str]], n_native: int, native_rate: int) -> tuple:
    """Phoneme start events -> segments ending where the next one starts (empty ones dropped)."""
    starts = [min(max(sample, 0), n_native) for sample, _ in events]
    starts = list(np.maximum.accumulate(starts))  # events arrive in order; guard anyway
    ends = starts[1:] + [n_native]
    return tuple(
        PhonemeSegment(start / native_rate, end / native_rate, name)
        for (start, end, (_, name)) in zip(starts, ends, events, strict=True)
        if end > start
    )
