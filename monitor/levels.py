"""Risk levels: their names and order, for fusion, events, the report, metrics, the dashboard.

``unknown`` is insufficient evidence (no face, no speech), ranked below ``clear`` so that
any evidence outranks none; the JSON Schema's ``level`` enum is :data:`LEVEL_NAMES`.
"""

from __future__ import annotations

UNKNOWN = "unknown"
# The levels risk maps to, from low to high.
RISK_LEVELS = ("clear", "suspicious", "alert")
# Every level an event may carry, from low to high rank.
LEVEL_NAMES = (UNKNOWN, *RISK_LEVELS)
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVEL_NAMES, start=-1)}
# Levels that count as an alarm (an escalation the user sees).
ALARM_LEVELS = ("suspicious", "alert")


def level_rank(level: str) -> int:
    """Rank of a level; anything unrecognized ranks as ``unknown``."""
    return LEVEL_RANK.get(level, LEVEL_RANK[UNKNOWN])
