"""Audio features at 100 Hz: log-mel spectrogram, loudness and voice activity.

Time convention: row ``i`` describes the 25 ms Hann window *centred* on sample
``i * hop`` of the span, i.e. media time ``t0 + i * hop_s`` where ``t0`` is the time of
the span's first sample. A span of ``n`` samples gives ``ceil(n / hop)`` rows (rows at
centres ``0, hop, ... <= n - 1``); the signal is reflected at both ends of the span so
its edge rows are not dimmed by zero padding. Loudness of row ``i`` is the RMS of the
10 ms hop centred there (rows tile the span); the mel spectrum uses the 25 ms window.
Slicing rows by time therefore matches slicing samples by time, which is what the
window code relies on.

Pure numpy (rfft and a mel filterbank built here), so a 3.2 s span costs ~1-2 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from monitor.config import AudioConfig
from monitor.features.types import AudioFeatures

MEL_FMIN_HZ = 55.0
MEL_FMAX_HZ = 7600.0
LOG_EPSILON = 1e-10  # added to mel power before the natural log
SILENCE_DB = -120.0  # loudness floor: digital silence reads as this

# Voice activity. A frame is voiced when it is loud in absolute terms and relative to
# the noise floor, and its spectrum looks like speech: most energy in the speech band,
# not noise-flat, not one steady spectral line.
VAD_ABSOLUTE_FLOOR_DB = -45.0
VAD_MARGIN_DB = 8.0  # above the noise floor
VAD_SPEECH_BAND_HZ = (80.0, 4000.0)
VAD_MIN_SPEECH_BAND_RATIO = 0.5
VAD_MAX_FLATNESS = 0.35  # spectral flatness in the speech band: white noise is ~0.5
VAD_MAX_PEAK_SHARE = 0.8  # energy share of the strongest line (+-2 bins): a pure tone is ~1
VAD_HANGOVER_S = 0.1
NOISE_FLOOR_PERCENTILE = 10.0  # when no session floor is given, of the span itself


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = MEL_FMIN_HZ, fmax: float = MEL_FMAX_HZ
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, area-normalized
    (Slaney) so each band measures power per Hz and narrow low bands are not drowned."""
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def _hann(win: int) -> np.ndarray:
    return np.hanning(win + 2)[1:-1].astype(np.float32)  # no zero end points


def frame_count(n_samples: int, hop: int) -> int:
    """Rows for a span of ``n_samples``: one per hop, centres 0, hop, ... <= n - 1."""
    return 0 if n_samples <= 0 else (n_samples - 1) // hop + 1


def _frames(samples: np.ndarray, win: int, hop: int) -> np.ndarray:
    """(T, win) windows centred on sample ``i * hop``; the span is reflected at its ends."""
    count = frame_count(len(samples), hop)
    half = win // 2
    pad_right = (count - 1) * hop + (win - half) - len(samples)
    mode = "reflect" if len(samples) > max(half, pad_right) else "constant"
    padded = np.pad(samples, (half, max(pad_right, 0)), mode=mode)
    view = np.lib.stride_tricks.sliding_window_view(padded, win)
    return view[: (count - 1) * hop + 1 : hop]


def _smooth_hangover(raw: np.ndarray, frames: int) -> np.ndarray:
    """Keep a frame voiced for ``frames`` rows after the last raw voiced one."""
    if frames <= 0 or not raw.any():
        return raw
    cumulative = np.concatenate([[0], np.cumsum(raw, dtype=np.int64)])
    idx = np.arange(len(raw))
    start = np.maximum(idx - frames, 0)
    return (cumulative[idx + 1] - cumulative[start]) > 0


