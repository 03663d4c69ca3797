"""Contracts several stages share have one home each, and every stage reads it."""

from __future__ import annotations

import json
import re

from monitor.cli import build_parser
from monitor.config import BACKEND_NAMES
from monitor.events import event_schema
from monitor.levels import LEVEL_NAMES, LEVEL_RANK, RISK_LEVELS, UNKNOWN
from monitor.web import dashboard_page


def test_level_names_and_ranks_agree_with_the_schema() -> None:
    assert sorted(event_schema()["$defs"]["level"]["enum"]) == sorted(LEVEL_NAMES)
    assert LEVEL_RANK[UNKNOWN] < min(LEVEL_RANK[name] for name in RISK_LEVELS)
    assert [LEVEL_RANK[name] for name in RISK_LEVELS] == sorted(LEVEL_RANK[n] for n in RISK_LEVELS)


def test_the_dashboard_is_served_the_level_names_in_rank_order() -> None:
    page = dashboard_page().decode()
    meta = re.search(r'<meta name="dfmon-levels" content="([^"]*)">', page)
    assert meta is not None
    info = json.loads(meta.group(1).replace("&quot;", '"'))
    assert info["levels"] == list(LEVEL_NAMES)
    assert 0 < info["thresholds"]["suspicious"] < info["thresholds"]["alert"] <= 1


def test_every_command_offers_the_backends_of_the_config() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    offering = {
        name: next(a for a in sub._actions if a.dest == "backend").choices
        for name, sub in commands.items()
        if any(a.dest == "backend" for a in sub._actions)
    }
    assert set(offering) >= {"replay", "report", "serve", "demo"}
    assert all(tuple(choices) == BACKEND_NAMES for choices in offering.values())


def test_an_unknown_verdict_says_why_the_call_was_not_cleared() -> None:
    from monitor.config import MonitorConfig
    from monitor.events import EventFactory

    peak = {"level": UNKNOWN, "risk": 0.3, "evidence_nats": 1.9, "t_start": 5.5, "t_end": 7.5}
    peak["rationale"] = "temporal 0.27"

    def rationale(clearing_windows: int) -> str:
        summary = EventFactory("s", "p").summary(
            [],
            verdict=UNKNOWN,
            risk=0.3,
            peak=peak,
            final_level=UNKNOWN,
            final_risk=0.3,
            evidence_nats=1.9,
            config=MonitorConfig(),
            counts={},
            clearing_windows=clearing_windows,
        )
        return summary["rationale"]

    no_speech = rationale(0)
    assert no_speech.startswith("insufficient evidence: no window had the lip_sync evidence")
    assert "peaked at 1.9 nats over 00:05.5-00:07.5" in no_speech
    ambiguous = rationale(12)
    assert ambiguous.startswith("insufficient evidence: it never looked genuine enough")
