"""Replay service (trp, ReplayControl specification): where a recording is played from, and
the RTSP session timeout replay sessions get.

Every operation of the ReplayBinding of the 26.06 WSDL. GetReplayUri answers
``rtsp://<the host the client used>:<rtsp port>/replay/<recording token>`` for RTP-Unicast
over UDP, RTSP and the deprecated TCP (RTP interleaved in RTSP), and the same resource
through the RTSP-over-HTTP tunnel on the SOAP port (``<http base>/rtsp-tunnel/replay/<token>``,
as the Media service's stream URIs) for HTTP; RTP-Multicast is ``ter:InvalidStreamSetup``
(a replay is one client's own timeline). An unknown recording is ``ter:NoRecording``. The session timeout is persisted in the settings store
(``replay_session_timeout_s``); SetReplayConfiguration outside SessionTimeoutRange is
``ter:ConfigModify``.
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Callable
from typing import Any

from lxml import etree

from onvif_nvr.errors import InvalidArgument
from onvif_nvr.recording.control import RecordingControl
from onvif_nvr.services.common import optional, render_service_capabilities
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.system.store import SettingsStore
from onvif_nvr.wsdl.catalog import Binding

#: The settings store key of the replay session timeout (seconds).
SESSION_TIMEOUT_KEY = "replay_session_timeout_s"
#: SessionTimeoutRange (seconds): what the RTSP server accepts as a session timeout.
MIN_SESSION_TIMEOUT_S = 5
MAX_SESSION_TIMEOUT_S = 3600
DEFAULT_SESSION_TIMEOUT_S = 60
#: tt:TransportProtocol values served over RTSP (TCP is the deprecated name of RTSP); HTTP is
#: the RTSP-over-HTTP tunnel on the SOAP port.
RTSP_PROTOCOLS = frozenset({"UDP", "TCP", "RTSP"})
#: The RTSP path prefix of a recording's replay resource.
REPLAY_PATH = "/replay/"


def stream_setup_error(value: Any) -> str | None:
    """Why a ``tt:StreamSetup`` cannot be served (None: it can)."""
    if value is None:
        return "StreamSetup is missing"
    stream = str(optional(value, "Stream") or "")
    protocol = str(optional(optional(value, "Transport"), "Protocol") or "")
    if stream != "RTP-Unicast":
        return f"stream type {stream!r} is not served (replay is unicast only)"
    if protocol not in RTSP_PROTOCOLS and protocol != "HTTP":
        return f"transport protocol {protocol!r} is not served"
    return None


def replay_uri(base_url: str, rtsp_port: int, token: str, protocol: str = "RTSP") -> str:
    """The replay URI on the host the client reached the SOAP service at (``base_url``)."""
    path = REPLAY_PATH + urllib.parse.quote(token, safe="")
    if protocol == "HTTP":
        return f"{base_url}/rtsp-tunnel{path}"
    host = urllib.parse.urlsplit(base_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"rtsp://{host}:{rtsp_port}{path}"


def duration_s(value: Any) -> float:
    """An xs:duration (timedelta, or isodate's Duration with years/months) in seconds."""
    if hasattr(value, "totimedelta"):
        value = value.totimedelta(start=datetime.datetime(2000, 1, 1))
    if not isinstance(value, datetime.timedelta):
        raise InvalidArgument(f"SessionTimeout is not a duration: {value!r}", "ConfigModify")
    return value.total_seconds()


class ReplayService:
    """Handlers of the ReplayBinding."""

    def __init__(
        self,
        control: RecordingControl,
        store: SettingsStore,
        binding: Binding,
        rtsp_port: Callable[[], int | None],
        *,
        default_timeout_s: int = DEFAULT_SESSION_TIMEOUT_S,
    ) -> None:
        """``rtsp_port`` gives the RTSP server's bound port (None: not running)."""
        self.control = control
        self.store = store
        self.binding = binding
        self._rtsp_port = rtsp_port
        self._default_timeout_s = default_timeout_s

    @property
    def session_timeout_s(self) -> int:
        """The RTSP session timeout replay sessions get (what the RTSP step honours)."""
        return int(self.store.get(SESSION_TIMEOUT_KEY, self._default_timeout_s))

    def capabilities(self) -> dict[str, Any]:
        return {
            "ReversePlayback": True,
            "SessionTimeoutRange": [float(MIN_SESSION_TIMEOUT_S), float(MAX_SESSION_TIMEOUT_S)],
            "RTP_RTSP_TCP": True,
        }

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        """``trp:Capabilities`` for GetServices(IncludeCapability=true)."""
        return render_service_capabilities(self.binding, self.capabilities())

    def legacy_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Extension/Replay`` (tt:ReplayCapabilities) has only XAddr."""
        return {}

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.capabilities()}

    async def get_replay_uri(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        token = str(optional(req, "RecordingToken") or "")
        await self.control.get_recording(token)  # ter:NoRecording when unknown
        setup = optional(req, "StreamSetup")
        problem = stream_setup_error(setup)
        if problem is not None:
            raise InvalidArgument(problem, "InvalidStreamSetup")
        port = self._rtsp_port()
        if port is None:
            raise InvalidArgument("the RTSP server is not running", "InvalidStreamSetup")
        protocol = str(optional(optional(setup, "Transport"), "Protocol"))
        return {"Uri": replay_uri(ctx.base_url, port, token, protocol)}

    async def get_replay_configuration(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        timeout = datetime.timedelta(seconds=self.session_timeout_s)
        return {"Configuration": {"SessionTimeout": timeout}}

    async def set_replay_configuration(self, ctx: CallContext, req: Any) -> None:
        configuration = optional(req, "Configuration")
        value = optional(configuration, "SessionTimeout")
        if value is None:
            raise InvalidArgument("SessionTimeout is missing", "ConfigModify")
        seconds = duration_s(value)
        if not MIN_SESSION_TIMEOUT_S <= seconds <= MAX_SESSION_TIMEOUT_S or seconds % 1:
            raise InvalidArgument(
                f"SessionTimeout must be whole seconds from {MIN_SESSION_TIMEOUT_S} to "
                f"{MAX_SESSION_TIMEOUT_S}",
                "ConfigModify",
            )
        await self.store.put(SESSION_TIMEOUT_KEY, int(seconds))

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetServiceCapabilities": self.get_service_capabilities,
            "GetReplayUri": self.get_replay_uri,
            "GetReplayConfiguration": self.get_replay_configuration,
            "SetReplayConfiguration": self.set_replay_configuration,
        }
