"""SDP parsing and building against descriptions in the style of real cameras and servers.

The descriptions are written for these tests (no captures are committed); each follows the
habits of one family of senders: line order, vendor attributes, sloppy spacing, line ends.
"""

from __future__ import annotations

import random

import pytest

from onvif_nvr.media.units import AudioParameters
from onvif_nvr.rtsp.sdp import (
    AuHeaderLengths,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    aac_au_header_lengths,
    aac_config,
    audio_media_aac,
    audio_media_pcm,
    audio_parameters,
    h264_parameter_sets,
    h265_parameter_sets,
    metadata_media_onvif,
    parse_fmtp,
    resolve_control_url,
    video_media_h264,
    video_media_h265,
)

SPS_MAIN = bytes.fromhex("674d00299a6281e0089f9701")
PPS_MAIN = bytes.fromhex("68ee3c80")
SPS_HIGH = bytes.fromhex("6764001facd9405005ba10")
PPS_HIGH = bytes.fromhex("68ebe3cb22c0")
VPS_265 = bytes.fromhex("40010c01ffff016000")
SPS_265 = bytes.fromhex("420101016000000300b0")
PPS_265 = bytes.fromhex("4401c172b46240")


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# Hikvision: session b=, e=NONE, absolute controls with a query, vendor attributes, the
# space after each fmtp ";", an audio track on static PT 0. Written in canonical order, so
# serializing reproduces it byte for byte.
HIKVISION = crlf(
    """v=0
o=- 1767225600123456 1767225600123456 IN IP4 192.168.1.64
s=Media Presentation
e=NONE
b=AS:5100
t=0 0
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
b=AS:5000
a=recvonly
a=x-dimensions:2560,1440
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1?transportmode=unicast
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=4D0029; packetization-mode=1; sprop-parameter-sets=Z00AKZpigeAIn5cB,aO48gA==
a=Media_header:MEDIAINFO=494D4B48010300000400000100000000000000000000000000000000000000000000000000000000;
a=appversion:1.0
m=audio 0 RTP/AVP 0
c=IN IP4 0.0.0.0
b=AS:50
a=recvonly
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=2?transportmode=unicast
a=rtpmap:0 PCMU/8000
"""
)

# Axis: GStreamer-based server, i= line, range, transform matrix, AAC over mpeg4-generic
# with config=, and an ONVIF metadata track.
AXIS = crlf(
    """v=0
o=- 4015393290734052834 1 IN IP4 192.168.0.90
s=Session streamed with GStreamer
i=rtsp-server
t=0 0
a=tool:GStreamer
a=type:broadcast
a=range:npt=now-
a=control:rtsp://192.168.0.90/axis-media/media.amp?videocodec=h264&audio=1
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
b=AS:50000
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;profile-level-id=4d0029;sprop-parameter-sets=Z00AKZpigeAIn5cB,aO48gA==
a=control:rtsp://192.168.0.90/axis-media/media.amp/trackID=1?videocodec=h264&audio=1
a=framerate:30.000000
a=transform:1.000000,0.000000,0.000000;0.000000,1.000000,0.000000;0.000000,0.000000,1.000000
m=audio 0 RTP/AVP 97
c=IN IP4 0.0.0.0
b=AS:32
a=rtpmap:97 MPEG4-GENERIC/16000/1
a=fmtp:97 streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1408;sizelength=13;indexlength=3;indexdeltalength=3;bitrate=32000
a=control:rtsp://192.168.0.90/axis-media/media.amp/trackID=2?videocodec=h264&audio=1
m=application 0 RTP/AVP 98
c=IN IP4 0.0.0.0
a=rtpmap:98 vnd.onvif.metadata/90000
a=control:rtsp://192.168.0.90/axis-media/media.amp/trackID=3?videocodec=h264&audio=1
"""
)

