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
