"""RTSP messages and header values: camera-style wire exchanges, limits, resync, ONVIF ranges.

The wire examples are written in the style of what Hikvision- and Axis-like cameras send
(padding in Session, lower-case mode, absolute controls with queries, RTP-Info lists).
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager

import pytest

from onvif_nvr.rtsp.headers import (
    ClockRange,
    NptRange,
    RtpInfo,
    SessionHeader,
    TransportSpec,
    control_base,
    format_range,
    format_rtp_info,
    format_scale,
    format_session,
    format_speed,
    format_tokens,
    format_transport,
    parse_content_base,
    parse_range,
    parse_rtp_info,
    parse_scale,
    parse_session,
    parse_speed,
    parse_tokens,
    parse_transport,
    resolve_control,
)
from onvif_nvr.rtsp.message import (
    MAX_BODY_BYTES,
    REASONS,
    Headers,
    Interleaved,
    Message,
    MessageParser,
    Request,
    Response,
    RtspParseError,
    redact_url,
)

HIK = "rtsp://192.168.1.64:554/Streaming/Channels/101"
HIK_SDP = (
    b"v=0\r\n"
    b"o=- 1732696812307523 1732696812307523 IN IP4 192.168.1.64\r\n"
    b"s=Media Presentation\r\n"
    b"e=NONE\r\n"
    b"b=AS:5100\r\n"
    b"t=0 0\r\n"
    b"a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"c=IN IP4 0.0.0.0\r\n"
    b"b=AS:5000\r\n"
    b"a=recvonly\r\n"
    b"a=x-dimensions:1920,1080\r\n"
    b"a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1?transportmode=unicast\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=fmtp:96 profile-level-id=420029; packetization-mode=1\r\n"
)
# What a Hikvision-like camera answers to OPTIONS, DESCRIBE (401, then 200), SETUP and PLAY,
# followed by the first interleaved RTP and RTCP frames.
HIK_SERVER_BYTES = (
    b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 1\r\n"
    b"Public: OPTIONS, DESCRIBE, PLAY, PAUSE, SETUP, TEARDOWN, SET_PARAMETER, GET_PARAMETER\r\n"
    b"Date:  Wed, Nov 27 2024 08:40:12 GMT\r\n"
    b"\r\n"
    b"RTSP/1.0 401 Unauthorized\r\n"
    b"CSeq: 2\r\n"
    b'WWW-Authenticate: Digest realm="IP Camera(C6188)", nonce="3f2ad5c1e0b97d6a", '
    b'stale="FALSE"\r\n'
    b'WWW-Authenticate: Basic realm="IP Camera(C6188)"\r\n'
    b"Date:  Wed, Nov 27 2024 08:40:12 GMT\r\n"
    b"\r\n"
    b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Base: rtsp://192.168.1.64:554/Streaming/Channels/101/\r\n"
    b"Content-Length: " + str(len(HIK_SDP)).encode() + b"\r\n"
    b"\r\n" + HIK_SDP + b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 4\r\n"
    b"Session:       1273222592;timeout=60\r\n"
    b'Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=5e4c1f2a;mode="play"\r\n'
    b"Date:  Wed, Nov 27 2024 08:40:12 GMT\r\n"
    b"\r\n"
    b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 5\r\n"
    b"Session:       1273222592\r\n"
    b"RTP-Info: url=rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1?transportmode"
    b"=unicast;seq=21044;rtptime=1726356042\r\n"
    b"Date:  Wed, Nov 27 2024 08:40:12 GMT\r\n"
    b"\r\n"
    b"$\x00\x00\x0c\x80\x60\x52\x34\x66\xe6\x0c\x4a\x5e\x4c\x1f\x2a"
    b"$\x01\x00\x08\x80\xc8\x00\x06\x5e\x4c\x1f\x2a"
)


def parse_all(data: bytes, role: str = "client", step: int | None = None) -> list[Message]:
    parser = MessageParser(role)  # type: ignore[arg-type]
    if step is None:
        return parser.feed(data)
    out: list[Message] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i : i + step])
    return out


def raises(message: str) -> AbstractContextManager[pytest.ExceptionInfo[ValueError]]:
    """Expect a ValueError with exactly this message."""
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# ---- Headers, Request, Response, Interleaved ---------------------------------------------


def test_headers_are_case_insensitive_ordered_and_multi_valued() -> None:
    h = Headers([("CSeq", "1"), ("WWW-Authenticate", "Digest a"), ("www-authenticate", "Basic")])
    assert h.get("cseq") == "1"
    assert h.get("missing") is None and h.get("missing", "x") == "x"
    assert h.get_all("WWW-AUTHENTICATE") == ["Digest a", "Basic"]
    assert "Www-Authenticate" in h and "Session" not in h and 3 not in h
    assert len(h) == 3
    h.add("Session", "abc")
    h.set("www-authenticate", "Digest b")  # replaces both, at the place of the first
    assert h.items() == [("CSeq", "1"), ("www-authenticate", "Digest b"), ("Session", "abc")]
    h.set("Range", "npt=0-")
    assert h.items()[-1] == ("Range", "npt=0-")
    h.remove("SESSION")
    assert "Session" not in h
    assert Headers({"CSeq": "1"}) == Headers([("cseq", "1")])
    assert Headers({"CSeq": "1"}) != Headers([("CSeq", "2")])


def test_headers_refuse_injection() -> None:
    with raises("RTSP header has control character"):
        Headers().add("Session", "1\r\nCSeq: 9")
    with raises("RTSP header has invalid name"):
        Headers({"Bad Name": "x"})
    with raises("RTSP header has invalid name"):
        Headers().set("", "x")


def test_repr_hides_credentials() -> None:
    request = Request(
        "DESCRIBE",
        "rtsp://admin:hunter2@cam/stream",
        Headers({"CSeq": "2", "Authorization": "Basic YWRtaW46aHVudGVyMg=="}),
    )
    text = repr(request)
    assert "hunter2" not in text and "YWRtaW46aHVudGVyMg" not in text
    assert "rtsp://cam/stream" in text and "CSeq" in text


def test_request_serialization() -> None:
    request = Request(
        "SETUP",
        f"{HIK}/trackID=1",
        Headers(
            [
                ("CSeq", "4"),
                ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"),
                ("Content-Length", "99"),
            ]
        ),
    )
    assert request.cseq == 4
    assert bytes(request) == (
        b"SETUP rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1 RTSP/1.0\r\n"
        b"CSeq: 4\r\n"
        b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
        b"\r\n"
    )  # a stale Content-Length never reaches the wire
    request = Request("SET_PARAMETER", HIK, Headers({"CSeq": "7"}), b"barparam: barstuff\r\n")
    assert bytes(request).endswith(b"CSeq: 7\r\nContent-Length: 20\r\n\r\nbarparam: barstuff\r\n")
    (parsed,) = parse_all(bytes(request), "server")
    assert isinstance(parsed, Request) and parsed.body == request.body
    assert bytes(parsed) == bytes(request)


def test_request_serialization_refuses_bad_parts() -> None:
    with raises("RTSP method is not a token"):
        bytes(Request("GET PARAMETER", HIK))
    with raises("RTSP request URI is empty or has whitespace"):
        bytes(Request("OPTIONS", "rtsp://h/a b"))
    with raises("unsupported RTSP version 'RTSP/1.1'"):
        bytes(Request("OPTIONS", "*", version="RTSP/1.1"))


def test_response_serialization_and_reasons() -> None:
    response = Response(454, "", Headers({"CSeq": "9"}))
    assert bytes(response) == b"RTSP/1.0 454 Session Not Found\r\nCSeq: 9\r\n\r\n"
    assert REASONS[551] == "Option not supported" and REASONS[461] == "Unsupported transport"
    for code in (200, 301, 302, 400, 401, 403, 404, 405, 451, 453, 454, 455, 457, 459, 460):
        assert code in REASONS
    for code in (461, 500, 501, 503, 505, 551):
        assert code in REASONS
    assert bytes(Response(299, "", Headers({"CSeq": "1"}))).startswith(b"RTSP/1.0 299 \r\n")
    with raises("RTSP status code out of range"):
        bytes(Response(99, "x"))
    with raises("RTSP reason phrase has control character"):
        bytes(Response(200, "OK\r\nX: y"))


def test_cseq_property_errors() -> None:
    with raises("RTSP message has no CSeq"):
        _ = Response(200, "OK").cseq
    for bad in ("", "abc", "-1", "12345678901", "１"):
        with raises("RTSP message has invalid CSeq"):
            _ = Request("OPTIONS", "*", Headers({"CSeq": bad})).cseq
    assert Request("OPTIONS", "*", Headers({"CSeq": " 12 "})).cseq == 12


def test_interleaved_frame() -> None:
    frame = Interleaved(1, b"\x80\xc8")
    assert bytes(frame) == b"$\x01\x00\x02\x80\xc8"
    assert bytes(Interleaved(255, b"")) == b"$\xff\x00\x00"
    with raises("interleaved channel out of range"):
        Interleaved(256, b"")
    with raises("interleaved payload exceeds 65535 bytes"):
        Interleaved(0, bytes(65536))


# ---- parsing real exchanges --------------------------------------------------------------


def test_hikvision_like_session_in_one_feed() -> None:
    messages = parse_all(HIK_SERVER_BYTES)
    assert [type(m).__name__ for m in messages] == ["Response"] * 5 + ["Interleaved"] * 2
    options, unauthorized, describe, setup, play, rtp, rtcp = messages
    assert isinstance(options, Response) and options.status == 200 and options.cseq == 1
    assert parse_tokens(options.headers.get("Public", ""))[:3] == ["OPTIONS", "DESCRIBE", "PLAY"]
    assert options.headers.get("Date") == "Wed, Nov 27 2024 08:40:12 GMT"

    assert isinstance(unauthorized, Response) and unauthorized.status == 401
    assert unauthorized.reason == "Unauthorized"
    assert [v.split()[0] for v in unauthorized.headers.get_all("www-authenticate")] == [
        "Digest",
        "Basic",
    ]

    assert isinstance(describe, Response) and describe.body == HIK_SDP
    base = control_base(HIK, describe.headers)
    assert base == "rtsp://192.168.1.64:554/Streaming/Channels/101/"
    control = HIK_SDP.split(b"a=control:")[2].split(b"\r\n")[0].decode()
    assert resolve_control(base, control) == control

    assert isinstance(setup, Response)
    session = parse_session(setup.headers.get("Session", ""))
    assert session == SessionHeader("1273222592", 60)
    (transport,) = parse_transport(setup.headers.get("Transport", ""))
    assert transport.protocol == "RTP/AVP/TCP" and transport.lower_transport == "TCP"
    assert transport.interleaved == (0, 1) and transport.ssrc == 0x5E4C1F2A
    assert transport.mode == "play" and transport.delivery == "unicast"

    assert isinstance(play, Response)
    (info,) = parse_rtp_info(play.headers.get("RTP-Info", ""))
    assert info == RtpInfo(f"{HIK}/trackID=1?transportmode=unicast", 21044, 1726356042)

    assert rtp == Interleaved(0, bytes.fromhex("8060523466e60c4a5e4c1f2a"))
    assert rtcp == Interleaved(1, bytes.fromhex("80c800065e4c1f2a"))


def test_byte_by_byte_feeding_gives_the_same_messages() -> None:
    assert parse_all(HIK_SERVER_BYTES, step=1) == parse_all(HIK_SERVER_BYTES)
    assert parse_all(HIK_SERVER_BYTES, step=7) == parse_all(HIK_SERVER_BYTES)


def test_every_split_point_of_mixed_frames_and_responses() -> None:
    data = (
        bytes(Interleaved(0, b"\x80" * 30))
        + b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nSession: 1273222592\r\n\r\n"
        + bytes(Interleaved(1, b"\x81" * 5))
        + b"GET_PARAMETER rtsp://nvr/x RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 4\r\n\r\nping"
        + bytes(Interleaved(0, b""))
    )
    expected = parse_all(data)
    assert [type(m).__name__ for m in expected] == [
        "Interleaved",
        "Response",
        "Interleaved",
        "Request",
        "Interleaved",
    ]
    for split in range(1, len(data)):
        parser = MessageParser("client")
        assert parser.feed(data[:split]) + parser.feed(data[split:]) == expected, split


def test_axis_like_play_with_several_rtp_info_urls() -> None:
    data = (
        b"RTSP/1.0 200 OK\r\n"
        b"CSeq: 6\r\n"
        b"Session: 0BmFmQkT0TXkYyaN; timeout=60\r\n"
        b"Range: npt=0.000-\r\n"
        b"RTP-Info: url=rtsp://10.0.0.20/axis-media/media.amp/stream=0?videocodec=h264"
        b"&resolution=1920x1080;seq=38617;rtptime=3102463431, "
        b"url=rtsp://10.0.0.20/axis-media/media.amp/stream=1?videocodec=h264"
        b"&resolution=1920x1080;seq=11072;rtptime=2210318409\r\n"
        b"Server: GStreamer RTSP server\r\n"
        b"Date: Wed, 27 Nov 2024 08:41:02 GMT\r\n"
        b"\r\n"
    )
    (play,) = parse_all(data)
    assert isinstance(play, Response)
    assert parse_session(play.headers.get("session", "")) == SessionHeader("0BmFmQkT0TXkYyaN", 60)
    assert parse_range(play.headers.get("Range", "")) == NptRange(0, None)
    infos = parse_rtp_info(play.headers.get("RTP-Info", ""))
    assert [(i.url.rsplit("/", 1)[1], i.seq, i.rtptime) for i in infos] == [
        ("stream=0?videocodec=h264&resolution=1920x1080", 38617, 3102463431),
        ("stream=1?videocodec=h264&resolution=1920x1080", 11072, 2210318409),
    ]


def test_requests_a_server_sends_to_the_client() -> None:
    sdp = b"v=0\r\no=- 0 0 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"
    data = (
        b"ANNOUNCE rtsp://10.0.0.20/stream RTSP/1.0\r\nCSeq: 312\r\nSession: 47112344\r\n"
        b"Content-Type: application/sdp\r\nContent-Length: "
        + str(len(sdp)).encode()
        + b"\r\n\r\n"
        + sdp
        + b"GET_PARAMETER rtsp://10.0.0.20/stream RTSP/1.0\r\nCSeq: 313\r\n\r\n"
        b"SET_PARAMETER rtsp://10.0.0.20/stream RTSP/1.0\r\nCSeq: 314\r\n"
        b"Content-Length: 12\r\n\r\nbarparam: 1\n"
    )
    announce, get, set_ = parse_all(data, "client")
    assert isinstance(announce, Request) and announce.method == "ANNOUNCE"
    assert announce.body == sdp and announce.cseq == 312
    assert isinstance(get, Request) and get.method == "GET_PARAMETER" and get.body == b""
    assert isinstance(set_, Request) and set_.body == b"barparam: 1\n"


def test_server_role_reads_requests_and_interleaved_but_not_responses() -> None:
    rr = bytes(Interleaved(1, b"\x81\xc9\x00\x01\x00\x00\x00\x01"))
    data = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n" + rr
    request, frame = parse_all(data, "server")
    assert isinstance(request, Request) and request.uri == "*" and frame == Interleaved(1, rr[4:])
    with raises("RTSP response where a request was expected"):
        parse_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n", "server")
    with raises("RTSP parser role must be 'client' or 'server'"):
        MessageParser("proxy")  # type: ignore[arg-type]


def test_rtsp_2_0_parses() -> None:
    (request,) = parse_all(b"OPTIONS rtsp://nvr/ RTSP/2.0\r\nCSeq: 1\r\n\r\n", "server")
    assert isinstance(request, Request) and request.version == "RTSP/2.0"
    assert bytes(request).startswith(b"OPTIONS rtsp://nvr/ RTSP/2.0\r\n")


def test_lenient_line_endings_noise_and_folding() -> None:
    data = (
        b"\r\n\r\n\n"  # keep-alive noise some clients send between requests
        b"DESCRIBE rtsp://nvr/live/1 RTSP/1.0\n"
        b"CSeq: 2\n"
        b"Accept: application/sdp,\r\n"
        b"\t application/x-rtsp-mh\n"
        b"CSeq : 2\r\n"
        b"User-Agent: LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)\n"
        b"\n"
    )
    (request,) = parse_all(data, "server")
    assert isinstance(request, Request)
    assert request.headers.get("Accept") == "application/sdp, application/x-rtsp-mh"
    assert request.headers.get_all("cseq") == ["2", "2"]
    # A Latin-1 header value (old firmware) still parses.
    (response,) = parse_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: C\xe1mara\r\n\r\n")
    assert isinstance(response, Response) and response.headers.get("Server") == "C\xe1mara"
    (response,) = parse_all(b"RTSP/1.0 200\r\nCSeq: 1\r\n\r\n")
    assert isinstance(response, Response) and response.reason == ""


# ---- limits and malformed input ----------------------------------------------------------


def test_header_size_limit() -> None:
    start = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Pad: "
    fits = start + b"a" * (16384 - len(start) - 4) + b"\r\n\r\n"
    assert len(fits) == 16384 and len(parse_all(fits, "server")) == 1
    too_long = start + b"a" * (16384 - len(start) - 3) + b"\r\n\r\n"
    with raises("RTSP headers exceed 16384 bytes"):
        parse_all(too_long, "server")
    # Detected before the end of the headers arrives, so nothing grows without bound.
    parser = MessageParser("server")
    assert parser.feed(start + b"a" * 16000) == []
    with raises("RTSP headers exceed 16384 bytes"):
        parser.feed(b"a" * 1000)
    with raises("RTSP headers exceed 16384 bytes"):
        parse_all(start + b"a" * 20000, "server", step=1000)


def test_body_size_limit() -> None:
    head = b"ANNOUNCE rtsp://nvr/x RTSP/1.0\r\nCSeq: 5\r\nContent-Length: %d\r\n\r\n"
    assert len(parse_all(head % MAX_BODY_BYTES + bytes(MAX_BODY_BYTES), "server")) == 1
    with pytest.raises(RtspParseError, match=r"^RTSP body exceeds 1048576 bytes$") as info:
        parse_all(head % (MAX_BODY_BYTES + 1), "server")
    assert info.value.status == 413 and info.value.cseq == 5


def test_header_line_limit() -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(99))
    assert len(parse_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + lines + b"\r\n", "server")) == 1
    with raises("RTSP message has more than 100 header lines"):
        parse_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: 1\r\n" + lines + b"\r\n", "server")


@pytest.mark.parametrize(
    ("data", "message", "status"),
    [
        (b"OPTIONS RTSP/1.0\r\n\r\n", "RTSP request line is malformed", 400),
        (b"OPTIONS  * RTSP/1.0\r\n\r\n", "RTSP request line is malformed", 400),
        (b"OPTIONS * rtsp/1.0\r\n\r\n", "unsupported RTSP version 'rtsp/1.0'", 505),
        (b"OPTIONS \x01 RTSP/1.0\r\n\r\n", "RTSP request line is malformed", 400),
        (b"OPT(ONS * RTSP/1.0\r\n\r\n", "RTSP request line is malformed", 400),
        (b"OPTIONS * RTSP/1.1\r\nCSeq: 1\r\n\r\n", "unsupported RTSP version 'RTSP/1.1'", 505),
        (b"GET / HTTP/1.1\r\nHost: nvr\r\n\r\n", "unsupported RTSP version 'HTTP/1.1'", 505),
        (b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n", "RTSP header line has no colon", 400),
        (b"OPTIONS * RTSP/1.0\r\nC Seq: 1\r\n\r\n", "RTSP header has invalid name", 400),
        (b"OPTIONS * RTSP/1.0\r\n: 1\r\n\r\n", "RTSP header has invalid name", 400),
        (b"OPTIONS * RTSP/1.0\r\n CSeq: 1\r\n\r\n", "RTSP header continuation without header", 400),
        (b"OPTIONS * RTSP/1.0\r\nX: a\x00b\r\n\r\n", "RTSP header has control character", 400),
        (b"OPTIONS * RTSP/1.0\r\nX: a\rb\r\n\r\n", "RTSP header has control character", 400),
        (b"\x00\x01\x02\x03", "RTSP message starts with invalid byte 0x00", 400),
        (b"{OPTIONS * RTSP/1.0\r\n\r\n", "RTSP message starts with invalid byte 0x7b", 400),
    ],
)
def test_malformed_requests(data: bytes, message: str, status: int) -> None:
    with pytest.raises(RtspParseError) as info:
        parse_all(data, "server")
    assert str(info.value) == message and info.value.status == status


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RTSP/1.0 20 OK\r\n\r\n", "RTSP response has invalid status code"),
        (b"RTSP/1.0 2000 OK\r\n\r\n", "RTSP response has invalid status code"),
        (b"RTSP/1.0 099 OK\r\n\r\n", "RTSP response has invalid status code"),
        (b"RTSP/1.0 OK\r\n\r\n", "RTSP response has invalid status code"),
        (b"RTSP/1.0\r\n\r\n", "RTSP response has invalid status code"),
        (b"RTSP/3.0 200 OK\r\n\r\n", "unsupported RTSP version 'RTSP/3.0'"),
        (
            b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n",
            "RTSP message has invalid Content-Length",
        ),
        (
            b"RTSP/1.0 200 OK\r\nContent-Length: 1e3\r\n\r\n",
            "RTSP message has invalid Content-Length",
        ),
        (b"RTSP/1.0 200 OK\r\nContent-Length: \r\n\r\n", "RTSP message has invalid Content-Length"),
        (
            b"RTSP/1.0 200 OK\r\nContent-Length: 9999999999999999\r\n\r\n",
            "RTSP message has invalid Content-Length",
        ),
        (
            b"RTSP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "RTSP message has conflicting Content-Length",
        ),
    ],
)
def test_malformed_responses(data: bytes, message: str) -> None:
    with raises(message):
        parse_all(data)


# ---- error recovery ----------------------------------------------------------------------


def test_skip_bad_request_with_body_and_continue() -> None:
    good = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    bad = b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 2\r\nX Y: 1\r\nContent-Length: 5\r\n\r\nhello"
    after = b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n"
    parser = MessageParser("server")
    with pytest.raises(RtspParseError) as info:
        parser.feed(good + bad + after)
    error = info.value
    assert str(error) == "RTSP header has invalid name" and error.status == 400
    assert error.cseq == 2  # for the 400 response
    assert [m.cseq for m in error.messages if isinstance(m, Request)] == [1]  # not lost
    with raises("RTSP parser needs reset() or skip_to_next_message() after an error"):
        parser.feed(b"")
    (next_request,) = parser.skip_to_next_message()
    assert isinstance(next_request, Request) and next_request.cseq == 3
    assert parser.feed(good) == parse_all(good, "server")
    with raises("RTSP parser has no error to skip"):
        parser.skip_to_next_message()


def test_skip_oversized_body_discards_it_as_it_arrives() -> None:
    parser = MessageParser("server", max_body_bytes=100)
    with raises("RTSP body exceeds 100 bytes"):
        parser.feed(b"ANNOUNCE rtsp://nvr/x RTSP/1.0\r\nCSeq: 8\r\nContent-Length: 5000\r\n\r\n")
    assert parser.skip_to_next_message() == []
    assert parser.feed(b"x" * 4999) == []
    assert len(parser._buf) == 0  # nothing of the rejected body is kept
    (request,) = parser.feed(b"xOPTIONS * RTSP/1.0\r\nCSeq: 9\r\n\r\n")
    assert isinstance(request, Request) and request.cseq == 9


def test_skip_overlong_headers_resyncs_at_the_next_empty_line() -> None:
    parser = MessageParser("server", max_header_bytes=64)
    with pytest.raises(RtspParseError) as info:
        parser.feed(b"DESCRIBE rtsp://nvr/x RTSP/1.0\r\nCSeq: 4\r\nX-Long: " + b"a" * 100)
    assert str(info.value) == "RTSP headers exceed 64 bytes" and info.value.cseq == 4
    assert parser.skip_to_next_message() == []
    assert parser.feed(b"a" * 1000 + b"\r\n") == []
    assert parser.feed(b"\r") == []  # the empty line split across reads
    (request,) = parser.feed(b"\nOPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n")
    assert isinstance(request, Request) and request.cseq == 5


def test_skip_after_bad_version_and_reset() -> None:
    parser = MessageParser("server")
    data = b"PLAY rtsp://nvr/x RTSP/1.1\r\nCSeq: 11\r\n\r\nPLAY rtsp://nvr/x RTSP/1.0\r\nCSeq: 12\r\n\r\n"
    with pytest.raises(RtspParseError) as info:
        parser.feed(data)
    assert info.value.status == 505 and info.value.cseq == 11
    (play,) = parser.skip_to_next_message()
    assert isinstance(play, Request) and play.cseq == 12

    with raises("RTSP message starts with invalid byte 0xff"):
        parser.feed(b"\xff\xfe garbage")
    parser.reset()
    assert parser.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")[0] == Request(
        "OPTIONS", "*", Headers({"CSeq": "1"})
    )


# ---- Transport -----------------------------------------------------------------------------


def test_transport_variants() -> None:
    specs = parse_transport(
        "RTP/AVP;unicast;client_port=4588-4589, RTP/AVP/TCP;unicast;interleaved=0-1,"
        'RTP/AVP;multicast;destination=224.2.0.1;port=3456-3457;ttl=16;mode="PLAY",'
        "rtp/avp/udp;unicast;client_port=5000;server_port=6256-6257;source=10.0.0.20;"
        "ssrc=0000ABCD;mode=PLAY;append;RTCP-mux"
    )
    udp, tcp, multicast, odd = specs
    assert udp == TransportSpec(client_port=(4588, 4589))
    assert udp.lower_transport == "UDP"
    assert tcp == TransportSpec(protocol="RTP/AVP/TCP", interleaved=(0, 1))
    assert multicast.delivery == "multicast" and multicast.destination == "224.2.0.1"
    assert multicast.port == (3456, 3457) and multicast.ttl == 16 and multicast.mode == "PLAY"
    assert odd.protocol == "RTP/AVP/UDP" and odd.client_port == (5000,)
    assert odd.server_port == (6256, 6257) and odd.source == "10.0.0.20" and odd.ssrc == 0xABCD
    assert odd.extra == [("append", None), ("RTCP-mux", None)]
    text = format_transport(specs)
    assert text.split(",")[1] == "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert text.split(",")[3] == (
        "RTP/AVP/UDP;unicast;source=10.0.0.20;client_port=5000;server_port=6256-6257;"
        'ssrc=0000ABCD;mode="PLAY";append;RTCP-mux'
    )
    assert parse_transport(text) == specs


def test_transport_errors() -> None:
    with raises("Transport header is empty"):
        parse_transport(" , ")
    with raises("Transport has invalid protocol"):
        parse_transport("RTP;unicast")
    with raises("Transport has invalid protocol"):
        parse_transport(";unicast")
    with raises("Transport has invalid interleaved"):
        parse_transport("RTP/AVP/TCP;interleaved=0-256")
    with raises("Transport has invalid client_port"):
        parse_transport("RTP/AVP;client_port=70000-70001")
    with raises("Transport has invalid server_port"):
        parse_transport("RTP/AVP;server_port=a-b")
    with raises("Transport has invalid ttl"):
        parse_transport("RTP/AVP;multicast;ttl=256")
    with raises("Transport has invalid ssrc"):
        parse_transport("RTP/AVP;ssrc=123456789")
    with raises("Transport cannot be formatted"):
        format_transport([TransportSpec(destination="a\r\nb")])
    assert parse_transport("RTP/AVP")[0].delivery is None
    assert format_transport([TransportSpec(destination="")]) == "RTP/AVP;unicast;destination"


# ---- Session, Range, RTP-Info, token lists, Scale/Speed ---------------------------------


def test_session_header() -> None:
    assert parse_session("12345678") == SessionHeader("12345678")
    assert parse_session("  1273222592;timeout=60") == SessionHeader("1273222592", 60)
    assert parse_session("0BmFmQkT0TXkYyaN; Timeout = 30 ;x=1").timeout_s == 30
    assert format_session(SessionHeader("47112344", 60)) == "47112344;timeout=60"
    assert format_session(SessionHeader("a$-_.+b")) == "a$-_.+b"
    for bad in ("", " ;timeout=60", "a b", 'a"b', "a,b"):
        with raises("Session header has invalid id"):
            parse_session(bad)
    for bad in ("1;timeout=", "1;timeout=-5", "1;timeout=1.5", "1;timeout=9999999999"):
        with raises("Session header has invalid timeout"):
            parse_session(bad)


# 2009-06-15T11:49:00Z in ns since the epoch
T_114900 = 1245066540 * 10**9


def test_onvif_clock_ranges_round_trip() -> None:
    cases = {
        "clock=20090615T114900.440Z-": ClockRange(T_114900 + 440_000_000, None),
        "clock=-20090615T115000Z": ClockRange(None, T_114900 + 60 * 10**9),
        "clock=20090615T114900.440Z-20090615T115000Z": ClockRange(
            T_114900 + 440_000_000, T_114900 + 60 * 10**9
        ),
        # reverse replay (Scale: -1.0): the range decreases
        "clock=20090615T115000.440Z-20090615T114900Z": ClockRange(
            T_114900 + 60 * 10**9 + 440_000_000, T_114900
        ),
        "clock=20090615T114900.123456789Z-": ClockRange(T_114900 + 123_456_789, None),
        "clock=19961108T143720.25Z-": ClockRange(847463840 * 10**9 + 250_000_000, None),
        "clock": ClockRange(),
    }
    for text, expected in cases.items():
        assert parse_range(text) == expected, text
        assert parse_range(format_range(expected)) == expected, text
    assert format_range(cases["clock=20090615T114900.440Z-"]) == "clock=20090615T114900.440Z-"
    assert format_range(cases["clock=-20090615T115000Z"]) == "clock=-20090615T115000.000Z"
    assert format_range(cases["clock=20090615T114900.123456789Z-"]) == (
        "clock=20090615T114900.123456789Z-"
    )
    assert format_range(ClockRange(T_114900 + 1_200_000, None)) == "clock=20090615T114900.0012Z-"
    assert format_range(ClockRange(-1, None)) == "clock=19691231T235959.999999999Z-"
    # The RFC 2326 ";time=" parameter and lower-case separators from lax clients.
    assert parse_range("clock=20090615t114900z-;time=19970123T143720Z") == ClockRange(
        T_114900, None
    )


def test_npt_ranges() -> None:
    assert parse_range("npt=0-") == NptRange(0, None)
    assert parse_range("npt=0.000-") == NptRange(0, None)
    assert parse_range("npt = now-") == NptRange(None, None, now=True)
    assert parse_range("npt=10-20.5") == NptRange(10 * 10**9, 20_500_000_000)
    assert parse_range("npt=-20") == NptRange(None, 20 * 10**9)
    assert parse_range("npt=1:02:03.5-") == NptRange(3723_500_000_000, None)
    assert parse_range("npt=0.1234567891-") == NptRange(123_456_789, None)
    assert format_range(NptRange(0, None)) == "npt=0.000-"
    assert format_range(NptRange(None, None, now=True)) == "npt=now-"
    assert format_range(NptRange(12_345_000_000, 20 * 10**9)) == "npt=12.345-20.000"
    assert format_range(NptRange(None, 20 * 10**9)) == "npt=-20.000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smpte=10:07:00-10:07:33:05.01", "unsupported Range unit 'smpte'"),
        ("", "unsupported Range unit ''"),
        ("npt=", "Range is malformed"),
        ("npt=-", "Range is malformed"),
        ("npt=10", "Range is malformed"),
        ("clock=", "Range is malformed"),
        ("npt=abc-", "Range npt time is invalid"),
        ("npt=1:60:00-", "Range npt time is invalid"),
        ("npt=0:00:60-", "Range npt time is invalid"),
        ("npt=0-now", "Range npt time is invalid"),
        ("npt=+5-", "Range npt time is invalid"),
        ("clock=20090615T114900-", "Range clock time is invalid"),
        ("clock=20090615T114900.1234567890Z-", "Range clock time is invalid"),
        ("clock=2009061T114900Z-", "Range clock time is invalid"),
        ("clock=20091315T114900Z-", "Range clock time is invalid"),
        ("clock=20090615T246000Z-", "Range clock time is invalid"),
        ("clock=20090615T115960Z-", "Range clock time is invalid"),
    ],
)
def test_range_errors(text: str, message: str) -> None:
    with raises(message):
        parse_range(text)


def test_range_format_errors() -> None:
    with raises("Range is malformed"):
        format_range(NptRange(None, None))
    with raises("Range npt time is negative"):
        format_range(NptRange(-1, None))


def test_rtp_info() -> None:
    value = (
        "url=rtsp://cam/live/trackID=1;seq=9810092;rtptime=3450012, url=trackID=2;seq=0, "
        'url="rtsp://cam/a,b";seq=65535;rtptime=4294967295;ssrc=0A0B0C0D'
    )
    with raises("RTP-Info seq is invalid"):
        parse_rtp_info(value)
    value = value.replace("9810092", "10092")
    infos = parse_rtp_info(value)
    assert infos == [
        RtpInfo("rtsp://cam/live/trackID=1", 10092, 3450012),
        RtpInfo("trackID=2", 0, None),  # relative, as some cameras send: resolve as a control
        RtpInfo("rtsp://cam/a,b", 65535, 4294967295),
    ]
    assert resolve_control("rtsp://cam/live/", infos[1].url) == "rtsp://cam/live/trackID=2"
    assert parse_rtp_info("url=rtsp://cam/x?a=1,b=2") == [RtpInfo("rtsp://cam/x?a=1,b=2")]
    assert format_rtp_info(infos[:2]) == (
        "url=rtsp://cam/live/trackID=1;seq=10092;rtptime=3450012,url=trackID=2;seq=0"
    )
    assert parse_rtp_info(format_rtp_info(infos[:2])) == infos[:2]
    with raises("RTP-Info rtptime is invalid"):
        parse_rtp_info("url=rtsp://cam/x;rtptime=4294967296")
    with raises("RTP-Info rtptime is invalid"):
        parse_rtp_info("url=rtsp://cam/x;rtptime=-1")
    with raises("RTP-Info entry has no url"):
        parse_rtp_info("seq=1;rtptime=2")
    with raises("RTP-Info entry has no url"):
        parse_rtp_info("url=;seq=1")
    with raises("RTP-Info header is empty"):
        parse_rtp_info(" , ")
    with raises("RTP-Info url is empty or has whitespace"):
        format_rtp_info([RtpInfo("rtsp://cam/a b")])


def test_token_lists() -> None:
    assert parse_tokens("onvif-replay") == ["onvif-replay"]
    assert parse_tokens(" OPTIONS,DESCRIBE , SETUP,,") == ["OPTIONS", "DESCRIBE", "SETUP"]
    assert parse_tokens("") == []
    assert format_tokens(["OPTIONS", "DESCRIBE"]) == "OPTIONS, DESCRIBE"
    with raises("invalid token 'OPTIONS DESCRIBE' in list"):
        parse_tokens("OPTIONS DESCRIBE")
    with raises("invalid token 'a;b' in list"):
        format_tokens(["a;b"])
    # Require may come in several header fields.
    headers = Headers([("Require", "onvif-replay"), ("Require", "play.basic")])
    assert parse_tokens(", ".join(headers.get_all("require"))) == ["onvif-replay", "play.basic"]


def test_scale_and_speed() -> None:
    assert parse_scale("-1.0") == -1.0 and parse_scale(" 2 ") == 2.0 and parse_scale(".5") == 0.5
    assert (
        format_scale(-1.0) == "-1.0" and format_scale(0.25) == "0.25" and format_scale(4) == "4.0"
    )
    assert parse_speed("2.5") == 2.5 and format_speed(1.0) == "1.0"
    for bad in ("0", "inf", "nan", "1e3", "", "1_0", "--1"):
        with raises("Scale is invalid"):
            parse_scale(bad)
    for bad in ("0", "-1.0", "fast"):
        with raises("Speed is invalid"):
            parse_speed(bad)
    with raises("Scale is invalid"):
        format_scale(float("nan"))
    with raises("Speed is invalid"):
        format_speed(-2.0)


# ---- URLs ---------------------------------------------------------------------------------


def test_resolve_control() -> None:
    base = "rtsp://192.168.1.64:554/Streaming/Channels/101"
    assert resolve_control(base, "trackID=1") == f"{base}/trackID=1"  # no slash: appended
    assert resolve_control(base + "/", "trackID=1") == f"{base}/trackID=1"
    assert resolve_control(base, "*") == base
    assert resolve_control(base, "") == base
    assert resolve_control(base, "rtsp://10.0.0.2/stream/track1") == "rtsp://10.0.0.2/stream/track1"
    assert resolve_control(base, "RTSP://h/x") == "RTSP://h/x"
    assert resolve_control(base, "/other/track2") == "rtsp://192.168.1.64:554/other/track2"
    axis = "rtsp://10.0.0.20/axis-media/media.amp/"
    assert resolve_control(axis, "stream=0") == f"{axis}stream=0"
    # Dahua-style base: the query is part of the string the control is appended to.
    dahua = "rtsp://10.0.0.30:554/cam/realmonitor?channel=1&subtype=0/"
    assert resolve_control(dahua, "trackID=0") == f"{dahua}trackID=0"


def test_control_base_order() -> None:
    url = "rtsp://cam/live"
    assert control_base(url, Headers()) == url
    assert control_base(url, Headers({"Content-Location": "rtsp://cam/loc/"})) == "rtsp://cam/loc/"
    both = Headers({"Content-Location": "rtsp://cam/loc/", "Content-Base": "rtsp://cam/base/"})
    assert control_base(url, both) == "rtsp://cam/base/"
    assert control_base(url, Headers({"Content-Base": "/abs/"})) == "rtsp://cam/abs/"
    assert parse_content_base(" rtsp://cam/base/ ") == "rtsp://cam/base/"
    with raises("Content-Base is not an absolute URL"):
        parse_content_base("trackID=1")


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:12345@192.168.1.64:554/Streaming/Channels/101") == (
        "rtsp://192.168.1.64:554/Streaming/Channels/101"
    )
    assert redact_url("rtsp://admin:p@ss@cam/live") == "rtsp://cam/live"
    assert redact_url("rtsps://user@cam") == "rtsps://cam"
    assert redact_url("rtsp://cam:554/live?x=1") == "rtsp://cam:554/live?x=1"
    assert redact_url("rtsp://cam:554/path@with-at") == "rtsp://***@with-at"  # ambiguous: masked
    assert redact_url("rtsp://admin:pa/ss@cam/live") == "rtsp://***@cam/live"
    assert redact_url("http://cam/cgi?user=admin&password=secret&x=1") == (
        "http://cam/cgi?user=admin&password=***&x=1"
    )
    assert redact_url("not a url") == "not a url"
