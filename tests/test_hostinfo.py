"""Host settings: readers against fake roots with real-looking files, then against "/";
the ip(8) appliers inside a network namespace of their own."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onvif_nvr.errors import ActionFailed
from onvif_nvr.system import hostinfo, posixtz
from onvif_nvr.system.hostinfo import DnsInfo, InterfaceInfo

PARIS = Path("/usr/share/zoneinfo/Europe/Paris")
NEW_YORK = Path("/usr/share/zoneinfo/America/New_York")


def put(root: Path, path: str, content: str | bytes) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    return target


def link(root: Path, path: str, target: str) -> None:
    where = root / path.lstrip("/")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.symlink_to(target)


def fake_interface(root: Path, name: str, index: int, mac: str, mtu: int, flags: int) -> None:
    base = f"/sys/class/net/{name}"
    put(root, f"{base}/ifindex", f"{index}\n")
    put(root, f"{base}/address", f"{mac}\n")
    put(root, f"{base}/mtu", f"{mtu}\n")
    put(root, f"{base}/flags", f"{flags:#x}\n")
    put(root, f"{base}/operstate", "up\n" if flags & 1 else "down\n")


# /proc/net/if_inet6 as Linux writes it: address, ifindex, prefix, scope, flags, name.
IF_INET6 = (
    "00000000000000000000000000000001 01 80 10 80       lo\n"
    "fe8000000000000000fc00fffe000001 02 40 20 80     eth0\n"
    "20010db8000100000000000000000010 02 40 00 00     eth0\n"
)


def test_read_interfaces_from_fake_root(tmp_path: Path) -> None:
    fake_interface(tmp_path, "eth0", 2, "02:FC:00:00:00:01", 1500, 0x1003)
    fake_interface(tmp_path, "lo", 1, "00:00:00:00:00:00", 65536, 0x9)
    fake_interface(tmp_path, "wlan0", 3, "a4:5e:60:12:34:56", 1500, 0x1002)
    fake_interface(
        tmp_path, "ip6tnl0", 4, "00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00", 1452, 0x80
    )
    put(tmp_path, "/sys/class/net/bonding_masters", "\n")  # a file, not an interface
    put(tmp_path, "/proc/net/if_inet6", IF_INET6)
    put(
        tmp_path,
        "/run/systemd/netif/leases/2",
        "# This is private data. Do not parse.\nADDRESS=192.168.1.20\n",
    )
    put(
        tmp_path,
        "/var/lib/NetworkManager/internal-6d1c2f2e-0b7e-4f4c-9d1b-2d9c1f0e8a11-wlan0.lease",
        "ADDRESS=10.0.0.5\n",
    )
    put(
        tmp_path,
        "/var/lib/NetworkManager/internal-6d1c2f2e-0b7e-4f4c-9d1b-2d9c1f0e8a12-lo.lease",
        "",
    )

    def ipv4() -> dict[str, list[tuple[str, int]]]:
        return {
            "lo": [("127.0.0.1", 8)],
            "eth0": [("192.168.1.20", 24)],
            "eth0:1": [("172.16.0.1", 12)],  # an alias label belongs to eth0
            "wlan0": [("10.0.0.5", 8)],
        }

    interfaces = hostinfo.read_interfaces(tmp_path, ipv4_source=ipv4)
    assert interfaces == [
        InterfaceInfo("lo", 1, "", 65536, True, True, (("127.0.0.1", 8),), (("::1", 128),), False),
        InterfaceInfo(
            "eth0",
            2,
            "02:fc:00:00:00:01",
            1500,
            True,
            False,
            (("192.168.1.20", 24), ("172.16.0.1", 12)),
            (("fe80::fc:ff:fe00:1", 64), ("2001:db8:1::10", 64)),
            True,
        ),
        InterfaceInfo(
            "wlan0", 3, "a4:5e:60:12:34:56", 1500, False, False, (("10.0.0.5", 8),), (), True
        ),
        InterfaceInfo("ip6tnl0", 4, "", 1452, False, False, (), (), False),
    ]
    # Without a source, a fake root has no IPv4 addresses: the running kernel's are not its.
    assert all(i.ipv4 == () for i in hostinfo.read_interfaces(tmp_path))


def test_dhclient_leases_name_the_interface(tmp_path: Path) -> None:
    fake_interface(tmp_path, "eth0", 2, "02:fc:00:00:00:01", 1500, 0x1003)
    fake_interface(tmp_path, "eth1", 3, "02:fc:00:00:00:02", 1500, 0x1003)
    put(
        tmp_path,
        "/var/lib/dhcp/dhclient.leases",
        'lease {\n  interface "eth1";\n  fixed-address 192.168.7.9;\n}\n',
    )
    dhcp = {i.name: i.ipv4_dhcp for i in hostinfo.read_interfaces(tmp_path)}
    assert dhcp == {"eth0": False, "eth1": True}
    put(tmp_path, "/var/lib/dhcp/dhclient.eth0.leases", 'lease {\n  interface "eth0";\n}\n')
    assert all(i.ipv4_dhcp for i in hostinfo.read_interfaces(tmp_path))


RESOLVED_STUB = """\
# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
# Do not edit.
#
# This file might be symlinked as /etc/resolv.conf. If you're looking at
# /etc/resolv.conf and seeing this text, you have followed the symlink.
#
# Run "resolvectl status" to see details about the uplink DNS servers
# currently in use.

