"""The Profile G events over the real bus, as a VMS meets them: a GStreamer camera behind a
receiver (trv), a recording and a job made over the Recording service (trc), then a pull
point and a Basic Notification consumer receiving RecordingConfig/*, RecordingHistory/*
and Receiver/* exactly as PROFILES.md §2 names them; the history stored in the index
(the ``events`` table) with the recording time as UtcTime; GetEventProperties describing
every item the messages carry."""

from __future__ import annotations

import datetime
import http.server
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.eventutil import TEV, TT, WSNT, EventsClient, Notification, parse_notifications
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import (
    CAMERA,
    job_config,
    recording_client,
    recording_config,
)

FAST = {"ONVIF_NVR_STORAGE_SEGMENT_S": "2"}
WSTOP = "http://docs.oasis-open.org/wsn/t-1"
TNS1 = "http://www.onvif.org/ver10/topics"


class Pulled:
    """Everything one pull point received, kept in order (parsed and raw)."""

    def __init__(self, events: EventsClient, address: str) -> None:
        self.events = events
        self.address = address
        self.notifications: list[Notification] = []
        self.raw: list[etree._Element] = []

    def pull_until(
        self, predicate: Callable[[list[Notification]], bool], timeout_s: float = 40
    ) -> list[Notification]:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.notifications):
            assert time.monotonic() < deadline, "\n".join(
                f"{n.topic} {n.operation} {n.source} {n.data}" for n in self.notifications
            )
            body = self.events.ok(self.address, self.events.pull_body("PT2S", 500))
            self.notifications += parse_notifications(body)
            self.raw += list(body.iter(f"{{{WSNT}}}NotificationMessage"))
        return self.notifications


def has(topic: str, **items: str) -> Callable[[list[Notification]], bool]:
    return lambda ns: bool(find(ns, topic, **items))


def find(notifications: list[Notification], topic: str, **items: str) -> list[Notification]:
    return [
        n
        for n in notifications
        if n.topic == topic and all({**n.source, **n.data}.get(k) == v for k, v in items.items())
    ]


def utc_ns(text: str) -> int:
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


