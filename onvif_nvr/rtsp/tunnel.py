"""RTSP over HTTP (Apple's "Tunneling QuickTime RTSP and RTP over HTTP", ONVIF Streaming
§5.1.1.5): the HTTP side of the client's tunnel. Sans-IO.

Two TCP connections to the camera's HTTP port share a session cookie:

* GET, ``Accept: application/x-rtsp-tunnelled``: the camera answers ``200 OK`` and the rest
  of the connection is the server-to-client RTSP byte stream (responses and interleaved
  frames), read exactly as on an RTSP/TCP connection;
* POST, ``Content-Type: application/x-rtsp-tunnelled``: its body is the client-to-server
  stream, each RTSP message (and each interleaved RTCP frame) base64-encoded on its own. No
  reply comes on it.

The POST declares ``Content-Length: 32767`` as Apple's note, live555, VLC and FFmpeg do:
servers ignore it, and some camera web servers refuse larger values.
"""

from __future__ import annotations

import base64
import secrets

from onvif_nvr.rtsp.message import Headers

TUNNEL_CONTENT_TYPE = "application/x-rtsp-tunnelled"
POST_CONTENT_LENGTH = 32767
MAX_HEAD_BYTES = 16384


class TunnelError(ValueError):
    """The camera's HTTP answer to the tunnel's GET cannot be read."""


def new_cookie() -> str:
    """A fresh ``x-sessioncookie`` (22 random characters, as QuickTime uses)."""
    return secrets.token_urlsafe(16)[:22]


def _request(method: str, target: str, host: str, fields: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.0", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in fields]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError("HTTP request field contains a line break")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def get_request(
    target: str, host: str, cookie: str, user_agent: str, authorization: str | None = None
) -> bytes:
    """The GET that opens the server-to-client half."""
    fields = [
        ("User-Agent", user_agent),
        ("x-sessioncookie", cookie),
        ("Accept", TUNNEL_CONTENT_TYPE),
        ("Pragma", "no-cache"),
        ("Cache-Control", "no-cache"),
    ]
    if authorization is not None:
        fields.append(("Authorization", authorization))
    return _request("GET", target, host, fields)


def post_request(
    target: str, host: str, cookie: str, user_agent: str, authorization: str | None = None
) -> bytes:
    """The head of the POST whose body carries the client-to-server half."""
    fields = [
        ("User-Agent", user_agent),
        ("x-sessioncookie", cookie),
        ("Content-Type", TUNNEL_CONTENT_TYPE),
        ("Pragma", "no-cache"),
        ("Cache-Control", "no-cache"),
        ("Content-Length", str(POST_CONTENT_LENGTH)),
        ("Expires", "Sun, 9 Jan 1972 00:00:00 GMT"),
    ]
    if authorization is not None:
        fields.append(("Authorization", authorization))
    return _request("POST", target, host, fields)


def encode(data: bytes) -> bytes:
    """One client-to-server message as it goes into the POST body."""
    return base64.b64encode(data)


def parse_response_head(buf: bytes | bytearray) -> tuple[int, str, Headers, int] | None:
    """(status, reason, headers, length of the head) of an HTTP response at the start of
    ``buf``, or None while its empty line has not arrived. Raises :class:`TunnelError`."""
    end = buf.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = buf.find(b"\n\n"), 2
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise TunnelError("HTTP response head is too long")
        return None
    text = bytes(buf[:end]).decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.strip().partition(" ")
    if not version.upper().startswith(("HTTP/", "RTSP/")) or not (
        code.isascii() and code.isdigit() and len(code) == 3
    ):
        raise TunnelError("not an HTTP response")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip():
            try:
                headers.add(name.strip(), value.strip())
            except ValueError:
                continue  # a field we cannot represent: not one the tunnel needs

    return int(code), reason.strip(), headers, end + sep
