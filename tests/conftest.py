"""Shared fixtures: synthetic calls made once per test session (no downloads, no shared data)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SWAP_TEXT = "The quick brown fox jumps over the lazy dog while seven wizards quietly hex the judge."


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "shared_data" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"{SHARED_DATA} is absent"))
        if "browser" in item.keywords and shutil.which("chromium") is None:
            item.add_marker(pytest.mark.skip(reason="chromium is not installed"))


@pytest.fixture(scope="session")
def synthetic_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """In-sync, shifted (+-300 ms), swapped, short and video-only synthetic calls."""
    from monitor.synth.call import make_call

    out = tmp_path_factory.mktemp("calls")
    specs = {
        "sync": {},
        "plus300": {"audio_shift_s": 0.3},
        "minus300": {"audio_shift_s": -0.3},
        "swap": {"swap_text": SWAP_TEXT},
        "short": {"text": "Please wire the money today."},
        "video_only": {"video_only": True},
    }
    paths = {}
    for name, kwargs in specs.items():
        paths[name] = make_call(out / f"{name}.mp4", seed=1, **kwargs).path
    return paths


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