# Dahua: LF-only line ends, trailing spaces, session-level c=, relative controls that are
# appended to a URL with a query, H.265 with the parameter sets out of order, G.711 A-law.
DAHUA = """v=0<SP>
o=- 2252321456 2252321456 IN IP4 0.0.0.0
s=Media Server
c=IN IP4 0.0.0.0
t=0 0
a=control:*
a=packetization-supported:DH
a=rtppayload-supported:DH
a=range:npt=now-
m=video 0 RTP/AVP 98
a=control:trackID=0
a=framerate:25.000000<SP>
a=rtpmap:98 H265/90000
a=fmtp:98 profile-id=1;sprop-sps=QgEBAWAAAAMAsA==;sprop-pps=RAHBcrRiQA==;sprop-vps=QAEMAf//AWAA
a=recvonly
m=audio 0 RTP/AVP 8
a=control:trackID=1
a=rtpmap:8 PCMA/8000
a=recvonly
m=application 0 RTP/AVP 107
a=control:trackID=4
a=rtpmap:107 vnd.onvif.metadata/90000
a=recvonly
""".replace("<SP>", " ")

# GStreamer rtsp-server serving ONVIF replay: clock range, x-onvif-track per stream.
GSTREAMER_REPLAY = crlf(
    """v=0
o=- 1188340656180883 1 IN IP4 127.0.0.1
s=Session streamed with GStreamer
i=rtsp-server
t=0 0
a=tool:GStreamer
a=type:broadcast
a=range:clock=20260101T000000Z-20260101T010000Z
a=control:*
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
a=rtpmap:96 H264/90000
a=framerate:25
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAH6zZQFAFuhA=,aOvjyyLA;profile-level-id=64001f
a=control:stream=0
a=x-onvif-track:VIDEO001
a=ts-refclk:local
a=mediaclk:sender
m=application 0 RTP/AVP 97
c=IN IP4 0.0.0.0
a=rtpmap:97 vnd.onvif.metadata/90000
a=control:stream=1
a=x-onvif-track:METADATA001
a=ts-refclk:local
a=mediaclk:sender
"""
)

# ffmpeg (libavformat) serving a file: spaces after ";", upper-case hex profile, AAC stereo.
FFMPEG = crlf(
    """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat 61.7.100
m=video 0 RTP/AVP 96
b=AS:2000
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuhA=,aOvjyyLA; profile-level-id=64001F
a=control:streamid=0
m=audio 0 RTP/AVP 97
b=AS:128
a=rtpmap:97 MPEG4-GENERIC/44100/2
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1210
a=control:streamid=1
"""
)

# A cheap camera: G.711 on static payload types without rtpmap, MJPEG on PT 26.
STATIC_PT = crlf(
    """v=0
o=- 1 1 IN IP4 10.0.0.20
s=IPCamera
t=0 0
m=video 0 RTP/AVP 26
a=control:track1
m=audio 0 RTP/AVP 0 8 14
a=control:track2
"""
)

ALL = [HIKVISION, AXIS, DAHUA, GSTREAMER_REPLAY, FFMPEG, STATIC_PT]


def test_hikvision() -> None:
    sdp = SessionDescription.parse(HIKVISION)
    assert sdp.origin == Origin(
        "-", "1767225600123456", "1767225600123456", "IN", "IP4", "192.168.1.64"
    )
    assert sdp.session_name == "Media Presentation"
    assert sdp.bandwidths == [("AS", 5100)]
    assert sdp.other == [("e", "NONE")]
    assert sdp.control == "rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast"
    video, audio = sdp.media
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", [96])
    assert video.connection == Connection("IN", "IP4", "0.0.0.0")
    assert video.bandwidths == [("AS", 5000)]
    assert video.direction == "recvonly"
    assert video.rtpmap(96) == RtpMap("H264", 90000, 1)
    fmtp = video.fmtp(96)
    assert fmtp["profile-level-id"] == "4D0029"
    assert fmtp["packetization-mode"] == "1"
    assert h264_parameter_sets(fmtp) == (SPS_MAIN, PPS_MAIN)
    assert video.attribute("x-dimensions") == "2560,1440"
    assert video.framerate is None
    control = video.control
    assert control is not None
    assert resolve_control_url("rtsp://192.168.1.64/Streaming/Channels/101", control) == control
    assert audio.rtpmap(0) == RtpMap("PCMU", 8000, 1)
    assert audio_parameters(audio, 0) == AudioParameters("PCMU", 8000, 1)
    # Canonical line order and CRLF: serializing gives back the same text.
    assert str(sdp) == HIKVISION
    assert bytes(sdp) == HIKVISION.encode()


