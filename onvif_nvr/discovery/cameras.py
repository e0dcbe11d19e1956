"""Ask the ONVIF devices that answered a probe what they are and how to stream them.

For each device: GetSystemDateAndTime (no login, to learn its clock offset), then with the
operator's credentials GetDeviceInformation, the Media service address (GetServices, else
GetCapabilities), GetProfiles and GetStreamUri per profile (Media ver10; Media2 when that
is all the device has). WS-UsernameToken is tried first with Created shifted to the
device's clock; a device that refuses it gets HTTP Digest. A device that cannot be reached
or refuses the credentials is reported with the reason instead of failing the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import urllib.parse
from typing import Any

import httpx
import zeep
import zeep.exceptions
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsse.username import UsernameToken

from onvif_nvr.discovery.probe import Found
from onvif_nvr.wsdl.catalog import wsdl_root

log = logging.getLogger(__name__)

DEVICE_WSDL = (
    "ver10/device/wsdl/devicemgmt.wsdl",
    "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding",
)
MEDIA_WSDL = ("ver10/media/wsdl/media.wsdl", "{http://www.onvif.org/ver10/media/wsdl}MediaBinding")
MEDIA2_WSDL = (
    "ver20/media/wsdl/media.wsdl",
    "{http://www.onvif.org/ver20/media/wsdl}Media2Binding",
)
MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"
MEDIA2_NS = "http://www.onvif.org/ver20/media/wsdl"
NAME_SCOPE = "onvif://www.onvif.org/name/"


@dataclasses.dataclass(frozen=True)
class StreamProfile:
    token: str
    name: str
    encoding: str | None
    width: int | None
    height: int | None
    frame_rate: float | None
    bitrate_kbps: int | None
    uri: str | None


@dataclasses.dataclass
class CameraReport:
    endpoint: str
    xaddr: str
    #: "ok", "unreachable", "unauthorized" or "error".
    status: str
    reason: str = ""
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    firmware: str = ""
    scopes: tuple[str, ...] = ()
    profiles: list[StreamProfile] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _ShiftedToken(UsernameToken):
    """A PasswordDigest token whose Created follows the device's clock."""

    def __init__(self, username: str, password: str, offset: datetime.timedelta) -> None:
        super().__init__(username, password, use_digest=True)
        self.offset = offset

    def apply(self, envelope: Any, headers: Any) -> Any:
        self.created = datetime.datetime.now(datetime.UTC) + self.offset
        return super().apply(envelope, headers)


