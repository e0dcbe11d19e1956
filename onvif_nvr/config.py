"""Settings: one frozen, typed object read once at start-up.

Sources, later ones winning: built-in defaults < TOML file (``--config``) < ``ONVIF_NVR_*``
environment variables < command-line options. A key in a TOML section ``[device]`` is
``ONVIF_NVR_DEVICE_<KEY>`` in the environment; a top-level key is ``ONVIF_NVR_<KEY>``.
``example.toml`` in this package documents every key with its default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "ONVIF_NVR_"


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """What the box says about itself (GetDeviceInformation, scopes)."""

    manufacturer: str = "onvif-nvr project"
    model: str = "onvif-nvr"
    hardware_id: str = "onvif-nvr-x86_64"
    #: The fixed ``onvif://www.onvif.org/name/`` scope (Core requires a fixed name scope).
    name: str = "onvif-nvr"
    #: Initial ``onvif://www.onvif.org/location/`` scope path (empty: "unknown").
    location: str = ""


@dataclasses.dataclass(frozen=True)
class SecuritySettings:
    realm: str = "onvif-nvr"
    #: HTTP Digest algorithms offered, one WWW-Authenticate header each, in this order.
    digest_algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    nonce_lifetime_s: int = 300
    #: Accepted difference between a UsernameToken's Created and the box's clock.
    wsse_max_skew_s: int = 300
    #: WS-UsernameToken PasswordText sends the password in clear; ONVIF clients use digests.
    allow_password_text: bool = False
    #: After this many failed logins from one address within the window, that address waits.
    max_failed_logins: int = 5
    failed_login_window_s: int = 60
    lockout_s: int = 30
    lockout_max_s: int = 900
    max_users: int = 32
    max_username_length: int = 64
    min_password_length: int = 0
    max_password_length: int = 64
    #: Largest request body any HTTP front-end reads.
    max_body_bytes: int = 1_048_576


@dataclasses.dataclass(frozen=True)
class HostSettings:
    #: Apply Set{Hostname,DNS,NTP,NetworkInterfaces,NetworkDefaultGateway,SystemDateAndTime}
    #: to this machine. Off by default: the values are stored and reported only.
    apply_network_settings: bool = False


@dataclasses.dataclass(frozen=True)
class DiscoverySettings:
    #: Run the WS-Discovery target service (Hello/Bye, answers to Probe and Resolve).
    enabled: bool = True
    #: Interface names to announce on and listen to; empty: every interface that is up
    #: (only the one holding ``bind`` when ``bind`` is a specific address).
    interfaces: tuple[str, ...] = ()
    #: UDP port (3702 is the standard; other values only for tests and special set-ups).
    port: int = 3702


@dataclasses.dataclass(frozen=True)
class EventSettings:
    """The event service's limits (reported in its capabilities)."""

    #: Pull-point subscriptions at once (CreatePullPointSubscription beyond: a fault).
    max_pull_points: int = 128
    #: Basic Notification (Subscribe/Notify push) subscriptions at once; 0 turns it off.
    max_push_subscriptions: int = 32
    #: Messages queued per subscription; when full the oldest go (and are counted).
    queue_limit: int = 1000
    #: Longest PullMessages Timeout (a longer one faults with the limits, Core §9.1).
    max_pull_timeout_s: int = 600
    #: Lifetime of a subscription created without InitialTerminationTime.
    default_termination_s: int = 60
    #: Longest lifetime a client may ask for (a later one is cut to this).
    max_termination_s: int = 86400


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    #: Record the enabled cameras (off: the box serves ONVIF only).
    record: bool = True
    #: Directories to record into; empty: ``<data_dir>/recordings``.
    volumes: tuple[str, ...] = ()
    #: Free space to keep on each volume (retention deletes the oldest data below it).
    min_free_bytes: int = 1_073_741_824
    #: The same as a percentage of each volume's size (the larger of the two applies).
    min_free_percent: int = 0
    #: Which volume a new segment goes to: "most-free" (the one with the most free space
    #: above its floor) or "round-robin" (cameras spread in turn; each keeps its volume
    #: until it is full or fails).
    placement: str = "most-free"
    #: Segment length; a segment also ends on a codec change or a gap.
    segment_s: int = 60
    #: Longest fragment (fragments also end at every keyframe).
    fragment_ms: int = 1000
    #: "fragment": fsync every fragment (at most ~1 s lost on a power cut); "interval": every
    #: ``fsync_interval_s`` and at segment end (fewer flushes on slow disks; a power cut
    #: loses up to the interval); "none": leave it to the OS (a power cut may lose more).
    fsync: str = "fragment"
    fsync_interval_s: int = 5
    #: How often volumes are checked (mounted, marker, free space) and retention runs.
    check_interval_s: int = 10


