"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), never pyplot,
so drawing needs no display, leaves no global state and is safe in any thread. Every
series is reduced to at most ``MAX_POINTS`` points (peaks kept where peaks matter), so
a figure costs the same for a 10 s clip and a 2 h call.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 80
MAX_POINTS = 1500
LEVEL_COLOURS = {
    "unknown": "#9e9e9e",
    "clear": "#2e7d32",
    "suspicious": "#f9a825",
    "alert": "#c62828",
}
WHITE_BOX_COLOUR = "#1565c0"
BLACK_BOX_COLOUR = "#ef6c00"
RANDOM_COLOUR = "#757575"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _time_axis(ax: Any, duration: float) -> None:
    ax.set_xlim(0, max(duration, 1e-3))
    ax.grid(True, alpha=0.25)


def _block_reduce(values: np.ndarray, blocks: int, how: str) -> np.ndarray:
    """Reduce a series to ``blocks`` values (max, min or nan-mean of equal pieces)."""
    if len(values) <= blocks:
        return values
    edges = np.linspace(0, len(values), blocks + 1).astype(int)
    reducer = {"max": np.nanmax, "min": np.nanmin, "mean": np.nanmean}[how]
    out = np.empty(blocks)
    for i in range(blocks):
        piece = values[edges[i] : edges[i + 1]]
        out[i] = reducer(piece) if np.isfinite(piece).any() else np.nan
    return out


def _shade_spans(ax: Any, spans: Sequence[tuple[float, float]], colour: str = "#c62828") -> None:
    for a, b in spans:
        ax.axvspan(a, b, color=colour, alpha=0.12, lw=0)


def risk_timeline(
    scores: Sequence[dict[str, Any]],
    alerts: Sequence[dict[str, Any]],
    thresholds: tuple[float, float],
    duration: float,
) -> bytes:
    """Session and per-window risk, the session's level after every window, and the alerts."""
    figure = _figure(11, 3.6)
    grid = figure.add_gridspec(2, 1, height_ratios=[5, 1])
    ax = figure.add_subplot(grid[0])
    strip = figure.add_subplot(grid[1], sharex=ax)
    # At each window's end: when the risk was known, as the alerts and the level strip.
    centers = np.array([e["t_end"] for e in scores], dtype=float)
    risk = np.array([e["risk"] for e in scores], dtype=float)
    window_risk = np.array(
        [np.nan if e.get("window_risk") is None else e["window_risk"] for e in scores], dtype=float
    )
    suspicious, alert = thresholds
    ax.axhspan(0, suspicious, color=LEVEL_COLOURS["clear"], alpha=0.06, lw=0)
    ax.axhspan(suspicious, alert, color=LEVEL_COLOURS["suspicious"], alpha=0.1, lw=0)
    ax.axhspan(alert, 1.02, color=LEVEL_COLOURS["alert"], alpha=0.08, lw=0)
    ax.axhline(suspicious, color=LEVEL_COLOURS["suspicious"], ls="--", lw=1)
    ax.axhline(alert, color=LEVEL_COLOURS["alert"], ls="--", lw=1)
    blocks = min(len(centers), MAX_POINTS)
    t = _block_reduce(centers, blocks, "mean")
    ax.plot(
        t,
        _block_reduce(window_risk, blocks, "max"),
        ".",
        ms=3,
        color="#616161",
        label="window risk",
    )
    ax.plot(
        t, _block_reduce(risk, blocks, "max"), "-", lw=1.8, color="#263238", label="session risk"
    )
    for i, event in enumerate(alerts):
        colour = LEVEL_COLOURS.get(event["level"], "#000")
        ax.axvline(event["t_end"], color=colour, lw=1.5)
        ax.annotate(  # alternate heights so that close alerts' labels do not collide
            f"-> {event['level']}",
            (event["t_end"], 1.0 if i % 2 == 0 else 0.92),
            xytext=(3, -2),
            textcoords="offset points",
            fontsize=8,
            color=colour,
            va="top",
        )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("risk")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    _time_axis(ax, duration)
    ax.tick_params(labelbottom=False)
    # The level after each window, as one image row (highest level within each pixel block).
    names = list(LEVEL_COLOURS)
    ranks = np.array([names.index(e.get("level", "unknown")) for e in scores], dtype=float)
    ends = np.array([e["t_end"] for e in scores], dtype=float)
    hop = float(np.median(np.diff(ends))) if len(ends) > 1 else 0.5
    strip.imshow(
        _block_reduce(ranks, blocks, "max")[None, :],
        aspect="auto",
        cmap=ListedColormap(list(LEVEL_COLOURS.values())),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        extent=(float(ends[0]) - hop, float(ends[-1]), 0, 1),
        interpolation="nearest",
    )
    strip.set_yticks([])
    strip.set_ylabel("level", rotation=0, ha="right", va="center")
    strip.set_xlabel("media time (s)")
    _time_axis(strip, duration)
    return png(figure)


