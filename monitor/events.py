"""Event construction and validation (schema version 1).

Every event carries ``schema``, ``type``, ``session``, ``participant`` and ``ts``;
the same dicts go to JSONL files and to the websocket alert channel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1
EVENT_TYPES = ("session_started", "score", "alert", "summary", "session_ended", "error")

# Where events go: a session's ``emit``, a sink, a fan-out. Takes one event dict.
EventSink = Callable[[dict[str, Any]], None]


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with millisecond precision and a ``Z`` suffix."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class EventFactory:
    """Stamps events with the fields every event of one session shares."""

    def __init__(self, session: str, participant: str) -> None:
        self.session = session
        self.participant = participant

    def make(self, event_type: str, **fields: Any) -> dict[str, Any]:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        return {
            "schema": SCHEMA_VERSION,
            "type": event_type,
            "session": self.session,
            "participant": self.participant,
            "ts": utc_timestamp(),
            **fields,
        }


@lru_cache(maxsize=1)
def event_schema() -> dict[str, Any]:
    text = resources.files("monitor.schema").joinpath("events.schema.json").read_text()
    return json.loads(text)


def validate_event(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when an event breaks the schema."""
    import jsonschema

    jsonschema.validate(event, event_schema(), format_checker=jsonschema.FormatChecker())


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), allow_nan=False)