@dataclasses.dataclass(frozen=True)
class RecordingSettings:
    """Limits of the Profile G objects (reported in the Recording and Receiver services'
    capabilities; creating one more faults with ter:Max...)."""

    max_receivers: int = 64
    max_recordings: int = 64
    #: Recording jobs, all recordings together.
    max_recording_jobs: int = 64
    #: Tracks per recording (CreateRecording makes 3: VIDEO001, AUDIO001, META001).
    max_tracks: int = 8
    #: Bit rates the Recording service advertises (MaxRate: all tracks of one recording;
    #: MaxTotalRate: all recordings), kbit/s. Figures for clients, not enforced: the
    #: defaults are a 4K camera and 64 cameras at 4 Mbit/s (bench/results/ingest.json).
    max_rate_kbps: int = 32_768
    max_total_rate_kbps: int = 262_144


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Search service sessions (RecordingSearch: FindRecordings, FindEvents...)."""

    #: Search sessions open at once; one more Find is ter:ResourceProblem.
    max_sessions: int = 16
    #: KeepAliveTime is adapted to at most this (the specification asks for >= 10 s).
    max_keepalive_s: int = 300
    #: A result request blocks at most this long (WaitTime is adapted to it).
    max_wait_s: int = 10
    #: Results one answer carries at most (MaxResults is adapted to it).
    max_results: int = 1000


@dataclasses.dataclass(frozen=True)
class RtspSettings:
    """The live RTSP server (``rtsp_port``) and its multicast groups."""

    #: A session ends after this long without a request or an RTCP report (``timeout=``).
    session_timeout_s: int = 60
    #: A request must be complete this long after its first byte (slow-loris).
    request_timeout_s: int = 10
    #: A TCP (or tunnelled) viewer with more unsent data than this is dropped.
    max_write_buffer_bytes: int = 4 * 1024 * 1024
    #: Default multicast groups come from this IPv4 multicast network, one per stream.
    multicast_network: str = "239.192.0.0/16"
    #: RTP port of a stream's first track on its default group (track N: port + 2N).
    multicast_port: int = 40000
    #: TTL of the default groups (1: the local subnet only).
    multicast_ttl: int = 1
    #: Largest TTL a client (SETUP) or the Media service may ask for.
    multicast_max_ttl: int = 16
    #: Honour a client's destination/port in a multicast SETUP (any IPv4 multicast group
    #: outside 224.0.0.0/24).
    multicast_client_destination: bool = True
    #: Local IPv4 address of the interface multicast leaves by; "" = the bind address, or
    #: the routing table when bind is 0.0.0.0.
    multicast_interface: str = ""


@dataclasses.dataclass(frozen=True)
class WebRtcSettings:
    """WebRTC live viewing (``POST /api/v1/cameras/<token>/webrtc``; ADR 0008)."""

    #: Sessions open at once, all cameras together; one more is refused (503).
    max_sessions: int = 16
    #: Addresses offered as ICE host candidates; empty: every address of the machine but
    #: loopback (aioice's choice). Set it to the LAN address(es) browsers reach the box on.
    host_addresses: tuple[str, ...] = ()
    #: ``host:port`` of a STUN server for a server-reflexive candidate; empty: none (LAN).
    stun_server: str = ""
    #: A session not connected this long after its answer ends.
    connect_timeout_s: int = 20
    #: Pictures queued per session; a peer that falls further behind skips to the next
    #: keyframe (it is never buffered for without bound).
    max_queued_frames: int = 60


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    """A camera declared in the config file (``[[camera]]``); kept in step in the database."""

    name: str = ""
    url: str = ""
    user: str = ""
    password: str = dataclasses.field(default="", repr=False)
    transport: str = "tcp"
    backend: str = "native"
    enabled: bool = True
    retention_s: int = 0


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    #: Any SQLAlchemy URL; empty means SQLite (WAL) at ``<data_dir>/nvr.sqlite3``.
    database_url: str = ""
    bind: str = "0.0.0.0"
    http_port: int = 8080
    rtsp_port: int = 8554
    log_level: str = "info"
    #: Log every blocking call made on the event loop thread (diagnostics; the tests use it).
    loop_guard: bool = False
    #: Password of the first administrator on a data dir with no users; empty: generate one.
    admin_password: str = dataclasses.field(default="", repr=False)
    device: DeviceSettings = DeviceSettings()
    security: SecuritySettings = SecuritySettings()
    host: HostSettings = HostSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    events: EventSettings = EventSettings()
    storage: StorageSettings = StorageSettings()
    recording: RecordingSettings = RecordingSettings()
    search: SearchSettings = SearchSettings()
    rtsp: RtspSettings = RtspSettings()
    webrtc: WebRtcSettings = WebRtcSettings()
    #: ``[[camera]]`` tables of the config file.
    camera: tuple[CameraSettings, ...] = ()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'nvr.sqlite3').resolve()}"


class ConfigError(ValueError):
    """A setting is unknown or has the wrong type; the message names it."""


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{name}: expected a path, got {value!r}")
        return Path(value)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise ConfigError(f"{name}: expected an array of tables")
        return tuple(_build(item_type, v, f"{name}[{i}].") for i, v in enumerate(value))
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(str(v) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{name}: unsupported setting type")
    raise ConfigError(f"{name}: unsupported setting type {hint!r}")


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown setting {prefix}{key}")
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        hint = hints[field.name]
        raw = values[field.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{prefix}{field.name}: expected a table")
            kwargs[field.name] = _build(hint, raw, f"{prefix}{field.name}.")  # type: ignore[arg-type]
        else:
            kwargs[field.name] = _coerce(prefix + field.name, hint, raw)
    return cls(**kwargs)


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map ``ONVIF_NVR_SECTION_KEY`` variables onto the nested settings layout."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(Settings)
    sections = {
        f.name for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(hints[f.name])
    }
    top_level = {f.name for f in dataclasses.fields(Settings)} - sections
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in top_level:  # RTSP_PORT is the top-level rtsp_port, not [rtsp] port
            out[key] = value
            continue
        section = next((s for s in sections if key.startswith(s + "_")), None)
        if section is not None:
            out.setdefault(section, {})[key[len(section) + 1 :]] = value
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the settings from the file, the environment and explicit overrides."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    values = _merge(values, _env_values(os.environ if environ is None else environ))
    if overrides:
        values = _merge(values, {k: v for k, v in overrides.items() if v is not None})
    settings: Settings = _build(Settings, values, "")
    if not 0 <= settings.http_port < 65536 or not 0 <= settings.rtsp_port < 65536:
        raise ConfigError("http_port and rtsp_port must be between 0 (any free port) and 65535")
    events = settings.events
    if min(events.max_pull_points, events.queue_limit, events.default_termination_s) < 1:
        raise ConfigError("events.max_pull_points, queue_limit, default_termination_s must be >= 1")
    if not 60 <= events.max_pull_timeout_s <= 3600 or events.max_push_subscriptions < 0:
        raise ConfigError(
            "events.max_pull_timeout_s must be 60..3600 and max_push_subscriptions >= 0"
        )
    if events.max_termination_s < events.default_termination_s:
        raise ConfigError("events.max_termination_s must be at least default_termination_s")
    if settings.storage.placement not in ("most-free", "round-robin"):
        raise ConfigError('storage.placement must be "most-free" or "round-robin"')
    if settings.storage.fsync not in ("fragment", "interval", "none"):
        raise ConfigError('storage.fsync must be "fragment", "interval" or "none"')
    if not 0 < settings.storage.fsync_interval_s <= 3600:
        raise ConfigError("storage.fsync_interval_s must be between 0 and 3600 seconds")
    if not 1 <= settings.storage.check_interval_s <= 3600:
        raise ConfigError("storage.check_interval_s must be between 1 and 3600 seconds")
    limits = settings.recording
    if min(limits.max_receivers, limits.max_recordings, limits.max_recording_jobs) < 1:
        raise ConfigError(
            "recording.max_receivers, max_recordings, max_recording_jobs must be >= 1"
        )
    if limits.max_tracks < 3:
        raise ConfigError("recording.max_tracks must be at least 3 (video, audio, metadata)")
    if min(limits.max_rate_kbps, limits.max_total_rate_kbps) < 1:
        raise ConfigError("recording.max_rate_kbps and max_total_rate_kbps must be >= 1")
    if not 0 <= settings.storage.min_free_percent < 100:
        raise ConfigError("storage.min_free_percent must be between 0 and 99")
    _check_rtsp(settings.rtsp)
    _check_webrtc(settings.webrtc)
    return settings


def _check_rtsp(rtsp: RtspSettings) -> None:
    if not 5 <= rtsp.session_timeout_s <= 3600 or not 1 <= rtsp.request_timeout_s <= 300:
        raise ConfigError(
            "rtsp.session_timeout_s must be 5..3600 and rtsp.request_timeout_s 1..300"
        )
    if rtsp.max_write_buffer_bytes < 65536:
        raise ConfigError("rtsp.max_write_buffer_bytes must be at least 65536")
    try:
        network = ipaddress.ip_network(rtsp.multicast_network, strict=False)
    except ValueError:
        network = None
    if not isinstance(network, ipaddress.IPv4Network) or not network.is_multicast:
        raise ConfigError("rtsp.multicast_network must be an IPv4 multicast network")
    if not 0 < rtsp.multicast_port < 65534 or rtsp.multicast_port % 2:
        raise ConfigError("rtsp.multicast_port must be an even port (2..65532)")
    if not 1 <= rtsp.multicast_ttl <= rtsp.multicast_max_ttl <= 255:
        raise ConfigError("rtsp.multicast_ttl must be 1..multicast_max_ttl, at most 255")
    if rtsp.multicast_interface:
        try:
            ipaddress.IPv4Address(rtsp.multicast_interface)
        except ValueError:
            raise ConfigError("rtsp.multicast_interface must be an IPv4 address") from None


def _check_webrtc(webrtc: WebRtcSettings) -> None:
    if not 0 <= webrtc.max_sessions <= 1000:
        raise ConfigError("webrtc.max_sessions must be 0..1000 (0 turns WebRTC off)")
    if not 1 <= webrtc.connect_timeout_s <= 300 or not 2 <= webrtc.max_queued_frames <= 1000:
        raise ConfigError(
            "webrtc.connect_timeout_s must be 1..300 and webrtc.max_queued_frames 2..1000"
        )
    for address in webrtc.host_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"webrtc.host_addresses: {address!r} is not an IP address") from None
    if webrtc.stun_server:
        host, _, port = webrtc.stun_server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError('webrtc.stun_server must be "host:port"')
