"""From the configured targets to running alert sinks, and their counters."""

from __future__ import annotations

import os
import socket

from monitor.config import MonitorConfig
from monitor.errors import ConfigError
from monitor.sinks.delivery import DeadLetter, DeliveryService, RetryPolicy, Sink, SinkWorker
from monitor.sinks.fanout import EventFanout
from monitor.sinks.notices import NoticePolicy
from monitor.sinks.signing import decode_secret
from monitor.sinks.splunk import SplunkSink
from monitor.sinks.syslog import SyslogSink
from monitor.sinks.targets import SinkTarget, parse_target, syslog_address
from monitor.sinks.teams import TeamsReportSink
from monitor.sinks.webhook import WebhookSink, cloudevents_source

WEBHOOK_SECRET_ENV = "DFMON_WEBHOOK_SECRET"
SPLUNK_TOKEN_ENV = "DFMON_SPLUNK_TOKEN"
TEAMS_TOKEN_ENV = "DFMON_TEAMS_TOKEN"


def _secret(env: str, configured: str | None) -> str | None:
    return os.environ.get(env) or configured or None


def build_sink(target: SinkTarget, config: MonitorConfig) -> Sink:
    sinks = config.sinks
    monitor_name = sinks.monitor_name or socket.gethostname()
    if target.kind == "webhook":
        secret = _secret(WEBHOOK_SECRET_ENV, sinks.webhook_secret)
        if secret is None:
            raise ConfigError(
                f"the webhook sink signs every delivery: set {WEBHOOK_SECRET_ENV}=whsec_<base64> "
                "(or sinks.webhook_secret in the config file)"
            )
        source = cloudevents_source(monitor_name) if sinks.webhook_cloudevents else None
        return WebhookSink(
            target.target,
            decode_secret(secret),
            timeout_s=sinks.timeout_s,
            cloudevents_source=source,
        )
    if target.kind == "splunk":
        token = _secret(SPLUNK_TOKEN_ENV, sinks.splunk_token)
        if token is None:
            raise ConfigError(
                f"the splunk sink needs a HEC token: set {SPLUNK_TOKEN_ENV} "
                "(or sinks.splunk_token in the config file)"
            )
        return SplunkSink(
            target.target,
            token,
            host=monitor_name,
            sourcetype=sinks.splunk_sourcetype,
            index=sinks.splunk_index,
            timeout_s=sinks.timeout_s,
        )
    if target.kind == "syslog":
        transport, host, port = syslog_address(target.target)
        return SyslogSink(
            transport,
            host,
            port,
            facility=sinks.syslog_facility,
            monitor_name=monitor_name,
            fusion=config.fusion,
        )
    token = _secret(TEAMS_TOKEN_ENV, sinks.teams_token)
    return TeamsReportSink(target.target, token=token, timeout_s=sinks.timeout_s)


def build_sinks(config: MonitorConfig) -> list[Sink]:
    """One sink per configured target (``[sinks] targets`` and ``--sink``), not connected.

    Raises :class:`ConfigError` for a bad target, a missing secret or the same sink twice.
    """
    sinks = [build_sink(parse_target(text), config) for text in config.sinks.targets]
    names = [sink.name for sink in sinks]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same sink is configured twice: {names}")
    return sinks


def build_delivery(config: MonitorConfig) -> DeliveryService | None:
    """The configured alert sinks, not yet started; None when there are none.

    Raises :class:`ConfigError` for a bad target or a missing secret, before any media.
    """
    sinks_config = config.sinks
    sinks = build_sinks(config)
    if not sinks:
        return None
    dead_letter = DeadLetter(sinks_config.dead_letter)
    retry = RetryPolicy.from_config(sinks_config)
    workers = [
        SinkWorker(
            sink,
            NoticePolicy(sinks_config.events, sinks_config.throttle_s),
            retry,
            queue_size=sinks_config.queue_size,
            dead_letter=dead_letter,
        )
        for sink in sinks
    ]
    return DeliveryService(workers, dead_letter=dead_letter, drain_s=sinks_config.drain_s)


def sink_stats(fanout: EventFanout, delivery: DeliveryService | None) -> dict[str, dict[str, int]]:
    """Counters per sink: the fan-out's for plain receivers, the delivery's for alert
    sinks (plus any failure of their ``accept``, which would be a bug)."""
    stats = fanout.stats()
    for name, counters in (delivery.stats() if delivery else {}).items():
        merged = dict(counters)
        merged["failed"] += stats.get(name, {}).get("failed", 0)
        stats[name] = merged
    return stats
