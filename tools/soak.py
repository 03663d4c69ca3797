#!/usr/bin/env python
"""Soak the live path: N looping publishers into one ``dfmon serve`` for a given time.

    python tools/soak.py --publishers 4 --minutes 30 --out soak-4x30/
    python tools/soak.py --publishers 6 --minutes 3 --out overload-6/

The server is the real ``dfmon serve`` in a child process, on loopback. Each publisher
publishes the clip (looped to ``--session-s``) as one WHIP session, then the next, until
the time is up; a publisher refused with 503/429 waits ``Retry-After`` and tries again.
Publishers send the clip's own VP8/Opus packets (``monitor.live.client.publish_packets``),
so on a small machine the CPU goes to the server, not to encoding.

Sampled every ``--sample-s``: the server's RSS, open file descriptors and threads, open
sessions, frames dropped (from ``/metrics``), and the load average. After the run the
publishers stop and the server idles for ``--settle-s``, to show whether memory comes
back. Reported as a table (stdout and OUT/soak.md), a plot (OUT/soak.png), and raw
samples and per-session results (OUT/soak.json); every event is in OUT/events.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "soak"
CACHE = Path(tempfile.gettempdir()) / "dfmon-soak"
CLIP_TEXT = (
    "Hello, can you hear me? I am calling about the budget for next year. Please send the "
    "figures before our meeting on Monday, and copy the team so that everyone can read them."
)


@dataclass
class Sample:
    t: float  # seconds since the publishers started
    rss_mb: float
    fds: int
    threads: int
    sessions: int
    dropped_video: int
    dropped_audio: int
    load1: float


@dataclass
class Publisher:
    name: str
    sessions: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # HTTP status -> count
    failures: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_clip() -> Path:
    """A synthetic genuine call, VP8 + Opus 640x360 25 fps (about 13 s), made once."""
    from monitor.synth.call import make_call

    CACHE.mkdir(exist_ok=True)
    path = CACHE / "genuine-640x360.webm"
    if not path.exists():
        make_call(path, text=CLIP_TEXT, seed=3, size=(360, 640))
    return path


def proc_status(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, threads, open fds) of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return int(fields["VmRSS"][0]) / 1024, int(fields["Threads"][0]), fds


def scrape(base: str) -> dict[str, float]:
    """``/metrics`` as {sample name with labels: value}."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def wait_healthy(base: str, server: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.returncode is not None:
            raise SystemExit(f"dfmon serve exited with {server.returncode}")
        with contextlib.suppress(OSError):
            await asyncio.to_thread(urllib.request.urlopen, base + "/healthz", None, 2)
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"dfmon serve did not answer /healthz within {timeout_s:.0f} s")


async def publish_loop(
    publisher: Publisher, clip: Path, url: str, session_s: float, deadline: float
) -> None:
    from monitor.errors import InputError
    from monitor.live.client import PublishError, ServerBusyError, publish_packets

    while time.monotonic() < deadline:
        name = f"{publisher.name}-{publisher.sessions + sum(publisher.refused.values())}"
        try:
            await publish_packets(clip, url, seconds=session_s, token=TOKEN, participant=name)
            publisher.sessions += 1
        except ServerBusyError as exc:
            publisher.refused[exc.status] += 1
            await asyncio.sleep(exc.retry_after_s or 5.0)
        except (PublishError, InputError) as exc:
            publisher.failures.append(str(exc))
            await asyncio.sleep(2.0)


async def sample_loop(
    pid: int, base: str, started: float, samples: list[Sample], period_s: float
) -> None:
    while True:
        with contextlib.suppress(OSError, KeyError, ValueError):
            rss, threads, fds = proc_status(pid)
            metrics = await asyncio.to_thread(scrape, base)
            samples.append(
                Sample(
                    t=round(time.monotonic() - started, 1),
                    rss_mb=round(rss, 1),
                    fds=fds,
                    threads=threads,
                    sessions=int(metrics.get("dfmon_sessions_active", 0)),
                    dropped_video=int(metrics.get('dfmon_frames_dropped_total{kind="video"}', 0)),
                    dropped_audio=int(metrics.get('dfmon_frames_dropped_total{kind="audio"}', 0)),
                    load1=round(os.getloadavg()[0], 2),
                )
            )
        await asyncio.sleep(period_s)


