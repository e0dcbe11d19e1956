"""The host's real network, time and storage settings, for the ONVIF Device service.

Readers back GetHostname, GetDNS, GetNetworkInterfaces, GetNetworkDefaultGateway, GetNTP,
GetSystemDateAndTime (the TZ string) and GetStorageConfigurations. The ``apply_*``
functions change the host and are called only when the operator's config allows it.

Everything is synchronous (callers run it in a thread). The file readers and writers take
``root``: the directory that stands for ``/`` when finding ``/etc``, ``/proc``, ``/sys``,
``/run`` and ``/var/lib`` files, so tests point it at a fake tree. ``volume_info`` asks
the kernel about a real path, and the ``ip`` appliers take a network namespace instead. Symlinks are followed inside
``root`` as a chroot would, so ``/etc/resolv.conf -> /run/...`` works in a fake tree.

IPv4 addresses are the one thing no file under /proc or /sys lists per interface
(``/proc/net/fib_trie`` lacks the interface and loses addresses of down links). They come
from the kernel through ``SIOCGIFCONF`` + ``SIOCGIFNETMASK`` when ``root`` is ``/``;
with another root they come only from the ``ipv4_source`` callable given to
:func:`read_interfaces`, because the running kernel knows nothing about a fake tree.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import ipaddress
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from onvif_nvr.errors import ActionFailed
from onvif_nvr.system import posixtz

_ROOT = Path("/")
_MAX_FILE_BYTES = 1 << 20
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_RTF_UP = 0x1
_RTF_GATEWAY = 0x2
_RTF_REJECT = 0x200
_SIOCGIFCONF = 0x8912
_SIOCGIFNETMASK = 0x891B
# struct ifreq: 16-byte name + a union whose largest member (struct ifmap) is 24 bytes on
# 64-bit and 16 on 32-bit.
_IFREQ_SIZE = 40 if struct.calcsize("P") == 8 else 32
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_IP_TEXT = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.\-]{1,15})?")
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,14}")
_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_LABEL = re.compile(r"[A-Za-z0-9-]+")
_HEADER = "# Written by onvif-nvr"

Ipv4Source = Callable[[], Mapping[str, Sequence[tuple[str, int]]]]


@dataclass(frozen=True)
class InterfaceInfo:
    """One network interface; ``hw_address`` is "" unless it is a non-zero 6-byte MAC."""

    name: str
    index: int
    hw_address: str
    mtu: int
    enabled: bool
    is_loopback: bool
    ipv4: tuple[tuple[str, int], ...]
    ipv6: tuple[tuple[str, int], ...]
    ipv4_dhcp: bool


@dataclass(frozen=True)
class DnsInfo:
    search_domains: tuple[str, ...]
    nameservers: tuple[str, ...]
    from_dhcp: bool


@dataclass(frozen=True)
class VolumeInfo:
    """Size of the file system holding ``path``; ``free_bytes`` is what non-root may use."""

    path: str
    mount_point: str
    device: str
    fs_type: str
    total_bytes: int
    free_bytes: int
    used_bytes: int


def _resolve_in_root(root: Path, path: str) -> Path:
    """``path`` under ``root`` with symlinks followed as if ``root`` were ``/``."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:  # the kernel's own limit
                raise OSError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo[:0] = [p for p in target.split("/") if p not in ("", ".")]
        else:
            done.append(part)
    return root.joinpath(*done)


def _read_bytes(root: Path, path: str) -> bytes | None:
    try:
        with open(_resolve_in_root(root, path), "rb") as f:
            return f.read(_MAX_FILE_BYTES)
    except OSError:
        return None


def _read_text(root: Path, path: str) -> str | None:
    data = _read_bytes(root, path)
    return None if data is None else data.decode("utf-8", "replace")


def _list_dir(root: Path, path: str) -> list[str]:
    try:
        return sorted(os.listdir(_resolve_in_root(root, path)))
    except OSError:
        return []


def _is_real_root(root: Path) -> bool:
    return root.resolve() == _ROOT