def detector_contributions(scores: Sequence[dict[str, Any]], duration: float) -> bytes:
    """Each detector's score per window, and the evidence (nats) it gave the decision; under
    attack_model per_face also the session's two readings, the sum and the face reading."""
    detectors = sorted({e["detector"] for s in scores for e in s.get("evidence", [])})
    figure = _figure(11, 4.2)
    top, bottom = figure.subplots(2, 1, sharex=True)
    centers = np.array([(s["t_start"] + s["t_end"]) / 2 for s in scores])
    blocks = min(len(centers), MAX_POINTS)
    t = _block_reduce(centers, blocks, "mean")

    def series(name: str, key: str) -> np.ndarray:
        return np.array(
            [
                next((e.get(key) for e in s["evidence"] if e["detector"] == name), None)
                for s in scores
            ],
            dtype=float,
        )

    for name in detectors:
        top.plot(t, _block_reduce(series(name, "score"), blocks, "max"), lw=1.4, label=name)
        bottom.plot(t, _block_reduce(series(name, "llr"), blocks, "mean"), lw=1.4, label=name)
    # attack_model per_face: what the level read, the sum over windows and the face reading
    face = np.array(
        [np.nan if not s.get("face_reading") else s["face_reading"]["nats"] for s in scores],
        dtype=float,
    )
    if np.isfinite(face).any():
        summed = np.array([s.get("summed_nats", np.nan) for s in scores], dtype=float)
        reduced = _block_reduce(summed, blocks, "max")
        bottom.plot(t, reduced, ":", lw=1.8, color="#263238", label="session: sum (audio side)")
        reduced = _block_reduce(face, blocks, "max")
        bottom.plot(t, reduced, "--", lw=1.8, color="#6a1b9a", label="session: face reading")
        bottom.legend(loc="upper left", fontsize=8)
    bottom.axhline(0.0, color="#9e9e9e", lw=1)
    top.set_ylabel("detector score")
    top.set_ylim(-0.02, 1.02)
    top.legend(loc="upper left", fontsize=8)
    top.set_title("score per window (None = insufficient evidence, not drawn)", fontsize=9)
    bottom.set_ylabel("log-likelihood ratio (nats)")
    bottom.set_xlabel("media time (s)")
    for ax in (top, bottom):
        _time_axis(ax, duration)
    return png(figure)


