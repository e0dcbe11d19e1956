"""RTSP replay (``/replay/<recording token>``, Streaming §6) against a running box that
recorded a GStreamer camera with a gap (``test_replay_reader.camera_footage``), played by a
small RTSP/RTP client of our own that parses the 0xABAC extension by hand, by FFmpeg (PyAV)
as an ordinary RTSP stream, and by GStreamer's ``rtspsrc onvif-mode=true``."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest

from onvif_nvr.rtsp.auth import ClientAuthenticator
from onvif_nvr.rtsp.headers import parse_rtp_info
from onvif_nvr.rtsp.message import Headers, Interleaved, MessageParser, Request, Response
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT, NvrProcess
from tests.test_live import RawViewer, _check_continuity
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client, wait_for
from tests.test_recording_control_service import job_config, recording_client, recording_config
from tests.test_replay_reader import camera_footage, fragments_of  # noqa: F401 (fixture)
from tests.test_replay_service import replay_client

S = 1_000_000_000
MS = 1_000_000
NTP_EPOCH_S = 2_208_988_800
VIDEO, AUDIO = 0, 2  # interleaved channels


@dataclass
class Box:
    nvr: NvrProcess
    data: Path
    token: str
    #: (segment id, start_wall_ns, first_is_sync, sample_count) of the recording's fragments.
    rows: list[tuple[int, int, bool, int]]

    def url(self, token: str | None = None) -> str:
        return f"rtsp://127.0.0.1:{self.nvr.rtsp_port}/replay/{token or self.token}"

    @property
    def keyframes(self) -> list[int]:
        return [start for _, start, sync, _ in self.rows if sync]

    def segments(self) -> list[tuple[int, int]]:
        with sqlite3.connect(self.data / "nvr.sqlite3") as conn:
            return conn.execute(
                "SELECT s.start_wall_ns, s.end_wall_ns FROM segments s JOIN recordings r "
                "ON r.id = s.recording_id WHERE r.token = ? ORDER BY s.start_wall_ns",
                (self.token,),
            ).fetchall()

    def sections(self) -> list[tuple[int, int]]:
        """(start, end) of the contiguous sections (segments less than 1 s apart)."""
        out: list[list[int]] = []
        for start, end in self.segments():
            if out and start - out[-1][1] <= S:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([start, end])
        return [(a, b) for a, b in out]


def serve_footage(recorded: tuple[Path, str]) -> Iterator[Box]:
    """The box that recorded ``recorded`` (data dir, token), started again to replay it."""
    data, token = recorded
    nvr = NvrProcess(data, ADMIN_PASSWORD, extra_env={"ONVIF_NVR_STORAGE_SEGMENT_S": "2"})
    nvr.start()
    try:
        yield Box(nvr, data, token, fragments_of(data, token))
    finally:
        nvr.stop()
    assert not nvr.blocking_calls(), nvr.blocking_calls()


@pytest.fixture(scope="module")
def box(camera_footage) -> Iterator[Box]:  # noqa: F811
    yield from serve_footage(camera_footage)


def clock(wall_ns: int) -> str:
    when = datetime.fromtimestamp(wall_ns // S, UTC)
    return when.strftime("%Y%m%dT%H%M%S") + f".{wall_ns % S // MS:03d}Z"


@dataclass
class Unit:
    """The first packet of an access unit, its extension parsed by hand."""

    channel: int
    seq: int
    rtptime: int
    wall_ns: int
    c: bool
    e: bool
    d: bool
    t: bool
    cseq: int
    payload: bytes

    @property
    def idr(self) -> bool:
        """An H.264 keyframe by its bytes: IDR, or parameter sets ahead of one."""
        kind = self.payload[0] & 0x1F
        if kind == 28:  # FU-A
            return self.payload[1] & 0x1F == 5
        return kind in (5, 7, 24)


def parse_rtp(channel: int, packet: bytes) -> tuple[int, Unit | None]:
    first, second, seq, rtptime, _ = struct.unpack_from("!BBHII", packet)
    assert first >> 6 == 2
    offset = 12 + 4 * (first & 0x0F)
    if not first & 0x10:
        return seq, None
    profile, words = struct.unpack_from("!HH", packet, offset)
    assert profile == 0xABAC and words >= 3
    seconds, fraction, flags, cseq, zero = struct.unpack_from("!IIBBH", packet, offset + 4)
    assert flags & 0x0F == 0 and zero == 0
    wall_ns = (seconds - NTP_EPOCH_S) * S + (fraction * S >> 32)
    payload = packet[offset + 4 + 4 * words :]
    unit = Unit(channel, seq, rtptime, wall_ns, *(bool(flags & b) for b in (128, 64, 32, 16)),
                cseq, payload)  # fmt: skip
    return seq, unit


class Client:
    """RTSP over a blocking socket, Digest from the project's client, media interleaved."""

    def __init__(self, box: Box, timeout_s: float = 20.0) -> None:
        self.box = box
        self.sock = socket.create_connection(("127.0.0.1", box.nvr.rtsp_port), timeout=timeout_s)
        self.parser = MessageParser("client")
        self.auth = ClientAuthenticator("admin", ADMIN_PASSWORD)
        self.cseq = 0
        self.session = ""
        self.units: list[Unit] = []
        self.seqs: dict[int, list[int]] = {}
        self.rtcp: list[bytes] = []
        self.bytes = 0

    def request(self, method: str, uri: str, **fields: str) -> Response:
        for _ in range(2):
            self.cseq += 1
            headers = Headers({"CSeq": str(self.cseq)})
            for key, value in fields.items():
                headers.add(key.replace("_", "-"), value)
            if self.session and "Session" not in fields:
                headers.add("Session", self.session)
            authorization = self.auth.authorization(method, uri)
            if authorization:
                headers.add("Authorization", authorization)
            self.sock.sendall(bytes(Request(method, uri, headers)))
            response = self._until_response()
            if response.status != 401 or not self.auth.challenge(
                response.headers.get_all("WWW-Authenticate")
            ):
                return response
        return response

    def _feed(self, data: bytes) -> Response | None:
        response = None
        self.bytes += len(data)
        for message in self.parser.feed(data):
            if isinstance(message, Response):
                response = message
            elif isinstance(message, Interleaved):
                if message.channel % 2:
                    self.rtcp.append(message.payload)
                    continue
                seq, unit = parse_rtp(message.channel, message.payload)
                self.seqs.setdefault(message.channel, []).append(seq)
                if unit is not None:
                    self.units.append(unit)
        return response

    def _until_response(self) -> Response:
        while True:
            data = self.sock.recv(262144)
            assert data, "connection closed"
            response = self._feed(data)
            if response is not None:
                return response

    def setup(self, tracks: tuple[int, ...] = (0, 1), token: str | None = None, **fields: str):
        url = self.box.url(token)
        assert self.request("DESCRIBE", url, Accept="application/sdp").status == 200
        for n in tracks:
            reply = self.request(
                "SETUP",
                f"{url}/trackID={n}",
                Transport=f"RTP/AVP/TCP;unicast;interleaved={2 * n}-{2 * n + 1}",
                Require="onvif-replay",
                **fields,
            )
            assert reply.status == 200, reply
            self.session = reply.headers.get("Session", "").split(";")[0]

    def play(self, **fields: str) -> Response:
        reply = self.request("PLAY", self.box.url(), Require="onvif-replay", **fields)
        assert reply.status == 200, reply
        return reply

    def read_until(self, done, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out"
            data = self.sock.recv(262144)
            assert data, "connection closed"
            self._feed(data)

    def terminal(self, channels: tuple[int, ...] = (VIDEO,)):
        return lambda: all(any(u.t and u.channel == c for u in self.units) for c in channels)

    def video(self, cseq: int | None = None) -> list[Unit]:
        return [u for u in self.units if u.channel == VIDEO and (cseq is None or u.cseq == cseq)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(box: Box) -> Iterator[Client]:
    c = Client(box)
    yield c
    c.close()


def same_times(got: list[int], want: list[int]) -> bool:
    """Equal within 1 ms (NTP's fraction rounds a few ns away)."""
    return len(got) == len(want) and all(abs(a - b) <= MS for a, b in zip(got, want, strict=True))


def assert_increasing(seqs: list[int]) -> None:
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))