def read_interfaces(
    root: Path = _ROOT, ipv4_source: Ipv4Source | None = None
) -> list[InterfaceInfo]:
    """Every interface in ``/sys/class/net``, sorted by index (see the module doc on IPv4)."""
    if ipv4_source is None:
        ipv4_source = kernel_ipv4_addresses if _is_real_root(root) else dict
    names = [n for n in _list_dir(root, "/sys/class/net") if _sys_int(root, n, "ifindex") >= 0]
    ipv4: dict[str, list[tuple[str, int]]] = {}
    for label, addrs in ipv4_source().items():
        # Alias labels ("eth0:1") belong to the interface before the colon.
        name = label if label in names else label.split(":", 1)[0]
        ipv4.setdefault(name, []).extend(addrs)
    ipv6 = _read_if_inet6(root)
    leases = _lease_files(root)
    result = []
    for name in names:
        index = _sys_int(root, name, "ifindex")
        flags = _sys_int(root, name, "flags", base=16)
        mac = (_read_text(root, f"/sys/class/net/{name}/address") or "").strip().lower()
        result.append(
            InterfaceInfo(
                name=name,
                index=index,
                hw_address=mac if _MAC.fullmatch(mac) and mac != "00:00:00:00:00:00" else "",
                mtu=max(_sys_int(root, name, "mtu"), 0),
                enabled=flags >= 0 and bool(flags & _IFF_UP),
                is_loopback=flags >= 0 and bool(flags & _IFF_LOOPBACK),
                ipv4=tuple(ipv4.get(name, ())),
                ipv6=tuple(ipv6.get(name, ())),
                ipv4_dhcp=any(_lease_is_for(root, d, f, name, index) for d, f in leases),
            )
        )
    result.sort(key=lambda i: i.index)
    return result


def _sys_int(root: Path, name: str, attr: str, base: int = 10) -> int:
    text = _read_text(root, f"/sys/class/net/{name}/{attr}")
    try:
        return int((text or "").strip(), base)
    except ValueError:
        return -1


def _read_if_inet6(root: Path) -> dict[str, list[tuple[str, int]]]:
    # Lines: address (32 hex), ifindex, prefix length, scope, flags (all hex), name.
    out: dict[str, list[tuple[str, int]]] = {}
    for line in (_read_text(root, "/proc/net/if_inet6") or "").splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            prefix = int(fields[2], 16)
        except ValueError:
            continue
        out.setdefault(fields[5], []).append((addr.compressed, prefix))
    return out


def kernel_ipv4_addresses() -> dict[str, list[tuple[str, int]]]:
    """IPv4 (address, prefix) per interface label, as the running kernel has them."""
    out: dict[str, list[tuple[str, int]]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        size = 64 * _IFREQ_SIZE
        while True:
            buf = array.array("B", bytes(size))
            request = struct.pack("iP", size, buf.buffer_info()[0])
            used = struct.unpack("iP", fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, request))[0]
            # A full buffer may have cut the list short; the kernel does not say so.
            if used <= size - _IFREQ_SIZE:
                break
            size *= 2
        raw = buf.tobytes()[:used]
        for off in range(0, used, _IFREQ_SIZE):
            label = raw[off : off + 16].split(b"\0", 1)[0]
            addr = raw[off + 20 : off + 24]
            # Passing the address makes the kernel pick that exact address's netmask, not
            # the label's first one, so secondaries keep their own prefix.
            req = struct.pack("16sHH4s", label, socket.AF_INET, 0, addr).ljust(_IFREQ_SIZE, b"\0")
            try:
                mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, req)[20:24]
            except OSError:  # removed since SIOCGIFCONF
                continue
            prefix = bin(int.from_bytes(mask, "big")).count("1")
            name = label.decode("utf-8", "replace")
            out.setdefault(name, []).append((socket.inet_ntoa(addr), prefix))
    return out


