"""Sink targets as written in ``--sink KIND:TARGET`` and ``[sinks] targets``: parsed and
checked before any media is read. Standard library only, so the CLI stays quick to start."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from monitor.config import MonitorConfig
from monitor.errors import ConfigError

KINDS = ("webhook", "splunk", "syslog", "teams-report")
HEC_PATH = "/services/collector/event"
SINK_HELP = (
    "deliver alerts to KIND:TARGET (repeatable): webhook:URL, splunk:URL, "
    "syslog:udp://HOST:PORT, syslog:tcp://HOST:PORT, teams-report:URL or teams-report:FILE; "
    "secrets come from the environment or the config (docs/ALERTS.md)"
)


@dataclass(frozen=True)
class SinkTarget:
    kind: str
    target: str


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def shown(target: str) -> str:
    """A target as logs and /metrics show it: a URL without its query (which may hold a key)."""
    if not is_url(target):
        return target
    parts = urlsplit(target)
    return urlunsplit(parts._replace(query="", fragment=""))


def _check_url(text: str, what: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} wants an http:// or https:// URL, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{what}: no credentials in URLs; secrets come from the environment")
    return text


def parse_target(text: str) -> SinkTarget:
    kind, sep, target = text.partition(":")
    if not sep or not target:
        raise ConfigError(f"a sink is KIND:TARGET, got {text!r}")
    if kind not in KINDS:
        raise ConfigError(f"unknown sink kind {kind!r} in {text!r}; known: {', '.join(KINDS)}")
    if kind == "webhook":
        _check_url(target, "webhook")
    elif kind == "splunk":
        parts = urlsplit(_check_url(target, "splunk"))
        if parts.path in ("", "/"):
            target = urlunsplit(parts._replace(path=HEC_PATH))
    elif kind == "syslog":
        syslog_address(target)
    elif is_url(target):
        _check_url(target, "teams-report")
    else:
        path = Path(target)
        if path.is_dir() or not path.parent.is_dir():
            raise ConfigError(f"teams-report: cannot write {target} (a directory, or no parent)")
    return SinkTarget(kind, target)


def syslog_address(target: str) -> tuple[str, str, int]:
    """``udp://HOST:PORT`` or ``tcp://HOST:PORT`` -> (transport, host, port)."""
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"syslog: bad address {target!r}: {exc}") from exc
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or port is None:
        raise ConfigError(f"syslog wants udp://HOST:PORT or tcp://HOST:PORT, got {target!r}")
    return parts.scheme, parts.hostname, port


def add_sink_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sink", action="append", default=[], metavar="KIND:TARGET", help=SINK_HELP
    )


def apply_sink_flags(config: MonitorConfig, flags: list[str]) -> MonitorConfig:
    """``--sink`` flags add to the config file's ``[sinks] targets``."""
    for text in flags:
        parse_target(text)
    config.sinks.targets = [*config.sinks.targets, *flags]
    return config
