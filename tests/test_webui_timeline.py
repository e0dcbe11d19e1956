"""The timeline / playback page (onvif_nvr/web/static/timeline.js) in Chromium against a
recording box: the recorded ranges and a gap on the bar, a seek by clicking the bar that
shows the frame recorded at that instant (the browser's decoded picture against PyAV's
decode of the same media.mp4), the wall-time display, play, 4x, frame steps, keyboard, the
empty day, and the 375 px layout. Screenshots: docs/screenshots/timeline*.png."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any

import av
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.searchutil import latest_recorded, recorded_until
from tests.test_recording_control_service import recording_client
from tests.webui import DESKTOP, PHONE, WebBox, browser, page, screenshot, webbox  # noqa: F401

#: The picture is compared as GRID blocks of mean luma (the test camera draws a moving ball).
GRID = (40, 30)
FRAME_MS = 1000 / 25  # tests/webui.py's camera: 25 fps

_HOOK = "(document.querySelector('.tl-page') || {}).timeline"
_IDLE = """() => {
  const page = document.querySelector('.tl-page');
  const p = page && page.timeline && page.timeline.player;
  const v = document.querySelector('.tl-video');
  return Boolean(p && !p.loading && p.originMs !== null && !v.seeking && v.readyState >= 2);
}"""
_GRAB = f"""() => {{
  const v = document.querySelector('.tl-video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const [gw, gh] = [{GRID[0]}, {GRID[1]}];
  const out = new Array(gw * gh).fill(0);
  for (let y = 0; y < c.height; y += 1) {{
    for (let x = 0; x < c.width; x += 1) {{
      const i = (y * c.width + x) * 4;
      const cell = Math.floor((y * gh) / c.height) * gw + Math.floor((x * gw) / c.width);
      out[cell] += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    }}
  }}
  const n = (c.width / gw) * (c.height / gh);
  const p = {_HOOK}.player;
  return {{ grid: out.map((s) => s / n), wall: p.wallMs, origin: p.originMs }};
}}"""
_PLAYER_STATE = """() => {
  const p = document.querySelector('.tl-page').timeline.player;
  const v = p.video;
  const b = v.buffered;
  return {
    wall: p.wallMs, origin: p.originMs, t: v.currentTime, nextMs: p.nextMs,
    exhausted: p.exhausted, fetching: p.fetching, loading: p.loading, paused: v.paused,
    readyState: v.readyState, rate: v.playbackRate,
    error: document.querySelector('.tl-error').textContent,
    buffered: Array.from({ length: b.length }, (_, i) => [b.start(i), b.end(i)]),
  };
}"""
_ADVANCE = """async ([advance, limitMs]) => {
  const v = document.querySelector('.tl-video');
  const t0 = v.currentTime;
  const p0 = performance.now();
  while (v.currentTime < t0 + advance) {
    if (performance.now() - p0 > limitMs) throw new Error(`stuck at ${v.currentTime}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { media: v.currentTime - t0, real: (performance.now() - p0) / 1000 };
}"""


@pytest.fixture(scope="module")
def gapped(webbox: WebBox) -> WebBox:  # noqa: F811
    """The box's recording with a stretch, a gap of ~2.5 s, and a second stretch."""
    trc = recording_client(webbox.nvr)
    recorded_until(webbox.nvr, webbox.recording, 4)
    job = next(
        j.JobToken
        for j in trc.GetRecordingJobs()
        if j.JobConfiguration.RecordingToken == webbox.recording
    )
    trc.SetRecordingJobMode(job, "Idle")
    time.sleep(2.5)  # the gap: time has to pass with the job idle
    before = latest_recorded(webbox.nvr, webbox.recording)
    trc.SetRecordingJobMode(job, "Active")
    recorded_until(webbox.nvr, webbox.recording, 5, after=before)
    return webbox


def _ranges(box: WebBox) -> list[tuple[int, int]]:
    now_ms = int(time.time() * 1000)
    with box.admin() as c:
        r = c.get(
            "/api/v1/timeline",
            params={
                "start": _rfc3339(now_ms - 3_600_000),
                "end": _rfc3339(now_ms + 60_000),
                "resolution": "0.5",
                "recording": box.recording,
            },
        )
        r.raise_for_status()
        return [tuple(x) for x in r.json()["recordings"][0]["ranges"]]


def _rfc3339(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _open(pg: Any, box: WebBox) -> None:
    """Show the camera's timeline at the 10 min zoom, paused, with a picture loaded."""
    if pg.query_selector(".tl-page") is None:
        pg.evaluate(f"location.hash = '#/timeline/{box.camera}'")
        pg.wait_for_selector(".tl-page .tl-range")
    pg.click(".tl-zoom[data-zoom='2']")
    pg.wait_for_function(_IDLE)
    if not pg.evaluate("document.querySelector('.tl-video').paused"):
        pg.click(".tl-play")


def _seek(pg: Any, wall_ms: float) -> int:
    pg.evaluate(f"{_HOOK}.seek({int(wall_ms)})")
    pg.wait_for_function(_IDLE)
    return int(wall_ms)


def _shown_ms(pg: Any) -> int:
    return int(pg.get_attribute(".tl-time", "data-wall-ms"))


def _luma_grid(frame: av.VideoFrame) -> list[float]:
    # swscale's area filter at an integer ratio (320x240 -> 40x30) is the mean of each block,
    # what the page computes from the canvas.
    gw, gh = GRID
    small = frame.reformat(width=gw, height=gh, format="rgb24", interpolation="AREA")
    plane = small.planes[0]
    data = bytes(plane)
    out = []
    for y in range(gh):
        for x in range(gw):
            i = y * plane.line_size + 3 * x
            out.append(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2])
    return out


def _distance(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def _decoded_frames(box: WebBox, start_ms: int, origin_ms: int) -> list[tuple[float, list[float]]]:
    """(wall ms, luma grid) of every frame PyAV decodes from media.mp4 at ``start_ms``."""
    with box.admin() as c:
        r = c.get(
            f"/api/v1/recordings/{box.recording}/media.mp4",
            params={"start": _rfc3339(start_ms), "duration_s": "3", "origin": _rfc3339(origin_ms)},
        )
        assert r.status_code == 200, r.text
        origin = int(r.headers["X-Wall-Origin-Ms"])
    out = []
    with av.open(io.BytesIO(r.content)) as container:
        for frame in container.decode(video=0):
            assert frame.pts is not None and frame.time_base is not None
            out.append((origin + float(frame.pts * frame.time_base) * 1000, _luma_grid(frame)))
    return out


def _assert_frame_at(pg: Any, box: WebBox, sought: int) -> None:
    """The picture shown is the one recorded at ``sought``: closest to PyAV's decode of the
    frame of that instant (+-1 frame) and clearly unlike frames half a second away."""
    grab = pg.evaluate(_GRAB)
    assert abs(grab["wall"] - sought) <= 2 * FRAME_MS
    frames = _decoded_frames(box, sought, int(grab["origin"]))
    expected = max(i for i, (wall, _) in enumerate(frames) if wall <= sought + 0.5)
    distances = [_distance(grab["grid"], grid) for _, grid in frames]
    best = min(range(len(frames)), key=distances.__getitem__)
    assert abs(best - expected) <= 1, (best, expected, distances)
    # The ball moves: frames half a second away look clearly different from the one shown.
    far = [d for i, d in enumerate(distances) if abs(i - expected) >= 12]
    assert far and distances[best] < min(far) / 2, (distances[best], min(far))


# -- the tests ------------------------------------------------------------------------------
def test_bar_shows_the_recorded_ranges_and_the_gap(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    ranges = _ranges(gapped)
    assert len(ranges) >= 2, ranges
    # The 10 min view around the play head holds both stretches and the gap between them.
    shown = page.eval_on_selector_all(
        ".tl-range", "nodes => nodes.map(n => [+n.dataset.startMs, +n.dataset.endMs])"
    )
    assert len(shown) >= 2, shown
    first_end = shown[0][1]
    second_start = shown[1][0]
    assert second_start - first_end >= 1000, shown
    # The gap is the track's hatching: the pixel between the stretches is not the range colour.
    colours = page.evaluate(
        """() => {
      const r = document.querySelector('.tl-range');
      return [getComputedStyle(r).backgroundColor,
              getComputedStyle(document.querySelector('.tl-track')).backgroundImage];
    }"""
    )
    assert "gradient" in colours[1], colours
    assert page.text_content(".tl-title") == "door"
    # Event markers: the recording's stored events in the window, every page of them.
    view = page.evaluate(f"(({{viewMs, spanMs}}) => ({{viewMs, spanMs}}))({_HOOK}.state)")
    with gapped.admin() as c:
        r = c.get(
            "/api/v1/events",
            params={
                "recording": gapped.recording,
                "start": _rfc3339(view["viewMs"]),
                "end": _rfc3339(view["viewMs"] + view["spanMs"]),
                "limit": "1000",
            },
        )
        r.raise_for_status()
        stored = sorted(e["utc_ms"] for e in r.json()["events"])
    markers = sorted(
        page.eval_on_selector_all(".tl-event", "nodes => nodes.map(n => +n.dataset.ms)")
    )
    assert markers == stored
    sizes = page.eval_on_selector_all(
        ".tl-event", "ns => ns.map(n => n.getBoundingClientRect().width)"
    )
    assert all(w >= 8 for w in sizes), sizes  # visible, clickable
    if markers:
        page.evaluate(f"{_HOOK}.state.lastSeekMs = null")
        page.click(".tl-event >> nth=0", force=True)  # markers may overlap: any one of them
        page.wait_for_function(f"() => {_HOOK}.state.lastSeekMs !== null")
        assert page.evaluate(f"{_HOOK}.state.lastSeekMs") in markers
        page.wait_for_function(_IDLE)


def test_click_on_the_bar_shows_the_frame_recorded_then(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    first = _ranges(gapped)[0]
    target = first[0] + 1800
    assert target < first[1] - 1000, first
    state = page.evaluate(f"(({{viewMs, spanMs}}) => ({{viewMs, spanMs}}))({_HOOK}.state)")
    box = page.query_selector(".tl-track").bounding_box()
    x = (target - state["viewMs"]) / state["spanMs"] * box["width"]
    page.mouse.click(box["x"] + x, box["y"] + box["height"] / 2)
    page.wait_for_function(f"() => {_HOOK}.state.lastSeekMs !== null")
    page.wait_for_function(_IDLE)
    sought = page.evaluate(f"{_HOOK}.state.lastSeekMs")
    # One pixel of a 10 min bar is under a second: the click landed in the first stretch.
    assert first[0] + 500 < sought < first[1] - 300, (first, sought)
    assert abs(_shown_ms(page) - sought) <= 2 * FRAME_MS
    utc = datetime.fromtimestamp(sought / 1000, UTC).strftime("%H:%M:%S")
    assert utc in page.text_content(".tl-time-utc")

    _assert_frame_at(page, gapped, sought)
    screenshot(page, "timeline")


def test_seeks_in_the_buffer_in_a_new_window_and_before_the_origin(
    page: Any,  # noqa: F811
    gapped: WebBox,
) -> None:
    first = _ranges(gapped)[0]
    recorded_until(gapped.nvr, gapped.recording, 32)  # more than one 20 s media window
    late = _ranges(gapped)[-1][1] - 3000
    # Opened at a late instant (?t=): the origin is there, in the second stretch.
    page.evaluate(f"location.hash = '#/timeline/{gapped.camera}?t={late}'")
    # The router swaps the page in: until then there is no .tl-page (or the old one).
    page.wait_for_function(
        f"() => {{ const t = {_HOOK}; return t && t.state.lastSeekMs === {late}; }}"
    )
    page.wait_for_function(_IDLE)
    load = f"{_HOOK}.player.lastLoad"
    steps = [
        (late, "new"),
        (first[0] + 1200, "new"),  # before the origin: a new MediaSource, a new origin
        (first[0] + 2000, "buffered"),
        (late, "window"),  # past the first window: the buffer refilled on the same origin
        (first[0] + 1500, "window"),  # behind the buffer, after the origin
    ]
    for i, (wall, how) in enumerate(steps):
        sought = _seek(page, wall) if i else late
        assert page.evaluate(load) == how, (i, wall, how)
        assert abs(_shown_ms(page) - sought) <= 2 * FRAME_MS
        _assert_frame_at(page, gapped, sought)


def test_drag_on_the_bar_seeks_and_drag_on_the_axis_pans(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    first, second = _ranges(gapped)[:2]
    view = page.evaluate(f"(({{viewMs, spanMs}}) => ({{viewMs, spanMs}}))({_HOOK}.state)")
    box = page.query_selector(".tl-track").bounding_box()

    def x_of(ms: float) -> float:
        return box["x"] + (ms - view["viewMs"]) / view["spanMs"] * box["width"]

    y = box["y"] + box["height"] / 2
    page.mouse.move(x_of(first[0] + 1500), y)
    page.mouse.down()
    page.mouse.move(x_of(second[0] + 1500), y, steps=5)
    page.wait_for_selector(".tl-hover:not([hidden])")
    page.mouse.up()  # the seek happens where the drag ends
    page.wait_for_function(_IDLE)
    sought = page.evaluate(f"{_HOOK}.state.lastSeekMs")
    assert abs(sought - (second[0] + 1500)) <= view["spanMs"] / box["width"] * 2, sought
    assert abs(_shown_ms(page) - sought) <= 2 * FRAME_MS

    page.click(".tl-zoom[data-zoom='1']")  # an hour: room to pan inside the day
    page.wait_for_function(f"() => {_HOOK}.state.spanMs === 3600000")
    before = page.evaluate(f"{_HOOK}.state.viewMs")
    axis = page.query_selector(".tl-axis").bounding_box()
    ay = axis["y"] + axis["height"] / 2
    page.mouse.move(axis["x"] + axis["width"] / 2, ay)
    page.mouse.down()
    page.mouse.move(axis["x"] + axis["width"] / 2 + 100, ay, steps=4)
    page.mouse.up()
    after = page.evaluate(f"{_HOOK}.state.viewMs")
    day = page.evaluate(f"{_HOOK}.state.dayMs")
    expected = max(day, before - 100 / axis["width"] * 3_600_000)  # clamped to the day
    assert abs(after - expected) < 1000, (before, after, expected)


def test_play_and_four_times_speed(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    last = _ranges(gapped)[-1]
    _seek(page, last[0] + 300)
    page.click(".tl-play")
    assert page.text_content(".tl-play") == "Pause"
    one = page.evaluate(_ADVANCE, [0.5, 20_000])
    page.select_option(".tl-speed", "4")
    assert page.evaluate("document.querySelector('.tl-video').playbackRate") == 4
    four = page.evaluate(_ADVANCE, [2.0, 20_000])
    # Loose: media time per real second at 4x is well above the 1x figure.
    assert four["media"] / four["real"] > 1.5 * one["media"] / one["real"], (one, four)
    page.select_option(".tl-speed", "1")
    page.keyboard.press("Space")  # the page's shortcut: pause
    page.wait_for_function("() => document.querySelector('.tl-video').paused")
    assert page.text_content(".tl-play") == "Play"


def test_playback_jumps_the_gap(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    first, second = _ranges(gapped)[:2]
    _seek(page, first[1] - 400)
    page.click(".tl-play")
    # Media time has the gap too; the page jumps it instead of stalling at the range's end.
    page.wait_for_function(f"() => {_HOOK}.player.wallMs >= {second[0]}", timeout=20_000)
    page.click(".tl-play")
    page.wait_for_function("() => document.querySelector('.tl-video').paused")
    wall = page.evaluate(f"{_HOOK}.player.wallMs")
    assert second[0] <= wall < second[1] + 1000, (second, wall)


def test_playback_chains_windows_on_one_origin(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    first = _ranges(gapped)[0]
    recorded_until(gapped.nvr, gapped.recording, 32)
    _seek(page, first[0] + 500)
    origin = page.evaluate(f"{_HOOK}.player.originMs")
    page.select_option(".tl-speed", "8")
    page.click(".tl-play")
    # Past the first 20 s window and the gap: later windows were fetched ahead and appended
    # on the same timeline, without a reload.
    try:
        page.wait_for_function(
            f"() => {_HOOK}.player.wallMs >= {first[0] + 26_000}", timeout=40_000
        )
    except PlaywrightTimeout:
        pytest.fail(f"playback stuck: {page.evaluate(_PLAYER_STATE)}")
    page.click(".tl-play")
    page.select_option(".tl-speed", "1")
    assert page.evaluate(f"{_HOOK}.player.originMs") == origin
    ranges = page.evaluate(
        """() => { const b = document.querySelector('.tl-video').buffered;
          return Array.from({length: b.length}, (_, i) => [b.start(i), b.end(i)]); }"""
    )
    assert len(ranges) >= 2, ranges  # the gap is a gap in the buffer too


def test_frame_steps(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    last = _ranges(gapped)[-1]
    start = _seek(page, last[0] + 1500)
    assert abs(_shown_ms(page) - start) <= 2 * FRAME_MS
    before = page.evaluate(_GRAB)["grid"]
    page.click(".tl-step-fwd")
    page.wait_for_function(f"() => +document.querySelector('.tl-time').dataset.wallMs !== {start}")
    page.wait_for_function(_IDLE)
    step = _shown_ms(page) - start
    assert 0.5 * FRAME_MS <= step <= 1.5 * FRAME_MS, step
    assert _distance(page.evaluate(_GRAB)["grid"], before) > 0
    forward = _shown_ms(page)
    page.focus(".tl-track")
    page.keyboard.press("ArrowLeft")  # one frame back
    page.wait_for_function(
        f"() => +document.querySelector('.tl-time').dataset.wallMs !== {forward}"
    )
    page.wait_for_function(_IDLE)
    assert abs(_shown_ms(page) - start) <= 0.5 * FRAME_MS
    assert _distance(page.evaluate(_GRAB)["grid"], before) < 1.0


def test_frame_step_back_out_of_the_buffer_refetches(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    first = _ranges(gapped)[0]
    recorded_until(gapped.nvr, gapped.recording, 32)
    late = _ranges(gapped)[-1][1] - 3000
    _seek(page, first[0] + 1200)
    _seek(page, late)
    # The first picture of the buffer (the keyframe the window starts with) ...
    start = page.evaluate(
        f"""() => {{
      const p = {_HOOK}.player;
      const b = p.video.buffered;
      for (let i = 0; i < b.length; i += 1) {{
        if (b.start(i) <= p.video.currentTime && p.video.currentTime < b.end(i)) {{
          return Math.ceil(p.originMs + b.start(i) * 1000) + 1;
        }}
      }}
      return null;
    }}"""
    )
    assert start is not None
    _seek(page, start)
    assert page.evaluate(f"{_HOOK}.player.lastLoad") == "buffered"
    shown = _shown_ms(page)
    # ... one frame back is outside the buffer: fetched again from the keyframe before it.
    page.click(".tl-step-back")
    page.wait_for_function(f"() => +document.querySelector('.tl-time').dataset.wallMs !== {shown}")
    page.wait_for_function(_IDLE)
    assert page.evaluate(f"{_HOOK}.player.lastLoad") in ("window", "new")
    back = _shown_ms(page)
    assert 0.5 * FRAME_MS <= shown - back <= 1.5 * FRAME_MS, (shown, back)
    _assert_frame_at(page, gapped, back)


def test_a_day_without_recordings_says_so(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    page.click(".tl-prev-day")
    page.wait_for_selector(".tl-empty:not([hidden])")
    assert "Nothing recorded on this day" in page.text_content(".tl-empty")
    assert page.query_selector_all(".tl-range") == []
    page.click(".tl-next-day")
    page.wait_for_selector(".tl-page .tl-range")
    assert page.is_hidden(".tl-empty")


def test_unknown_camera_shows_the_error(page: Any, gapped: WebBox) -> None:  # noqa: F811
    page.evaluate("location.hash = '#/timeline/no-such-camera'")
    page.wait_for_selector(".tl-error:not([hidden])")
    assert "no-such-camera" in page.text_content(".tl-error")
    page.evaluate(f"location.hash = '#/timeline/{gapped.camera}'")
    page.wait_for_selector(".tl-page .tl-range")
    assert page.is_hidden(".tl-error")


def test_phone_width_layout(page: Any, gapped: WebBox) -> None:  # noqa: F811
    _open(page, gapped)
    page.set_viewport_size(PHONE)
    try:
        page.wait_for_function(_IDLE)
        # Nothing sticks out sideways at 375 px, and the controls keep a usable size.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        sticking_out = page.evaluate(
            """(limit) => [...document.querySelectorAll('.tl-page *:not(.tl-track *, .tl-axis *)')]
              .filter((n) => n.getClientRects().length && n.getBoundingClientRect().right > limit + 0.5)
              .map((n) => n.className)""",
            PHONE["width"],
        )
        assert sticking_out == []
        track = page.query_selector(".tl-track").bounding_box()
        assert track["width"] >= 300 and track["height"] >= 40
        assert page.query_selector(".tl-play").bounding_box()["height"] >= 32
        screenshot(page, "timeline-phone")
    finally:
        page.set_viewport_size(DESKTOP)
    assert page.page_errors == []