def test_axis_aac_and_metadata() -> None:
    sdp = SessionDescription.parse(AXIS)
    assert sdp.other == [("i", "rtsp-server")]
    assert sdp.attribute("type") == "broadcast"
    assert sdp.attribute("range") == "npt=now-"
    video, audio, metadata = sdp.media
    assert video.framerate == 30.0
    assert h264_parameter_sets(video.fmtp(96)) == (SPS_MAIN, PPS_MAIN)
    assert audio.rtpmap(97) == RtpMap("MPEG4-GENERIC", 16000, 1)
    fmtp = audio.fmtp(97)
    assert aac_config(fmtp) == b"\x14\x08"  # AAC LC, 16 kHz, mono
    assert aac_au_header_lengths(fmtp) == AuHeaderLengths(13, 3, 3)
    assert fmtp["bitrate"] == "32000"
    assert audio_parameters(audio, 97) == AudioParameters("AAC", 16000, 1, b"\x14\x08")
    assert metadata.media == "application"
    assert metadata.rtpmap(98) == RtpMap("vnd.onvif.metadata", 90000, 1)
    assert audio_parameters(metadata, 98) is None
    assert sdp.effective_direction(video) == "sendrecv"
    assert str(sdp) == AXIS


def test_dahua_lf_only_h265() -> None:
    sdp = SessionDescription.parse(DAHUA)
    assert sdp.version == 0
    assert sdp.connection == Connection("IN", "IP4", "0.0.0.0")
    assert sdp.control == "*"
    video, audio, metadata = sdp.media
    assert video.framerate == 25.0
    assert video.rtpmap(98) == RtpMap("H265", 90000, 1)
    # Always VPS, SPS, PPS, whatever the order in the fmtp line.
    assert h265_parameter_sets(video.fmtp(98)) == (VPS_265, SPS_265, PPS_265)
    assert audio.rtpmap(8) == RtpMap("PCMA", 8000, 1)
    assert audio_parameters(audio, 8) == AudioParameters("PCMA", 8000, 1)
    assert metadata.formats == [107]
    assert metadata.direction == "recvonly"
    base = "rtsp://10.1.1.108:554/cam/realmonitor?channel=1&subtype=0"
    assert resolve_control_url(base, sdp.control) == base
    assert resolve_control_url(base, video.control) == base + "/trackID=0"
    assert resolve_control_url(base + "/", video.control) == base + "/trackID=0"
    text = str(sdp)
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    assert "a=framerate:25.000000\r\n" in text  # trailing space gone


def test_gstreamer_replay_tracks() -> None:
    sdp = SessionDescription.parse(GSTREAMER_REPLAY)
    assert sdp.attribute("range") == "clock=20260101T000000Z-20260101T010000Z"
    video, metadata = sdp.media
    assert video.onvif_track == "VIDEO001"
    assert metadata.onvif_track == "METADATA001"
    assert video.framerate == 25.0
    assert video.fmtp(96)["profile-level-id"] == "64001f"
    assert h264_parameter_sets(video.fmtp(96)) == (SPS_HIGH, PPS_HIGH)
    assert video.attributes_named("mediaclk") == ["sender"]
    assert video.control == "stream=0"
    assert str(sdp) == GSTREAMER_REPLAY


def test_ffmpeg() -> None:
    sdp = SessionDescription.parse(FFMPEG)
    assert sdp.session_name == "No Name"
    video, audio = sdp.media
    assert video.fmtp(96)["profile-level-id"] == "64001F"
    assert h264_parameter_sets(video.fmtp(96)) == (SPS_HIGH, PPS_HIGH)
    assert audio.rtpmap(97) == RtpMap("MPEG4-GENERIC", 44100, 2)
    assert aac_config(audio.fmtp(97)) == b"\x12\x10"
    assert audio_parameters(audio, 97) == AudioParameters("AAC", 44100, 2, b"\x12\x10")
    assert str(sdp) == FFMPEG