nameserver 127.0.0.53
options edns0 trust-ad
search lan
"""

RESOLVED_UPSTREAM = """\
# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).
# Do not edit.

nameserver 192.168.1.1
nameserver fd00::1
search lan example.com
"""


def test_read_dns_static_file(tmp_path: Path) -> None:
    put(
        tmp_path,
        "/etc/resolv.conf",
        "; written by hand\n"
        "domain old.example\n"
        "search corp.example lab.example\n"
        "nameserver 9.9.9.9\n"
        "nameserver not-an-address\n"
        "nameserver 2001:DB8::53\n"
        "options rotate\n",
    )
    assert hostinfo.read_dns(tmp_path) == DnsInfo(
        ("corp.example", "lab.example"), ("9.9.9.9", "2001:db8::53"), False
    )


@pytest.mark.parametrize(
    "target", ["../run/systemd/resolve/stub-resolv.conf", "/run/systemd/resolve/stub-resolv.conf"]
)
def test_read_dns_looks_behind_the_resolved_stub(tmp_path: Path, target: str) -> None:
    put(tmp_path, "/run/systemd/resolve/stub-resolv.conf", RESOLVED_STUB)
    put(tmp_path, "/run/systemd/resolve/resolv.conf", RESOLVED_UPSTREAM)
    link(tmp_path, "/etc/resolv.conf", target)
    expected = DnsInfo(("lan", "example.com"), ("192.168.1.1", "fd00::1"), False)
    assert hostinfo.read_dns(tmp_path) == expected
    # resolved may hold static or DHCP-learnt servers; a lease tips the guess.
    put(tmp_path, "/run/systemd/netif/leases/2", "ADDRESS=192.168.1.20\n")
    assert hostinfo.read_dns(tmp_path).from_dhcp is True


@pytest.mark.parametrize(
    ("header", "from_dhcp"),
    [
        (
            "# Generated by dhcpcd from eth0.dhcp\n# /etc/resolv.conf.head can replace this line\n",
            True,
        ),
        ("; generated by /usr/sbin/dhclient-script\n", True),
        ("# Generated by NetworkManager\n", False),  # no lease: static NetworkManager profile
        (
            "# Dynamic resolv.conf(5) file for glibc resolver(3) generated by resolvconf(8)\n"
            "#     DO NOT EDIT THIS FILE BY HAND -- YOUR CHANGES WILL BE OVERWRITTEN\n",
            False,
        ),
        ("", False),
    ],
)
def test_read_dns_detects_generators(tmp_path: Path, header: str, from_dhcp: bool) -> None:
    put(tmp_path, "/etc/resolv.conf", header + "search home\nnameserver 192.168.0.1\n")
    assert hostinfo.read_dns(tmp_path) == DnsInfo(("home",), ("192.168.0.1",), from_dhcp)


def test_read_dns_without_file(tmp_path: Path) -> None:
    assert hostinfo.read_dns(tmp_path) == DnsInfo((), (), False)


PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t0100000A\t0003\t0\t0\t50\t00000000\t0\t0\t0
wlan0\t0000000A\t00000000\t0001\t0\t0\t600\t000000FF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth1\t00000000\t0201A8C0\t0002\t0\t0\t10\t00000000\t0\t0\t0
"""