def compute_audio_features(
    samples: np.ndarray,
    t0: float,
    config: AudioConfig | None = None,
    noise_floor_db: float | None = None,
) -> AudioFeatures:
    """Log-mel, loudness and voice activity for one span starting at media time ``t0``.

    ``noise_floor_db`` is the session's floor (see :class:`NoiseFloorTracker`); without it
    the span's own low percentile is used, which is less stable on short spans.
    """
    config = config or AudioConfig()
    rate = config.sample_rate
    hop = round(config.hop_s * rate)
    win = round(config.win_s * rate)
    n_fft = 1 << max(0, (win - 1).bit_length())
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    count = frame_count(len(samples), hop)
    if count == 0:
        return AudioFeatures(
            t0=t0,
            hop_s=hop / rate,
            log_mel=np.zeros((0, config.n_mels), np.float32),
            loudness_db=np.zeros(0, np.float32),
            voiced=np.zeros(0, bool),
        )

    frames = _frames(samples, win, hop)
    # Loudness is the RMS of the row's own hop (centred, hop samples), so rows tile time.
    own = frames[:, win // 2 - hop // 2 : win // 2 - hop // 2 + hop]
    mean_square = np.einsum("ij,ij->i", own, own, dtype=np.float64) / hop
    loudness = np.maximum(10.0 * np.log10(mean_square + 1e-30), SILENCE_DB).astype(np.float32)

    spectrum = np.fft.rfft(frames * _hann(win), n=n_fft, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = power @ mel_filterbank(rate, n_fft, config.n_mels).T
    log_mel = np.log(mel + LOG_EPSILON).astype(np.float32)

    voiced = _voice_activity(power, loudness, rate, n_fft, noise_floor_db)
    hangover = round(VAD_HANGOVER_S / (hop / rate))
    voiced = _smooth_hangover(voiced, hangover)
    return AudioFeatures(
        t0=t0, hop_s=hop / rate, log_mel=log_mel, loudness_db=loudness, voiced=voiced
    )


def _voice_activity(
    power: np.ndarray,
    loudness: np.ndarray,
    rate: int,
    n_fft: int,
    noise_floor_db: float | None,
) -> np.ndarray:
    if noise_floor_db is None:
        noise_floor_db = float(np.percentile(loudness, NOISE_FLOOR_PERCENTILE))
    loud = (loudness > VAD_ABSOLUTE_FLOOR_DB) & (loudness > noise_floor_db + VAD_MARGIN_DB)
    if not loud.any():
        return loud

    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / rate)
    band = (bin_hz >= VAD_SPEECH_BAND_HZ[0]) & (bin_hz <= VAD_SPEECH_BAND_HZ[1])
    band_power = power[:, band].astype(np.float64) + 1e-20
    band_total = band_power.sum(axis=1)
    band_ratio = band_total / (power.sum(axis=1, dtype=np.float64) + 1e-20)

    flatness = np.exp(np.log(band_power).mean(axis=1)) / (band_total / band_power.shape[1])

    # Share of the strongest line: the peak bin and two neighbours on each side.
    peak = band_power.argmax(axis=1)
    cumulative = np.concatenate([np.zeros((len(peak), 1)), np.cumsum(band_power, axis=1)], axis=1)
    rows = np.arange(len(peak))
    upper = np.minimum(peak + 3, band_power.shape[1])
    lower = np.maximum(peak - 2, 0)
    peak_share = (cumulative[rows, upper] - cumulative[rows, lower]) / band_total

    speechlike = (
        (band_ratio >= VAD_MIN_SPEECH_BAND_RATIO)
        & (flatness <= VAD_MAX_FLATNESS)
        & (peak_share <= VAD_MAX_PEAK_SHARE)
    )
    return loud & speechlike


@dataclass
class NoiseFloorTracker:
    """Session-level noise floor: a slowly forgetting low percentile of loudness.

    Loudness rows go into a 1 dB histogram whose old mass decays with time constant
    ``time_constant_s``; the floor is its ``percentile``. Short analysis spans then share
    one stable floor instead of each guessing its own.
    """

    percentile: float = NOISE_FLOOR_PERCENTILE
    time_constant_s: float = 30.0
    hop_s: float = 0.010
    _bins: np.ndarray = field(default_factory=lambda: np.arange(SILENCE_DB, 1.0, 1.0))
    _histogram: np.ndarray | None = None

    def update(self, loudness_db: np.ndarray) -> float | None:
        values = np.asarray(loudness_db, dtype=np.float64).reshape(-1)
        if len(values):
            if self._histogram is None:
                self._histogram = np.zeros(len(self._bins), np.float64)
            self._histogram *= np.exp(-len(values) * self.hop_s / self.time_constant_s)
            index = np.clip(np.round(values - SILENCE_DB).astype(int), 0, len(self._bins) - 1)
            self._histogram += np.bincount(index, minlength=len(self._bins))
        return self.floor_db

    @property
    def floor_db(self) -> float | None:
        if self._histogram is None or self._histogram.sum() <= 0:
            return None
        cumulative = np.cumsum(self._histogram)
        target = cumulative[-1] * self.percentile / 100.0
        return float(self._bins[int(np.searchsorted(cumulative, target))])


class AudioFeatureExtractor:
    """Features for successive spans of one session, sharing one noise floor.

    The floor used for a span is the one known before it, then the span updates it, so a
    span never judges itself against itself (except the first, which has nothing else).
    Spans may overlap (sliding windows); the floor then counts overlapping audio more
    than once, which shifts a percentile little.
    """

    def __init__(self, config: AudioConfig | None = None) -> None:
        self.config = config or AudioConfig()
        self.noise_floor = NoiseFloorTracker(hop_s=self.config.hop_s)

    def compute(self, samples: np.ndarray, t0: float) -> AudioFeatures:
        features = compute_audio_features(samples, t0, self.config, self.noise_floor.floor_db)
        self.noise_floor.update(features.loudness_db)
        return features
