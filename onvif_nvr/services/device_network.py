"""Device service (tds), network part: hostname, DNS, NTP, interfaces, protocols, gateway.

Reads report the host's real values. A Set stores the value (reported from then on) and
applies it to the host only when ``host.apply_network_settings`` is on: an NVR is usually
a server whose network is managed by its OS, not by a VMS.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from onvif_nvr.errors import ActionFailed, InvalidArgument
from onvif_nvr.services.common import optional
from onvif_nvr.services.device import MAX_NTP_SERVERS, DeviceDeps
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.system import hostinfo


def _ip(text: str | None, version: int, subcode: str) -> str:
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        raise InvalidArgument(f"{text!r} is not an IPv{version} address", subcode) from None
    if address.version != version:
        raise InvalidArgument(f"{text!r} is not an IPv{version} address", subcode)
    return str(address)


def _ip_address_entry(address: str) -> dict[str, Any]:
    if ipaddress.ip_address(address).version == 4:
        return {"Type": "IPv4", "IPv4Address": address}
    return {"Type": "IPv6", "IPv6Address": address}


class DeviceNetworkService:
    def __init__(self, deps: DeviceDeps) -> None:
        self.deps = deps

    @property
    def _apply(self) -> bool:
        return self.deps.settings.host.apply_network_settings

    async def _host_call(self, fn: Any, *args: Any) -> None:
        try:
            await asyncio.to_thread(fn, *args)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        except (OSError, RuntimeError) as exc:
            raise ActionFailed(f"the host rejected the change: {exc}") from None

    # -- hostname --------------------------------------------------------------------------
    async def get_hostname(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        name = self.deps.store.get("hostname") or await asyncio.to_thread(hostinfo.read_hostname)
        return {"HostnameInformation": {"FromDHCP": False, "Name": name}}

    async def set_hostname(self, ctx: CallContext, req: Any) -> None:
        name = (req.Name or "").strip()
        try:
            hostinfo.validate_hostname(name)
        except ValueError as exc:
            raise InvalidArgument(str(exc), "InvalidHostname") from None
        if self._apply:
            await self._host_call(hostinfo.apply_hostname, name)
        await self.deps.store.put("hostname", name)

    # -- DNS -------------------------------------------------------------------------------
    async def get_dns(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        stored = self.deps.store.get("dns")
        host = await asyncio.to_thread(hostinfo.read_dns)
        if stored is None:
            stored = {
                "from_dhcp": host.from_dhcp,
                "search": list(host.search_domains),
                "servers": [] if host.from_dhcp else list(host.nameservers),
            }
        info: dict[str, Any] = {"FromDHCP": stored["from_dhcp"], "SearchDomain": stored["search"]}
        if stored["from_dhcp"]:
            info["DNSFromDHCP"] = [_ip_address_entry(a) for a in host.nameservers]
        else:
            info["DNSManual"] = [_ip_address_entry(a) for a in stored["servers"]]
        return {"DNSInformation": info}

    async def set_dns(self, ctx: CallContext, req: Any) -> None:
        servers = []
        for entry in optional(req, "DNSManual") or []:
            if entry.Type == "IPv6":
                servers.append(_ip(entry.IPv6Address, 6, "InvalidIPv6Address"))
            else:
                servers.append(_ip(entry.IPv4Address, 4, "InvalidIPv4Address"))
        search = [s.strip() for s in (optional(req, "SearchDomain") or []) if s and s.strip()]
        for domain in search:
            try:
                hostinfo.validate_hostname(domain)
            except ValueError as exc:
                raise InvalidArgument(f"search domain: {exc}") from None
        from_dhcp = bool(req.FromDHCP)
        if self._apply and not from_dhcp:
            await self._host_call(hostinfo.apply_dns, search, servers)
        await self.deps.store.put(
            "dns", {"from_dhcp": from_dhcp, "search": search, "servers": servers}
        )

    # -- NTP -------------------------------------------------------------------------------
    async def get_ntp(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        stored = self.deps.store.get("ntp")
        if stored is None:
            stored = {
                "from_dhcp": False,
                "servers": list(await asyncio.to_thread(hostinfo.read_ntp_servers)),
            }
        info: dict[str, Any] = {"FromDHCP": stored["from_dhcp"]}
        if not stored["from_dhcp"]:
            info["NTPManual"] = [_network_host(s) for s in stored["servers"][:MAX_NTP_SERVERS]]
        return {"NTPInformation": info}

    async def set_ntp(self, ctx: CallContext, req: Any) -> None:
        servers = []
        for host in optional(req, "NTPManual") or []:
            kind = host.Type
            if kind == "IPv4":
                servers.append(_ip(host.IPv4Address, 4, "InvalidIPv4Address"))
            elif kind == "IPv6":
                servers.append(_ip(host.IPv6Address, 6, "InvalidIPv6Address"))
            elif kind == "DNS":
                name = (host.DNSname or "").strip()
                try:
                    hostinfo.validate_hostname(name)
                except ValueError as exc:
                    raise InvalidArgument(str(exc), "InvalidDnsName") from None
                servers.append(name)
            else:
                raise InvalidArgument(f"unknown NetworkHost type {kind!r}")
        if len(servers) > MAX_NTP_SERVERS:
            raise InvalidArgument(f"at most {MAX_NTP_SERVERS} NTP servers are supported")
        from_dhcp = bool(req.FromDHCP)
        if self._apply and not from_dhcp:
            await self._host_call(hostinfo.apply_ntp, servers)
        await self.deps.store.put("ntp", {"from_dhcp": from_dhcp, "servers": servers})

    # -- interfaces ------------------------------------------------------------------------
    async def _interfaces(self) -> list[hostinfo.InterfaceInfo]:
        interfaces = await asyncio.to_thread(hostinfo.read_interfaces)
        physical = [i for i in interfaces if not i.is_loopback]
        return physical or interfaces

    async def get_network_interfaces(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        overrides = self.deps.store.get("network_interfaces", {}) or {}
        out = []
        for iface in await self._interfaces():
            stored = overrides.get(iface.name, {})
            dhcp = stored.get("dhcp", iface.ipv4_dhcp)
            manual = stored.get("ipv4_manual")
            if manual is None:
                manual = [[a, p] for a, p in iface.ipv4]
            ipv4_config: dict[str, Any] = {"DHCP": dhcp}
            if dhcp:
                if iface.ipv4:
                    ipv4_config["FromDHCP"] = {
                        "Address": iface.ipv4[0][0],
                        "PrefixLength": iface.ipv4[0][1],
                    }
            else:
                ipv4_config["Manual"] = [{"Address": a, "PrefixLength": p} for a, p in manual]
            entry: dict[str, Any] = {
                "token": iface.name,
                "Enabled": stored.get("enabled", iface.enabled),
                "Info": {
                    "Name": iface.name,
                    "HwAddress": iface.hw_address or "00:00:00:00:00:00",
                    "MTU": stored.get("mtu", iface.mtu),
                },
                "IPv4": {"Enabled": bool(manual) or dhcp, "Config": ipv4_config},
            }
            if iface.ipv6:
                link_local = [a for a in iface.ipv6 if a[0].lower().startswith("fe80")]
                other = [a for a in iface.ipv6 if not a[0].lower().startswith("fe80")]
                v6: dict[str, Any] = {"AcceptRouterAdvert": False, "DHCP": "Off"}
                if other:
                    v6["Manual"] = [{"Address": a, "PrefixLength": p} for a, p in other]
                if link_local:
                    v6["LinkLocal"] = [{"Address": a, "PrefixLength": p} for a, p in link_local]
                entry["IPv6"] = {"Enabled": True, "Config": v6}
            out.append(entry)
        return {"NetworkInterfaces": out}

    async def set_network_interfaces(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        token = req.InterfaceToken
        names = {i.name for i in await self._interfaces()}
        if token not in names:
            raise InvalidArgument(f"no network interface {token!r}", "InvalidNetworkInterface")
        config = req.NetworkInterface
        overrides = self.deps.store.get("network_interfaces", {}) or {}
        stored = dict(overrides.get(token, {}))
        enabled = optional(config, "Enabled")
        if enabled is not None:
            stored["enabled"] = bool(enabled)
        mtu = optional(config, "MTU")
        if mtu is not None:
            if not 68 <= int(mtu) <= 9216:
                raise InvalidArgument(f"MTU {mtu} is outside 68..9216", "InvalidMtuValue")
            stored["mtu"] = int(mtu)
        if optional(config, "Link") is not None and not optional(
            config.Link, "AutoNegotiation", True
        ):
            raise InvalidArgument(
                "fixed link speed and duplex are not supported", "InvalidInterfaceSpeed"
            )
        ipv4 = optional(config, "IPv4")
        manual: list[list[Any]] | None = None
        if ipv4 is not None:
            if optional(ipv4, "DHCP") is not None:
                stored["dhcp"] = bool(ipv4.DHCP)
            entries = optional(ipv4, "Manual") or []
            if entries:
                manual = []
                for entry in entries:
                    address = _ip(entry.Address, 4, "InvalidIPv4Address")
                    prefix = int(entry.PrefixLength)
                    if not 1 <= prefix <= 32:
                        raise InvalidArgument(
                            f"prefix length {prefix} is invalid", "InvalidIPv4Address"
                        )
                    manual.append([address, prefix])
                stored["ipv4_manual"] = manual
        if self._apply and manual and not stored.get("dhcp", False):
            await self._host_call(hostinfo.apply_ipv4_address, token, manual[0][0], manual[0][1])
        overrides[token] = stored
        await self.deps.store.put("network_interfaces", overrides)
        return {"RebootNeeded": False}

    # -- protocols -------------------------------------------------------------------------
    def _protocols(self) -> list[dict[str, Any]]:
        stored = self.deps.store.get("network_protocols")
        if stored is not None:
            return list(stored)
        return [
            {
                "Name": "HTTP",
                "Enabled": True,
                "Port": [self.deps.ports.get("HTTP", self.deps.settings.http_port)],
            },
            {"Name": "HTTPS", "Enabled": False, "Port": [443]},
            {
                "Name": "RTSP",
                "Enabled": True,
                "Port": [self.deps.ports.get("RTSP", self.deps.settings.rtsp_port)],
            },
        ]

    async def get_network_protocols(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"NetworkProtocols": self._protocols()}

    async def set_network_protocols(self, ctx: CallContext, req: Any) -> None:
        current = {p["Name"]: p for p in self._protocols()}
        for protocol in optional(req, "NetworkProtocols") or []:
            name = protocol.Name
            if name not in current:
                raise InvalidArgument(f"protocol {name} is not supported", "ServiceNotSupported")
            if name == "HTTPS" and protocol.Enabled:
                raise InvalidArgument(
                    "HTTPS is not available on this device", "ServiceNotSupported"
                )
            ports = [int(p) for p in (optional(protocol, "Port") or [])]
            if not ports or any(not 0 < p < 65536 for p in ports):
                raise InvalidArgument(f"{name} needs ports between 1 and 65535")
            current[name] = {"Name": name, "Enabled": bool(protocol.Enabled), "Port": ports}
        await self.deps.store.put("network_protocols", list(current.values()))

    # -- default gateway -------------------------------------------------------------------
    async def get_network_default_gateway(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        stored = self.deps.store.get("default_gateway")
        if stored is None:
            ipv4, ipv6 = await asyncio.to_thread(hostinfo.read_default_gateways)
            stored = {"ipv4": list(ipv4), "ipv6": list(ipv6)}
        return {"NetworkGateway": {"IPv4Address": stored["ipv4"], "IPv6Address": stored["ipv6"]}}

    async def set_network_default_gateway(self, ctx: CallContext, req: Any) -> None:
        ipv4 = [_ip(a, 4, "InvalidGatewayAddress") for a in (optional(req, "IPv4Address") or [])]
        ipv6 = [_ip(a, 6, "InvalidGatewayAddress") for a in (optional(req, "IPv6Address") or [])]
        if self._apply:
            await self._host_call(
                hostinfo.apply_default_gateway, ipv4[0] if ipv4 else None, ipv6[0] if ipv6 else None
            )
        await self.deps.store.put("default_gateway", {"ipv4": ipv4, "ipv6": ipv6})

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetHostname": self.get_hostname,
            "SetHostname": self.set_hostname,
            "GetDNS": self.get_dns,
            "SetDNS": self.set_dns,
            "GetNTP": self.get_ntp,
            "SetNTP": self.set_ntp,
            "GetNetworkInterfaces": self.get_network_interfaces,
            "SetNetworkInterfaces": self.set_network_interfaces,
            "GetNetworkProtocols": self.get_network_protocols,
            "SetNetworkProtocols": self.set_network_protocols,
            "GetNetworkDefaultGateway": self.get_network_default_gateway,
            "SetNetworkDefaultGateway": self.set_network_default_gateway,
        }


def _network_host(server: str) -> dict[str, Any]:
    try:
        version = ipaddress.ip_address(server).version
    except ValueError:
        return {"Type": "DNS", "DNSname": server}
    return (
        {"Type": "IPv4", "IPv4Address": server}
        if version == 4
        else {"Type": "IPv6", "IPv6Address": server}
    )
