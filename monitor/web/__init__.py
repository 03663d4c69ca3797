"""The live dashboard: one self-contained HTML page (inline CSS and JS, no network).

Servers hand out ``dashboard_page(alerts_url)`` at ``/``. The page connects to the
alert websocket given by ``?alerts=`` in its own URL, else by the
``<meta name="dfmon-alerts">`` tag filled in here, else ``ws(s)://<host>/alerts``;
``?token=`` in the page URL is passed on to the websocket.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources
from urllib.parse import urlsplit

from monitor.config import FusionConfig
from monitor.errors import ConfigError
from monitor.levels import LEVEL_NAMES

CONTENT_TYPE = "text/html; charset=utf-8"
_META_EMPTY = '<meta name="dfmon-alerts" content="">'
_LEVELS_EMPTY = '<meta name="dfmon-levels" content="">'


@lru_cache(maxsize=1)
def _template() -> str:
    text = resources.files("monitor.web").joinpath("dashboard.html").read_text("utf-8")
    if text.count(_META_EMPTY) != 1 or text.count(_LEVELS_EMPTY) != 1:
        raise RuntimeError("dashboard.html lost its dfmon-alerts or dfmon-levels meta tag")
    defaults = FusionConfig()
    levels = {
        "levels": list(LEVEL_NAMES),
        "thresholds": {
            "suspicious": defaults.suspicious_threshold,
            "alert": defaults.alert_threshold,
        },
    }
    content = html.escape(json.dumps(levels, separators=(",", ":")), quote=True)
    return text.replace(_LEVELS_EMPTY, f'<meta name="dfmon-levels" content="{content}">', 1)


def _check_alerts_url(alerts_url: str) -> None:
    """Accept ws(s)/http(s) URLs and absolute paths; anything else is a config mistake."""
    if alerts_url.startswith("/") and not alerts_url.startswith("//"):
        return
    parts = urlsplit(alerts_url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ConfigError(
            f"alerts URL {alerts_url!r} must be ws://HOST:PORT/PATH, wss://... "
            "or a path such as /alerts"
        )


def dashboard_page(alerts_url: str | None = None) -> bytes:
    """The page as UTF-8 bytes, pointing at ``alerts_url`` when one is given."""
    text = _template()
    if alerts_url:
        _check_alerts_url(alerts_url)
        meta = f'<meta name="dfmon-alerts" content="{html.escape(alerts_url, quote=True)}">'
        text = text.replace(_META_EMPTY, meta, 1)
    return text.encode("utf-8")