# -- DESCRIBE, SETUP, Require ---------------------------------------------------------------------
def test_describe_has_a_track_reference_per_media(box: Box, client: Client):
    reply = client.request("DESCRIBE", box.url(), Accept="application/sdp")
    assert reply.status == 200
    body = reply.body.decode()
    assert body.count("m=video") == 1 and body.count("m=audio") == 1
    assert body.count("a=x-onvif-track:") == 2
    first, last = box.sections()[0][0], box.sections()[-1][1]
    assert f"a=range:clock={clock(first)[:15]}" in body
    assert clock(last)[:15] in body


def test_unknown_recording_is_404(box: Box, client: Client):
    assert client.request("DESCRIBE", box.url("NOPE")).status == 404
    reply = client.request(
        "SETUP", box.url("NOPE") + "/trackID=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1"
    )
    assert reply.status == 404


def test_unknown_option_tag_is_551(box: Box, client: Client):
    reply = client.request(
        "SETUP",
        box.url() + "/trackID=0",
        Transport="RTP/AVP/TCP;unicast;interleaved=0-1",
        Require="onvif-replay, com.example.teleport",
    )
    assert reply.status == 551
    assert reply.headers.get("Unsupported") == "com.example.teleport"


def test_credentials_are_required(box: Box):
    sock = socket.create_connection(("127.0.0.1", box.nvr.rtsp_port), timeout=10)
    try:
        sock.sendall(bytes(Request("DESCRIBE", box.url(), Headers({"CSeq": "1"}))))
        parser, messages = MessageParser("client"), []
        while not messages:
            messages = parser.feed(sock.recv(65536))
        assert isinstance(messages[0], Response) and messages[0].status == 401
    finally:
        sock.close()