PROC_NET_IPV6_ROUTE = (
    "20010db8000100000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fe80000000000000021122fffe334455 00000400 00000001 00000000 00450003     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


def test_read_default_gateways(tmp_path: Path) -> None:
    put(tmp_path, "/proc/net/route", PROC_NET_ROUTE)
    put(tmp_path, "/proc/net/ipv6_route", PROC_NET_IPV6_ROUTE)
    # Lowest metric first, each gateway once; eth1's route is down (no RTF_UP).
    assert hostinfo.read_default_gateways(tmp_path) == (
        ("10.0.0.1", "192.168.1.1"),
        ("fe80::211:22ff:fe33:4455",),
    )
    assert hostinfo.read_default_gateways(tmp_path / "nothing") == ((), ())


def test_read_hostname(tmp_path: Path) -> None:
    put(tmp_path, "/proc/sys/kernel/hostname", "nvr-01\n")
    assert hostinfo.read_hostname(tmp_path) == "nvr-01"
    assert hostinfo.read_hostname(tmp_path / "nothing") == hostinfo.read_hostname()


def test_read_ntp_servers(tmp_path: Path) -> None:
    put(
        tmp_path,
        "/etc/systemd/timesyncd.conf",
        "#  This file is part of systemd.\n[Time]\n#NTP=\nNTP=ntp1.example.org ntp2.example.org\n"
        "FallbackNTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org\n#RootDistanceMaxSec=5\n",
    )
    put(tmp_path, "/etc/systemd/timesyncd.conf.d/20-site.conf", "[Time]\nNTP=\nNTP=192.0.2.123\n")
    put(tmp_path, "/etc/systemd/timesyncd.conf.d/30-more.conf", "[Time]\nNTP=ntp3.example.org\n")
    # Hidden by the same name under /etc, so never read.
    put(tmp_path, "/usr/lib/systemd/timesyncd.conf.d/20-site.conf", "[Time]\nNTP=hidden.example\n")
    put(tmp_path, "/etc/systemd/timesyncd.conf.d/40-other.conf", "[Other]\nNTP=elsewhere.example\n")
    put(
        tmp_path,
        "/etc/chrony/chrony.conf",
        "# Use Debian vendor zone.\npool 2.debian.pool.ntp.org iburst\n"
        "server time.example.com iburst prefer\nsourcedir /run/chrony-dhcp\n",
    )
    put(
        tmp_path,
        "/etc/ntp.conf",
        "driftfile /var/lib/ntp/ntp.drift\nserver 127.127.1.0  # local clock\n"
        "server -4 ntp.example.net iburst\npool 0.ubuntu.pool.ntp.org iburst\n"
        "#server commented.example\nrestrict default kod\n",
    )
    put(tmp_path, "/etc/ntpsec/ntp.conf", "pool 0.debian.pool.ntp.org iburst\n")
    assert hostinfo.read_ntp_servers(tmp_path) == (
        "192.0.2.123",
        "ntp3.example.org",
        "0.debian.pool.ntp.org",
        "1.debian.pool.ntp.org",
        "2.debian.pool.ntp.org",
        "time.example.com",
        "ntp.example.net",
        "0.ubuntu.pool.ntp.org",
    )
    assert hostinfo.read_ntp_servers(tmp_path / "nothing") == ()


def copy_zone(root: Path, source: Path, name: str) -> None:
    if not source.is_file():
        pytest.skip(f"{source} is not installed")
    put(root, f"/usr/share/zoneinfo/{name}", source.read_bytes())


def test_read_posix_tz_from_localtime_copy(tmp_path: Path) -> None:
    if not PARIS.is_file():
        pytest.skip(f"{PARIS} is not installed")
    put(tmp_path, "/etc/localtime", PARIS.read_bytes())
    assert hostinfo.read_posix_tz(tmp_path) == "CET-1CEST,M3.5.0,M10.5.0/3"


def test_read_posix_tz_follows_absolute_symlink_inside_root(tmp_path: Path) -> None:
    copy_zone(tmp_path, PARIS, "Europe/Paris")
    link(tmp_path, "/etc/localtime", "/usr/share/zoneinfo/Europe/Paris")
    assert hostinfo.read_posix_tz(tmp_path) == "CET-1CEST,M3.5.0,M10.5.0/3"


def test_read_posix_tz_falls_back_to_etc_timezone(tmp_path: Path) -> None:
    copy_zone(tmp_path, NEW_YORK, "America/New_York")
    put(tmp_path, "/etc/timezone", "America/New_York\n")
    assert hostinfo.read_posix_tz(tmp_path) == "EST5EDT,M3.2.0,M11.1.0"
    # A TZif v1 /etc/localtime has no footer, so /etc/timezone still decides.
    put(tmp_path, "/etc/localtime", b"TZif" + bytes(40))
    assert hostinfo.read_posix_tz(tmp_path) == "EST5EDT,M3.2.0,M11.1.0"


def test_read_posix_tz_defaults_to_utc(tmp_path: Path) -> None:
    assert hostinfo.read_posix_tz(tmp_path) == "UTC0"
    put(tmp_path, "/etc/timezone", "../../../etc/passwd\n")
    assert hostinfo.read_posix_tz(tmp_path) == "UTC0"


MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/sdb1 /srv/video ext4 rw,relatime 0 0
/dev/sdc1 /srv/video xfs rw,relatime 0 0
/dev/sdd1 /srv/video2 ext4 rw,relatime 0 0
/dev/sde1 /mnt/my\\040disk vfat rw 0 0
"""


def test_mount_of_takes_longest_and_topmost_mount() -> None:
    assert hostinfo._mount_of("/srv/video/cam1", MOUNTS) == ("/srv/video", "/dev/sdc1", "xfs")
    assert hostinfo._mount_of("/srv/video", MOUNTS) == ("/srv/video", "/dev/sdc1", "xfs")
    assert hostinfo._mount_of("/srv/videos", MOUNTS) == ("/", "/dev/vda1", "ext4")
    assert hostinfo._mount_of("/mnt/my disk/a", MOUNTS) == ("/mnt/my disk", "/dev/sde1", "vfat")


def test_volume_info(tmp_path: Path) -> None:
    info = hostinfo.volume_info(tmp_path)
    assert info.path == os.path.realpath(tmp_path)
    assert info.path == info.mount_point or info.path.startswith(info.mount_point.rstrip("/") + "/")
    assert info.total_bytes > 0
    assert 0 <= info.free_bytes <= info.total_bytes
    assert 0 <= info.used_bytes <= info.total_bytes
    assert info.fs_type


@pytest.mark.parametrize("name", ["nvr", "NVR-01", "1nvr", "nvr.example.com", "a" * 63])
def test_validate_hostname_accepts(name: str) -> None:
    assert hostinfo.validate_hostname(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "hostname is empty"),
        (
            "Onvif_test1",
            "hostname 'Onvif_test1' contains '_'; only letters, digits, '-' and '.' are allowed",
        ),
        ("nvr 1", "hostname 'nvr 1' contains ' '; only letters, digits, '-' and '.' are allowed"),
        ("nvré", "hostname 'nvré' contains 'é'; only letters, digits, '-' and '.' are allowed"),
        ("-nvr", "hostname label '-nvr' starts or ends with '-'"),
        ("nvr-", "hostname label 'nvr-' starts or ends with '-'"),
        ("nvr..lan", "hostname 'nvr..lan' has an empty label"),
        ("nvr.", "hostname 'nvr.' has an empty label"),
        ("a" * 64, f"hostname label {'a' * 64!r} is longer than 63 characters"),
        ("a.b" * 22, "hostname is longer than 64 characters"),
        ("192.168.1.10", "hostname '192.168.1.10' has the form of an IPv4 address"),
    ],
)
def test_validate_hostname_rejects(name: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        hostinfo.validate_hostname(name)
    assert str(excinfo.value) == message


def test_validate_ip() -> None:
    assert hostinfo.validate_ip("192.168.1.1") == "192.168.1.1"
    assert hostinfo.validate_ip("2001:DB8:0::1", 6) == "2001:db8::1"
    assert hostinfo.validate_ip("fe80::1%eth0") == "fe80::1%eth0"
    for text, version, message in [
        ("192.168.1", None, "'192.168.1' is not an IP address"),
        ("192.168.1.256", 4, "'192.168.1.256' is not an IPv4 address"),
        ("2001:db8::1", 4, "'2001:db8::1' is not an IPv4 address"),
        ("10.0.0.1", 6, "'10.0.0.1' is not an IPv6 address"),
        (
            "fe80::1%eth0\nnameserver 6.6.6.6",
            None,
            "'fe80::1%eth0\\nnameserver 6.6.6.6' is not an IP address",
        ),
        (" 10.0.0.1", None, "' 10.0.0.1' is not an IP address"),
    ]:
        with pytest.raises(ValueError) as excinfo:
            hostinfo.validate_ip(text, version)
        assert str(excinfo.value) == message


def test_apply_hostname(tmp_path: Path) -> None:
    put(tmp_path, "/etc/hostname", "old\n")
    hostinfo.apply_hostname("nvr-02", tmp_path)
    assert (tmp_path / "etc/hostname").read_text() == "nvr-02\n"
    with pytest.raises(ValueError, match="contains '_'"):
        hostinfo.apply_hostname("bad_name", tmp_path)
    assert (tmp_path / "etc/hostname").read_text() == "nvr-02\n"
    assert sorted(os.listdir(tmp_path / "etc")) == ["hostname"]


def test_apply_dns_replaces_resolved_symlink(tmp_path: Path) -> None:
    put(tmp_path, "/run/systemd/resolve/stub-resolv.conf", RESOLVED_STUB)
    link(tmp_path, "/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
    hostinfo.apply_dns(["corp.example"], ["192.0.2.53", "2001:DB8::53"], tmp_path)
    resolv = tmp_path / "etc/resolv.conf"
    assert not resolv.is_symlink()
    assert resolv.read_text().splitlines() == [
        "# Written by onvif-nvr for ONVIF SetDNS; it replaces this file on the next SetDNS.",
        "search corp.example",
        "nameserver 192.0.2.53",
        "nameserver 2001:db8::53",
    ]
    assert oct(resolv.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "run/systemd/resolve/stub-resolv.conf").read_text() == RESOLVED_STUB
    put(tmp_path, "/run/systemd/netif/leases/2", "ADDRESS=192.168.1.20\n")
    assert hostinfo.read_dns(tmp_path) == DnsInfo(
        ("corp.example",), ("192.0.2.53", "2001:db8::53"), False
    )
    assert sorted(os.listdir(tmp_path / "etc")) == ["resolv.conf"]


def test_apply_dns_validates_everything_first(tmp_path: Path) -> None:
    put(tmp_path, "/etc/resolv.conf", "nameserver 192.0.2.1\n")
    with pytest.raises(ValueError) as excinfo:
        hostinfo.apply_dns(["ok.example"], ["192.0.2.53", "192.0.2.999"], tmp_path)
    assert str(excinfo.value) == "'192.0.2.999' is not an IP address"
    with pytest.raises(ValueError) as excinfo:
        hostinfo.apply_dns(["bad domain"], [], tmp_path)
    assert str(excinfo.value) == (
        "search domain 'bad domain' contains ' '; only letters, digits, '-' and '.' are allowed"
    )
    assert (tmp_path / "etc/resolv.conf").read_text() == "nameserver 192.0.2.1\n"


def test_apply_ntp_round_trips_through_reader(tmp_path: Path) -> None:
    put(
        tmp_path,
        "/etc/systemd/timesyncd.conf",
        "[Time]\nNTP=old.example\nFallbackNTP=fallback.example\n",
    )
    hostinfo.apply_ntp(["ntp.example.com", "192.0.2.123", "2001:DB8::123"], tmp_path)
    written = tmp_path / "etc/systemd/timesyncd.conf.d/onvif-nvr.conf"
    assert "NTP=ntp.example.com 192.0.2.123 2001:db8::123\n" in written.read_text()
    assert hostinfo.read_ntp_servers(tmp_path) == (
        "ntp.example.com",
        "192.0.2.123",
        "2001:db8::123",
        "fallback.example",
    )
    with pytest.raises(ValueError) as excinfo:
        hostinfo.apply_ntp(["ntp.example.com\nNTP=evil.example"], tmp_path)
    assert str(excinfo.value) == (
        "NTP server 'ntp.example.com\\nNTP=evil.example' contains '\\n'; "
        "only letters, digits, '-' and '.' are allowed"
    )
    hostinfo.apply_ntp([], tmp_path)
    assert hostinfo.read_ntp_servers(tmp_path) == ("fallback.example",)


def test_apply_validation_happens_before_any_command() -> None:
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: hostinfo.apply_default_gateway(None, None), "no default gateway given"),
        (
            lambda: hostinfo.apply_default_gateway("2001:db8::1", None),
            "'2001:db8::1' is not an IPv4 address",
        ),
        (
            lambda: hostinfo.apply_default_gateway("192.0.2.1", "192.0.2.2"),
            "'192.0.2.2' is not an IPv6 address",
        ),
        (
            lambda: hostinfo.apply_default_gateway("192.0.2.1", None, netns="-bad"),
            "network namespace name '-bad' is not valid",
        ),
        (
            lambda: hostinfo.apply_ipv4_address("../x", "192.0.2.1", 24),
            "interface name '../x' is not valid",
        ),
        (
            lambda: hostinfo.apply_ipv4_address("eth0", "192.0.2.1", 33),
            "IPv4 prefix length must be 1..32, got 33",
        ),
        (
            lambda: hostinfo.apply_ipv4_address("eth0", "224.0.0.1", 24),
            "224.0.0.1 cannot be assigned to an interface",
        ),
        (
            lambda: hostinfo.apply_ipv4_address("eth0", "0.0.0.0", 8),
            "0.0.0.0 cannot be assigned to an interface",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as excinfo:
            call()
        assert str(excinfo.value) == message


# --- ip(8) in a namespace of our own ---------------------------------------------------------


def ip_json(netns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", *args], check=True, capture_output=True, text=True
    )
    parsed: list[dict[str, object]] = json.loads(out.stdout or "[]")
    return parsed


def run_in_netns(netns: str, code: str) -> object:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("ip(8) is not installed")
    name = f"onvifnvr-test-{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"'ip netns add' failed: {created.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def test_apply_address_and_gateways_in_own_netns(netns: str) -> None:
    ip = ["ip", "-n", netns]
    # Kernels without the dummy driver still have veth; both ends stay in the namespace.
    if subprocess.run([*ip, "link", "add", "d0", "type", "dummy"], capture_output=True).returncode:
        veth = [*ip, "link", "add", "d0", "type", "veth", "peer", "name", "d0peer"]
        if subprocess.run(veth, capture_output=True).returncode:
            pytest.skip("neither dummy nor veth links can be created")
        subprocess.run([*ip, "link", "set", "d0peer", "up"], check=True)
    subprocess.run([*ip, "addr", "add", "192.0.2.99/24", "dev", "d0"], check=True)
    subprocess.run([*ip, "addr", "add", "2001:db8::10/64", "dev", "d0", "nodad"], check=True)

    hostinfo.apply_ipv4_address("d0", "198.51.100.7", 25, netns=netns)
    subprocess.run([*ip, "link", "set", "d0", "up"], check=True)
    subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
    hostinfo.apply_default_gateway("198.51.100.1", "2001:db8::1", netns=netns)
    hostinfo.apply_default_gateway("198.51.100.2", None, netns=netns)  # replace, not add

    addrs = ip_json(netns, "addr", "show", "dev", "d0")[0]["addr_info"]
    assert isinstance(addrs, list)
    found = {(a["family"], a["local"], a["prefixlen"]) for a in addrs if a.get("scope") == "global"}
    assert found == {("inet", "198.51.100.7", 25), ("inet6", "2001:db8::10", 64)}
    routes4 = ip_json(netns, "-4", "route", "show", "default")
    assert [r["gateway"] for r in routes4] == ["198.51.100.2"]
    routes6 = ip_json(netns, "-6", "route", "show", "default")
    assert [r["gateway"] for r in routes6] == ["2001:db8::1"]

    # The readers on the real-root path, as seen from inside the namespace.
    seen = run_in_netns(
        netns,
        "import json; from onvif_nvr.system import hostinfo as h\n"
        "i = {x.name: [x.ipv4, x.ipv6, x.enabled] for x in h.read_interfaces()}\n"
        "print(json.dumps([i, h.read_default_gateways()]))",
    )
    assert isinstance(seen, list)
    interfaces, gateways = seen
    assert interfaces["lo"][0] == [["127.0.0.1", 8]]
    assert interfaces["d0"][0] == [["198.51.100.7", 25]]
    assert ["2001:db8::10", 64] in interfaces["d0"][1]
    assert interfaces["d0"][2] is True
    assert gateways == [["198.51.100.2"], ["2001:db8::1"]]

    with pytest.raises(ActionFailed) as excinfo:
        hostinfo.apply_ipv4_address("nosuch0", "192.0.2.1", 24, netns=netns)
    assert excinfo.value.message.startswith(
        f"'ip -n {netns} -4 addr flush dev nosuch0' failed with exit status 1: "
    )
    assert "nosuch0" in excinfo.value.message.split(": ", 1)[1]


# --- the real root: types and sanity only ----------------------------------------------------


def test_real_root_interfaces() -> None:
    interfaces = hostinfo.read_interfaces()
    assert [i.index for i in interfaces] == sorted(i.index for i in interfaces)
    lo = next(i for i in interfaces if i.is_loopback)
    assert ("127.0.0.1", 8) in lo.ipv4
    assert lo.enabled and lo.hw_address == ""
    for i in interfaces:
        assert i.mtu > 0 and i.index > 0
        for address, prefix in i.ipv4:
            assert ipaddress.IPv4Address(address) and 0 <= prefix <= 32
        for address, prefix in i.ipv6:
            assert ipaddress.IPv6Address(address) and 0 <= prefix <= 128


def test_real_root_readers() -> None:
    dns = hostinfo.read_dns()
    assert all(ipaddress.ip_address(s) for s in dns.nameservers)
    assert isinstance(dns.from_dhcp, bool)
    v4, v6 = hostinfo.read_default_gateways()
    assert all(ipaddress.IPv4Address(g) for g in v4)
    assert all(ipaddress.IPv6Address(g) for g in v6)
    assert hostinfo.read_hostname()
    assert all(isinstance(s, str) and s for s in hostinfo.read_ntp_servers())
    posixtz.parse(hostinfo.read_posix_tz())
    root = hostinfo.volume_info(Path("/"))
    assert root.mount_point == "/" and root.total_bytes > 0
