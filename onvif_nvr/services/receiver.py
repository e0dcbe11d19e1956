"""Receiver service (trv): the camera streams the box records, as ONVIF receivers.

Every operation of the ReceiverBinding; each translates to the Profile G domain API
(:class:`~onvif_nvr.recording.control.RecordingControl`) and back, nothing more.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from onvif_nvr.errors import BadConfiguration
from onvif_nvr.recording.cameras import MAX_URL_LENGTH
from onvif_nvr.recording.control import (
    Receiver,
    ReceiverConfiguration,
    RecordingControl,
    StreamSetup,
)
from onvif_nvr.services.common import optional, render_service_capabilities
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.wsdl.catalog import Binding


def receiver_value(receiver: Receiver) -> dict[str, Any]:
    """A ``tt:Receiver``."""
    config = receiver.configuration
    return {
        "Token": receiver.token,
        "Configuration": {
            "Mode": config.mode,
            "MediaUri": config.media_uri,
            "StreamSetup": {
                "Stream": config.stream_setup.stream,
                "Transport": {"Protocol": config.stream_setup.protocol},
            },
        },
    }


def configuration_from(value: Any) -> ReceiverConfiguration:
    """A ``tt:ReceiverConfiguration`` of a request (zeep value)."""
    if value is None:
        raise BadConfiguration("Configuration is missing")
    setup = optional(value, "StreamSetup")
    transport = optional(setup, "Transport")
    mode = optional(value, "Mode")
    uri = optional(value, "MediaUri")
    if mode is None or uri is None or setup is None:
        raise BadConfiguration("Mode, MediaUri and StreamSetup are required")
    return ReceiverConfiguration(
        str(mode),
        str(uri),
        StreamSetup(
            str(optional(setup, "Stream") or "RTP-Unicast"),
            str(optional(transport, "Protocol") or "RTSP"),
        ),
    )


class ReceiverService:
    """Handlers of the ReceiverBinding."""

    def __init__(self, control: RecordingControl, binding: Binding) -> None:
        self.control = control
        self.binding = binding

    def capabilities(self) -> dict[str, Any]:
        return {
            # Unicast only: RTP over UDP, RTP interleaved in RTSP/TCP, RTSP over HTTP.
            "RTP_Multicast": False,
            "RTP_TCP": True,
            "RTP_RTSP_TCP": True,
            "SupportedReceivers": self.control.limits.max_receivers,
            "MaximumRTSPURILength": MAX_URL_LENGTH,
        }

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        """``trv:Capabilities`` for GetServices(IncludeCapability=true)."""
        return render_service_capabilities(self.binding, self.capabilities())

    def legacy_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Extension/Receiver`` (tt:ReceiverCapabilities) besides XAddr."""
        return self.capabilities()

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.capabilities()}

    async def get_receivers(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Receivers": [receiver_value(r) for r in await self.control.receivers()]}

    async def get_receiver(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Receiver": receiver_value(await self.control.get_receiver(req.ReceiverToken))}

    async def create_receiver(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        receiver = await self.control.create_receiver(configuration_from(req.Configuration))
        return {"Receiver": receiver_value(receiver)}

    async def delete_receiver(self, ctx: CallContext, req: Any) -> None:
        await self.control.delete_receiver(req.ReceiverToken)

    async def configure_receiver(self, ctx: CallContext, req: Any) -> None:
        await self.control.configure_receiver(
            req.ReceiverToken, configuration_from(req.Configuration)
        )

    async def set_receiver_mode(self, ctx: CallContext, req: Any) -> None:
        await self.control.set_receiver_mode(req.ReceiverToken, str(req.Mode))

    async def get_receiver_state(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        token = req.ReceiverToken
        state = await self.control.receiver_state(token)
        receiver = await self.control.get_receiver(token)
        return {"ReceiverState": {"State": state, "AutoCreated": receiver.auto_created}}

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetServiceCapabilities": self.get_service_capabilities,
            "GetReceivers": self.get_receivers,
            "GetReceiver": self.get_receiver,
            "CreateReceiver": self.create_receiver,
            "DeleteReceiver": self.delete_receiver,
            "ConfigureReceiver": self.configure_receiver,
            "SetReceiverMode": self.set_receiver_mode,
            "GetReceiverState": self.get_receiver_state,
        }
