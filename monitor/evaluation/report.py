"""Per-category figures from the variant rows, and the Markdown table and ROC plot of them.

Every manipulated category is compared with the genuine clips (the negatives): ROC AUC,
EER and TPR at 1% FPR of the summary ``risk``; how many of its clips the default levels
flag; time to alert after the manipulation's onset; for shifts, whether the session's
lip-sync offset is within ``OFFSET_TOLERANCE_MS`` of the truth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.evaluation import metrics
from monitor.levels import ALARM_LEVELS

OFFSET_TOLERANCE_MS = 40.0
FIXED_CATEGORIES = ("swap", "tts", "frozen", "looped")
# Report categories made of several variant categories.
UNIONS = {"known_fake": ("known_fake", "lipsync_fake"), "lipsync_fake": ("lipsync_fake",)}


def _shift_key(category: str) -> tuple[int, int]:
    match = re.fullmatch(r"shift([+-]\d+)ms", category)
    value = int(match.group(1)) if match else 0
    return abs(value), -value  # by magnitude, + before -


def category_order(categories: Sequence[str]) -> list[str]:
    present = set(categories)
    shifts = sorted((c for c in present if c.startswith("shift")), key=_shift_key)
    partial = sorted(c for c in present if c.startswith("partial"))
    fixed = [c for c in FIXED_CATEGORIES if c in present]
    fakes = [c for c in UNIONS if any(part in present for part in UNIONS[c])]
    return shifts + fixed + partial + fakes


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def genuine_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    genuine = [r for r in rows if r["category"] == "genuine"]
    media = sum(r["media_seconds"] for r in genuine)
    alarms = sum(len(r["alarms"]) for r in genuine)
    return {
        "n": len(genuine),
        "media_seconds": round(media, 1),
        "alarms": alarms,
        "false_alarms_per_hour": _round(metrics.per_hour(alarms, media), 1),
        "clips_with_alarm": sum(1 for r in genuine if r["alarms"]),
        "flagged_fraction": _round(
            sum(r["level"] in ALARM_LEVELS for r in genuine) / len(genuine) if genuine else None
        ),
        "median_risk": _round(metrics.median(r["risk"] for r in genuine)),
    }


def category_figures(rows: list[dict[str, Any]], category: str) -> dict[str, Any]:
    members = UNIONS.get(category, (category,))
    positives = [r for r in rows if r["category"] in members]
    negatives = [r["risk"] for r in rows if r["category"] == "genuine"]
    scores = [r["risk"] for r in positives]
    figures: dict[str, Any] = {"n": len(positives), "median_risk": _round(metrics.median(scores))}
    if negatives and scores:
        figures["auc"] = _round(metrics.roc_auc(negatives, scores))
        figures["eer"] = _round(metrics.equal_error_rate(negatives, scores))
        figures["tpr_at_1pct_fpr"] = _round(metrics.tpr_at_fpr(negatives, scores, 0.01))
        # The highest smoothed risk of any window: shows what the summary risk may hide.
        peak_neg = [r["peak_risk"] for r in rows if r["category"] == "genuine"]
        peak_pos = [r["peak_risk"] for r in positives]
        if None not in peak_neg and None not in peak_pos:
            figures["auc_peak_risk"] = _round(metrics.roc_auc(peak_neg, peak_pos))
    figures["flagged_fraction"] = _round(
        sum(r["level"] in ALARM_LEVELS for r in positives) / len(positives) if positives else None
    )
    delays = [r["time_to_alert_s"] for r in positives if r["time_to_alert_s"] is not None]
    figures["alarmed_after_onset"] = len(delays)
    figures["time_to_alert_median_s"] = _round(metrics.median(delays), 2)
    figures["time_to_alert_p95_s"] = _round(metrics.percentile(delays, 95.0), 2)
    if category.startswith("partial"):
        figures["alarms_before_onset"] = sum(r["alarms_before_onset"] for r in positives)
    truths = [r for r in positives if r.get("true_offset_ms") is not None]
    if truths:
        hits = [
            r["offset_ms"] is not None
            and abs(r["offset_ms"] - r["true_offset_ms"]) <= OFFSET_TOLERANCE_MS
            for r in truths
        ]
        figures["offset_within_40ms"] = _round(sum(hits) / len(hits))
    return figures


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    categories = category_order([r["category"] for r in rows if r["category"] != "genuine"])
    return {
        "genuine": genuine_figures(rows),
        "categories": {c: category_figures(rows, c) for c in categories},
    }


def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def markdown_table(summary: dict[str, Any]) -> str:
    """Per-category table plus one line on the genuine clips."""
    lines = [
        "| Category | n | ROC AUC | EER | TPR @ 1% FPR | AUC of peak risk | flagged | alarmed "
        "| time to alert median / p95 (s) | offset within 40 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for category, f in summary["categories"].items():
        alarmed = f"{f['alarmed_after_onset']}/{f['n']}"
        if "alarms_before_onset" in f:
            alarmed += f" ({f['alarms_before_onset']} before onset)"
        tta = f"{_fmt(f['time_to_alert_median_s'], 1)} / {_fmt(f['time_to_alert_p95_s'], 1)}"
        lines.append(
            f"| {category} | {f['n']} | {_fmt(f.get('auc'))} | {_fmt(f.get('eer'))} | "
            f"{_fmt(f.get('tpr_at_1pct_fpr'))} | {_fmt(f.get('auc_peak_risk'))} | "
            f"{_fmt(f['flagged_fraction'])} | {alarmed} | "
            f"{tta} | {_fmt(f.get('offset_within_40ms'))} |"
        )
    g = summary["genuine"]
    lines += [
        "",
        f"Genuine clips: {g['n']} ({g['media_seconds']:.0f} s of media); median risk "
        f"{_fmt(g['median_risk'])}; flagged at the default levels: {_fmt(g['flagged_fraction'])}; "
        f"{g['alarms']} alarms in {g['clips_with_alarm']} clips = "
        f"{_fmt(g['false_alarms_per_hour'], 0)} false alarms per hour of genuine media.",
    ]
    return "\n".join(lines) + "\n"


def roc_plot(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str) -> None:
    """ROC curves of every category against the genuine clips: shifts left, the rest right."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    negatives = [r["risk"] for r in rows if r["category"] == "genuine"]
    figure, axes = pyplot.subplots(1, 2, figsize=(12, 5.5), sharey=True)
    for axis, shifts in zip(axes, (True, False), strict=True):
        for category, figures in summary["categories"].items():
            if category.startswith("shift") != shifts:
                continue
            members = UNIONS.get(category, (category,))
            positives = [r["risk"] for r in rows if r["category"] in members]
            if not negatives or not positives:
                continue
            curve = metrics.roc_curve(negatives, positives)
            label = f"{category} (AUC {figures['auc']:.2f}, n={figures['n']})"
            axis.plot(curve.fpr, curve.tpr, drawstyle="default", label=label)
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel(f"false positive rate ({len(negatives)} genuine clips)")
        axis.set_title("audio shifted" if shifts else "other manipulations and known fakes")
        axis.legend(loc="lower right", fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("true positive rate")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
