"""One call that explains one window: both attribution methods, their faithfulness, agreement.

The result (:class:`Explanation`) is what the HTML report draws and what
``tools/eval_explanations.py`` aggregates over the dev clips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from monitor.explain.attribution import (
    IG_STEPS,
    InputAttribution,
    ScoreFn,
    integrated_gradients,
    occlusion,
)
from monitor.explain.faithfulness import (
    RANDOM_ORDERS,
    DeletionResult,
    deletion_test,
    rank_agreement,
)
from monitor.explain.inputs import AVExample, Unit, region_units, time_units

if TYPE_CHECKING:
    import torch

FAMILIES = ("time", "region")
# Deletion tests: (key, unit family, removal operator).
DELETIONS = (
    ("time", "time", "baseline"),
    ("region", "region", "baseline"),
    ("time-swap", "time", "swap"),
)


@dataclass
class MethodResult:
    """One attribution method's unit scores and deletion tests."""

    name: str
    kind: str  # "white-box" or "black-box"
    units: dict[str, np.ndarray]  # family -> attribution per unit
    deletion: dict[str, DeletionResult]
    seconds: float
    maps: InputAttribution | None = None  # per-element maps (white-box only)

    def faithfulness(self, family: str) -> float | None:
        return self.deletion[family].faithfulness


@dataclass
class Explanation:
    example: AVExample
    target: str  # what the explained score measures, in words
    score: float
    units: dict[str, list[Unit]]
    methods: list[MethodResult] = field(default_factory=list)

    def method(self, kind: str) -> MethodResult | None:
        return next((m for m in self.methods if m.kind == kind), None)

    def agreement(self, family: str) -> float | None:
        """Rank agreement of the white-box and black-box unit scores."""
        white, black = self.method("white-box"), self.method("black-box")
        if white is None or black is None:
            return None
        return rank_agreement(white.units[family], black.units[family])

    def top_units(self, kind: str, family: str, k: int = 3) -> list[tuple[Unit, float]]:
        method = self.method(kind)
        if method is None:
            return []
        values = method.units[family]
        order = np.argsort(-values, kind="stable")[:k]
        return [(self.units[family][i], float(values[i])) for i in order]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"target": self.target, "score": round(self.score, 5)}
        methods = []
        for method in self.methods:
            entry: dict[str, object] = {
                "name": method.name,
                "kind": method.kind,
                "seconds": round(method.seconds, 3),
                "deletion": {f: d.to_json() for f, d in method.deletion.items()},
                "top": {
                    family: [
                        {**unit.to_json(), "attribution": round(value, 5)}
                        for unit, value in self.top_units(method.kind, family)
                    ]
                    for family in FAMILIES
                },
            }
            if method.maps is not None:
                entry["completeness_gap"] = round(method.maps.completeness_gap, 5)
                entry["baseline_score"] = round(method.maps.baseline_score, 5)
            methods.append(entry)
        out["methods"] = methods
        out["agreement"] = {family: _rounded(self.agreement(family)) for family in FAMILIES}
        return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def explain_example(
    example: AVExample,
    score_fn: ScoreFn,
    *,
    white_box: torch.nn.Module | None = None,
    target: str = "sync-mismatch score",
    ig_steps: int = IG_STEPS,
    n_random: int = RANDOM_ORDERS,
    seed: int = 0,
) -> Explanation:
    """Occlusion (always) and integrated gradients (when a torch module is given), each with
    its deletion tests: time units and region units replaced by the baseline, time units
    swapped with real content from elsewhere in the window."""
    units = {"time": time_units(example), "region": region_units(example)}
    explanation = Explanation(example=example, target=target, score=float("nan"), units=units)

    def deletions(
        attributions: dict[str, np.ndarray], score: float | None = None
    ) -> dict[str, DeletionResult]:
        """Every deletion test of DELETIONS on one method's unit attributions."""
        return {
            key: deletion_test(
                score_fn,
                example,
                units[family],
                attributions[family],
                family=family,
                n_random=n_random,
                seed=seed,
                score=score,
                operator=operator,
            )
            for key, family, operator in DELETIONS
        }

    if white_box is not None:
        started = time.perf_counter()
        maps = integrated_gradients(white_box, example, steps=ig_steps)
        ig_units = {family: maps.unit_totals(units[family]) for family in FAMILIES}
        explanation.methods.append(
            MethodResult(
                name=f"integrated gradients ({ig_steps} steps)",
                kind="white-box",
                units=ig_units,
                deletion=deletions(ig_units),
                seconds=time.perf_counter() - started,
                maps=maps,
            )
        )

    started = time.perf_counter()
    occ_units: dict[str, np.ndarray] = {}
    score = float("nan")
    for family in FAMILIES:
        occ_units[family], score = occlusion(score_fn, example, units[family])
    explanation.methods.append(
        MethodResult(
            name="occlusion",
            kind="black-box",
            units=occ_units,
            deletion=deletions(occ_units, score),
            seconds=time.perf_counter() - started,
        )
    )
    explanation.score = score
    return explanation