def session_results(events_path: Path) -> list[dict[str, Any]]:
    """One row per session that reached its summary."""
    rows = []
    ended: dict[str, str] = {}
    errors: Counter[str] = Counter()
    with events_path.open() as events:
        for line in events:
            event = json.loads(line)
            if event["type"] == "session_ended":
                ended[event["session"]] = event.get("reason", "")
            elif event["type"] == "error":
                errors[event["session"]] += 1
            elif event["type"] == "summary":
                dropped = event.get("dropped_by_kind", {}).get("video", 0)
                analysed = event.get("video_frames", 0)
                rows.append(
                    {
                        "participant": event["participant"],
                        "session": event["session"],
                        "verdict": event["verdict"],
                        "risk": event["risk"],
                        "windows_scored": event.get("windows_scored", 0),
                        "windows_insufficient": event.get("windows_insufficient", 0),
                        "video_frames": analysed,
                        "video_dropped": dropped,
                        "drop_fraction": dropped / max(1, analysed + dropped),
                        "errors": 0,
                    }
                )
    for row in rows:
        row["ended"] = ended.get(row["session"], "")
        row["errors"] = errors[row["session"]]
    return rows


def report(
    args: argparse.Namespace,
    publishers: list[Publisher],
    samples: list[Sample],
    rows: list[dict[str, Any]],
    idle_rss_mb: float | None,
    run_s: float,
) -> str:
    levels = Counter(r["verdict"] for r in rows)
    refused = Counter()
    for p in publishers:
        refused.update(p.refused)
    during = [s for s in samples if s.t <= run_s]
    after = [s for s in samples if s.t > run_s]
    busy = [s for s in during if s.sessions > 0]
    peak = max(during, key=lambda s: s.rss_mb) if during else None
    lines = [
        f"# dfmon soak: {args.publishers} publishers, {run_s / 60:.1f} min",
        "",
        f"machine: {os.cpu_count()} CPUs, `{os.uname().nodename}`; clip `{args.clip}`, "
        f"sessions of {args.session_s:g} s; load average (1 min) median "
        f"{statistics.median(s.load1 for s in during) if during else float('nan'):.2f}, "
        f"max {max((s.load1 for s in during), default=float('nan')):.2f}",
        "",
        "| | value |",
        "|---|---|",
        f"| sessions admitted (summaries) | {len(rows)} |",
        f"| offers refused 503 / 429 | {refused[503]} / {refused[429]} |",
        f"| publisher failures | {sum(len(p.failures) for p in publishers)} |",
        f"| verdicts | {', '.join(f'{k} {v}' for k, v in sorted(levels.items())) or '-'} |",
        f"| sessions ending alert | {levels['alert']} |",
        f"| sessions with dropped video | {sum(r['video_dropped'] > 0 for r in rows)} |",
        f"| video frames dropped (all sessions) | "
        f"{sum(r['video_dropped'] for r in rows)} of "
        f"{sum(r['video_frames'] + r['video_dropped'] for r in rows)} |",
        f"| worst session drop fraction | "
        f"{max((r['drop_fraction'] for r in rows), default=0):.1%} |",
        f"| error events | {sum(r['errors'] for r in rows)} |",
        f"| RSS idle before / peak / end of settle (MiB) | "
        f"{idle_rss_mb or float('nan'):.0f} / {peak.rss_mb if peak else float('nan'):.0f} / "
        f"{after[-1].rss_mb if after else float('nan'):.0f} |",
        f"| RSS median while sessions open (MiB) | "
        f"{statistics.median(s.rss_mb for s in busy) if busy else float('nan'):.0f} |",
        f"| threads idle / max / end | {samples[0].threads if samples else '-'} / "
        f"{max((s.threads for s in samples), default='-')} / "
        f"{samples[-1].threads if samples else '-'} |",
        f"| fds idle / max / end | {samples[0].fds if samples else '-'} / "
        f"{max((s.fds for s in samples), default='-')} / {samples[-1].fds if samples else '-'} |",
        "",
        "| drop fraction | sessions | clear | unknown | suspicious | alert |",
        "|---|---|---|---|---|---|",
    ]
    for lo, hi, label in (
        (0, 1e-9, "0"),
        (1e-9, 0.1, "< 10%"),
        (0.1, 0.4, "10-40%"),
        (0.4, 2, "> 40%"),
    ):
        bucket = [r for r in rows if lo <= r["drop_fraction"] < hi]
        counts = Counter(r["verdict"] for r in bucket)
        lines.append(
            f"| {label} | {len(bucket)} | {counts['clear']} | {counts['unknown']} | "
            f"{counts['suspicious']} | {counts['alert']} |"
        )
    return "\n".join(lines) + "\n"