def test_static_payload_types_without_rtpmap() -> None:
    sdp = SessionDescription.parse(STATIC_PT)
    video, audio = sdp.media
    assert video.rtpmap(26) == RtpMap("JPEG", 90000, 1)
    assert audio.formats == [0, 8, 14]
    assert audio.rtpmap(0) == RtpMap("PCMU", 8000, 1)
    assert audio.rtpmap(8) == RtpMap("PCMA", 8000, 1)
    assert audio.rtpmap(14) == RtpMap("MPA", 90000, 1)
    assert audio.rtpmap(96) is None
    assert audio.fmtp(0) == {}
    assert audio_parameters(audio, 8) == AudioParameters("PCMA", 8000, 1)


@pytest.mark.parametrize("text", ALL)
def test_round_trip(text: str) -> None:
    first = SessionDescription.parse(text)
    serialized = str(first)
    assert serialized.endswith("\r\n")
    again = SessionDescription.parse(serialized)
    assert again == first
    assert str(again) == serialized
    assert SessionDescription.parse(serialized.encode()) == first


def test_lenient_input() -> None:
    text = (
        "o=StreamingServer 3331435948 1116907222000\r"  # CR only, too few origin fields
        "s=\r"
        "\r"
        "b=AS:unknown\r"
        "x=vendor line\r"
        "m=video 554/2 RTP/AVP/TCP 96 text-format\r"
        "a=rtpmap:96 H264\r"  # no clock rate: not usable
        "a=fmtp:96  Packetization-Mode=1 ;; sprop-parameter-sets = Z2QAH6zZ QFAFuhA,aOvjyyLA==== \r"
        "a=SENDONLY\r"
        "k=prompt\r\x00\x00"
    )
    sdp = SessionDescription.parse(text)
    assert sdp.version == 0
    assert sdp.origin == Origin(
        "StreamingServer", "3331435948", "1116907222000", "IN", "IP4", "0.0.0.0"
    )
    assert sdp.session_name == "-"
    assert sdp.timing == [(0, 0)]  # t= missing
    assert sdp.other == [("b", "AS:unknown"), ("x", "vendor line")]
    (media,) = sdp.media
    assert (media.port, media.port_count, media.proto) == (554, 2, "RTP/AVP/TCP")
    assert media.formats == [96, "text-format"]
    assert media.rtpmap(96) is None
    fmtp = media.fmtp(96)
    assert fmtp["packetization-mode"] == "1"
    assert h264_parameter_sets(fmtp) == (SPS_HIGH, PPS_HIGH)
    assert media.direction == "sendonly"
    assert media.other == [("k", "prompt")]
    assert sdp.effective_direction(media) == "sendonly"
    serialized = str(sdp)
    assert serialized.startswith(
        "v=0\r\no=StreamingServer 3331435948 1116907222000 IN IP4 0.0.0.0\r\n"
    )
    assert "m=video 554/2 RTP/AVP/TCP 96 text-format\r\n" in serialized
    assert SessionDescription.parse(serialized) == sdp


def test_session_direction_applies_to_media() -> None:
    sdp = SessionDescription.parse(
        "v=0\nt=0 0\na=recvonly\nm=audio 0 RTP/AVP 0\nm=video 0 RTP/AVP 26\na=inactive\n"
    )
    audio, video = sdp.media
    assert audio.direction is None
    assert sdp.effective_direction(audio) == "recvonly"
    assert sdp.effective_direction(video) == "inactive"


