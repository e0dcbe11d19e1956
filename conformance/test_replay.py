"""Replay Control Device Test Specification cases (REPLAY-*), and DEVICE-1-1-20: the SOAP
cases with zeep against a box of their own; REPLAY-3-* (playback over RTSP) against a box that
recorded a GStreamer camera (H.264 + AAC, with a gap; tests/test_replay_rtsp.py), played by
our raw RTSP client (the 0xABAC extension parsed by hand) and by GStreamer's ``rtspsrc
onvif-mode=true`` + ``rtponvifparse`` for the UDP and HTTP transports.

Not here: REPLAY-3-3-* and the metadata parts of 3-4-* (the box records no metadata);
REPLAY-3-1-5/3-1-6 (reverse over UDP and HTTP: the same playback as 3-1-7, whose transport
cases 3-1-2/3-1-3 cover, but our client speaks only interleaved TCP).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
import zeep.exceptions

from onvif_nvr.wsdl.catalog import REPLAY
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import fault_codes
from tests.test_recording_control_service import recording_client, recording_config
from tests.test_replay_reader import camera_footage  # noqa: F401 (fixture)
from tests.test_replay_rtsp import (
    AUDIO,
    MS,
    VIDEO,
    Box,
    Client,
    clock,
    gst_onvif,
    same_times,
    serve_footage,
)
from tests.test_replay_service import replay_client, setup


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NvrProcess]:
    nvr = NvrProcess(tmp_path_factory.mktemp("replay-conformance") / "data", ADMIN_PASSWORD)
    nvr.start()
    try:
        yield nvr
    finally:
        nvr.stop()
    assert not nvr.blocking_calls(), nvr.blocking_calls()


def replay_entry(box: NvrProcess, include: bool):
    services = device_client(box.device_url, "admin", ADMIN_PASSWORD)[1].GetServices(
        IncludeCapability=include
    )
    entries = [s for s in services if s.Namespace == REPLAY.namespace]
    assert len(entries) == 1
    return entries[0]


def test_DEVICE_1_1_20_get_services_replay_service(box):
    entry = replay_entry(box, include=False)
    assert entry.XAddr == box.base + REPLAY.path
    assert (entry.Version.Major, entry.Version.Minor) >= (1, 0)
    assert entry.Capabilities is None


def test_REPLAY_1_1_1_replay_service_capabilities(box):
    caps = replay_client(box).GetServiceCapabilities()
    assert isinstance(caps.ReversePlayback, bool) and caps.ReversePlayback is True
    low, high = (float(v) for v in caps.SessionTimeoutRange)
    assert 0 < low <= high
    assert caps.RTP_RTSP_TCP is True


def test_REPLAY_1_1_2_get_services_and_capabilities_consistency(box):
    caps = replay_client(box).GetServiceCapabilities()
    element = replay_entry(box, include=True).Capabilities._value_1
    assert element.get("ReversePlayback") == str(caps.ReversePlayback).lower()
    assert element.get("RTP_RTSP_TCP") == str(caps.RTP_RTSP_TCP).lower()
    assert [float(v) for v in element.get("SessionTimeoutRange").split()] == [
        float(v) for v in caps.SessionTimeoutRange
    ]


def test_REPLAY_1_2_1_get_replay_uri_with_invalid_recording_token(box):
    trc = recording_client(box)
    existing = {r.RecordingToken for r in trc.GetRecordings()}
    token = "REPLAY_1_2_1_NO_SUCH_RECORDING"
    assert token not in existing
    with pytest.raises(zeep.exceptions.Fault) as info:
        replay_client(box).GetReplayUri(setup("RTP-Unicast", "RTSP"), token)
    assert str(info.value.code).endswith("Sender")
    assert fault_codes(info) == ["InvalidArgVal", "NoRecording"]
    # ... while a recording that exists gets a URI.
    recording = trc.CreateRecording(recording_config("REPLAY-1-2-1"))
    uri = replay_client(box).GetReplayUri(setup("RTP-Unicast", "RTSP"), recording)
    assert uri.startswith("rtsp://") and uri.endswith(recording)


def test_REPLAY_4_1_1_replay_configuration(box):
    trp = replay_client(box)
    initial = trp.GetReplayConfiguration().SessionTimeout
    low, high = (float(v) for v in trp.GetServiceCapabilities().SessionTimeoutRange)
    assert low <= initial.total_seconds() <= high
    wanted = datetime.timedelta(seconds=int(low) + 1)
    trp.SetReplayConfiguration({"SessionTimeout": wanted})
    assert trp.GetReplayConfiguration().SessionTimeout == wanted
    trp.SetReplayConfiguration({"SessionTimeout": initial})  # restored, as the case ends
    assert trp.GetReplayConfiguration().SessionTimeout == initial


# -- REPLAY-3-*: playback over RTSP ---------------------------------------------------------------
@pytest.fixture(scope="module")
def footage(camera_footage: tuple[Path, str]) -> Iterator[Box]:  # noqa: F811
    yield from serve_footage(camera_footage)


@pytest.fixture
def client(footage: Box) -> Iterator[Client]:
    c = Client(footage)
    yield c
    c.close()


def whole(box: Box) -> str:
    return f"clock={clock(box.rows[0][1])}-{clock(box.sections()[-1][1] + 1_000 * MS)}"


def test_REPLAY_3_1_1_media_control(footage, client):
    trp = replay_client(footage.nvr)
    uri = trp.GetReplayUri(setup("RTP-Unicast", "RTSP"), footage.token)
    assert uri == footage.url()
    client.setup()
    client.play(Range=whole(footage), Rate_Control="no")
    client.read_until(client.terminal((VIDEO, AUDIO)))
    assert client.request("PAUSE", footage.url()).status == 200
    assert client.request("TEARDOWN", footage.url()).status == 200
    assert client.request("PLAY", footage.url()).status == 454  # the session is gone


@pytest.mark.parametrize("case, protocol", [("REPLAY-3-1-2", "UDP"), ("REPLAY-3-1-3", "HTTP")])
def test_REPLAY_3_1_2_and_3_1_3_playback_over_udp_and_http(footage, case, protocol):
    uri = replay_client(footage.nvr).GetReplayUri(setup("RTP-Unicast", protocol), footage.token)
    if protocol == "HTTP":
        gst_onvif(uri.replace("http://", "rtsph://"), protocols="tcp")
    else:
        gst_onvif(uri, protocols="udp")


def test_REPLAY_3_1_4_playback_over_rtsp_tcp(footage, client):
    client.setup((0,))
    client.play(Range=whole(footage), Rate_Control="no")
    client.read_until(client.terminal())
    video = client.video()
    assert video[0].c and video[0].idr
    assert len(video) == sum(count for *_, count in footage.rows)


def test_REPLAY_3_1_7_reverse_playback_over_rtsp_tcp(footage, client):
    client.setup((0,))
    last = footage.sections()[-1][1]
    client.play(Range=f"clock={clock(last)}-{clock(footage.rows[0][1])}", Scale="-1.0",
                Rate_Control="no")  # fmt: skip
    client.read_until(client.terminal())
    starts = [u.wall_ns for u in client.video() if u.d]
    assert same_times(starts, sorted(footage.keyframes, reverse=True))


def test_REPLAY_3_1_10_play_with_range(footage, client):
    keyframe = footage.keyframes[2]
    client.setup((0,))
    client.play(Range=f"clock={clock(keyframe + 200 * MS)}-{clock(keyframe + 1_500 * MS)}",
                Rate_Control="no")  # fmt: skip
    client.read_until(lambda: len(client.video()) >= 10)
    assert abs(client.video()[0].wall_ns - keyframe) <= MS and client.video()[0].c


def test_REPLAY_3_1_11_i_frames(footage, client):
    client.setup((0,))
    client.play(Range=whole(footage), Frames="intra", Rate_Control="no")
    client.read_until(client.terminal())
    assert all(u.c and u.idr for u in client.video())
    assert same_times([u.wall_ns for u in client.video()], footage.keyframes)


def test_REPLAY_3_1_12_rate_control(footage, client):
    client.setup((0,))
    start = footage.keyframes[1]
    client.play(Range=f"clock={clock(start)}-{clock(start + 4_000 * MS)}", Rate_Control="no")
    client.read_until(lambda: len(client.video()) >= 60)  # 2.4 s of pictures, at once
    a, b = client.video()[0], client.video()[-1]
    # Without rate control, RTP times are the capture times (90 kHz).
    assert abs(((b.rtptime - a.rtptime) & 0xFFFFFFFF) - (b.wall_ns - a.wall_ns) * 9 // 100_000) <= 1


def test_REPLAY_3_1_13_immediate_header(footage, client):
    client.setup((0,))
    client.play(Range=f"clock={clock(footage.keyframes[0])}-")
    client.read_until(lambda: len(client.video()) >= 2)
    target = footage.keyframes[-3]
    client.play(Range=f"clock={clock(target + MS)}-", Immediate="yes", Rate_Control="no")
    cseq = client.cseq & 0xFF
    client.read_until(lambda: len(client.video(cseq)) >= 2)
    first = client.video(cseq)[0]
    assert first.d and abs(first.wall_ns - target) <= MS


@pytest.mark.parametrize("with_range", [False, True], ids=["3-1-15", "3-1-16"])
def test_REPLAY_3_1_15_and_3_1_16_pause(footage, client, with_range):
    client.setup((0,))
    client.play(Range=f"clock={clock(footage.keyframes[0])}-", Scale="4.0")
    client.read_until(lambda: len(client.video()) >= 5)
    assert client.request("PAUSE", footage.url()).status == 200
    target = footage.keyframes[-2]
    fields = {"Range": f"clock={clock(target + MS)}-"} if with_range else {}
    client.play(Rate_Control="no", **fields)
    cseq = client.cseq & 0xFF
    client.read_until(lambda: len(client.video(cseq)) >= 2)
    first = client.video(cseq)[0]
    assert first.c and first.d == with_range  # a jump, or a resume
    if with_range:
        assert abs(first.wall_ns - target) <= MS
    else:
        assert first.wall_ns <= client.video()[4].wall_ns + 1_000 * MS


def test_REPLAY_3_1_17_seek(footage, client):
    client.setup((0,))
    client.play(Range=f"clock={clock(footage.keyframes[0])}-")
    client.read_until(lambda: len(client.video()) >= 2)
    for target in footage.keyframes[-1:-4:-1]:
        client.play(Range=f"clock={clock(target + MS)}-", Immediate="yes")
        cseq = client.cseq & 0xFF
        client.read_until(lambda cseq=cseq: len(client.video(cseq)) >= 1)
        assert abs(client.video(cseq)[0].wall_ns - target) <= MS


def test_REPLAY_3_2_4_audio_over_rtsp_tcp(footage, client):
    client.setup((1,))
    client.play(Range=whole(footage), Rate_Control="no")
    client.read_until(client.terminal((AUDIO,)))
    audio = [u for u in client.units if u.channel == AUDIO]
    assert len(audio) > 50 and all(u.c for u in audio) and audio[-1].e
    assert not client.video()


def test_REPLAY_3_4_4_video_and_audio_over_rtsp_tcp(footage, client):
    client.setup()
    client.play(Range=whole(footage), Rate_Control="no")
    client.read_until(client.terminal((VIDEO, AUDIO)))
    assert client.video() and [u for u in client.units if u.channel == AUDIO]