def lag_curves(
    flagged: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]],
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    genuine_offset_ms: float,
    genuine: tuple[str, float] | None,
) -> bytes:
    """Distance-vs-lag curve of each flagged window against where genuine speech falls.

    ``flagged``: (title, lags_ms, distances, offset_ms). ``band``: (lags_ms, low, high)
    envelope of the in-sync windows' curves. ``genuine``: where a genuine curve's minimum
    reaches, a documented constant: ("relative", d) d below the curve's median, or
    ("absolute", d) below distance d.
    """
    n = len(flagged)
    cols = min(3, max(1, n))
    rows = max(1, -(-n // cols))
    figure = _figure(11, 2.6 * rows + 0.4)
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (title, lags, curve, offset) in zip(axes, flagged, strict=False):
        ax.axvspan(
            -genuine_offset_ms,
            genuine_offset_ms,
            color=LEVEL_COLOURS["clear"],
            alpha=0.12,
            lw=0,
            label=f"genuine offsets (+-{genuine_offset_ms:.0f} ms)",
        )
        if band is not None:
            band_lags, low, high = band
            ax.fill_between(
                band_lags, low, high, color="#90a4ae", alpha=0.35, label="in-sync windows (10-90 %)"
            )
        if genuine is not None:
            kind, value = genuine
            level = float(np.median(curve)) - value if kind == "relative" else value
            ax.hlines(
                level,
                -genuine_offset_ms,
                genuine_offset_ms,
                colors=LEVEL_COLOURS["clear"],
                linestyles="--",
                lw=1.2,
                label="genuine minimum reaches below",
            )
        ax.plot(lags, curve, "-", color="#263238", lw=1.6)
        best = int(np.argmin(curve))
        ax.plot(lags[best], curve[best], "o", color=LEVEL_COLOURS["alert"], ms=5)
        ax.axvline(0, color="#9e9e9e", lw=0.8)
        label = f"best {lags[best]:+.0f} ms" if offset is None else f"offset {offset:+.0f} ms"
        ax.set_title(f"{title}  ({label})", fontsize=9)
        ax.set_xlabel("lag (ms; > 0: audio later)", fontsize=8)
        ax.set_ylabel("distance (lower = better)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.25)
    for ax in axes[n:]:
        ax.set_visible(False)
    if n:
        axes[0].legend(fontsize=7, loc="lower left", framealpha=0.8)
    return png(figure)


def frame_confidence(
    times: np.ndarray,
    confidence: np.ndarray,
    offsets: np.ndarray,
    method: str,
    genuine_confidence: float | None,
    genuine_offset_ms: float,
    flagged: Sequence[tuple[float, float]],
    duration: float,
) -> bytes:
    """Sync confidence and best offset per frame (per stack, or per 1 s sub-window)."""
    figure = _figure(11, 4.0)
    top, bottom = figure.subplots(2, 1, sharex=True)
    blocks = min(len(times), MAX_POINTS)
    t = _block_reduce(times, blocks, "mean")
    _shade_spans(top, flagged)
    _shade_spans(bottom, flagged)
    top.plot(t, _block_reduce(confidence, blocks, "mean"), color="#1565c0", lw=1.2)
    if genuine_confidence is not None:
        top.axhline(
            genuine_confidence,
            color=LEVEL_COLOURS["clear"],
            ls="--",
            lw=1,
            label=f"95 % of genuine windows exceed {genuine_confidence:.2f}",
        )
        top.legend(fontsize=8, loc="upper right")
    top.set_ylabel("sync confidence")
    top.set_title(f"{method} model; flagged windows shaded; gaps: no face or no speech", fontsize=9)
    bottom.axhspan(
        -genuine_offset_ms, genuine_offset_ms, color=LEVEL_COLOURS["clear"], alpha=0.12, lw=0
    )
    bottom.plot(t, _block_reduce(offsets, blocks, "mean"), ".", ms=3, color="#263238")
    bottom.axhline(0, color="#9e9e9e", lw=0.8)
    bottom.set_ylabel("best offset (ms)")
    bottom.set_ylim(-650, 650)
    bottom.set_xlabel("media time (s)")
    for ax in (top, bottom):
        _time_axis(ax, duration)
    return png(figure)


def audio_and_lips(
    wave_min: np.ndarray,
    wave_max: np.ndarray,
    mel: np.ndarray,
    mel_column_s: float,
    voiced: np.ndarray,
    frame_times: np.ndarray,
    aperture: np.ndarray,
    flagged: Sequence[tuple[float, float]],
    duration: float,
    row_s: float = 0.01,
) -> bytes:
    """Waveform, log-mel spectrogram and lip aperture on one time axis."""
    figure = _figure(11, 5.4)
    wave_ax, mel_ax, lip_ax = figure.subplots(3, 1, sharex=True, height_ratios=[1, 1.3, 1])
    blocks = min(len(wave_min), MAX_POINTS)
    if blocks:
        t = _block_reduce(np.arange(len(wave_min)) * row_s, blocks, "mean")
        wave_ax.fill_between(
            t,
            _block_reduce(wave_min, blocks, "min"),
            _block_reduce(wave_max, blocks, "max"),
            color="#455a64",
            lw=0,
        )
        speech = _block_reduce(voiced.astype(float), blocks, "mean")
        wave_ax.fill_between(
            t, -1, 1, where=speech > 0.5, color="#81c784", alpha=0.25, lw=0, label="voice activity"
        )
        peak = max(float(np.abs(wave_min).max()), float(np.abs(wave_max).max()), 1e-3)
        wave_ax.set_ylim(-peak, peak)
        wave_ax.legend(fontsize=8, loc="upper right")
    wave_ax.set_ylabel("waveform")
    _shade_spans(wave_ax, flagged)
    if len(mel):
        mel_ax.imshow(
            mel.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, len(mel) * mel_column_s, 0, mel.shape[1]),
            vmin=float(np.percentile(mel, 5)),
            vmax=float(mel.max()),
        )
    mel_ax.set_ylabel("mel band")
    lip_blocks = min(len(frame_times), MAX_POINTS)
    if lip_blocks:
        lip_ax.plot(
            _block_reduce(frame_times, lip_blocks, "mean"),
            _block_reduce(aperture, lip_blocks, "max"),
            color="#6a1b9a",
            lw=1.2,
        )
    lip_ax.set_ylabel("lip aperture\n(of face height)")
    lip_ax.set_xlabel("media time (s)")
    _shade_spans(lip_ax, flagged)
    for ax in (wave_ax, mel_ax, lip_ax):
        _time_axis(ax, duration)
    return png(figure)


def offset_zoom(
    t_start: float,
    t_end: float,
    audio_times: np.ndarray,
    loudness_db: np.ndarray,
    frame_times: np.ndarray,
    aperture: np.ndarray,
    offset_ms: float | None,
) -> bytes:
    """One flagged window up close: loudness against lip opening, and the lips moved by
    the detected offset, where they should line up with the loudness if the offset is real."""
    figure = _figure(11, 2.8)
    ax = figure.add_subplot()

    def scaled(values: np.ndarray) -> np.ndarray:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return values
        low, high = np.percentile(finite, [5, 95])
        return (values - low) / max(high - low, 1e-9)

    ax.plot(
        audio_times,
        scaled(np.maximum(loudness_db, -60.0)),
        color="#455a64",
        lw=1.2,
        label="audio loudness",
    )
    ax.plot(frame_times, scaled(aperture), color="#6a1b9a", lw=1.6, label="lip aperture")
    if offset_ms is not None and abs(offset_ms) > 0:
        ax.plot(
            frame_times + offset_ms / 1000.0,
            scaled(aperture),
            color="#6a1b9a",
            ls="--",
            lw=1.2,
            label=f"lip aperture moved {offset_ms:+.0f} ms",
        )
    ax.axvspan(t_start, t_end, color="#c62828", alpha=0.06, lw=0)
    ax.set_xlim(t_start - 0.6, t_end + 0.6)
    ax.set_xlabel("media time (s)")
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="upper right", ncols=3)
    ax.grid(True, alpha=0.25)
    return png(figure)


def filmstrip(
    groups: Sequence[tuple[str, Sequence[tuple[str, np.ndarray | None]]]],
) -> bytes:
    """Rows of mouth crops (one row per flagged moment), landmarks already drawn."""
    rows = len(groups)
    cols = max((len(items) for _, items in groups), default=1)
    figure = _figure(1.9 * cols + 0.3, 1.25 * rows + 0.2)
    axes = np.atleast_2d(figure.subplots(rows, cols, squeeze=False))
    for r, (label, items) in enumerate(groups):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(items):
                ax.set_visible(False)
                continue
            caption, image = items[c]
            if image is None:
                ax.imshow(np.full((96, 192, 3), 200, np.uint8))
                ax.text(96, 48, "no face", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(image)
            ax.set_title(caption, fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    return png(figure)


def seam_overlays(
    groups: Sequence[tuple[str, Sequence[tuple[str, np.ndarray | None]]]],
    maps: Sequence[np.ndarray],
) -> bytes:
    """Rows of aligned face crops (one row per flagged moment) with that moment's blend
    boundary map over them, red where the seam is."""
    rows = len(groups)
    cols = max((len(items) for _, items in groups), default=1) + 1
    figure = _figure(1.7 * cols + 0.3, 1.8 * rows + 0.2)
    axes = np.atleast_2d(figure.subplots(rows, cols, squeeze=False))
    seam = ListedColormap(
        np.column_stack([np.tile([0.9, 0.1, 0.1], (64, 1)), np.linspace(0, 0.75, 64)])
    )
    for r, ((label, items), boundary) in enumerate(zip(groups, maps, strict=True)):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:  # the map alone, on its grid
                ax.imshow(boundary, cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title("seam map (grid)", fontsize=7)
                ax.set_ylabel(label, fontsize=7)
                continue
            if c - 1 >= len(items):
                ax.set_visible(False)
                continue
            caption, crop = items[c - 1]
            if crop is None:
                ax.imshow(np.full((64, 64, 3), 200, np.uint8))
                ax.text(32, 32, "no face", ha="center", va="center", fontsize=8)
            else:
                side = crop.shape[0]
                ax.imshow(crop)
                ax.imshow(
                    boundary, cmap=seam, vmin=0, vmax=1, extent=(0, side, side, 0),
                    interpolation="bilinear",
                )  # fmt: skip
            ax.set_title(caption, fontsize=7)
    return png(figure)


# ----- attribution -------------------------------------------------------------------------


def attribution_time(
    video_units: Sequence[tuple[float, float, float, float]],
    audio_units: Sequence[tuple[float, float, float, float]],
    window: tuple[float, float],
    offset_ms: float | None,
) -> bytes:
    """Per 0.2 s segment: white-box and black-box attribution, lips above, audio below.

    Units are (t0, t1, white, black); both are in the explained score's units."""
    figure = _figure(11, 3.8)
    lips_ax, audio_ax = figure.subplots(2, 1, sharex=True)
    for ax, units, name in ((lips_ax, video_units, "lips"), (audio_ax, audio_units, "audio")):
        for t0, t1, white, black in units:
            width = (t1 - t0) * 0.4
            mid = (t0 + t1) / 2
            if not np.isnan(white):
                ax.bar(mid - width / 2, white, width, color=WHITE_BOX_COLOUR)
            ax.bar(mid + width / 2, black, width, color=BLACK_BOX_COLOUR)
        ax.axhline(0, color="#9e9e9e", lw=0.8)
        ax.axvspan(*window, color="#c62828", alpha=0.06, lw=0)
        ax.set_ylabel(f"{name}\n(score units)", fontsize=8)
        ax.grid(True, axis="y", alpha=0.25)
    if offset_ms is not None:
        audio_ax.annotate(
            f"audio matching the lips of the window lies {offset_ms:+.0f} ms later",
            (0.01, 0.95),
            xycoords="axes fraction",
            fontsize=8,
            va="top",
        )
    lips_ax.legend(
        handles=[
            Patch(color=WHITE_BOX_COLOUR, label="white-box: integrated gradients"),
            Patch(color=BLACK_BOX_COLOUR, label="black-box: occlusion"),
        ],
        fontsize=8,
        loc="upper right",
    )
    audio_ax.set_xlabel("media time (s)")
    return png(figure)


def _robust_limit(values: np.ndarray) -> float:
    """Colour limit that a few extreme elements cannot wash out (99.5th percentile of |x|)."""
    limit = float(np.percentile(np.abs(values), 99.5))
    return limit if limit > 0 else float(np.abs(values).max()) or 1.0


def attribution_maps(
    mel_map: np.ndarray | None,
    audio_t0: float,
    audio_step: float,
    mouth_map: np.ndarray | None,
    mean_mouth: np.ndarray,
    region_grid: np.ndarray,
    band_values: np.ndarray,
    band_labels: Sequence[str],
) -> bytes:
    """Where in time-frequency and in the mouth picture the evidence sits.

    White-box: integrated gradients per mel bin and per mouth pixel (summed over time).
    Black-box: occlusion of each mouth region (grid) and each mel range."""
    figure = _figure(11, 3.4)
    axes = figure.subplots(1, 4, width_ratios=[1.9, 1.5, 1.5, 1.1])
    mel_ax, mouth_ax, region_ax, band_ax = axes
    if mel_map is not None:
        limit = _robust_limit(mel_map)
        mel_ax.imshow(
            mel_map.T,
            origin="lower",
            aspect="auto",
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            extent=(audio_t0, audio_t0 + len(mel_map) * audio_step, 0, mel_map.shape[1]),
        )
        mel_ax.set_title("white-box: audio time-frequency", fontsize=9)
        mel_ax.set_xlabel("media time (s)", fontsize=8)
        mel_ax.set_ylabel("mel band", fontsize=8)
    else:
        mel_ax.text(0.5, 0.5, "no white-box model", ha="center", va="center")
        mel_ax.set_axis_off()
    mouth_ax.imshow(mean_mouth, cmap="gray")
    if mouth_map is not None:
        limit = _robust_limit(mouth_map)
        mouth_ax.imshow(mouth_map, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6)
    mouth_ax.set_title("white-box: mouth pixels", fontsize=9)
    region_limit = float(np.abs(region_grid).max()) or 1.0
    height, width = mean_mouth.shape
    region_ax.imshow(mean_mouth, cmap="gray")
    region_ax.imshow(
        region_grid,
        cmap="RdBu_r",
        vmin=-region_limit,
        vmax=region_limit,
        alpha=0.6,
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        interpolation="nearest",
    )
    region_ax.set_title("black-box: mouth regions", fontsize=9)
    for ax in (mouth_ax, region_ax):
        ax.set_xticks([])
        ax.set_yticks([])
    band_ax.barh(np.arange(len(band_values)), band_values, color=BLACK_BOX_COLOUR)
    band_ax.set_yticks(np.arange(len(band_values)), band_labels, fontsize=7)
    band_ax.axvline(0, color="#9e9e9e", lw=0.8)
    band_ax.set_title("black-box: frequency ranges", fontsize=9)
    band_ax.tick_params(axis="x", labelsize=7)
    return png(figure)


def deletion_curves(
    curves: Sequence[tuple[str, str, Sequence[float], Sequence[float], Sequence[float]]],
) -> bytes:
    """Share of the score removed as the top-ranked units are deleted, against random.

    ``curves``: (family, method name, fractions, removed by the method, removed by random)."""
    order = {"time": 0, "time-swap": 1, "region": 2}
    families = sorted({c[0] for c in curves}, key=lambda f: (order.get(f, 9), f))
    figure = _figure(11, 3.0)
    axes = np.atleast_1d(figure.subplots(1, len(families), squeeze=False)).ravel()
    for ax, family in zip(axes, families, strict=True):
        drawn_random = False
        for fam, name, fractions, method, random in curves:
            if fam != family:
                continue
            colour = WHITE_BOX_COLOUR if name.startswith("white") else BLACK_BOX_COLOUR
            x = [0.0, *fractions]
            ax.plot(x, [0.0, *method], "o-", color=colour, lw=1.6, ms=4, label=name)
            if not drawn_random:
                ax.plot(
                    x,
                    [0.0, *random],
                    "s--",
                    color=RANDOM_COLOUR,
                    lw=1.2,
                    ms=3,
                    label="random units (same number)",
                )
                drawn_random = True
        ax.axhline(1.0, color="#9e9e9e", lw=0.8, ls=":")
        title = {
            "time": "time segments -> baseline",
            "time-swap": "time segments -> swapped with other times",
            "region": "regions -> baseline",
        }.get(family, family)
        ax.set_title(f"deleting {title}", fontsize=9)
        ax.set_xlabel("fraction of units replaced by the baseline", fontsize=8)
        ax.set_ylabel("share of the score removed", fontsize=8)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=7)
    return png(figure)
