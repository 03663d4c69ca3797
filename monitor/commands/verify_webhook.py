"""``dfmon verify-webhook``: check a Standard Webhooks delivery, or receive and check many.

    dfmon verify-webhook --id ID --timestamp TS --signature SIG [BODY|-]
    dfmon verify-webhook --listen 127.0.0.1:9000 [--out DELIVERIES.jsonl]

The secret comes from ``DFMON_WEBHOOK_SECRET`` or ``[sinks] webhook_secret`` in
``--config``. One delivery: exit 0 when it checks out, 1 when it does not. ``--listen``
answers every POST: 204 for a valid delivery (written once per ``webhook-id`` as a JSON
line ``{webhook_id, received_at, body}``; repeats are acknowledged and skipped), 401
with the reason for an invalid one. It is the receiving side in a dozen lines
(:func:`monitor.sinks.signing.verify_webhook` does the checking), to copy or to test with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.commands import until_stopped
from monitor.errors import ConfigError

log = logging.getLogger(__name__)
SEEN_IDS_KEPT = 10_000


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify-webhook",
        help="check a signed webhook delivery (Standard Webhooks), or run a checking receiver",
        description=(
            "Check webhook-id, webhook-timestamp (at most 5 minutes off) and "
            "webhook-signature against the body and DFMON_WEBHOOK_SECRET."
        ),
    )
    parser.add_argument("body", nargs="?", default="-", help="file with the raw body (- stdin)")
    parser.add_argument("--id", dest="msg_id", help="the webhook-id header")
    parser.add_argument("--timestamp", help="the webhook-timestamp header")
    parser.add_argument("--signature", help="the webhook-signature header")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="receive deliveries over HTTP and check each"
    )
    parser.add_argument(
        "--out", metavar="FILE", help="with --listen: write deliveries here (default stdout)"
    )
    parser.set_defaults(run=run)
    return parser


def _secret(args: argparse.Namespace) -> str:
    from monitor.config import load_config
    from monitor.sinks.build import WEBHOOK_SECRET_ENV

    secret = os.environ.get(WEBHOOK_SECRET_ENV) or load_config(args.config).sinks.webhook_secret
    if not secret:
        raise ConfigError(f"set {WEBHOOK_SECRET_ENV}=whsec_<base64> (or sinks.webhook_secret)")
    return secret


def run(args: argparse.Namespace) -> int:
    from monitor.sinks.signing import decode_secret

    secret = _secret(args)
    decode_secret(secret)  # a malformed secret is a usage error (exit 2), not a bad delivery
    if args.listen:
        from monitor.commands.replay import parse_host_port
        from monitor.sinks.jsonl import JsonlSink

        host, port = parse_host_port(args.listen, "--listen")
        with JsonlSink(args.out, append=True) as out:
            asyncio.run(_listen(secret, host, port, out.write))
        return 0
    return _check_one(secret, args)


def _check_one(secret: str, args: argparse.Namespace) -> int:
    from monitor.sinks.signing import WebhookVerificationError, verify_webhook

    if not (args.msg_id and args.timestamp and args.signature):
        raise ConfigError("give --id, --timestamp and --signature (or --listen HOST:PORT)")
    try:
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.body}: {exc.strerror}") from exc
    headers = {
        "webhook-id": args.msg_id,
        "webhook-timestamp": args.timestamp,
        "webhook-signature": args.signature,
    }
    try:
        verify_webhook(secret, headers, body)
    except WebhookVerificationError as exc:
        sys.stderr.write(f"dfmon verify-webhook: invalid: {exc}\n")
        return 1
    sys.stdout.write(f"valid: webhook-id {args.msg_id}\n")
    return 0


async def _listen(
    secret: str, host: str, port: int, write: Callable[[dict[str, Any]], None]
) -> None:
    from aiohttp import web

    from monitor.events import utc_timestamp
    from monitor.sinks.signing import WebhookVerificationError, verify_webhook

    seen: OrderedDict[str, None] = OrderedDict()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg_id = verify_webhook(secret, request.headers, body)
        except WebhookVerificationError as exc:
            log.warning("refused a delivery from %s: %s", request.remote, exc)
            return web.json_response({"error": str(exc)}, status=401)
        if msg_id in seen:
            log.info("repeat of %s acknowledged and skipped", msg_id)
            return web.Response(status=204)
        seen[msg_id] = None
        if len(seen) > SEEN_IDS_KEPT:
            seen.popitem(last=False)
        try:
            content: Any = json.loads(body)
        except ValueError:
            content = body.decode("utf-8", "replace")
        write({"webhook_id": msg_id, "received_at": utc_timestamp(), "body": content})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{path:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("checking webhook deliveries on http://%s:%d/ (any path)", host, bound)
    try:
        await until_stopped()
    finally:
        await runner.cleanup()