class Consumer(http.server.ThreadingHTTPServer):
    """A NotificationConsumer in a thread: keeps what every Notify carried."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self.lock = threading.Lock()
        consumer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                root = etree.fromstring(body)
                assert root.find(f"{{*}}Body/{{{WSNT}}}Notify") is not None
                with consumer.lock:
                    consumer.notifications += parse_notifications(root)
                self.send_response(202)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/notify"

    def wait_for(self, predicate: Callable[[list[Notification]], bool], timeout_s: float = 20):
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                got = list(self.notifications)
            if predicate(got):
                return got
            assert time.monotonic() < deadline, [(n.topic, n.source) for n in got]
            time.sleep(0.2)

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    server = Consumer()
    yield server
    server.close()


def described_items(events: EventsClient) -> dict[str, tuple[set[str], set[str]]]:
    """GetEventProperties: topic -> (Source item names, Data item names)."""
    body = events.ok(events.service, f'<tev:GetEventProperties xmlns:tev="{TEV}"/>')
    topic_set = body.find(f"{{{WSTOP}}}TopicSet")
    assert topic_set is not None
    out = {}
    for description in topic_set.iter(f"{{{TT}}}MessageDescription"):
        path = []
        node = description.getparent()
        while node is not None and node is not topic_set:
            path.append(etree.QName(node).localname)
            node = node.getparent()
        names = [
            {i.get("Name", "") for i in description.iterfind(f"{{{TT}}}{group}/{{{TT}}}*")}
            for group in ("Source", "Data")
        ]
        out["tns1:" + "/".join(reversed(path))] = (names[0], names[1])
    return out


def stored_events(data: Path, recording: str) -> list[tuple[str, str, int, str, str]]:
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        return db.execute(
            "SELECT topic, track_token, utc_ns, operation, data FROM events "
            "WHERE recording_token = ? ORDER BY id",
            (recording,),
        ).fetchall()


def first_segment_start(data: Path, recording: str) -> int:
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        return db.execute(
            "SELECT MIN(s.start_wall_ns) FROM segments s JOIN recordings r "
            "ON r.id = s.recording_id WHERE r.token = ?",
            (recording,),
        ).fetchone()[0]


def element_item(raw: list[etree._Element], topic: str, name: str) -> list[etree._Element]:
    """The elements inside ``tt:ElementItem[@Name=name]`` of every message on ``topic``."""
    out = []
    for holder in raw:
        if (holder.findtext(f"{{{WSNT}}}Topic") or "").strip().endswith(topic.split(":", 1)[1]):
            for item in holder.iterfind(f".//{{{TT}}}ElementItem[@Name='{name}']"):
                out.extend(item)
    return out


def test_a_vms_sees_the_profile_g_events(tmp_path, consumer):
    """CreateReceiver → CreateRecording → CreateRecordingJob (Active) → the camera goes
    away → DeleteRecording, followed by a pull point and a push consumer."""
    gstcam.require()
    data = tmp_path / "data"
    nvr = NvrProcess(data, ADMIN_PASSWORD, extra_env=FAST)
    nvr.start()
    try:
        events = EventsClient(nvr.base, "admin", ADMIN_PASSWORD)
        pulled = Pulled(events, events.create(termination="PT300S"))
        events.subscribe(consumer.url, termination="PT300S")
        trv, trc = receiver_client(nvr), recording_client(nvr)
        with gstcam.camera(*CAMERA) as url:
            receiver = trv.CreateReceiver(receiver_config(url)).Token
            recording = trc.CreateRecording(recording_config("gst", "P7D"))
            job = trc.CreateRecordingJob(
                job_config(recording, receiver, tracks=[("video", "VIDEO001")])
            ).JobToken
            got = pulled.pull_until(
                lambda ns: (
                    all(
                        has(*want)(ns)
                        for want in (
                            ("tns1:RecordingConfig/JobState",),
                            ("tns1:RecordingHistory/Track/VideoParameters",),
                            ("tns1:Receiver/ChangeState",),
                        )
                    )
                    and bool(find(ns, "tns1:RecordingConfig/JobState", State="Active"))
                    and bool(find(ns, "tns1:Receiver/ChangeState", NewState="Connected"))
                )
            )
            rec = {"RecordingToken": recording}
            assert find(got, "tns1:RecordingConfig/CreateRecording", **rec)
            assert sorted(
                n.source["TrackToken"] for n in find(got, "tns1:RecordingConfig/CreateTrack", **rec)
            ) == ["AUDIO001", "META001", "VIDEO001"]
            assert find(
                got, "tns1:RecordingConfig/RecordingJobConfiguration", RecordingJobToken=job
            )
            [active] = find(got, "tns1:RecordingConfig/JobState", State="Active")
            assert active.source == {"RecordingJobToken": job}
            assert active.operation in ("Initialized", "Changed")
            [connected] = find(got, "tns1:Receiver/ChangeState", NewState="Connected")
            assert connected.source == {"ReceiverToken": receiver}
            assert connected.operation is None  # not a property (Receiver §5.6)
            assert connected.data["MediaUri"] == url
            [recording_on] = find(
                got, "tns1:RecordingHistory/Recording/State", RecordingToken=recording
            )
            assert recording_on.data == {"IsRecording": "true"}
            assert recording_on.operation == "Initialized"
            [video_on] = find(got, "tns1:RecordingHistory/Track/State", IsDataPresent="true")
            assert video_on.source == {"RecordingToken": recording, "Track": "VIDEO001"}
            [video] = find(got, "tns1:RecordingHistory/Track/VideoParameters")
            assert video.source == {"Recording": recording, "Track": "VIDEO001"}
            assert video.data == {
                "VideoEncoding": "H264",
                "VideoWidth": "320",
                "VideoHeight": "240",
            }
            [rate] = element_item(
                pulled.raw, "tns1:RecordingHistory/Track/VideoParameters", "VideoRateControl"
            )
            assert rate.findtext(f"{{{TT}}}FrameRateLimit") == "25"
            [information] = element_item(
                pulled.raw, "tns1:RecordingConfig/JobState", "Information"
            )[-1:]
            assert etree.QName(information).localname == "RecordingJobStateInformation"
            assert information.findtext(f"{{{TT}}}RecordingToken") == recording
            assert [
                t.findtext(f"{{{TT}}}State")
                for t in information.iterfind(f".//{{{TT}}}Tracks/{{{TT}}}Track")
            ] == ["Active"]
            [configuration] = element_item(
                pulled.raw, "tns1:RecordingConfig/RecordingJobConfiguration", "Configuration"
            )
            assert etree.QName(configuration).localname == "RecordingJobConfiguration"
            assert configuration.findtext(f"{{{TT}}}Mode") == "Active"

            # UtcTime is the recording time: the first segment's start (ms precision).
            start_ns = first_segment_start(data, recording)
            assert abs(utc_ns(recording_on.utc_time) - start_ns) < 10**6
            assert utc_ns(video.utc_time) == utc_ns(recording_on.utc_time)
            time.sleep(1)  # the deferred rows commit within half a second
            rows = stored_events(data, recording)
            topics = [(topic, track) for topic, track, *_ in rows]
            assert topics[:3] == [
                ("tns1:RecordingHistory/Recording/State", ""),
                ("tns1:RecordingHistory/Track/State", "VIDEO001"),
                ("tns1:RecordingHistory/Track/VideoParameters", "VIDEO001"),
            ]
            assert rows[0][2] == start_ns and rows[0][3] == "Initialized"
            assert rows[0][4] == '[["IsRecording", "true"]]'
        # The camera is gone: the stream ends, reconnecting fails.
        got = pulled.pull_until(
            lambda ns: (
                has("tns1:Receiver/ConnectionFailed")(ns)
                and has("tns1:RecordingConfig/JobState", State="Error")(ns)
                and has("tns1:RecordingHistory/Recording/State", IsRecording="false")(ns)
            )
        )
        failed = find(got, "tns1:Receiver/ConnectionFailed")[0]
        assert failed.source == {"ReceiverToken": receiver}
        assert failed.data == {"MediaUri": url}
        assert find(got, "tns1:Receiver/ChangeState", NewState="Connecting")
        [off] = find(got, "tns1:RecordingHistory/Recording/State", IsRecording="false")
        assert off.operation == "Changed"
        assert utc_ns(off.utc_time) > utc_ns(recording_on.utc_time)
        assert find(got, "tns1:RecordingHistory/Track/State", IsDataPresent="false")
        time.sleep(1)
        stored = stored_events(data, recording)
        assert ("tns1:RecordingHistory/Recording/State", "", utc_ns(off.utc_time) // 10**6) in {
            (topic, track, utc // 10**6) for topic, track, utc, *_ in stored
        }

        trc.DeleteRecording(recording)
        got = pulled.pull_until(has("tns1:RecordingConfig/DeleteRecording"))
        deleted = find(got, "tns1:RecordingConfig/DeleteTrackData", RecordingToken=recording)
        assert sorted(n.source["TrackToken"] for n in deleted) == ["AUDIO001", "VIDEO001"]
        for n in deleted:
            assert utc_ns(n.data["StartTime"]) // 10**6 == start_ns // 10**6
            assert utc_ns(n.data["EndTime"]) > utc_ns(n.data["StartTime"])
        tail = [n.topic for n in got if n.topic.startswith("tns1:RecordingConfig/Delete")]
        assert tail == [
            "tns1:RecordingConfig/DeleteTrackData",
            "tns1:RecordingConfig/DeleteTrackData",
            "tns1:RecordingConfig/DeleteTrack",
            "tns1:RecordingConfig/DeleteTrack",
            "tns1:RecordingConfig/DeleteTrack",
            "tns1:RecordingConfig/DeleteRecording",
        ]
        # The job went with the recording: its state property is deleted.
        got = pulled.pull_until(
            lambda ns: bool(
                [n for n in ns if n.topic.endswith("JobState") and n.operation == "Deleted"]
            )
        )
        assert stored_events(data, recording) == []  # the history went with the recording

        # Every item the messages carry is one GetEventProperties describes.
        described = described_items(events)
        for n in got:
            sources, datas = described[n.topic]
            assert set(n.source) <= sources and set(n.data) <= datas, n

        # The push consumer got the same messages, in the same order.
        pushed = consumer.wait_for(lambda ns: len(ns) >= len(got))
        assert [(n.topic, n.source, n.data) for n in pushed] == [
            (n.topic, n.source, n.data) for n in got
        ]
    finally:
        nvr.stop()
    assert not nvr.blocking_calls()


def test_an_unreachable_camera(tmp_path):
    """A receiver whose camera never answers: Connecting, ConnectionFailed (with the
    MediaUri, without credentials), the job in Error with the reason in Information."""
    data = tmp_path / "data"
    nvr = NvrProcess(data, ADMIN_PASSWORD)
    nvr.start()
    try:
        events = EventsClient(nvr.base, "admin", ADMIN_PASSWORD)
        pulled = Pulled(events, events.create(termination="PT120S"))
        trv, trc = receiver_client(nvr), recording_client(nvr)
        url = f"rtsp://127.0.0.1:{gstcam.free_port()}/nothing"
        receiver = trv.CreateReceiver(receiver_config(url.replace("//", "//u:secret@"))).Token
        recording = trc.CreateRecording(recording_config("gone"))
        job = trc.CreateRecordingJob(job_config(recording, receiver)).JobToken
        got = pulled.pull_until(
            lambda ns: (
                has("tns1:Receiver/ConnectionFailed")(ns)
                and has("tns1:RecordingConfig/JobState", State="Error")(ns)
                and has("tns1:Receiver/ChangeState", NewState="Connecting")(ns)
            )
        )
        [connecting] = find(got, "tns1:Receiver/ChangeState", NewState="Connecting")
        assert connecting.source == {"ReceiverToken": receiver}
        failed = find(got, "tns1:Receiver/ConnectionFailed")[0]
        assert failed.data == {"MediaUri": url}
        [error] = find(got, "tns1:RecordingConfig/JobState", State="Error")
        assert error.source == {"RecordingJobToken": job}
        [information] = element_item(pulled.raw, "tns1:RecordingConfig/JobState", "Information")[
            -1:
        ]
        errors = [e.text for e in information.iter(f"{{{TT}}}Error")]
        assert errors and all(errors), errors
        assert not find(got, "tns1:RecordingHistory/Recording/State")
        # Retries repeat ConnectionFailed, but the job's state does not change again.
        got = pulled.pull_until(lambda ns: len(find(ns, "tns1:Receiver/ConnectionFailed")) >= 2)
        assert len(find(got, "tns1:RecordingConfig/JobState")) == 1 + len(
            find(got, "tns1:RecordingConfig/JobState", State="Idle")
        )
    finally:
        nvr.stop()
    assert not nvr.blocking_calls()


@pytest.mark.peer
def test_home_assistant_pull_point_gets_a_recording_event(tmp_path):
    """onvif-zeep-async's PullPoint manager (Home Assistant's event path), in its own
    interpreter, receives CreateRecording with the Source item it parses."""
    from tests.test_peer_onvif_zeep_async import peer_python

    python = peer_python()
    nvr = NvrProcess(tmp_path / "data", ADMIN_PASSWORD)
    nvr.start()
    try:
        peer = subprocess.Popen(
            [
                str(python),
                str(Path(__file__).parent / "peers" / "ha_events.py"),
                "127.0.0.1",
                str(nvr.port),
                "admin",
                ADMIN_PASSWORD,
                "tns1:RecordingConfig/CreateRecording",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert peer.stdout is not None
            assert peer.stdout.readline().strip() == "READY", peer.stderr.read()  # type: ignore[union-attr]
            before_ns = time.time_ns()
            recording = recording_client(nvr).CreateRecording(recording_config("ha"))
            out, err = peer.communicate(timeout=60)
        finally:
            if peer.poll() is None:
                peer.kill()
                peer.wait()
        assert peer.returncode == 0, err
        got = json.loads(out)
        assert got["topic"] == "tns1:RecordingConfig/CreateRecording"
        assert got["source"] == {"RecordingToken": recording}
        assert got["data"] == {}
        assert got["operation"] is None
        assert abs(utc_ns(got["utc_time"]) - before_ns) < 5 * 10**9
    finally:
        nvr.stop()