def plot(samples: list[Sample], run_s: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [s.rss_mb for s in samples], color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    sessions = axes[0].twinx()
    sessions.step(t, [s.sessions for s in samples], color="tab:gray", where="post", alpha=0.6)
    sessions.set_ylabel("open sessions")
    axes[1].plot(t, [s.threads for s in samples], label="threads")
    axes[1].plot(t, [s.fds for s in samples], label="open fds")
    axes[1].legend(loc="upper left")
    axes[2].plot(t, [s.dropped_video for s in samples], label="video frames dropped")
    axes[2].plot(t, [s.dropped_audio for s in samples], label="audio frames dropped")
    axes[2].legend(loc="upper left")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(run_s / 60, color="tab:red", linestyle=":", linewidth=1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def soak(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = Path(args.clip) if args.clip else default_clip()
    args.clip = str(clip)
    port, alerts_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    events_path = out / "events.jsonl"
    events_path.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "monitor", *(["--config", args.config] if args.config else []),
        "serve", "--host", "127.0.0.1", "--port", str(port), "--alerts-port", str(alerts_port),
        "--token", TOKEN, "--out", str(events_path),
    ]  # fmt: skip
    with (out / "serve.log").open("w") as log:
        server = await asyncio.create_subprocess_exec(*command, stderr=log)
    samples: list[Sample] = []
    publishers = [Publisher(f"p{i}") for i in range(args.publishers)]
    try:
        await wait_healthy(base, server, 120)
        await asyncio.sleep(2)  # let the warm-up settle before the idle figure
        idle_rss, _, _ = proc_status(server.pid)
        started = time.monotonic()
        sampler = asyncio.create_task(
            sample_loop(server.pid, base, started, samples, args.sample_s)
        )
        run_s = args.minutes * 60 if args.seconds is None else args.seconds
        deadline = started + run_s
        await asyncio.gather(
            *(publish_loop(p, clip, f"{base}/whip", args.session_s, deadline) for p in publishers)
        )
        run_s = time.monotonic() - started  # the last sessions end after the deadline
        await asyncio.sleep(args.settle_s)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(server.wait(), 30)
            except TimeoutError:
                server.kill()
                await server.wait()
    rows = session_results(events_path) if events_path.exists() else []
    text = report(args, publishers, samples, rows, idle_rss, run_s)
    (out / "soak.md").write_text(text)
    (out / "soak.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "idle_rss_mb": idle_rss,
                "run_s": run_s,
                "samples": [asdict(s) for s in samples],
                "sessions": rows,
                "publishers": [
                    {"name": p.name, "sessions": p.sessions, "refused": dict(p.refused),
                     "failures": p.failures}
                    for p in publishers
                ],
            },
            indent=1,
        )
    )  # fmt: skip
    plot(samples, run_s, out / "soak.png", f"{args.publishers} publishers, {run_s / 60:.1f} min")
    sys.stdout.write(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, help="run length in seconds (overrides --minutes)")
    parser.add_argument("--session-s", type=float, default=20.0, help="length of each session")
    parser.add_argument("--settle-s", type=float, default=30.0, help="idle time after the run")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--clip", help="a VP8/Opus .webm clip (default: a synthetic genuine call)")
    parser.add_argument("--config", help="TOML config for the server")
    parser.add_argument("--out", default="soak-out", help="directory for the table, plot and data")
    args = parser.parse_args()
    return asyncio.run(soak(args))


if __name__ == "__main__":
    raise SystemExit(main())
