"""The WS-Discovery client role: probe for ONVIF devices and collect their answers.

A probe goes to the multicast group on each chosen interface (and/or unicast to given
hosts), then answers are collected until the timeout, de-duplicated by endpoint address.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Sequence

from onvif_nvr.discovery import messages as m
from onvif_nvr.discovery.target import GROUP_V4, LocalAddress, mreq_v4

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Found:
    endpoint: m.Endpoint
    #: The address the answer came from.
    source: str


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.found: dict[str, Found] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = m.parse(data)
        except m.DiscoveryError as exc:
            log.debug("discovery answer from %s dropped: %s", addr[0], exc)
            return
        if not isinstance(message, m.Announcement) or message.relates_to != self.message_id:
            return
        for endpoint in message.endpoints:
            if endpoint.address and endpoint.address not in self.found:
                self.found[endpoint.address] = Found(endpoint, addr[0])


async def probe(
    *,
    addresses: Sequence[LocalAddress] = (),
    unicast: Sequence[tuple[str, int]] = (),
    types: Sequence[m.QName] = (m.NVT,),
    scopes: Sequence[str] = (),
    timeout_s: float = 3.0,
    port: int = 3702,
) -> list[Found]:
    """Probe on the IPv4 ``addresses``' interfaces (multicast) and to ``unicast`` hosts."""
    loop = asyncio.get_running_loop()
    message_id = m.new_message_id()
    data = m.build_probe(types=types, scopes=scopes, message_id=message_id)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.bind(("0.0.0.0", 0))
    transport, collector = await loop.create_datagram_endpoint(
        lambda: _Collector(message_id), sock=sock
    )
    try:
        for attempt in range(2):  # SOAP-over-UDP: send twice, same MessageID
            for address in addresses:
                if address.family != socket.AF_INET:
                    continue
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreq_v4(address))
                    transport.sendto(data, (GROUP_V4, port))
            for host, host_port in unicast:
                transport.sendto(data, (host, host_port))
            await asyncio.sleep(0.1 if attempt == 0 else 0)
        await asyncio.sleep(max(0.0, timeout_s - 0.1))
    finally:
        transport.close()
    return list(collector.found.values())