# DHCP clients and where they keep IPv4 leases; the file name says which interface.
_LEASE_DIRS = (
    "/run/systemd/netif/leases",  # systemd-networkd: file named by ifindex
    "/var/lib/dhcp",  # dhclient (Debian): dhclient.<if>.leases or dhclient.leases
    "/var/lib/dhclient",  # dhclient (Red Hat): dhclient-<uuid>-<if>.lease
    "/var/lib/NetworkManager",  # internal-<uuid>-<if>.lease, dhclient-<uuid>-<if>.lease
    "/var/lib/dhcpcd",  # dhcpcd: <if>.lease
    "/var/lib/dhcpcd5",  # dhcpcd 5 (Raspberry Pi OS): dhcpcd-<if>.lease
)


def _lease_files(root: Path) -> list[tuple[str, str]]:
    found = []
    for d in _LEASE_DIRS:
        for f in _list_dir(root, d):
            if d.endswith("/leases") or f.endswith((".lease", ".leases")):
                try:
                    if _resolve_in_root(root, f"{d}/{f}").stat().st_size > 0:
                        found.append((d, f))
                except OSError:
                    continue
    return found


def _lease_is_for(root: Path, d: str, f: str, name: str, index: int) -> bool:
    if d == "/run/systemd/netif/leases":
        return f == str(index)
    stem = f.removesuffix(".leases").removesuffix(".lease")
    if stem == "dhclient":  # one file for all interfaces
        return f'interface "{name}";' in (_read_text(root, f"{d}/{f}") or "")
    return stem == name or stem.endswith((f"-{name}", f".{name}"))


# Header comments of generated resolv.conf files; "dhcp" means a DHCP client wrote it, and
# "manager" a service that may hold DHCP-learnt or static servers (then a lease decides).
_RESOLV_WRITERS = (
    ("onvif-nvr", "static"),
    ("systemd-resolved", "manager"),
    ("networkmanager", "manager"),
    ("resolvconf", "manager"),
    ("connection manager", "manager"),
    ("netconfig", "manager"),
    ("dhcpcd", "dhcp"),
    ("dhclient", "dhcp"),
    ("udhcpc", "dhcp"),
)


def _parse_resolv_conf(text: str) -> tuple[list[str], list[str], str]:
    search: list[str] = []
    servers: list[str] = []
    comments = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0][0] in "#;":
            comments.append(line.lower())
        elif fields[0] == "nameserver" and len(fields) >= 2:
            try:
                servers.append(validate_ip(fields[1]))
            except ValueError:
                continue
        elif fields[0] in ("search", "domain"):
            search = fields[1:]  # resolv.conf(5): the last search or domain line wins
    return search, servers, "\n".join(comments)


def read_dns(root: Path = _ROOT) -> DnsInfo:
    """Search domains and name servers of ``/etc/resolv.conf``, the upstream ones behind
    systemd-resolved's stub, and a best-effort guess whether DHCP supplied them."""
    search, servers, comments = _parse_resolv_conf(_read_text(root, "/etc/resolv.conf") or "")
    kind = next((k for key, k in _RESOLV_WRITERS if key in comments), "static")
    if "systemd-resolved" in comments and all(s.startswith("127.0.0.5") for s in servers):
        # The stub only names 127.0.0.53; ONVIF clients want the servers resolved asks.
        upstream = _read_text(root, "/run/systemd/resolve/resolv.conf")
        if upstream is not None:
            search, servers, _ = _parse_resolv_conf(upstream)
    from_dhcp = kind == "dhcp" or (kind == "manager" and bool(_lease_files(root)))
    return DnsInfo(tuple(search), tuple(servers), from_dhcp)


