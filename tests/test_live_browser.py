"""Interoperability with libwebrtc: headless Chromium publishes through /publish.

Chromium's fake capture devices play a synthetic call (a y4m camera and a wav
microphone written here); the publish page does getUserMedia and the WHIP POST itself.
The check is that the alert websocket carries score events for the browser's session.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.browser import Chromium, fake_media_flags, find_chromium
from tests.live_util import check_events, live_config, running_servers

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "browser-token"


def _write_camera_and_microphone(tmp_path: Path) -> tuple[Path, Path]:
    from monitor.synth.call import make_call
    from monitor.synth.speech import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    call = make_call(
        tmp_path / "call.mp4",
        text="Please send me the figures before our meeting on Monday morning.",
        seed=1,
        size=(240, 320),
        audio_path=tmp_path / "microphone.wav",
    )
    camera = tmp_path / "camera.y4m"
    with av.open(str(call.path)) as source, av.open(str(camera), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return camera, call.audio_path


async def test_chromium_publishes_through_the_publish_page(tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    camera, microphone = _write_camera_and_microphone(tmp_path)
    async with running_servers(live_config(), token=TOKEN) as (server, _, listener):
        base = server.url.removesuffix("/whip")
        url = f"{base}/publish?participant=chrome&token={TOKEN}&autostart=1"
        with Chromium(extra_flags=fake_media_flags(camera, microphone)) as browser:
            page = await asyncio.to_thread(browser.page, url, 15.0)
            state = await asyncio.to_thread(
                page.wait_for,
                "['publishing', 'failed'].includes(window.dfmonPublish.state)"
                " && window.dfmonPublish.state",
                20.0,
            )
            detail = await asyncio.to_thread(page.evaluate, "window.dfmonPublish.detail")
            assert state == "publishing", detail
            scores = await listener.wait_for(
                lambda: len(listener.of("chrome", "score")) >= 2 and listener.of("chrome", "score"),
                25,
            )
            await asyncio.to_thread(page.evaluate, "document.getElementById('stop').click()")
            ended = await listener.wait_for(lambda: listener.of("chrome", "session_ended"), 10)
            final_state = await asyncio.to_thread(
                page.wait_for, "window.dfmonPublish.state === 'stopped' && 'stopped'", 5.0
            )
            assert not page.exceptions, page.exceptions
        await listener.wait_for(lambda: listener.of("chrome", "summary"), 5)
        await listener.wait_for(lambda: not server.sessions, 5)

    started = listener.of("chrome", "session_started")[0]
    assert started["video_codec"] in ("vp8", "h264") and started["audio_codec"] == "opus"
    assert (started["width"], started["height"]) == (320, 240)
    assert ended[0]["reason"] == "deleted" and final_state == "stopped"
    assert all(s["session"] == started["session"] for s in scores)
    assert all(s["evidence"] for s in scores)
    check_events(listener.of("chrome"))
