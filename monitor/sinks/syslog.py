"""``syslog``: each notice as one CEF line in an RFC 5424 syslog message, over UDP or TCP.

Message: ``<PRI>1 TIMESTAMP HOSTNAME dfmon PROCID MSGID - CEF:0|dfmon|dfmon|VERSION|
SIGNATURE|NAME|SEVERITY|EXTENSIONS``. UDP sends one message per datagram (RFC 5426);
TCP frames each with octet counting, ``LENGTH SP MESSAGE`` (RFC 6587 3.4.1, as RFC 5425).

CEF severity (0-10) comes from the level and where the risk lies in that level's band:
``clear`` 1, ``unknown`` 3, ``suspicious`` 4-6, ``alert`` 7-10; the syslog severity
follows it (info, notice, warning, error, critical). The extensions carry the numbers
(``cfp1`` risk, ``cfp2`` lip-sync offset in ms, ``cfp3`` sync confidence), the evidence
per detector (``cs4``) and the rationale (``msg``, cut at CEF's 1023 characters).

Delivery is as good as the transport: UDP cannot tell a lost datagram; TCP reports a
closed or refused connection (retried on a new connection) but not a message a receiver
dropped after the kernel took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime
from typing import Any

from monitor import __version__
from monitor.config import FusionConfig
from monitor.sinks.delivery import Outcome
from monitor.sinks.notices import notice_level

VENDOR = PRODUCT = APP_NAME = "dfmon"
MSG_MAX_CHARS = 1023
# CEF severity -> syslog severity (RFC 5424: 2 critical, 3 error, 4 warning, 5 notice, 6 info)
_SYSLOG_SEVERITY = ((9, 2), (7, 3), (4, 4), (3, 5))


def _escape_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _escape_value(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def cef_severity(level: str, risk: float, fusion: FusionConfig) -> int:
    def within(low: float, high: float, lowest: int, highest: int) -> int:
        position = min(1.0, max(0.0, (risk - low) / (high - low))) if high > low else 1.0
        return lowest + round(position * (highest - lowest))

    if level == "alert":
        return within(fusion.alert_threshold, 1.0, 7, 10)
    if level == "suspicious":
        return within(fusion.suspicious_threshold, fusion.alert_threshold, 4, 6)
    return 1 if level == "clear" else 3


def syslog_severity(cef: int) -> int:
    return next((sev for floor, sev in _SYSLOG_SEVERITY if cef >= floor), 6)


def _name(notice: dict[str, Any]) -> str:
    level = notice_level(notice)
    if notice["type"] == "summary":
        return f"Call summary: {level}"
    if notice["type"] == "alert":
        return "Participant back to clear" if level == "clear" else f"Deepfake risk {level}"
    return f"dfmon {notice['type']}"


def cef_line(notice: dict[str, Any], *, fusion: FusionConfig, host: str) -> str:
    level = notice_level(notice)
    risk = float(notice.get("risk") or 0.0)
    evidence = [e for e in notice.get("evidence", []) if isinstance(e, dict)]
    lip_sync = next((e for e in evidence if e.get("detector") == "lip_sync"), {})
    previous = notice.get("notice", {}).get("previous_level", notice.get("previous_level"))
    span = None
    if "t_start" in notice and "t_end" in notice:
        span = f"{notice['t_start']:.1f}-{notice['t_end']:.1f} s"
    scores = "; ".join(
        f"{e['detector']} {'n/a' if e.get('score') is None else format(e['score'], '.2f')}"
        for e in evidence
    )
    extensions: list[tuple[str, Any]] = [
        ("rt", int(datetime.fromisoformat(notice["ts"]).timestamp() * 1000)),
        ("dvchost", host),
        ("suser", notice["participant"]),
        ("externalId", notice.get("id")),
        ("cat", "deepfake"),
    ]
    custom = (
        ("cs1", "session", notice["session"]),
        ("cs2", "level", level),
        ("cs3", "previousLevel", previous),
        ("cs4", "evidence", scores or None),
        ("cs5", "mediaSpan", span),
        ("cfp1", "risk", risk),
        ("cfp2", "offsetMs", lip_sync.get("offset_ms")),
        ("cfp3", "syncConfidence", lip_sync.get("confidence")),
    )
    for key, label, value in custom:
        extensions += [(f"{key}Label", label), (key, value)] if value is not None else []
    extensions.append(("msg", str(notice.get("rationale", ""))[:MSG_MAX_CHARS] or None))
    kept = [f"{key}={_escape_value(value)}" for key, value in extensions if value is not None]
    header = "|".join(
        _escape_header(part)
        for part in (
            VENDOR,
            PRODUCT,
            __version__,
            f"{notice['type']}-{level}",
            _name(notice),
            str(cef_severity(level, risk, fusion)),
        )
    )
    return f"CEF:0|{header}|{' '.join(kept)}"


def _header_token(value: str, max_len: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or the nil value."""
    token = "".join(c if 33 <= ord(c) <= 126 else "-" for c in value)[:max_len]
    return token or "-"


def syslog_message(
    notice: dict[str, Any], *, facility: int, host: str, fusion: FusionConfig
) -> bytes:
    level = notice_level(notice)
    cef = cef_line(notice, fusion=fusion, host=host)
    severity = syslog_severity(cef_severity(level, float(notice.get("risk") or 0.0), fusion))
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            notice["ts"],
            _header_token(host, 255),
            APP_NAME,
            str(os.getpid()),
            _header_token(str(notice["type"]), 32),
            "-",
        )
    )
    return f"{header} {cef}".encode()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        self.error = exc


class SyslogSink:
    def __init__(
        self,
        transport: str,
        host: str,
        port: int,
        *,
        facility: int,
        monitor_name: str,
        fusion: FusionConfig,
    ) -> None:
        self.transport, self.host, self.port = transport, host, port
        self.name = f"syslog:{transport}://{host}:{port}"
        self._facility = facility
        self._monitor_name = monitor_name
        self._fusion = fusion
        self._udp: tuple[asyncio.DatagramTransport, _UdpProtocol] | None = None
        self._tcp: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def deliver(self, payload: dict[str, Any]) -> Outcome:
        message = syslog_message(
            payload, facility=self._facility, host=self._monitor_name, fusion=self._fusion
        )
        try:
            if self.transport == "udp":
                return await self._send_udp(message)
            return await self._send_tcp(message)
        except OSError as exc:
            await self.aclose()
            return Outcome.retry(f"{type(exc).__name__}: {exc}")

    async def _send_udp(self, message: bytes) -> Outcome:
        if self._udp is None:
            loop = asyncio.get_running_loop()
            self._udp = await loop.create_datagram_endpoint(
                _UdpProtocol, remote_addr=(self.host, self.port)
            )
        transport, protocol = self._udp
        if protocol.error is not None:  # reported for an earlier datagram: start afresh
            error, protocol.error = protocol.error, None
            await self.aclose()
            return Outcome.retry(f"{type(error).__name__}: {error}")
        transport.sendto(message)
        return Outcome.ok(f"{len(message)} bytes")

    async def _send_tcp(self, message: bytes) -> Outcome:
        if self._tcp is not None and (self._tcp[0].at_eof() or self._tcp[1].is_closing()):
            await self.aclose()  # the receiver hung up since the last message
        if self._tcp is None:
            self._tcp = await asyncio.open_connection(self.host, self.port)
        writer = self._tcp[1]
        writer.write(f"{len(message)} ".encode() + message)
        await writer.drain()
        return Outcome.ok(f"{len(message)} bytes")

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp[0].close()
            self._udp = None
        if self._tcp is not None:
            writer = self._tcp[1]
            self._tcp = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
