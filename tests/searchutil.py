"""A box that recorded real streams for the Search service's tests: a GStreamer camera with
audio recorded into one recording with a gap (job Idle then Active again) and a restart of
the box, a second recording recorded then deleted, a third never recorded."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import zeep
from zeep.wsse.username import UsernameToken

from onvif_nvr.wsdl.catalog import SEARCH, wsdl_root
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import job_config, recording_client, recording_config

CAMERA = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25", "--audio")
ENV = {"ONVIF_NVR_STORAGE_SEGMENT_S": "2", "ONVIF_NVR_SEARCH_MAX_SESSIONS": "6"}
TSE = SEARCH.namespace
TT = "http://www.onvif.org/ver10/schema"


def search_client(box: NvrProcess, user: str = "admin", password: str = ADMIN_PASSWORD):
    client = zeep.Client(
        str(wsdl_root() / SEARCH.wsdl),
        wsse=UsernameToken(user, password, use_digest=True),
        transport=zeep.Transport(session=requests.Session(), timeout=30, operation_timeout=30),
        settings=zeep.Settings(strict=False),
    )
    return client.create_service(SEARCH.binding_qname, box.base + SEARCH.path)


@dataclasses.dataclass
class Recorded:
    box: NvrProcess
    data: Path
    receiver: str
    #: Recorded with a gap and across a restart of the box.
    yard: str
    #: Recorded, then deleted.
    deleted: str
    #: Never recorded.
    attic: str


def recorded_until(box: NvrProcess, token: str, seconds: float, after=None) -> None:
    """Wait (at most 60 s) until ``token`` holds ``seconds`` of data (after ``after``, the
    latest instant recorded before, when given): fixed sleeps leave a loaded machine with
    stretches too short for the tests' assumptions."""
    tse = search_client(box)
    deadline = time.monotonic() + 60
    while True:
        info = tse.GetRecordingInformation(token)
        start = after if after is not None else info.EarliestRecording
        latest = info.LatestRecording
        if start is not None and latest is not None and (latest - start).total_seconds() >= seconds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{token}: not {seconds} s recorded after {start} (latest {latest})"
            )
        time.sleep(0.25)


def latest_recorded(box: NvrProcess, token: str):
    return search_client(box).GetRecordingInformation(token).LatestRecording


@contextmanager
def recorded_box(tmp: Path) -> Iterator[Recorded]:
    gstcam.require()
    data = tmp / "data"
    with gstcam.camera(*CAMERA) as url:
        box = NvrProcess(data, ADMIN_PASSWORD, extra_env=ENV)
        box.start()
        try:
            trv, trc = receiver_client(box), recording_client(box)
            receiver = trv.CreateReceiver(receiver_config(url)).Token
            yard = trc.CreateRecording(recording_config("yard", Location="Basement"))
            job = trc.CreateRecordingJob(job_config(yard, receiver)).JobToken
            recorded_until(box, yard, 4.5)
            trc.SetRecordingJobMode(job, "Idle")
            time.sleep(2.5)  # the gap
            before_gap = latest_recorded(box, yard)
            trc.SetRecordingJobMode(job, "Active")
            deleted = trc.CreateRecording(recording_config("doomed", Location="Basement"))
            trc.CreateRecordingJob(job_config(deleted, receiver))
            recorded_until(box, deleted, 3)
            recorded_until(box, yard, 3, after=before_gap)
            trc.DeleteRecording(deleted)
            attic = trc.CreateRecording(recording_config("attic", Location="Attic"))
            box.stop()
            time.sleep(1.5)
            box.start()
            trc = recording_client(box)
            before_restart = latest_recorded(box, yard)
            recorded_until(box, yard, 4, after=before_restart)
            trc.SetRecordingJobMode(job, "Idle")
            time.sleep(1.5)
            yield Recorded(box, data, receiver, yard, deleted, attic)
        finally:
            box.stop()