def read_default_gateways(root: Path = _ROOT) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Default-route gateways (IPv4, IPv6) in ``/proc/net/route`` and ``ipv6_route``,
    lowest metric first."""
    v4: list[tuple[int, str]] = []
    for line in (_read_text(root, "/proc/net/route") or "").splitlines()[1:]:
        f = line.split()
        try:
            dest, gw, flags, metric, mask = (int(f[i], 16) for i in (1, 2, 3, 6, 7))
        except (IndexError, ValueError):
            continue
        if dest == 0 and mask == 0 and flags & _RTF_UP and flags & _RTF_GATEWAY:
            # The kernel prints the address as a host-order integer.
            v4.append((metric, socket.inet_ntoa(gw.to_bytes(4, sys.byteorder))))
    v6: list[tuple[int, str]] = []
    for line in (_read_text(root, "/proc/net/ipv6_route") or "").splitlines():
        f = line.split()
        try:
            dest, plen, nexthop = int(f[0], 16), int(f[1], 16), int(f[4], 16)
            metric, flags = int(f[5], 16), int(f[8], 16)
        except (IndexError, ValueError):
            continue
        if dest or plen or not nexthop or flags & _RTF_REJECT:
            continue
        if flags & _RTF_UP and flags & _RTF_GATEWAY:
            v6.append((metric, ipaddress.IPv6Address(nexthop).compressed))
    return _by_metric(v4), _by_metric(v6)


def _by_metric(routes: list[tuple[int, str]]) -> tuple[str, ...]:
    routes.sort(key=lambda r: r[0])
    return tuple(dict.fromkeys(gw for _, gw in routes))


def read_hostname(root: Path = _ROOT) -> str:
    """The kernel's host name (``/proc/sys/kernel/hostname``)."""
    name = (_read_text(root, "/proc/sys/kernel/hostname") or "").strip()
    return name or socket.gethostname()


# systemd's search order for a daemon's config: a drop-in name in an earlier directory hides
# the same name in a later one, and all drop-ins apply in file-name order.
_SYSTEMD_DIRS = ("/etc/systemd", "/run/systemd", "/usr/local/lib/systemd", "/usr/lib/systemd")
_CHRONY_NTPD_CONFS = (
    "/etc/chrony/chrony.conf",
    "/etc/chrony.conf",
    "/etc/ntp.conf",
    "/etc/ntpsec/ntp.conf",
)


def read_ntp_servers(root: Path = _ROOT) -> tuple[str, ...]:
    """NTP servers configured for systemd-timesyncd (NTP= then FallbackNTP=), chrony and ntpd."""
    servers: list[str] = []
    main = next(
        (t for d in _SYSTEMD_DIRS if (t := _read_text(root, f"{d}/timesyncd.conf")) is not None),
        "",
    )
    dropins: dict[str, str] = {}
    for d in reversed(_SYSTEMD_DIRS):
        for f in _list_dir(root, f"{d}/timesyncd.conf.d"):
            if f.endswith(".conf"):
                dropins[f] = f"{d}/timesyncd.conf.d/{f}"
    ntp: list[str] = []
    fallback: list[str] = []
    for text in [main] + [_read_text(root, dropins[f]) or "" for f in sorted(dropins)]:
        section = ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Time]" and "=" in line and line[0] not in "#;":
                key, value = (s.strip() for s in line.split("=", 1))
                target = {"NTP": ntp, "FallbackNTP": fallback}.get(key)
                if target is not None:
                    # As in timesyncd: an empty value resets, others add to the list.
                    target[:] = target + value.split() if value else []
    servers += ntp + fallback
    # chrony's confdir/sourcedir includes are not followed.
    for conf in _CHRONY_NTPD_CONFS:
        servers += _config_servers(_read_text(root, conf) or "")
    return tuple(dict.fromkeys(servers))


def _config_servers(text: str) -> list[str]:
    """Hosts of ``server``/``pool`` lines (ntpd and chrony share this syntax)."""
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] in ("server", "pool"):
            host = next((f for f in fields[1:] if not f.startswith("-")), "")
            # 127.127.t.u are ntpd's reference-clock drivers, not servers.
            if host and not host.startswith("127.127."):
                out.append(host)
    return out


def read_posix_tz(root: Path = _ROOT) -> str:
    """The host's time zone as a POSIX TZ string: the footer of ``/etc/localtime``, else
    the zone named in ``/etc/timezone``, else ``UTC0``."""
    data = _read_bytes(root, "/etc/localtime")
    if data is not None:
        try:
            footer = posixtz.read_tzif_footer(data)
            if footer is not None:
                return posixtz.parse(footer).text
        except ValueError:
            pass
    name = (_read_text(root, "/etc/timezone") or "").strip()
    if name:
        try:
            return posixtz.from_iana(name, _resolve_in_root(root, "/usr/share/zoneinfo")).text
        except (ValueError, OSError):
            pass
    return "UTC0"