def test_session_timeout_is_the_replay_services(box: Box, client: Client):
    client.setup((0,))
    reply = client.request("GET_PARAMETER", box.url())
    assert reply.status == 200
    assert reply.headers.get("Session", "").endswith(";timeout=60")


def test_session_timeout_set_through_the_replay_service(box: Box):
    trp = replay_client(box.nvr)
    trp.SetReplayConfiguration({"SessionTimeout": timedelta(seconds=5)})
    try:
        c = Client(box)
        c.setup((0,))
        assert (
            c.request("GET_PARAMETER", box.url()).headers.get("Session", "").endswith(";timeout=5")
        )
        began = time.monotonic()
        while c.sock.recv(65536):  # idle: the server closes the session's connection
            pass
        assert 4 <= time.monotonic() - began < 15
        c.close()
    finally:
        trp.SetReplayConfiguration({"SessionTimeout": timedelta(seconds=60)})


# -- forward --------------------------------------------------------------------------------------
def test_whole_recording_without_rate_control(box: Box, client: Client):
    sections = box.sections()
    assert len(sections) >= 2
    client.setup()
    began = time.monotonic()
    reply = client.play(Range=f"clock={clock(sections[0][0] - S)}-{clock(sections[-1][1] + S)}",
                        Rate_Control="no")  # fmt: skip
    assert reply.headers.get("Range", "").startswith("clock=")
    client.read_until(client.terminal((VIDEO, AUDIO)))
    elapsed_s = time.monotonic() - began
    video = client.video()
    # Every picture of the index, each fragment's first at its row's time (within 1 ms).
    assert len(video) == sum(count for *_, count in box.rows)
    times = [u.wall_ns for u in video]
    for _, start, _, _ in box.rows:
        assert min(abs(t - start) for t in times) <= MS
    assert times == sorted(times)
    assert video[0].c and video[0].idr and abs(video[0].wall_ns - box.rows[0][1]) <= MS
    # C exactly on keyframes, by their bytes.
    assert all(u.c == u.idr for u in video)
    # E on the last picture before the gap (and at the end), T only at the end.
    for a, b in zip(video, video[1:], strict=False):
        assert a.e == (b.wall_ns - a.wall_ns > S), (a, b)
    assert video[-1].e and video[-1].t and not any(u.t for u in video[:-1])
    audio = [u for u in client.units if u.channel == AUDIO]
    assert len(audio) > 50 and audio[-1].t and audio[-1].e
    assert all(u.cseq == client.cseq & 0xFF for u in client.units)
    for seqs in client.seqs.values():
        assert_increasing(seqs)
    info = parse_rtp_info(reply.headers.get("RTP-Info", ""))
    assert {i.seq for i in info} == {seqs[0] for seqs in client.seqs.values()}
    # Without rate control: much faster than real time; RTP times from capture times.
    footage_s = (sections[-1][1] - sections[0][0]) / S
    assert elapsed_s * 5 < footage_s, (elapsed_s, footage_s)
    for a, b in zip(video, video[1:], strict=False):
        assert (
            abs(((b.rtptime - a.rtptime) & 0xFFFFFFFF) - (b.wall_ns - a.wall_ns) * 9 // 100_000)
            <= 1
        )


def test_start_inside_a_gop_is_its_keyframe(box: Box, client: Client):
    keyframe = box.keyframes[3]
    client.setup((0,))
    client.play(Range=f"clock={clock(keyframe + 300 * MS)}-{clock(keyframe + 2 * S)}",
                Rate_Control="no")  # fmt: skip
    client.read_until(lambda: len(client.video()) >= 10)
    first = client.video()[0]
    assert first.c and first.idr and abs(first.wall_ns - keyframe) <= MS


def test_start_in_a_gap_is_the_next_section(box: Box, client: Client):
    (_, end), (resume, _) = box.sections()[:2]
    client.setup((0,))
    client.play(Range=f"clock={clock((end + resume) // 2)}-", Rate_Control="no")
    client.read_until(lambda: len(client.video()) >= 3)
    first = client.video()[0]
    assert first.c and abs(first.wall_ns - min(k for k in box.keyframes if k >= end)) <= MS


def test_start_before_the_first_recording(box: Box, client: Client):
    client.setup((0,))
    client.play(Range=f"clock={clock(box.rows[0][1] - 3600 * S)}-", Rate_Control="no")
    client.read_until(lambda: len(client.video()) >= 3)
    assert abs(client.video()[0].wall_ns - box.rows[0][1]) <= MS


def test_range_after_the_last_recording_sends_nothing(box: Box, client: Client):
    last = box.sections()[-1][1]
    client.setup((0,))
    empty = client.play(Range=f"clock={clock(last + 10 * S)}-{clock(last + 20 * S)}",
                        Rate_Control="no")  # fmt: skip
    assert empty.status == 200
    first_cseq = client.cseq
    # Queued behind the empty one (no Immediate): runs once that one found nothing.
    client.play(Range=f"clock={clock(box.rows[0][1])}-{clock(box.rows[0][1] + S)}",
                Rate_Control="no")  # fmt: skip
    client.read_until(lambda: len(client.video()) >= 3)
    assert not [u for u in client.units if u.cseq == first_cseq & 0xFF]


def test_closed_range_ends_with_terminal_and_the_session_stays_playing(box: Box, client: Client):
    start = box.keyframes[1]
    client.setup((0,))
    client.play(Range=f"clock={clock(start)}-{clock(start + S)}", Rate_Control="no")
    client.read_until(lambda: len(client.video()) >= 20)
    # Not PAUSED: a PLAY without Range goes on from where it stopped, no D (a resume).
    assert client.request("GET_PARAMETER", box.url()).status == 200


def test_rate_control_paces_by_recorded_time(box: Box, client: Client):
    start = box.keyframes[1]
    client.setup((0,))
    began = time.monotonic()
    client.play(Range=f"clock={clock(start)}-{clock(start + 2 * S)}", Scale="2.0")
    client.read_until(lambda: len(client.video()) >= 2 and client.video()[-1].wall_ns >= start + S)
    elapsed_s = time.monotonic() - began
    video = client.video()
    # 1 s of footage at Scale 2 took about 0.5 s (not all at once); RTP times are playback
    # times (capture time / 2).
    assert elapsed_s >= 0.4, elapsed_s
    a, b = video[0], video[-1]
    played_90k = (b.rtptime - a.rtptime) & 0xFFFFFFFF
    assert abs(played_90k - (b.wall_ns - a.wall_ns) * 9 // 200_000) <= 2


# -- trick play -----------------------------------------------------------------------------------
def test_reverse_sends_gops_backward(box: Box, client: Client):
    client.setup()
    last = box.sections()[-1][1]
    client.play(Range=f"clock={clock(last + S)}-{clock(box.rows[0][1] - S)}", Scale="-1.0",
                Rate_Control="no")  # fmt: skip
    client.read_until(client.terminal())
    video = client.video()
    assert not [u for u in client.units if u.channel == AUDIO]  # no audio backward
    starts = [u for u in video if u.d]
    assert same_times([u.wall_ns for u in starts], sorted(box.keyframes, reverse=True))
    assert all(u.c and u.idr for u in starts)
    # Inside a GOP forward; the GOP that starts a section ends with E; T on the very last.
    gops: list[list[Unit]] = []
    for u in video:
        if u.d:
            gops.append([])
        gops[-1].append(u)
    for gop in gops:
        times = [u.wall_ns for u in gop]
        assert times == sorted(times)
    section_starts = {min(k for k in box.keyframes if k >= a) for a, _ in box.sections()}
    for gop in gops:
        assert gop[-1].e == any(abs(gop[0].wall_ns - k) <= MS for k in section_starts)
    assert gops[-1][-1].t
    assert_increasing(client.seqs[VIDEO])


def test_intra_only(box: Box, client: Client):
    client.setup()
    client.play(Range=f"clock={clock(box.rows[0][1])}-{clock(box.sections()[-1][1])}",
                Frames="intra", Rate_Control="no")  # fmt: skip
    client.read_until(client.terminal())
    video = client.video()
    assert all(u.c and u.idr for u in video)
    assert same_times([u.wall_ns for u in video], box.keyframes)


def test_intra_with_an_interval(box: Box, client: Client):
    client.setup((0,))
    client.play(Range=f"clock={clock(box.rows[0][1])}-{clock(box.sections()[-1][1])}",
                Frames="intra/1500", Rate_Control="no")  # fmt: skip
    client.read_until(client.terminal())
    times = [u.wall_ns for u in client.video()]
    assert all(u.c for u in client.video())
    assert all(b - a >= 1500 * MS for a, b in zip(times, times[1:], strict=False))
    assert len(times) < len(box.keyframes)


def test_immediate_jump_sets_d(box: Box, client: Client):
    client.setup((0,))
    client.play(Range=f"clock={clock(box.keyframes[0])}-")  # real time: runs a while
    client.read_until(lambda: len(client.video()) >= 3)
    first_cseq = client.cseq & 0xFF
    target = box.keyframes[-2]
    client.play(Range=f"clock={clock(target + MS)}-", Immediate="yes", Rate_Control="no")
    jump_cseq = client.cseq & 0xFF
    client.read_until(lambda: len(client.video(jump_cseq)) >= 3)
    jumped = client.video(jump_cseq)
    assert jumped[0].d and jumped[0].c and abs(jumped[0].wall_ns - target) <= MS
    assert not any(u.d for u in jumped[1:])
    assert not any(u.d for u in client.video(first_cseq))
    # Nothing of the first PLAY after the jump.
    cseqs = [u.cseq for u in client.video()]
    assert cseqs == sorted(cseqs, key=lambda c: c == jump_cseq)
    assert_increasing(client.seqs[VIDEO])


def test_pause_and_resume(box: Box, client: Client):
    client.setup((0,))
    client.play(Range=f"clock={clock(box.keyframes[0])}-", Scale="4.0")
    client.read_until(lambda: len(client.video()) >= 10)
    assert client.request("PAUSE", box.url()).status == 200
    client.sock.settimeout(20)
    last = client.video()[-1].wall_ns
    client.play()  # no Range: resumes where it paused
    resume_cseq = client.cseq & 0xFF
    client.read_until(lambda: len(client.video(resume_cseq)) >= 5)
    resumed = client.video(resume_cseq)
    assert resumed[0].c and resumed[0].wall_ns <= last
    assert last - resumed[0].wall_ns < 2 * S  # the GOP it paused in
    assert not resumed[0].d


def test_sender_reports_without_rate_control_are_zero(box: Box, client: Client):
    client.setup((0,))
    client.play(Range=f"clock={clock(box.keyframes[0])}-{clock(box.keyframes[2])}",
                Rate_Control="no")  # fmt: skip
    client.read_until(lambda: bool(client.rtcp) and len(client.video()) >= 3)
    ntp_s, ntp_frac, rtptime = struct.unpack_from("!IIII", client.rtcp[0], 8)[:3]
    assert client.rtcp[0][1] == 200 and (ntp_s, ntp_frac, rtptime) == (0, 0, 0)


# -- other peers ----------------------------------------------------------------------------------
def test_pyav_plays_from_the_start(box: Box):
    url = box.url().replace("rtsp://", f"rtsp://admin:{ADMIN_PASSWORD}@")
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "10000000"}) as container:
        stream = container.streams.video[0]
        frames = []
        for frame in container.decode(stream):
            frames.append(frame)
            if len(frames) >= 10:
                break
    assert (frames[0].width, frames[0].height) == (320, 240)


