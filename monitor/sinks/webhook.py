"""``webhook``: each notice as a signed HTTP POST (Standard Webhooks), optionally as a
CloudEvents 1.0 structured-mode event.

Plain mode posts the notice itself (``application/json``). CloudEvents mode wraps it:
``{specversion: "1.0", id, source, type: "dev.dfmon.<event type>", subject: participant,
time, datacontenttype: "application/json", data: notice}`` as
``application/cloudevents+json``. Both are signed over the exact body sent, with the
notice's idempotency key as ``webhook-id`` (and as the CloudEvents ``id``); each retry is
re-signed with its own timestamp.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from monitor.events import dumps
from monitor.sinks.delivery import Outcome
from monitor.sinks.http import HttpPoster
from monitor.sinks.signing import signed_headers
from monitor.sinks.targets import shown

JSON_TYPE = "application/json"
CLOUDEVENTS_TYPE = "application/cloudevents+json"
CLOUDEVENTS_TYPE_PREFIX = "dev.dfmon."


def cloudevents_source(monitor_name: str) -> str:
    """A URI-reference naming this monitor, e.g. ``urn:dfmon:host-1``."""
    return "urn:dfmon:" + quote(monitor_name, safe="")


def cloudevent(notice: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": notice["id"],
        "source": source,
        "type": CLOUDEVENTS_TYPE_PREFIX + notice["type"],
        "subject": notice["participant"],
        "time": notice["ts"],
        "datacontenttype": JSON_TYPE,
        "data": notice,
    }


def webhook_request(
    notice: dict[str, Any],
    key: bytes,
    *,
    cloudevents_source: str | None = None,
    now: float | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one attempt; CloudEvents mode when a source is given."""
    if cloudevents_source is None:
        envelope, content_type = notice, JSON_TYPE
    else:
        envelope, content_type = cloudevent(notice, cloudevents_source), CLOUDEVENTS_TYPE
    body = dumps(envelope).encode()
    headers = {"Content-Type": content_type, **signed_headers(key, notice["id"], body, now)}
    return body, headers


class WebhookSink:
    def __init__(
        self, url: str, key: bytes, *, timeout_s: float, cloudevents_source: str | None = None
    ) -> None:
        self.url = url
        self.name = f"webhook:{shown(url)}"
        self._key = key
        self._cloudevents_source = cloudevents_source
        self._http = HttpPoster(timeout_s)

    async def deliver(self, payload: dict[str, Any]) -> Outcome:
        body, headers = webhook_request(
            payload, self._key, cloudevents_source=self._cloudevents_source
        )
        return await self._http.post(self.url, body, headers)

    async def aclose(self) -> None:
        await self._http.aclose()
