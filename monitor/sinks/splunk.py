"""``splunk``: each notice as a Splunk HTTP Event Collector event.

``POST /services/collector/event`` (added when the URL has no path) with
``Authorization: Splunk TOKEN`` and the body ``{time, host, source, sourcetype, [index,]
event, fields}``: ``time`` is the event's ``ts`` in epoch seconds, ``event`` the whole
notice (rationale and evidence included), ``fields`` a few indexed fields to search on.
HEC answers 400 for a malformed event and 401/403 for a bad token (final), 503 when busy
(retried).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitor.events import dumps
from monitor.sinks.delivery import Outcome
from monitor.sinks.http import HttpPoster
from monitor.sinks.targets import shown

HEC_SOURCE = "dfmon"
INDEXED_FIELDS = ("type", "session", "participant", "level", "verdict")


def epoch_seconds(ts: str) -> float:
    return round(datetime.fromisoformat(ts).timestamp(), 3)


def hec_event(
    notice: dict[str, Any], *, host: str, sourcetype: str, index: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "time": epoch_seconds(notice["ts"]),
        "host": host,
        "source": HEC_SOURCE,
        "sourcetype": sourcetype,
        "event": notice,
        "fields": {name: str(notice[name]) for name in INDEXED_FIELDS if name in notice},
    }
    if index:
        body["index"] = index
    return body


class SplunkSink:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        host: str,
        sourcetype: str,
        index: str | None,
        timeout_s: float,
    ) -> None:
        self.url = url
        self.name = f"splunk:{shown(url)}"
        self._headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
        self._host = host
        self._sourcetype = sourcetype
        self._index = index
        self._http = HttpPoster(timeout_s)

    async def deliver(self, payload: dict[str, Any]) -> Outcome:
        event = hec_event(payload, host=self._host, sourcetype=self._sourcetype, index=self._index)
        return await self._http.post(self.url, dumps(event).encode(), self._headers)

    async def aclose(self) -> None:
        await self._http.aclose()
