"""Device service (tds): identity, capabilities, time, scopes, users and system control.

Network settings live in ``device_network.py``; both add handlers to one binding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from onvif_nvr import __version__
from onvif_nvr.auth.policy import UserLevel
from onvif_nvr.clock import Clock
from onvif_nvr.config import Settings
from onvif_nvr.errors import (
    ActionFailed,
    InvalidArgs,
    InvalidArgument,
    NotSupported,
    OperationProhibited,
)
from onvif_nvr.services.common import (
    AdvertisedService,
    Lifecycle,
    datetime_fields,
    optional,
    render_service_capabilities,
    wall_ns_to_datetime,
)
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.system import hostinfo, posixtz
from onvif_nvr.system.logs import LogBuffer
from onvif_nvr.system.store import SettingsStore
from onvif_nvr.system.users import UserChange, UserStore
from onvif_nvr.wsdl.catalog import Binding

ONVIF_SCOPE = "onvif://www.onvif.org/"
#: Our own namespace for values the ONVIF schema has no element for (used in Extensions).
NVR_NS = "urn:onvif-nvr:schema:1"
MAX_CONFIGURABLE_SCOPES = 32
MAX_NTP_SERVERS = 4
HOST_FACTS_TTL_S = 30

# Keys in the settings store.
K_ENDPOINT = "endpoint_uuid"
K_SCOPES = "scopes"
K_DISCOVERY = "discovery_mode"
K_TIME = "time"
#: Settings a soft factory default keeps: what keeps the box reachable where it was.
NETWORK_KEYS = frozenset(
    {"hostname", "dns", "network_interfaces", "default_gateway", "network_protocols", "ntp"}
)


def quote_scope_part(text: str) -> str:
    return urllib.parse.quote(text.strip() or "unknown", safe="/-_.~")


@dataclasses.dataclass
class DeviceDeps:
    settings: Settings
    clock: Clock
    store: SettingsStore
    users: UserStore
    system_log: LogBuffer
    access_log: LogBuffer
    lifecycle: Lifecycle
    #: Every service the box serves, for GetServices/GetCapabilities (the device first).
    advertised: list[AdvertisedService]
    #: Whether the WS-Discovery target service runs (capabilities say so).
    discovery: bool = False
    #: Ports actually listened on ("HTTP", "RTSP"), filled in once bound (a configured 0
    #: means "any free port").
    ports: dict[str, int] = dataclasses.field(default_factory=dict)


class DeviceService:
    """Handlers of the Device binding. Construct, then ``handlers()`` for the dispatcher."""

    def __init__(self, deps: DeviceDeps, binding: Binding) -> None:
        self.deps = deps
        self.binding = binding
        self._serial: tuple[str, str] | None = None
        # Host facts read from files (time zone, NTP servers), re-read at most every
        # HOST_FACTS_TTL_S: GetSystemDateAndTime is every client's first call.
        self._host_facts: dict[str, tuple[int, Any]] = {}

    async def _host_fact(self, key: str, read: Callable[[], Any]) -> Any:
        now = self.deps.clock.monotonic_ns()
        cached = self._host_facts.get(key)
        if cached is not None and now - cached[0] < HOST_FACTS_TTL_S * 10**9:
            return cached[1]
        value = await asyncio.to_thread(read)
        self._host_facts[key] = (now, value)
        return value

    # -- identity --------------------------------------------------------------------------
    @property
    def endpoint_uuid(self) -> str:
        return str(self.deps.store.get(K_ENDPOINT))

    async def ensure_identity(self) -> None:
        """Give the box its stable endpoint UUID on first start."""
        if not self.deps.store.get(K_ENDPOINT):
            await self.deps.store.put(K_ENDPOINT, str(uuid.uuid4()))

    def serial_number(self) -> str:
        endpoint = self.endpoint_uuid
        if self._serial is None or self._serial[0] != endpoint:
            self._serial = (endpoint, uuid.UUID(endpoint).hex[:12].upper())
        return self._serial[1]

    async def get_device_information(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        device = self.deps.settings.device
        return {
            "Manufacturer": device.manufacturer,
            "Model": device.model,
            "FirmwareVersion": __version__,
            "SerialNumber": self.serial_number(),
            "HardwareId": device.hardware_id,
        }

    async def get_endpoint_reference(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"GUID": f"urn:uuid:{self.endpoint_uuid}"}

    async def get_wsdl_url(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"WsdlUrl": ctx.xaddr("/onvif/wsdl/")}

    # -- capabilities ----------------------------------------------------------------------
    def device_capabilities(self, ctx: CallContext | None = None) -> dict[str, Any]:
        sec = self.deps.settings.security
        return {
            "Network": {
                "IPFilter": False,
                "ZeroConfiguration": False,
                "IPVersion6": _host_has_ipv6(),
                "DynDNS": False,
                "Dot11Configuration": False,
                "Dot1XConfigurations": 0,
                "HostnameFromDHCP": False,
                "NTP": MAX_NTP_SERVERS,
                "DHCPv6": False,
            },
            "Security": {
                "TLS1.0": False,
                "TLS1.1": False,
                "TLS1.2": False,
                "OnboardKeyGeneration": False,
                "AccessPolicyConfig": False,
                "DefaultAccessPolicy": True,
                "Dot1X": False,
                "RemoteUserHandling": False,
                "X.509Token": False,
                "SAMLToken": False,
                "KerberosToken": False,
                "UsernameToken": True,
                "HttpDigest": True,
                "RELToken": False,
                "JsonWebToken": False,
                "MaxUsers": sec.max_users,
                "MaxUserNameLength": sec.max_username_length,
                "MaxPasswordLength": sec.max_password_length,
                "HashingAlgorithms": list(sec.digest_algorithms),
            },
            "System": {
                "DiscoveryResolve": self.deps.discovery,
                "DiscoveryBye": self.deps.discovery,
                "RemoteDiscovery": False,
                "SystemBackup": False,
                "SystemLogging": True,
                "HttpFirmwareUpgrade": False,
                "HttpSystemBackup": False,
                "HttpSystemLogging": False,
                "HttpSupportInformation": False,
                "StorageConfiguration": True,
                "MaxStorageConfigurations": 1,
                "DiscoveryNotSupported": not self.deps.discovery,
                "NetworkConfigNotSupported": False,
                "UserConfigNotSupported": False,
                "HardwareType": "Recorder",
            },
            "Misc": {},
        }

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.device_capabilities(ctx)}

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        """``tds:Capabilities`` as GetServices(IncludeCapability=true) embeds it."""
        return render_service_capabilities(self.binding, self.device_capabilities(ctx))

    async def get_services(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        include = bool(optional(req, "IncludeCapability", False))
        services = []
        for service in self.deps.advertised:
            entry: dict[str, Any] = {
                "Namespace": service.namespace,
                "XAddr": ctx.xaddr(service.path),
                "Version": {"Major": service.version[0], "Minor": service.version[1]},
            }
            if include:
                entry["Capabilities"] = {"_value_1": service.capabilities(ctx)}
            services.append(entry)
        return {"Service": services}

    async def get_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        categories = list(optional(req, "Category", None) or ["All"])
        known = {"All", "Analytics", "Device", "Events", "Imaging", "Media", "PTZ"}
        for category in categories:
            if category not in known:
                raise InvalidArgument(f"unknown capability category {category!r}")
        caps: dict[str, Any] = {}
        extension: dict[str, Any] = {}
        for service in self.deps.advertised:
            if service.legacy_field is None:
                continue
            top = service.legacy_field.split(".")[0]
            if "All" not in categories and top not in categories:
                continue
            value = {"XAddr": ctx.xaddr(service.path)}
            if service.legacy_capabilities is not None:
                value.update(service.legacy_capabilities(ctx))
            if service.legacy_field.startswith("Extension."):
                extension[service.legacy_field.split(".", 1)[1]] = value
            else:
                caps[service.legacy_field] = value
        for category in categories:
            if category != "All" and category not in caps:
                raise NotSupported(f"the device has no {category} service", "NoSuchService")
        if extension and "All" in categories:
            caps["Extension"] = extension
        return {"Capabilities": caps}

    def legacy_device_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Device`` part, taken from the service capabilities so that
        the two answers cannot disagree (DEVICE-1-1-30)."""
        caps = self.device_capabilities(ctx)

        def pick(section: str, *keys: str) -> dict[str, Any]:
            return {key: caps[section][key] for key in keys}

        version = self.binding.version
        system = pick(
            "System",
            "DiscoveryResolve",
            "DiscoveryBye",
            "RemoteDiscovery",
            "SystemBackup",
            "SystemLogging",
        )
        system["FirmwareUpgrade"] = caps["System"]["HttpFirmwareUpgrade"]
        system["SupportedVersions"] = [{"Major": version[0], "Minor": version[1]}]
        return {
            "Network": pick("Network", "IPFilter", "ZeroConfiguration", "IPVersion6", "DynDNS"),
            "System": system,
            "IO": {"InputConnectors": 0, "RelayOutputs": 0},
            "Security": pick(
                "Security",
                "TLS1.1",
                "TLS1.2",
                "OnboardKeyGeneration",
                "AccessPolicyConfig",
                "X.509Token",
                "SAMLToken",
                "KerberosToken",
                "RELToken",
            ),
        }

    # -- date and time ---------------------------------------------------------------------
    def _time_settings(self) -> dict[str, Any]:
        return self.deps.store.get(K_TIME, {}) or {}

    async def _timezone(self) -> posixtz.PosixTZ:
        stored = self._time_settings().get("tz")
        if stored:
            try:
                return posixtz.parse(stored)  # always stored in POSIX form
            except ValueError:
                pass
        text = await self._host_fact("tz", hostinfo.read_posix_tz)
        try:
            return posixtz.parse(text)
        except ValueError:
            return posixtz.parse("UTC0")

    async def get_system_date_and_time(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        now_ns = self.deps.clock.wall_ns()
        tz = await self._timezone()
        local, is_dst = posixtz.local_fields(tz, now_ns)
        stored = self._time_settings()
        kind = stored.get("type") or ("NTP" if await self._ntp_servers_defined() else "Manual")
        return {
            "SystemDateAndTime": {
                "DateTimeType": kind,
                "DaylightSavings": is_dst,
                "TimeZone": {"TZ": tz.text},
                "UTCDateTime": datetime_fields(wall_ns_to_datetime(now_ns)),
                "LocalDateTime": datetime_fields(local),
            }
        }

    async def set_system_date_and_time(self, ctx: CallContext, req: Any) -> None:
        kind = req.DateTimeType
        if kind not in ("Manual", "NTP"):
            raise InvalidArgument(f"DateTimeType must be Manual or NTP, not {kind!r}")
        stored = self._time_settings()
        tz_value = optional(req, "TimeZone")
        tz_text = (optional(tz_value, "TZ") or "").strip() if tz_value is not None else ""
        if tz_text:
            try:
                # POSIX is what Core specifies; an IANA name (some clients send one) is
                # converted to the POSIX rule of its zone file, read off the event loop.
                tz = await asyncio.to_thread(posixtz.parse_any, tz_text)
            except ValueError as exc:
                raise InvalidArgument(f"invalid time zone: {exc}", "InvalidTimeZone") from None
            stored["tz"] = tz.text
        new_wall_s: int | None = None
        utc = optional(req, "UTCDateTime")
        if kind == "Manual" and utc is not None:
            new_wall_s = _datetime_from_fields(utc)
        if kind == "NTP" and not await self._ntp_servers_defined():
            raise InvalidArgument("no NTP server is defined", "NtpServerUndefined")
        stored["type"] = kind
        stored["daylight_savings"] = bool(req.DaylightSavings)
        if new_wall_s is not None and self.deps.settings.host.apply_network_settings:
            try:
                await asyncio.to_thread(time.clock_settime, time.CLOCK_REALTIME, float(new_wall_s))
            except OSError as exc:
                raise ActionFailed(f"cannot set the system clock: {exc.strerror}") from None
        await self.deps.store.put(K_TIME, stored)

    async def _ntp_servers_defined(self) -> bool:
        ntp = self.deps.store.get("ntp")
        if ntp is not None:
            return bool(ntp.get("from_dhcp")) or bool(ntp.get("servers"))
        return bool(await self._host_fact("ntp", hostinfo.read_ntp_servers))

    # -- scopes and discovery mode ---------------------------------------------------------
    def fixed_scopes(self) -> list[str]:
        """Core §7.3.2.2: at least one fixed profile, hardware and name scope."""
        device = self.deps.settings.device
        return [
            ONVIF_SCOPE + "type/video_encoder",
            ONVIF_SCOPE + "type/Network_Video_Storage",
            ONVIF_SCOPE + "Profile/Streaming",
            ONVIF_SCOPE + "Profile/G",
            ONVIF_SCOPE + f"hardware/{quote_scope_part(device.hardware_id)}",
            ONVIF_SCOPE + f"name/{quote_scope_part(device.name)}",
        ]

    def configurable_scopes(self) -> list[str]:
        stored = self.deps.store.get(K_SCOPES)
        if stored is not None:
            return list(stored)
        return [ONVIF_SCOPE + f"location/{quote_scope_part(self.deps.settings.device.location)}"]

    def scopes(self) -> list[str]:
        return self.fixed_scopes() + self.configurable_scopes()

    async def get_scopes(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        scopes = [{"ScopeDef": "Fixed", "ScopeItem": s} for s in self.fixed_scopes()]
        scopes += [{"ScopeDef": "Configurable", "ScopeItem": s} for s in self.configurable_scopes()]
        return {"Scopes": scopes}

    async def set_scopes(self, ctx: CallContext, req: Any) -> None:
        items = _scope_list(optional(req, "Scopes") or [])
        fixed = set(self.fixed_scopes())
        configurable = [s for s in items if s not in fixed]
        if len(configurable) > MAX_CONFIGURABLE_SCOPES:
            raise ActionFailed(
                f"at most {MAX_CONFIGURABLE_SCOPES} configurable scopes", "TooManyScopes"
            )
        await self.deps.store.put(K_SCOPES, configurable)

    async def add_scopes(self, ctx: CallContext, req: Any) -> None:
        items = _scope_list(optional(req, "ScopeItem") or [])
        current = self.configurable_scopes()
        fixed = set(self.fixed_scopes())
        for item in items:
            if item not in current and item not in fixed:
                current.append(item)
        if len(current) > MAX_CONFIGURABLE_SCOPES:
            raise ActionFailed(
                f"at most {MAX_CONFIGURABLE_SCOPES} configurable scopes", "TooManyScopes"
            )
        await self.deps.store.put(K_SCOPES, current)

    async def remove_scopes(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        items = _scope_list(optional(req, "ScopeItem") or [])
        current = self.configurable_scopes()
        fixed = set(self.fixed_scopes())
        for item in items:
            if item in fixed:
                raise OperationProhibited(f"{item} is a fixed scope", "FixedScope")
            if item not in current:
                raise InvalidArgument(f"{item} is not a scope of this device", "NoScope")
        await self.deps.store.put(K_SCOPES, [s for s in current if s not in items])
        return {"ScopeItem": items}

    def discovery_mode(self) -> str:
        return str(self.deps.store.get(K_DISCOVERY, "Discoverable"))

    async def get_discovery_mode(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"DiscoveryMode": self.discovery_mode()}

    async def set_discovery_mode(self, ctx: CallContext, req: Any) -> None:
        mode = req.DiscoveryMode
        if mode not in ("Discoverable", "NonDiscoverable"):
            raise InvalidArgument(f"unknown discovery mode {mode!r}")
        await self.deps.store.put(K_DISCOVERY, mode)

    # -- users -----------------------------------------------------------------------------
    async def get_users(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {
            "User": [
                {"Username": a.username, "UserLevel": a.level.value}
                for a in self.deps.users.accounts()
            ]
        }

    async def create_users(self, ctx: CallContext, req: Any) -> None:
        await self.deps.users.create(_user_changes(req, "User"))

    async def delete_users(self, ctx: CallContext, req: Any) -> None:
        names = list(optional(req, "Username") or [])
        if not names:
            raise InvalidArgs("no Username given")
        await self.deps.users.delete(names)

    async def set_user(self, ctx: CallContext, req: Any) -> None:
        await self.deps.users.update(
            _user_changes(req, "User"), may_change_level=ctx.level is UserLevel.ADMINISTRATOR
        )

    # -- system ----------------------------------------------------------------------------
    async def system_reboot(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        self.deps.lifecycle.request_reboot()
        return {"Message": "Restarting the NVR services in 1 second"}

    async def set_system_factory_default(self, ctx: CallContext, req: Any) -> None:
        mode = req.FactoryDefault
        if mode not in ("Hard", "Soft"):
            raise InvalidArgument(f"FactoryDefault must be Hard or Soft, not {mode!r}")
        self.deps.lifecycle.request_factory_default(hard=mode == "Hard")

    async def get_system_log(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        kind = req.LogType
        if kind == "System":
            return {"SystemLog": {"String": self.deps.system_log.text()}}
        if kind == "Access":
            return {"SystemLog": {"String": self.deps.access_log.text()}}
        raise InvalidArgument(f"unknown log type {kind!r}")

    async def _storage_configuration(self) -> dict[str, Any]:
        data_dir = self.deps.settings.data_dir.resolve()
        volume = await asyncio.to_thread(hostinfo.volume_info, data_dir)
        status = etree.Element(f"{{{NVR_NS}}}Volume", nsmap={"nvr": NVR_NS})
        for name, value in (
            ("MountPoint", volume.mount_point),
            ("FileSystem", volume.fs_type),
            ("TotalBytes", volume.total_bytes),
            ("FreeBytes", volume.free_bytes),
            ("UsedBytes", volume.used_bytes),
        ):
            etree.SubElement(status, f"{{{NVR_NS}}}{name}").text = str(value)
        return {
            "token": "storage0",
            "Data": {
                "type": "LocalStorage",
                "LocalPath": str(data_dir),
                "StorageUri": Path(data_dir).as_uri(),
                "Extension": {"_value_1": [status]},
            },
        }

    async def get_storage_configurations(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"StorageConfigurations": [await self._storage_configuration()]}

    async def get_storage_configuration(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        if req.Token != "storage0":  # present: the dispatcher rejects a missing Token
            raise InvalidArgument(f"no storage configuration {req.Token!r}", "NoConfig")
        return {"StorageConfiguration": await self._storage_configuration()}

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetDeviceInformation": self.get_device_information,
            "GetEndpointReference": self.get_endpoint_reference,
            "GetWsdlUrl": self.get_wsdl_url,
            "GetServiceCapabilities": self.get_service_capabilities,
            "GetServices": self.get_services,
            "GetCapabilities": self.get_capabilities,
            "GetSystemDateAndTime": self.get_system_date_and_time,
            "SetSystemDateAndTime": self.set_system_date_and_time,
            "GetScopes": self.get_scopes,
            "SetScopes": self.set_scopes,
            "AddScopes": self.add_scopes,
            "RemoveScopes": self.remove_scopes,
            "GetDiscoveryMode": self.get_discovery_mode,
            "SetDiscoveryMode": self.set_discovery_mode,
            "GetUsers": self.get_users,
            "CreateUsers": self.create_users,
            "DeleteUsers": self.delete_users,
            "SetUser": self.set_user,
            "SystemReboot": self.system_reboot,
            "SetSystemFactoryDefault": self.set_system_factory_default,
            "GetSystemLog": self.get_system_log,
            "GetStorageConfigurations": self.get_storage_configurations,
            "GetStorageConfiguration": self.get_storage_configuration,
        }


def _host_has_ipv6() -> bool:
    return Path("/proc/net/if_inet6").exists()


def _scope_list(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        text = (item or "").strip()
        parsed = urllib.parse.urlsplit(text)
        if not parsed.scheme or not (parsed.netloc or parsed.path):
            raise InvalidArgument(f"scope {text!r} is not an absolute URI")
        if text not in out:
            out.append(text)
    return out


def _user_changes(req: Any, field: str) -> list[UserChange]:
    users = list(optional(req, field) or [])
    if not users:
        raise InvalidArgs("no User given")
    return [
        UserChange(
            username=(u.Username or ""),
            level=str(u.UserLevel or ""),
            password=optional(u, "Password"),
        )
        for u in users
    ]


def _datetime_from_fields(value: Any) -> int:
    """``tt:DateTime`` (UTC) to seconds since the Unix epoch; ter:InvalidDateTime if impossible."""
    try:
        t, d = value.Time, value.Date
        dt = datetime.datetime(
            int(d.Year),
            int(d.Month),
            int(d.Day),
            int(t.Hour),
            int(t.Minute),
            int(t.Second),
            tzinfo=datetime.UTC,
        )
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise InvalidArgument(
            "the date and time is not a valid UTC date", "InvalidDateTime"
        ) from None
    if dt.year < 1970 or dt.year > 2105:
        raise InvalidArgument("the date must lie between 1970 and 2105", "InvalidDateTime")
    return int(dt.timestamp())
