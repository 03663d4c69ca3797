"""One HTTP POST per attempt, with aiohttp, mapped to an :class:`Outcome`.

2xx is delivered; 408, 425, 429 and 5xx, a refused or reset connection and a timeout
are worth retrying (``Retry-After`` honoured); any other answer, redirects included
(a signed body is never re-sent to wherever a 3xx points), is final.

aiohttp is imported on the first POST: a replay or a server without HTTP sinks never
pays its import (about 0.1 s of start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from monitor import __version__
from monitor.sinks.delivery import Outcome, parse_retry_after

if TYPE_CHECKING:
    import aiohttp

RETRY_STATUSES = frozenset({408, 425, 429})
USER_AGENT = f"dfmon/{__version__}"


def http_outcome(status: int, retry_after: str | None, answer: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome.ok(f"HTTP {status}")
    detail = f"HTTP {status}" + (f": {answer.strip()[:200]}" if answer.strip() else "")
    if status in RETRY_STATUSES or status >= 500:
        return Outcome.retry(detail, parse_retry_after(retry_after))
    return Outcome.reject(detail)


class HttpPoster:
    """An aiohttp session for one sink, opened on the delivery loop at first use."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": USER_AGENT},
            )
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                answer = (await response.content.read(1024)).decode("utf-8", "replace")
                return http_outcome(response.status, response.headers.get("Retry-After"), answer)
        except TimeoutError:
            return Outcome.retry(f"no answer within {self.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return Outcome.retry(f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