def volume_info(path: Path) -> VolumeInfo:
    """Size and mount of the file system that holds ``path`` (which must exist)."""
    real = os.path.realpath(path)
    st = os.statvfs(real)
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        mount_point, device, fs_type = _mount_of(real, f.read())
    return VolumeInfo(
        path=real,
        mount_point=mount_point,
        device=device,
        fs_type=fs_type,
        total_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bavail * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
    )


def _mount_of(path: str, mounts_text: str) -> tuple[str, str, str]:
    """(mount point, device, type) of the longest mount point containing ``path``; on a
    tie the later line wins, as it is mounted on top."""
    best = ("/", "", "")
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, fs_type = (_unescape_mount(f) for f in fields[:3])
        inside = mount_point == "/" or path == mount_point or path.startswith(mount_point + "/")
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, device, fs_type)
    return best


def _unescape_mount(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as \040, \011, \012, \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def validate_ip(text: str, version: int | None = None) -> str:
    """The canonical form of an IP address; ``version`` 4 or 6 narrows what is accepted."""
    kind = {None: "an IP", 4: "an IPv4", 6: "an IPv6"}[version]
    # ipaddress accepts any text after "%" as an IPv6 scope, newlines included, which would
    # let a client inject lines into resolv.conf; allow only interface-name characters.
    if not isinstance(text, str) or _IP_TEXT.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not {kind} address")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {kind} address") from None
    if version is not None and addr.version != version:
        raise ValueError(f"{text!r} is not {kind} address")
    return str(addr)


def validate_hostname(name: str) -> str:
    """``name`` if it is a host name by RFC 1123 section 2.1 that fits the kernel (64 bytes)."""
    return _check_dns_name(name, "hostname", 64)


def _check_dns_name(name: str, what: str, max_length: int) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} is empty")
    if len(name) > max_length:
        raise ValueError(f"{what} is longer than {max_length} characters")
    for label in name.split("."):
        if not label:
            raise ValueError(f"{what} {name!r} has an empty label")
        if _LABEL.fullmatch(label) is None:
            bad = next(ch for ch in label if not (ch.isascii() and (ch.isalnum() or ch == "-")))
            raise ValueError(
                f"{what} {name!r} contains {bad!r}; only letters, digits, '-' and '.' are allowed"
            )
        if len(label) > 63:
            raise ValueError(f"{what} label {label!r} is longer than 63 characters")
        if label[0] == "-" or label[-1] == "-":
            raise ValueError(f"{what} label {label!r} starts or ends with '-'")
    # RFC 1123 section 2.1: a host name never has the dotted-decimal form #.#.#.#.
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+){3}", name):
        raise ValueError(f"{what} {name!r} has the form of an IPv4 address")
    return name


