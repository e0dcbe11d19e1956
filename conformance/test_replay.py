"""Replay Control Device Test Specification cases (REPLAY-*) that apply at the SOAP level,
and DEVICE-1-1-20, with zeep against a box of their own.

REPLAY-3-* (playback over RTSP: media control, transports, reverse, Range, Frames: intra,
Rate-Control, Immediate, PAUSE, seek) need the RTSP replay server, which comes in a later
step (docs/design/replay.md); REPLAY-3-3-* (metadata) do not apply: the box records no
metadata."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
import zeep.exceptions

from onvif_nvr.wsdl.catalog import REPLAY
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import fault_codes
from tests.test_recording_control_service import recording_client, recording_config
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