class Interrogator:
    """Parses the WSDLs once, then questions any number of devices concurrently."""

    def __init__(
        self, username: str | None, password: str | None, *, timeout_s: float = 10.0
    ) -> None:
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        settings = zeep.Settings(strict=False, forbid_dtd=True, forbid_entities=True)
        root = wsdl_root()
        self._documents = {
            key: zeep.wsdl.Document(str(root / path), zeep.Transport(), settings=settings)  # type: ignore[arg-type]
            for key, (path, _binding) in {
                "device": DEVICE_WSDL,
                "media": MEDIA_WSDL,
                "media2": MEDIA2_WSDL,
            }.items()
        }
        self._settings = settings

    def _service(self, key: str, address: str, http: httpx.AsyncClient, wsse: Any) -> Any:
        binding = {"device": DEVICE_WSDL, "media": MEDIA_WSDL, "media2": MEDIA2_WSDL}[key][1]
        transport = AsyncTransport(
            client=http, timeout=self.timeout_s, operation_timeout=self.timeout_s
        )
        client = zeep.AsyncClient(
            self._documents[key], wsse=wsse, transport=transport, settings=self._settings
        )
        # AsyncClient.create_service gives a synchronous proxy; build the async one.
        return AsyncServiceProxy(client, client.wsdl.bindings[binding], address=address)

    async def interrogate(self, found: Found) -> CameraReport:
        xaddr = _pick_xaddr(found.endpoint.xaddrs, found.source)
        report = CameraReport(
            endpoint=found.endpoint.address,
            xaddr=xaddr,
            status="error",
            scopes=found.endpoint.scopes,
        )
        report.name = next(
            (
                urllib.parse.unquote(s[len(NAME_SCOPE) :])
                for s in found.endpoint.scopes
                if s.startswith(NAME_SCOPE)
            ),
            "",
        )
        if not xaddr:
            report.reason = "the device announced no device service address"
            return report
        try:
            await self._interrogate(report)
        except (httpx.TransportError, OSError) as exc:
            report.status, report.reason = (
                "unreachable",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        except _Unauthorized as exc:
            report.status, report.reason = "unauthorized", str(exc)
        except (zeep.exceptions.Error, ValueError) as exc:
            report.status, report.reason = "error", f"{type(exc).__name__}: {exc}"
        return report

    async def _interrogate(self, report: CameraReport) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as anonymous_http:
            anonymous = self._service("device", report.xaddr, anonymous_http, None)
            offset = await _clock_offset(anonymous)
        digest = (
            httpx.DigestAuth(self.username, self.password)
            if self.username and self.password
            else None
        )
        # First WS-UsernameToken (what ONVIF clients use), then HTTP Digest alone.
        attempts: list[tuple[httpx.Auth | None, Any]] = []
        if self.username is not None and self.password is not None:
            attempts.append((None, _ShiftedToken(self.username, self.password, offset)))
        attempts.append((digest, None))
        last_reason = "no credentials were given"
        for auth, wsse in attempts:
            async with httpx.AsyncClient(timeout=self.timeout_s, auth=auth) as http:
                device = self._service("device", report.xaddr, http, wsse)
                try:
                    info = await device.GetDeviceInformation()
                except zeep.exceptions.Fault as fault:
                    if not _is_auth_fault(fault):
                        raise
                    last_reason = f"the device refused the credentials ({fault.message})"
                    continue
                except zeep.exceptions.TransportError as exc:
                    if exc.status_code in (401, 403):
                        last_reason = f"the device refused the credentials (HTTP {exc.status_code})"
                        continue
                    raise
                report.manufacturer = info.Manufacturer or ""
                report.model = info.Model or ""
                report.serial = info.SerialNumber or ""
                report.firmware = info.FirmwareVersion or ""
                await self._media(report, device, http, wsse)
                report.status = "ok"
                return
        raise _Unauthorized(last_reason)

    async def _media(
        self, report: CameraReport, device: Any, http: httpx.AsyncClient, wsse: Any
    ) -> None:
        addresses: dict[str, str] = {}
        try:
            for service in await device.GetServices(False):
                addresses[service.Namespace] = service.XAddr
        except zeep.exceptions.Fault:
            caps = await device.GetCapabilities(["Media"])
            if caps.Media is not None:
                addresses[MEDIA_NS] = caps.Media.XAddr
        if MEDIA_NS in addresses:
            media = self._service(
                "media", _same_host(addresses[MEDIA_NS], report.xaddr), http, wsse
            )
            for profile in await media.GetProfiles():
                report.profiles.append(await _media1_profile(media, profile))
        elif MEDIA2_NS in addresses:
            media2 = self._service(
                "media2", _same_host(addresses[MEDIA2_NS], report.xaddr), http, wsse
            )
            for profile in await media2.GetProfiles(Type=["VideoEncoder"]):
                report.profiles.append(await _media2_profile(media2, profile))
        else:
            report.reason = "the device has no Media service"


class _Unauthorized(Exception):
    pass


async def _clock_offset(device: Any) -> datetime.timedelta:
    try:
        answer = await device.GetSystemDateAndTime()
        utc = answer.UTCDateTime
        theirs = datetime.datetime(
            utc.Date.Year,
            utc.Date.Month,
            utc.Date.Day,
            utc.Time.Hour,
            utc.Time.Minute,
            utc.Time.Second,
            tzinfo=datetime.UTC,
        )
    except (zeep.exceptions.Fault, AttributeError, TypeError, ValueError):
        return datetime.timedelta(0)
    return theirs - datetime.datetime.now(datetime.UTC)


def _is_auth_fault(fault: zeep.exceptions.Fault) -> bool:
    names = [getattr(s, "localname", str(s)) for s in fault.subcodes or []]
    return (
        "NotAuthorized" in names
        or "FailedAuthentication" in names
        or "not authorized" in (fault.message or "").lower()
    )


def _stream_profile(profile: Any, encoder: Any, uri: str | None) -> StreamProfile:
    rate = getattr(encoder, "RateControl", None) if encoder is not None else None
    resolution = getattr(encoder, "Resolution", None) if encoder is not None else None
    return StreamProfile(
        token=profile.token,
        name=profile.Name or profile.token,
        encoding=str(encoder.Encoding) if encoder is not None and encoder.Encoding else None,
        width=int(resolution.Width) if resolution is not None else None,
        height=int(resolution.Height) if resolution is not None else None,
        frame_rate=float(rate.FrameRateLimit)
        if rate is not None and rate.FrameRateLimit is not None
        else None,
        bitrate_kbps=int(rate.BitrateLimit)
        if rate is not None and rate.BitrateLimit is not None
        else None,
        uri=uri,
    )


async def _media1_profile(media: Any, profile: Any) -> StreamProfile:
    uri = None
    try:
        answer = await media.GetStreamUri(
            StreamSetup={"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
            ProfileToken=profile.token,
        )
        uri = answer.Uri
    except zeep.exceptions.Fault as fault:
        log.info("GetStreamUri for %s failed: %s", profile.token, fault.message)
    return _stream_profile(profile, profile.VideoEncoderConfiguration, uri)


async def _media2_profile(media2: Any, profile: Any) -> StreamProfile:
    uri = None
    try:
        answer = await media2.GetStreamUri(Protocol="RTSP", ProfileToken=profile.token)
        uri = answer if isinstance(answer, str) else getattr(answer, "Uri", None)
    except zeep.exceptions.Fault as fault:
        log.info("GetStreamUri for %s failed: %s", profile.token, fault.message)
    encoder = profile.Configurations.VideoEncoder if profile.Configurations is not None else None
    return _stream_profile(profile, encoder, uri)


def _pick_xaddr(xaddrs: tuple[str, ...], source: str) -> str:
    """Prefer the XAddr on the address the answer came from (reachable from here)."""
    for xaddr in xaddrs:
        if urllib.parse.urlsplit(xaddr).hostname == source:
            return xaddr
    return xaddrs[0] if xaddrs else ""


def _same_host(service_xaddr: str, device_xaddr: str) -> str:
    """Some devices report service addresses with an internal host; keep their path and
    port but reach them where the device service answered."""
    service, device = urllib.parse.urlsplit(service_xaddr), urllib.parse.urlsplit(device_xaddr)
    if service.hostname in (None, "", "0.0.0.0", "127.0.0.1", "localhost") and device.hostname:
        netloc = device.hostname if service.port is None else f"{device.hostname}:{service.port}"
        return urllib.parse.urlunsplit((device.scheme, netloc, service.path, service.query, ""))
    return service_xaddr


async def interrogate_all(found: list[Found], interrogator: Interrogator) -> list[CameraReport]:
    return list(await asyncio.gather(*(interrogator.interrogate(f) for f in found)))