def gst_onvif(location: str, rate_control: str = "false", protocols: str = "tcp") -> str:
    """``rtspsrc onvif-mode=true`` + ``rtponvifparse`` playing ``location`` from the start
    (as a subprocess: GStreamer is Debian's); its output, after 20 pictures."""
    gstcam.require()
    pipeline = (
        f"rtspsrc location={location} user-id=admin user-pw={ADMIN_PASSWORD} onvif-mode=true "
        f"onvif-rate-control={rate_control} protocols={protocols} ! rtponvifparse ! "
        "rtph264depay ! h264parse ! identity eos-after=20 silent=false ! fakesink"
    )
    done = subprocess.run(["gst-launch-1.0", "-v", "-e", *pipeline.split()], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("chain") >= 15, done.stdout[-2000:]
    return done.stdout


@pytest.mark.parametrize("rate_control", ["true", "false"])
def test_gstreamer_onvif_mode(box: Box, rate_control: str):
    out = gst_onvif(box.url(), rate_control)
    # onvif-mode: buffer times are the extension's absolute capture times.
    assert re.search(r"pts: \d{6,}:", out), out[-1000:]


@pytest.mark.parametrize("protocols", ["udp", "http"])
def test_gstreamer_over_udp_and_the_http_tunnel(box: Box, protocols: str):
    if protocols == "http":
        location = f"rtsph://127.0.0.1:{box.nvr.port}/rtsp-tunnel/replay/{box.token}"
        gst_onvif(location, protocols="tcp")
    else:
        gst_onvif(box.url(), protocols="udp")


def picture_times(box: Box, start: int, end: int) -> list[int]:
    """The index's capture times of the pictures in [start, end] (the camera's 25 fps: a
    fragment's pictures 40 ms apart from its row's time)."""
    times = (row + i * 40 * MS for _, row, _, count in box.rows for i in range(count))
    return [t for t in times if start <= t <= end]


@pytest.mark.parametrize("rate_control", ["true", "false"])
def test_gstreamer_seeks_to_a_clock_range(box: Box, rate_control: str):
    """GStreamer's own seek in ONVIF mode (tests/peers/gst_onvif_seek.py): rtspsrc plays,
    then a flushing seek to absolute times sends PAUSE and PLAY with ``Range: clock=``. The
    pictures of the range arrive with the index's capture times and the stream ends at the
    range's end: the last unit of each track carries T, which rtponvifparse turns into EOS."""
    gstcam.require()
    start, end = box.keyframes[5] + 300 * MS, box.keyframes[7] + 500 * MS  # mid-GOP both
    peer = ROOT / "tests/peers/gst_onvif_seek.py"
    done = subprocess.run(
        [gstcam.SYSTEM_PYTHON, str(peer), box.url(), "admin", ADMIN_PASSWORD, str(start),
         str(end), rate_control, "tcp", "30"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and "pictures" in lines[-1], done.stdout[-2000:] + done.stderr[-2000:]
    summary = lines[-1]
    assert summary["eos"], summary
    units = [u for u in lines if "wall_ns" in u]
    # The seek's PLAY: the CSeq byte of the unit with T (packets of the first PLAY may still
    # have been on their way).
    terminal = [u for u in units if u["t"]]
    assert len(terminal) == 1, terminal
    played = [u for u in units if u["cseq"] == terminal[0]["cseq"]]
    # It started at the clean point at or before the start (GStreamer's jitter buffer drops
    # that first access unit: its packets arrive before it has a time base), ...
    assert start - 1100 * MS <= played[0]["wall_ns"] <= start
    # ... every picture of the range, at the index's times, and nothing after its end.
    got = [u["wall_ns"] for u in played if start <= u["wall_ns"]]
    expected = picture_times(box, start, end)
    assert len(got) == len(expected), (got, expected)
    assert all(abs(a - b) <= MS for a, b in zip(got, expected, strict=True))
    assert terminal[0]["wall_ns"] == got[-1]


# -- load, deletion -------------------------------------------------------------------------------
def test_thirty_two_sessions(box: Box):
    start = box.keyframes[0]
    clients = [Client(box) for _ in range(32)]
    errors: list[BaseException] = []

    def run(c: Client) -> None:
        try:
            c.setup()
            c.play(Range=f"clock={clock(start)}-{clock(start + 3 * S)}", Rate_Control="no")
            c.read_until(lambda: len(c.video()) >= 70)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    assert not errors, errors
    for c in clients:
        times = [u.wall_ns for u in c.video()]
        assert times == sorted(times) and c.video()[0].wall_ns == clients[0].video()[0].wall_ns


def test_zz_recording_deleted_while_replayed(box: Box, client: Client):
    """Last in the module: the recording goes away."""
    client.setup((0,))
    client.play(Range=f"clock={clock(box.keyframes[0])}-")  # real time
    client.read_until(lambda: len(client.video()) >= 5)
    recording_client(box.nvr).DeleteRecording(box.token)
    # The session goes on without a crash; nothing more of the recording comes once it is gone.
    assert client.request("GET_PARAMETER", box.url()).status == 200
    assert client.request("TEARDOWN", box.url()).status == 200
    assert "Traceback" not in "\n".join(box.nvr.output)


# -- a recording being written --------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Box, str]]:
    """A box recording a GStreamer camera now: (box, receiver token)."""
    gstcam.require()
    data = tmp_path_factory.mktemp("replay-live") / "data"
    camera = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25", "--audio")
    with gstcam.camera(*camera) as url:
        nvr = NvrProcess(data, ADMIN_PASSWORD, extra_env={"ONVIF_NVR_STORAGE_SEGMENT_S": "2"})
        nvr.start()
        try:
            receiver = receiver_client(nvr).CreateReceiver(receiver_config(url)).Token
            trc = recording_client(nvr)
            token = trc.CreateRecording(recording_config("near-live"))
            trc.CreateRecordingJob(job_config(token, receiver))
            wait_for(lambda: len(fragments_of(data, token)) >= 3)
            yield Box(nvr, data, token, []), receiver
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def test_near_live_follows_the_recording(live_box):
    box, _ = live_box
    client = Client(box)
    try:
        client.setup((0,))
        played_ns = time.time_ns()
        client.play(Range=f"clock={clock(played_ns - 2 * S)}-")  # open: follows
        # Pictures recorded after the PLAY come, across the 2 s segments, in order, no E/T.
        client.read_until(lambda: bool(client.video()) and
                          client.video()[-1].wall_ns > played_ns + 4 * S)  # fmt: skip
        times = [u.wall_ns for u in client.video()]
        assert times == sorted(times)
        assert all(b - a < 200 * MS for a, b in zip(times, times[1:], strict=False))
        assert not any(u.t or u.e for u in client.video())
    finally:
        client.close()


def test_thirty_two_replays_beside_a_live_viewer_and_the_recorder(live_box):
    box, receiver = live_box
    rows_before = len(fragments_of(box.data, box.token))
    replays = [Client(box) for _ in range(32)]
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        for c in replays:
            c.setup()
            c.play(Range=f"clock={clock(time.time_ns() - 60 * S)}-", Rate_Control="no")
        live_url = f"rtsp://127.0.0.1:{box.nvr.rtsp_port}/live/{receiver}"
        seqs = viewer.play(live_url, tracks=1)
        end = time.monotonic() + 4
        for c in replays:
            c.sock.settimeout(0.01)
        while time.monotonic() < end:
            viewer.sock.settimeout(0.01)
            with contextlib.suppress(TimeoutError):
                viewer.read(0.01)
            for c in replays:
                with contextlib.suppress(TimeoutError):
                    c._feed(c.sock.recv(262144))
    finally:
        viewer.close()
        for c in replays:
            c.close()
    # The live viewer lost nothing; the replays got their pictures; the recorder went on.
    assert _check_continuity(viewer.frames, 0, seqs[0]) > 50
    assert all(len(c.video()) >= 25 for c in replays)
    assert len(fragments_of(box.data, box.token)) > rows_before