def test_attribute_helpers() -> None:
    sdp = SessionDescription.parse("v=0\na=recvonly\na=tool:x\na=Tool:y\na=empty:\n")
    assert sdp.attribute("tool") == "x"
    assert sdp.attributes_named("TOOL") == ["x", "y"]
    assert sdp.attribute("recvonly") is None
    assert sdp.has_attribute("recvonly")
    assert sdp.attribute("empty") == ""
    assert sdp.attribute("missing") is None
    assert not sdp.has_attribute("missing")
    assert str(sdp).endswith("a=recvonly\r\na=tool:x\r\na=Tool:y\r\na=empty:\r\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v=0\nm=video 0 RTP/AVP\n", "SDP media line has no formats"),
        ("v=0\nm=video 0 RTP/AVP \n", "SDP media line has no formats"),
        ("v=0\nm=video RTP/AVP\n", "SDP media line is incomplete"),
        ("v=0\nm=video abc RTP/AVP 96\n", "SDP media line has invalid port"),
        ("v=0\nm=video -1 RTP/AVP 96\n", "SDP media line has invalid port"),
        ("v=0\nm=video 5000/x RTP/AVP 96\n", "SDP media line has invalid port"),
        ("v=zero\n", "SDP version is not a number"),
        ("v=0\nc=IN IP4\n", "SDP connection line is invalid"),
        ("v=0\nm=audio 0 RTP/AVP 0\nc=IN\n", "SDP connection line is invalid"),
        ("v=0\nthis is not sdp\n", "SDP line is not <type>=<value>: 'this is not sdp'"),
        ("v=0\n=x\n", "SDP line is not <type>=<value>: '=x'"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        SessionDescription.parse(text)
    assert str(info.value) == message


def test_parse_fmtp() -> None:
    assert parse_fmtp("Packetization-Mode=1;PROFILE-level-id=42E01F; ;x-flag;a=b=c") == {
        "packetization-mode": "1",
        "profile-level-id": "42E01F",
        "x-flag": "",
        "a": "b=c",
    }
    brief = (
        "packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0LAH9oBQFuw,aM48gA=="
    )
    fmtp = parse_fmtp(brief)
    assert h264_parameter_sets(fmtp) == (
        bytes.fromhex("6742c01fda01405bb0"),
        bytes.fromhex("68ce3c80"),
    )


@pytest.mark.parametrize(
    "value",
    [
        "Z2QAH6zZQFAFuhA=,aOvjyyLA",
        "Z2QAH6zZQFAFuhA,aOvjyyLA",  # padding missing
        "Z2QAH6zZQFAFuhA==,aOvjyyLA=",  # too much padding
        " Z2QAH6zZ\tQFAFuhA= , aOvjyyLA ",  # whitespace
        "Z2QAH6zZQFAFuhA=,,aOvjyyLA,",  # empty entries
        "Z2QAH6zZQFAFuhA=,a,aOvjyyLA",  # an entry that cannot decode is skipped
    ],
)
def test_parameter_sets_are_decoded_tolerantly(value: str) -> None:
    assert h264_parameter_sets({"sprop-parameter-sets": value}) == (SPS_HIGH, PPS_HIGH)


def test_parameter_sets_url_safe_alphabet() -> None:
    fmtp = {"sprop-vps": "QAEMAf__AWAA", "sprop-sps": "QgEBAWAAAAMAsA", "sprop-pps": ""}
    assert h265_parameter_sets(fmtp) == (VPS_265, SPS_265)
    assert h264_parameter_sets({}) == ()


def test_aac_errors_and_defaults() -> None:
    assert aac_config({}) == b""
    with pytest.raises(ValueError) as info:
        aac_config({"config": "14G8"})
    assert str(info.value) == "SDP fmtp config is not hex"
    assert aac_au_header_lengths({}) == AuHeaderLengths(0, 0, 0)
    assert aac_au_header_lengths({"mode": "AAC-hbr"}) == AuHeaderLengths(13, 3, 3)
    assert aac_au_header_lengths({"mode": "AAC-lbr", "sizelength": "6", "indexlength": "2"}) == (
        AuHeaderLengths(6, 2, 0)
    )
    with pytest.raises(ValueError) as info:
        aac_au_header_lengths({"sizelength": "13bits"})
    assert str(info.value) == "SDP fmtp sizelength is not a number"


# --- Builders -------------------------------------------------------------------------------


def test_server_description_exact_text() -> None:
    sdp = SessionDescription(
        origin=Origin("-", "42", "1", "IN", "IP4", "192.0.2.10"),
        session_name="onvif-nvr",
        connection=Connection("IN", "IP4", "0.0.0.0"),
        attributes=[("control", "*"), ("range", "npt=now-")],
        media=[
            video_media_h264(96, "trackID=0", [SPS_HIGH, PPS_HIGH]),
            audio_media_aac(97, "trackID=1", 16000, 1, b"\x14\x08"),
            audio_media_pcm(0, "trackID=2"),
            metadata_media_onvif(107, "trackID=3"),
        ],
    )
    assert str(sdp) == crlf(
        """v=0
o=- 42 1 IN IP4 192.0.2.10
s=onvif-nvr
c=IN IP4 0.0.0.0
t=0 0
a=control:*
a=range:npt=now-
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;profile-level-id=64001f;sprop-parameter-sets=Z2QAH6zZQFAFuhA=,aOvjyyLA
a=control:trackID=0
m=audio 0 RTP/AVP 97
a=rtpmap:97 MPEG4-GENERIC/16000/1
a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1408
a=control:trackID=1
m=audio 0 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=control:trackID=2
m=application 0 RTP/AVP 107
a=rtpmap:107 vnd.onvif.metadata/90000
a=control:trackID=3
"""
    )
    parsed = SessionDescription.parse(str(sdp))
    assert parsed == sdp
    video, aac, pcm, _ = parsed.media
    assert h264_parameter_sets(video.fmtp(96)) == (SPS_HIGH, PPS_HIGH)
    assert audio_parameters(aac, 97) == AudioParameters("AAC", 16000, 1, b"\x14\x08")
    assert aac_au_header_lengths(aac.fmtp(97)) == AuHeaderLengths(13, 3, 3)
    assert audio_parameters(pcm, 0) == AudioParameters("PCMU", 8000, 1)


def test_h264_builder_options() -> None:
    media = video_media_h264(
        98,
        "rtsp://nvr/replay/1/video",
        [SPS_MAIN, PPS_MAIN],
        profile_level_id="4d0029",
        packetization_mode=0,
    )
    assert media.fmtp(98)["packetization-mode"] == "0"
    assert media.fmtp(98)["profile-level-id"] == "4d0029"
    assert media.control == "rtsp://nvr/replay/1/video"
    bare = video_media_h264(96, "v", [])
    assert bare.fmtp(96) == {"packetization-mode": "1"}


def test_h265_builder_sorts_parameter_sets() -> None:
    media = video_media_h265(96, "trackID=0", [PPS_265, SPS_265, VPS_265])
    assert isinstance(media, MediaDescription)
    assert media.rtpmap(96) == RtpMap("H265", 90000, 1)
    assert media.attribute("fmtp") == (
        "96 sprop-vps=QAEMAf//AWAA;sprop-sps=QgEBAWAAAAMAsA==;sprop-pps=RAHBcrRiQA=="
    )
    assert h265_parameter_sets(media.fmtp(96)) == (VPS_265, SPS_265, PPS_265)
    assert not video_media_h265(96, "v", []).has_attribute("fmtp")


def test_pcm_builder() -> None:
    alaw = audio_media_pcm(8, "a", "PCMA")
    assert alaw.attribute("rtpmap") == "8 PCMA/8000"
    wide = audio_media_pcm(100, "a", "PCMU", 16000, 2)
    assert wide.rtpmap(100) == RtpMap("PCMU", 16000, 2)
    with pytest.raises(ValueError) as info:
        audio_media_pcm(0, "a", "L16")
    assert str(info.value) == "PCM codec must be PCMU or PCMA"


def test_mangled_descriptions_raise_only_value_error() -> None:
    rng = random.Random(8866)
    for _ in range(3000):
        chars = list(rng.choice(ALL))
        for _ in range(rng.randrange(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice("= :/;,0123456789\n\r\x00am²-")
        try:
            sdp = SessionDescription.parse("".join(chars))
        except ValueError:
            continue
        assert SessionDescription.parse(str(sdp)) == sdp
        for media in sdp.media:
            for pt in media.formats:
                if isinstance(pt, int):
                    media.rtpmap(pt)
                    h264_parameter_sets(media.fmtp(pt))
                    h265_parameter_sets(media.fmtp(pt))