def _check_ifname(ifname: str) -> None:
    if not isinstance(ifname, str) or _IFNAME.fullmatch(ifname) is None:
        raise ValueError(f"interface name {ifname!r} is not valid")


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` (a symlink too) so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # make the rename itself survive a power cut
    finally:
        os.close(dir_fd)


def apply_hostname(name: str, root: Path = _ROOT) -> None:
    """Set the host name in ``<root>/etc/hostname`` and, on the real root, in the kernel."""
    validate_hostname(name)
    if _is_real_root(root):
        # First, as it is the step that fails without CAP_SYS_ADMIN: then nothing changed.
        socket.sethostname(name)
    _atomic_write(root / "etc" / "hostname", name + "\n")


def apply_dns(
    search_domains: Iterable[str], nameservers: Iterable[str], root: Path = _ROOT
) -> None:
    """Write ``<root>/etc/resolv.conf``, replacing a symlink to a resolver's generated file
    (whose writer would overwrite our servers anyway)."""
    domains = [_check_dns_name(d, "search domain", 253) for d in search_domains]
    servers = [validate_ip(s) for s in nameservers]
    lines = [f"{_HEADER} for ONVIF SetDNS; it replaces this file on the next SetDNS."]
    if domains:
        lines.append("search " + " ".join(domains))
    lines += [f"nameserver {s}" for s in servers]
    _atomic_write(root / "etc" / "resolv.conf", "\n".join(lines) + "\n")


def apply_ntp(servers: Iterable[str], root: Path = _ROOT) -> None:
    """Write the systemd-timesyncd drop-in ``onvif-nvr.conf``; timesyncd reads it when
    restarted, which is the caller's job."""
    checked = []
    for server in servers:
        try:
            checked.append(validate_ip(server))
        except ValueError:
            checked.append(_check_dns_name(server, "NTP server", 253))
    text = (
        f"{_HEADER} for ONVIF SetNTP.\n[Time]\n"
        "# The empty NTP= drops servers set by timesyncd.conf and earlier drop-ins.\nNTP=\n"
    )
    if checked:
        text += "NTP=" + " ".join(checked) + "\n"
    _atomic_write(root / "etc" / "systemd" / "timesyncd.conf.d" / "onvif-nvr.conf", text)


def _ip_command(netns: str | None, *args: str) -> list[str]:
    if netns is None:
        return ["ip", *args]
    if not isinstance(netns, str) or _NETNS.fullmatch(netns) is None:
        raise ValueError(f"network namespace name {netns!r} is not valid")
    return ["ip", "-n", netns, *args]


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ActionFailed("the 'ip' command (iproute2) is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.strip() or "no error output"
        raise ActionFailed(
            f"'{' '.join(argv)}' failed with exit status {exc.returncode}: {detail}"
        ) from None
    except subprocess.TimeoutExpired:
        raise ActionFailed(f"'{' '.join(argv)}' did not finish within 30 s") from None


def apply_default_gateway(ipv4: str | None, ipv6: str | None, netns: str | None = None) -> None:
    """Replace the default route of each given family; ``ActionFailed`` if ``ip`` fails."""
    if ipv4 is None and ipv6 is None:
        raise ValueError("no default gateway given")
    commands = [
        _ip_command(netns, f"-{v}", "route", "replace", "default", "via", validate_ip(gw, v))
        for v, gw in ((4, ipv4), (6, ipv6))
        if gw is not None
    ]
    # Everything is validated before the first command runs.
    for argv in commands:
        _run(argv)


def apply_ipv4_address(ifname: str, address: str, prefix: int, netns: str | None = None) -> None:
    """Make ``address/prefix`` the only IPv4 address of ``ifname``.

    Flushing the old address also drops routes through it (the default route too), so
    callers re-apply the gateway afterwards. Only IPv4 is flushed: IPv6 link-local and
    SLAAC addresses must survive.
    """
    _check_ifname(ifname)
    address = validate_ip(address, 4)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= 32:
        raise ValueError(f"IPv4 prefix length must be 1..32, got {prefix!r}")
    addr = ipaddress.IPv4Address(address)
    if addr.is_multicast or addr.is_unspecified or addr.is_reserved:
        raise ValueError(f"{address} cannot be assigned to an interface")
    flush = _ip_command(netns, "-4", "addr", "flush", "dev", ifname)
    add = _ip_command(netns, "-4", "addr", "add", f"{address}/{prefix}", "dev", ifname)
    _run(flush)
    _run(add)


@dataclass(frozen=True)
class ClockSync:
    """The kernel's view of the system clock's discipline (adjtimex, read-only)."""

    #: An NTP daemon keeps the clock synchronized (the kernel's STA_UNSYNC is clear).
    synchronized: bool
    #: Maximum and estimated error of the clock as the daemon last set them, in µs.
    max_error_us: int
    est_error_us: int


# struct timex (linux/timex.h): the fields read here come first; the tail is padding.
class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


def clock_sync() -> ClockSync | None:
    """Whether the system clock is NTP-disciplined, from ``adjtimex`` with no change
    requested (allowed to any user); None where the call is unavailable (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    synchronized = state != _TIME_ERROR and not timex.status & _STA_UNSYNC
    return ClockSync(synchronized, int(timex.maxerror), int(timex.esterror))
