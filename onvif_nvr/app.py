"""Composition root: builds the box from its settings and runs its HTTP front-end.

Only this module (and cli.py) imports the front-ends. A SystemReboot or factory default
ends :meth:`NvrApp.run` with a reason; the CLI then builds a fresh app from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import mimetypes
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from onvif_nvr import __version__
from onvif_nvr import web as webui
from onvif_nvr.api import endpoints as api
from onvif_nvr.api.metrics import metric_family
from onvif_nvr.api.server import Gate as ApiGate
from onvif_nvr.auth.digest import DigestAuthority
from onvif_nvr.auth.throttle import LoginThrottle
from onvif_nvr.clock import Clock, SystemClock
from onvif_nvr.config import Settings
from onvif_nvr.db.engine import Database
from onvif_nvr.discovery import inventory as discovery_inventory
from onvif_nvr.discovery import probe as ws_probe
from onvif_nvr.discovery.cameras import Interrogator, interrogate_all
from onvif_nvr.discovery.target import DiscoveryTarget, TargetState, local_addresses
from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.topics import onvif_catalog
from onvif_nvr.media.units import TimedUnit, VideoParameters
from onvif_nvr.recording import simulator
from onvif_nvr.recording.camera_setup import CameraSetup, sync_from_config
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.control import RecordingControl
from onvif_nvr.recording.events import ControlEvents, StorageEvents
from onvif_nvr.recording.history import RecordingHistory
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.manager import RecordingManager
from onvif_nvr.recording.media_profiles import MEDIA_TOPICS, MediaProfiles
from onvif_nvr.recording.search import RecordingSearch, live_from
from onvif_nvr.recording.search_sessions import SearchSessions
from onvif_nvr.recording.supervisor import CameraRecorder
from onvif_nvr.replay.live import Feed, HubFeed
from onvif_nvr.replay.mjpeg import MjpegFeed
from onvif_nvr.replay.multicast import MulticastPolicy, MulticastTarget
from onvif_nvr.replay.playback import Replays
from onvif_nvr.replay.reader import ReplayReader
from onvif_nvr.replay.rtsp_auth import DigestGate
from onvif_nvr.replay.rtsp_server import RtspServer
from onvif_nvr.replay.snapshot import NoPicture, Snapshots
from onvif_nvr.replay.webrtc import WebRtcSessions
from onvif_nvr.services.common import AdvertisedService
from onvif_nvr.services.device import NETWORK_KEYS, DeviceDeps, DeviceService
from onvif_nvr.services.device_network import DeviceNetworkService
from onvif_nvr.services.events import EventService
from onvif_nvr.services.media import MediaService, resume_multicast
from onvif_nvr.services.media2 import Media2Service
from onvif_nvr.services.receiver import ReceiverService
from onvif_nvr.services.recording import RecordingService
from onvif_nvr.services.recording_events import element_renderer
from onvif_nvr.services.replay import ReplayService
from onvif_nvr.services.search import OPTIONAL_ARGUMENTS, SearchService
from onvif_nvr.soap import wsse
from onvif_nvr.soap.authn import Authenticator
from onvif_nvr.soap.dispatch import AccessRecord, HttpRequest, SoapEndpoint, SoapService
from onvif_nvr.system import hostinfo
from onvif_nvr.system.logs import LogBuffer
from onvif_nvr.system.secrets import Sealer, load_or_create_key
from onvif_nvr.system.store import SettingsStore
from onvif_nvr.system.users import UserLimits, UserStore
from onvif_nvr.wsdl import catalog

log = logging.getLogger(__name__)


class Exit(enum.Enum):
    STOP = "stop"
    REBOOT = "reboot"


class NvrApp:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        system_log: LogBuffer | None = None,
        access_log: LogBuffer | None = None,
        demo_cameras: int = 0,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.system_log = system_log or LogBuffer(self.clock)
        self.access_log = access_log or LogBuffer(self.clock)
        self._exit: asyncio.Future[Exit] | None = None
        self._runner: web.AppRunner | None = None
        self._db: Database | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.generated_admin_password: str | None = None
        self.bound_port: int | None = None
        self.discovery: DiscoveryTarget | None = None
        self.recording: RecordingManager | None = None
        #: Simulated cameras served (and recorded) by ``onvif-nvr demo``.
        self.demo_cameras = demo_cameras
        self.rtsp: RtspServer | None = None
        #: WebRTC live sessions on the same live feeds (REST signaling; ADR 0008).
        self.webrtc: WebRtcSessions | None = None
        self._live_feeds: weakref.WeakKeyDictionary[CameraRecorder, Feed] = (
            weakref.WeakKeyDictionary()
        )
        #: The MJPEG transcoding feeds (``/live/<token>/jpeg``), one per recorder.
        self._jpeg_feeds: weakref.WeakKeyDictionary[CameraRecorder, Feed] = (
            weakref.WeakKeyDictionary()
        )
        #: JPEG snapshots at ``/snapshot/<token>`` (GetSnapshotUri's target).
        self.snapshots = Snapshots(self.clock)
        self._snapshot_gate: DigestGate | None = None
        #: Maps a media profile token to the receiver or recording token of its stream
        #: (set by the Media service), so that /snapshot/<profile> and /live/<profile> work.
        self.profile_streams: Callable[[str], str | None] | None = None
        self.event_service: EventService | None = None
        self.control_events: ControlEvents | None = None
        self.search_sessions: SearchSessions | None = None
        #: What the REST API at /api/v1 works on (set when the services are up).
        self._api: api.ApiDeps | None = None

    # -- lifecycle (the device service's view) ---------------------------------------------
    def request_reboot(self) -> None:
        self._spawn(self._reboot_soon())

    def request_factory_default(self, hard: bool) -> None:
        self._spawn(self._factory_default(hard))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reboot_soon(self) -> None:
        # The response to SystemReboot must leave before the services go down.
        await asyncio.sleep(0.3)
        log.info("restarting the services (SystemReboot)")
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(Exit.REBOOT)

    async def _factory_default(self, hard: bool) -> None:
        await asyncio.sleep(0.3)
        log.warning("factory default (%s)", "hard" if hard else "soft")
        keep = frozenset({"endpoint_uuid"} if hard else {"endpoint_uuid", *NETWORK_KEYS})
        await self.store.clear(keep)
        if hard:
            await self.users.reset()
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(Exit.REBOOT)

    # -- start/stop ------------------------------------------------------------------------
    async def start(self) -> None:
        # Created first, so that a stop requested while starting is not lost.
        self._exit = asyncio.get_running_loop().create_future()
        settings = self.settings
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # The WSDL parse (the slowest step) runs in a worker while the database comes up.
        binding_task = asyncio.ensure_future(
            asyncio.to_thread(catalog.load_binding, catalog.DEVICE)
        )
        events_task = asyncio.ensure_future(
            asyncio.to_thread(catalog.load_bindings, catalog.EVENT_SERVICES)
        )
        receiver_task = asyncio.ensure_future(
            asyncio.to_thread(catalog.load_binding, catalog.RECEIVER)
        )
        recording_task = asyncio.ensure_future(
            asyncio.to_thread(catalog.load_binding, catalog.RECORDING)
        )
        search_task = asyncio.ensure_future(
            asyncio.to_thread(catalog.load_bindings, (catalog.SEARCH, catalog.REPLAY))
        )
        media_task = asyncio.ensure_future(
            asyncio.to_thread(catalog.load_bindings, (catalog.MEDIA, catalog.MEDIA2))
        )
        key = await asyncio.to_thread(load_or_create_key, data_dir / "secret.key")
        sealer = Sealer(key)
        self._db = db = Database(settings.effective_database_url)
        try:
            await db.migrate()
        except BaseException:
            binding_task.cancel()
            events_task.cancel()
            receiver_task.cancel()
            recording_task.cancel()
            search_task.cancel()
            media_task.cancel()
            raise
        self.store = SettingsStore(db, self.clock)
        await self.store.load()
        sec = settings.security
        self.users = UserStore(
            db,
            sealer,
            self.clock,
            UserLimits(
                sec.max_users,
                sec.max_username_length,
                sec.min_password_length,
                sec.max_password_length,
            ),
        )
        await self.users.load()
        self.generated_admin_password = await self.users.ensure_administrator(
            settings.admin_password
        )
        self.cameras = CameraStore(db, sealer, self.clock)
        #: The event bus the domain publishes on (events service, Core §9).
        self.events = EventBus(onvif_catalog(), self.clock, queue_limit=settings.events.queue_limit)
        for description in MEDIA_TOPICS:
            self.events.catalog.add(description)
        #: The Profile G domain API (receivers, recordings, jobs) every front-end drives.
        self.control = RecordingControl(db, sealer, self.clock, settings.recording)
        index = SegmentIndex(db)
        #: RecordingHistory events, live and stored with the index's deferred rows.
        self.history = RecordingHistory(self.events, index)
        recording_binding = await recording_task
        #: RecordingConfig/* and Receiver/* events from the control plane and the recorders.
        self.control_events = ControlEvents(
            self.events, self.control, element_renderer(recording_binding), self.history
        )
        self.control.on_event = self.control_events.on_event
        self.camera_setup = CameraSetup(self.control)
        await sync_from_config(self.camera_setup, settings.camera)
        await self._start_rtsp()
        self.webrtc = WebRtcSessions(
            lambda token: self._live_feed(f"/live/{token}"), settings.webrtc, self.clock
        )
        if self.demo_cameras:
            await self._start_demo(self.demo_cameras)
        self.recording = RecordingManager(
            settings,
            db,
            self.cameras,
            self.clock,
            # The box's identity goes into new volume markers (unknown on the very first start).
            box_id=str(self.store.get("endpoint_uuid") or ""),
            control=self.control,
            volume_events=StorageEvents(self.events).volume_status,
            history=self.history,
            listener=self.control_events,
            index=index,
        )
        await self.recording.start()
        await self.control_events.start()

        device_binding = await binding_task
        advertised: list[AdvertisedService] = []
        deps = DeviceDeps(
            settings=settings,
            clock=self.clock,
            store=self.store,
            users=self.users,
            system_log=self.system_log,
            access_log=self.access_log,
            lifecycle=self,
            advertised=advertised,
            discovery=settings.discovery.enabled,
        )
        self.device = device = DeviceService(deps, device_binding)
        await device.ensure_identity()
        network = DeviceNetworkService(deps)
        advertised.append(
            AdvertisedService.of(
                device_binding,
                device.capabilities_element,
                "Device",
                device.legacy_device_capabilities,
            )
        )
        services = [SoapService(device_binding, {**device.handlers(), **network.handlers()})]
        event_bindings = {b.service.key: b for b in await events_task}
        self.event_service = events = EventService(
            self.events, settings.events, self.clock, event_bindings
        )
        event_handlers = events.handlers()
        services += [
            SoapService(
                binding,
                event_handlers[key],
                addressing=True,
                fast_decode=events.fast_decode().get(key, ()),
            )
            for key, binding in event_bindings.items()
        ]
        advertised.append(
            AdvertisedService.of(
                event_bindings[catalog.EVENTS.key],
                events.capabilities_element,
                "Events",
                events.legacy_capabilities,
            )
        )
        events.start()
        receiver_binding = await receiver_task
        receiver = ReceiverService(self.control, receiver_binding)
        services.append(SoapService(receiver_binding, receiver.handlers()))
        advertised.append(
            AdvertisedService.of(
                receiver_binding,
                receiver.capabilities_element,
                "Extension.Receiver",
                receiver.legacy_capabilities,
            )
        )
        recording_service = RecordingService(self.control, recording_binding)
        services.append(SoapService(recording_binding, recording_service.handlers()))
        advertised.append(
            AdvertisedService.of(
                recording_binding,
                recording_service.capabilities_element,
                "Extension.Recording",
                recording_service.legacy_capabilities,
            )
        )
        search_binding, replay_binding = await search_task
        #: Search sessions (FindRecordings, FindEvents...): bounded, swept when they expire.
        self.search_sessions = SearchSessions(
            self.clock,
            max_sessions=settings.search.max_sessions,
            max_keepalive_s=settings.search.max_keepalive_s,
            max_wait_s=settings.search.max_wait_s,
            max_results=settings.search.max_results,
        )
        self.search_sessions.start()
        search_service = SearchService(
            RecordingSearch(db, live_from(self.events)),
            self.search_sessions,
            self.events.catalog,
            search_binding,
        )
        services.append(
            SoapService(search_binding, search_service.handlers(), optional=OPTIONAL_ARGUMENTS)
        )
        advertised.append(
            AdvertisedService.of(
                search_binding,
                search_service.capabilities_element,
                "Extension.Search",
                search_service.legacy_capabilities,
            )
        )
        replay = ReplayService(
            self.control,
            self.store,
            replay_binding,
            lambda: self.rtsp.bound_port if self.rtsp is not None else None,
        )
        services.append(SoapService(replay_binding, replay.handlers()))
        if self.rtsp is not None:
            # rtsp://box:rtsp_port/replay/<recording token> (replay/playback.py).
            self.rtsp.replays = Replays(
                ReplayReader(db, self.clock), self.clock, lambda: replay.session_timeout_s
            )
        advertised.append(
            AdvertisedService.of(
                replay_binding,
                replay.capabilities_element,
                "Extension.Replay",
                replay.legacy_capabilities,
            )
        )
        media_binding, media2_binding = await media_task
        #: The media profiles of the Media and Media2 services (one model for both).
        self.media_profiles = MediaProfiles(
            db, self.control, self.recording.live_streams, self.events
        )
        self.profile_streams = self.media_profiles.receiver_of
        assert self.rtsp is not None
        media = MediaService(self.media_profiles, self.rtsp, media_binding)
        services.append(SoapService(media_binding, media.handlers()))
        advertised.append(
            AdvertisedService.of(
                media_binding, media.capabilities_element, "Media", media.legacy_capabilities
            )
        )
        media2 = Media2Service(self.media_profiles, self.rtsp, media2_binding)
        services.append(SoapService(media2_binding, media2.handlers()))
        advertised.append(
            AdvertisedService(
                media2_binding.service.namespace,
                media2_binding.service.path,
                media2_binding.version,
                media2.capabilities_element,
            )
        )
        # Streams multicast by StartMulticastStreaming before a restart go on (AutoStart).
        self._spawn(resume_multicast(self.media_profiles, self.rtsp))
        # RTSP multicast sessions go to the group the encoder configuration names.
        self.rtsp.multicast_lookup = self._configured_multicast
        authenticator = Authenticator(
            self.users,
            DigestAuthority(
                sec.realm,
                sealer.nonce_key,
                self.clock,
                algorithms=sec.digest_algorithms,
                nonce_lifetime_s=sec.nonce_lifetime_s,
            ),
            wsse.UsernameTokenVerifier(
                self.clock,
                max_skew_s=sec.wsse_max_skew_s,
                allow_password_text=sec.allow_password_text,
            ),
            throttle := LoginThrottle(
                self.clock,
                max_failures=sec.max_failed_logins,
                window_s=sec.failed_login_window_s,
                lockout_s=sec.lockout_s,
                lockout_max_s=sec.lockout_max_s,
            ),
        )
        if self.rtsp is not None:  # live streams need the ONVIF users' credentials
            self.rtsp.gate = DigestGate(authenticator.digest, self.users, throttle)
        self._snapshot_gate = DigestGate(authenticator.digest, self.users, throttle, rtsp=False)
        self._api = api.ApiDeps(
            settings=settings,
            clock=self.clock,
            db=db,
            users=self.users,
            control=self.control,
            recording=self.recording,
            gate=ApiGate(self.users, authenticator.digest, throttle, self.clock, db),
            version=__version__,
            live_streams=self.recording.live_streams,
            rtsp_port=lambda: self.rtsp.bound_port if self.rtsp is not None else None,
            live_feed=lambda token: self._live_feed(f"live/{token}"),
            extra_metrics=self._metrics_lines,
            webrtc=self.webrtc,
            discover=self._discover_devices,
            egress_bytes=self._egress_bytes,
        )
        self.endpoint = SoapEndpoint(services, authenticator, self._access)
        self._runner = web.AppRunner(self._web_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.bind, settings.http_port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.bound_port = int(addresses[0][1])
            deps.ports["HTTP"] = self.bound_port
        log.info(
            "onvif-nvr %s: device service at http://%s:%s%s",
            __version__,
            settings.bind,
            self.bound_port,
            catalog.DEVICE.path,
        )
        if settings.discovery.enabled:
            await self._start_discovery()
        # What start-up built lives as long as the box (the parsed WSDLs and schemas are
        # hundreds of thousands of objects): out of the cyclic collector's way, so that a
        # full collection landing in a request does not walk it (docs/design/api.md). No
        # gc.collect() first: it would hold the loop for a second; the little start-up
        # garbage frozen with the rest is never freed, once.
        gc.freeze()

    # -- demo ------------------------------------------------------------------------------
    async def _start_demo(self, count: int) -> None:
        """Serve ``count`` simulated cameras over RTSP and record them like real ones."""
        clip = self.settings.data_dir / "demo" / "clip.h264"
        if not await asyncio.to_thread(clip.exists):
            await asyncio.to_thread(clip.parent.mkdir, parents=True, exist_ok=True)
            log.info("making the demo clip (once)")
            await asyncio.to_thread(simulator.make_clip, clip)
        params, units = await asyncio.to_thread(simulator.load_clip, clip)
        if self.rtsp is None:
            raise OSError("the demo needs the RTSP server (rtsp_port)")
        for i in range(1, count + 1):
            clip_source = simulator.LoopingClip(params, units, self.clock)
            self.rtsp.add_mount(f"/sim/{i}", clip_source, public=True)
        existing = {c.name: c for c in await self.camera_setup.list()}
        host = self.rtsp_host
        for i in range(1, count + 1):
            name, url = f"demo-{i}", f"rtsp://{host}:{self.rtsp.bound_port}/sim/{i}"
            if name not in existing:
                await self.camera_setup.add(name, url, origin="demo")
            elif existing[name].url != url:
                await self.camera_setup.update(name, url=url)
        log.info(
            "demo: %d simulated cameras at rtsp://%s:%s/sim/N", count, host, self.rtsp.bound_port
        )

    # -- live RTSP -------------------------------------------------------------------------
    @property
    def rtsp_host(self) -> str:
        """The host of the RTSP URLs the box prints (its bind address, or loopback)."""
        bind = self.settings.bind
        return "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind

    async def _start_rtsp(self) -> None:
        """Live streams at rtsp://box:rtsp_port/live/<receiver or recording token>."""
        cfg = self.settings.rtsp
        self.rtsp = RtspServer(
            self.settings.bind,
            self.settings.rtsp_port,
            self.clock,
            resolver=self._live_feed,
            session_timeout_s=cfg.session_timeout_s,
            request_timeout_s=cfg.request_timeout_s,
            max_write_buffer_bytes=cfg.max_write_buffer_bytes,
            multicast=MulticastPolicy(
                network=cfg.multicast_network,
                port=cfg.multicast_port,
                ttl=cfg.multicast_ttl,
                max_ttl=cfg.multicast_max_ttl,
                client_destination=cfg.multicast_client_destination,
                interface=cfg.multicast_interface,
            ),
        )
        await self.rtsp.start()

    async def _configured_multicast(self, path: str) -> MulticastTarget | None:
        found = await self.media_profiles.stream_multicast(path)
        if found is None:
            return None
        group, audio_port = found
        audio = audio_port if audio_port is not None else group.port + 2
        return MulticastTarget(group.address, {0: group.port, 1: audio}, group.ttl)

    def _live_feed(self, path: str) -> Feed | None:
        prefix, _, rest = path.lstrip("/").partition("/")
        token, _, variant = rest.partition("/")
        if prefix != "live" or not token or variant not in ("", "jpeg"):
            return None
        recorder = self._stream(token)
        if recorder is None:
            return None
        feed = self._live_feeds.get(recorder)
        if feed is None:
            feed = self._live_feeds[recorder] = _recorder_feed(recorder)
        if variant == "jpeg":  # transcoded only while someone watches (replay/mjpeg.py)
            jpeg = self._jpeg_feeds.get(recorder)
            if jpeg is None:
                jpeg = self._jpeg_feeds[recorder] = MjpegFeed(feed)
            return jpeg
        return feed

    def _stream(self, token: str) -> CameraRecorder | None:
        """The recorder of a receiver, recording or media profile token."""
        if self.recording is None:
            return None
        streams = self.recording.live_streams()
        recorder = streams.get(token)
        if recorder is None and self.profile_streams is not None:
            alias = self.profile_streams(token)
            recorder = streams.get(alias) if alias else None
        return recorder

    def live_uris(self) -> list[str]:
        """The live stream URIs served now (one per receiver and recording token)."""
        if self.rtsp is None or self.recording is None:
            return []
        base = f"rtsp://{self.rtsp_host}:{self.rtsp.bound_port}/live/"
        return [base + token for token in sorted(self.recording.live_streams())]

    # -- WS-Discovery ----------------------------------------------------------------------
    async def _start_discovery(self) -> None:
        cfg = self.settings.discovery
        interfaces = await asyncio.to_thread(hostinfo.read_interfaces)
        addresses = local_addresses(interfaces, cfg.interfaces, self.settings.bind)
        stored = self.store.get("discovery", {}) or {}
        state = TargetState(
            endpoint_address=f"urn:uuid:{self.device.endpoint_uuid}",
            scopes=tuple(self.device.scopes()),
            discoverable=self.device.discovery_mode() == "Discoverable",
            metadata_version=int(stored.get("metadata_version", 1)),
            # WS-Discovery: InstanceId grows every time the service starts again.
            instance_id=int(stored.get("instance_id", 0)) + 1,
        )
        await self._save_discovery_state(state)
        self.discovery = DiscoveryTarget(
            state, addresses, http_port=self.bound_port or 0, port=cfg.port
        )
        await self.discovery.start()
        self.store.listen(self._settings_changed)
        self._spawn(self._watch_addresses())

    async def _discover_devices(
        self,
        username: str | None,
        password: str | None,
        unicast: list[tuple[str, int]],
        timeout_s: float,
    ) -> None:
        """What ``onvif-nvr discover`` does, for the REST API (POST /api/v1/discovered):
        probe (multicast on the discovery interfaces unless given unicast targets), question
        the devices found, keep the results for the camera set-up."""
        if self._db is None:
            raise OSError("the box is not running")
        addresses = []
        if not unicast:
            interfaces = await asyncio.to_thread(hostinfo.read_interfaces)
            addresses = local_addresses(
                interfaces, self.settings.discovery.interfaces, self.settings.bind
            )
        found = await ws_probe.probe(addresses=addresses, unicast=unicast, timeout_s=timeout_s)
        interrogator = await asyncio.to_thread(Interrogator, username, password)
        reports = await interrogate_all(found, interrogator)
        await discovery_inventory.save(self._db, reports, self.clock.wall_ns())

    async def _save_discovery_state(self, state: TargetState) -> None:
        await self.store.put(
            "discovery",
            {"metadata_version": state.metadata_version, "instance_id": state.instance_id},
        )

    def _settings_changed(self, keys: frozenset[str]) -> None:
        target = self.discovery
        if target is None:
            return
        if "discovery_mode" in keys:
            target.set_discoverable(self.device.discovery_mode() == "Discoverable")
        if "scopes" in keys and target.update(scopes=tuple(self.device.scopes())):
            self._spawn(self._save_discovery_state(target.state))

    async def _watch_addresses(self) -> None:
        """Addresses come and go (DHCP, cables); XAddrs follow with a new Hello."""
        while self.discovery is not None:
            await asyncio.sleep(10)
            cfg = self.settings.discovery
            interfaces = await asyncio.to_thread(hostinfo.read_interfaces)
            addresses = local_addresses(interfaces, cfg.interfaces, self.settings.bind)
            if self.discovery is not None and self.discovery.update(addresses=addresses):
                await self._save_discovery_state(self.discovery.state)

    async def wait(self) -> Exit:
        assert self._exit is not None
        return await self._exit

    def stop_soon(self) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(Exit.STOP)

    async def close(self) -> None:
        if self.discovery is not None:
            target, self.discovery = self.discovery, None
            await target.stop()  # Bye, while the network is still there
        if self.webrtc is not None:
            await self.webrtc.close()
            self.webrtc = None
        if self.recording is not None:
            await self.recording.stop()  # writers close their segments before the DB goes
        if self.control_events is not None:
            await self.control_events.close()
            self.control_events = None
        if self.event_service is not None:
            await self.event_service.close()
            self.event_service = None
        if self.search_sessions is not None:
            await self.search_sessions.close()
            self.search_sessions = None
        if self.rtsp is not None:
            await self.rtsp.close()
            self.rtsp = None
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

    def _access(self, record: AccessRecord) -> None:
        self.access_log.add(
            f"{record.remote} {record.username or '-'} {record.service}.{record.operation} {record.outcome}"
        )

    # -- HTTP ------------------------------------------------------------------------------
    def _web_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.security.max_body_bytes)
        app.router.add_post("/onvif/{service}", self._soap)
        app.router.add_post(catalog.PULL_POINT.path + "{subscription}", self._soap)
        app.router.add_get("/onvif/wsdl/{path:.*}", self._wsdl_file)
        app.router.add_get("/onvif/{service}", self._service_get)
        app.router.add_get("/snapshot/{token}", self._snapshot)
        # RTSP over HTTP (ONVIF Streaming RTP/RTSP/HTTP/TCP): handed to the RTSP server.
        app.router.add_get("/rtsp-tunnel/{path:.*}", self._rtsp_tunnel)
        app.router.add_post("/rtsp-tunnel/{path:.*}", self._rtsp_tunnel)
        # The browser UI at / and /ui/ (its system page shows the device service URL).
        webui.mount(app.router)
        if self._api is not None:  # REST at /api/v1, its document, /metrics (docs/design/api.md)
            api.mount(app.router, self._api)
        return app

    def _egress_bytes(self) -> int:
        """Media bytes sent to viewers since start (RTSP live, replay and multicast, and
        the H.264 handed to WebRTC sessions, without their RTP/SRTP overhead)."""
        rtsp = self.rtsp.bytes_sent if self.rtsp is not None else 0
        return rtsp + (self.webrtc.stats()["bytes"] if self.webrtc is not None else 0)

    def _metrics_lines(self) -> list[str]:
        """Prometheus lines of the RTSP server and the event bus (the API adds the cameras')."""
        lines = []
        if self.rtsp is not None:
            lines += [
                "# TYPE nvr_rtsp_connections gauge",
                f"nvr_rtsp_connections {self.rtsp.connections}",
                "# TYPE nvr_rtsp_viewers gauge",
                f"nvr_rtsp_viewers {self.rtsp.viewers}",
                "# TYPE nvr_rtsp_slow_viewers_dropped_total counter",
                f"nvr_rtsp_slow_viewers_dropped_total {self.rtsp.slow_viewers_dropped}",
            ]
            viewers = self.rtsp.viewer_stats()
            lines += metric_family(
                "nvr_rtsp_viewer_bytes_sent_total",
                "counter",
                [(v._asdict(), v.bytes_sent) for v in viewers],
                keys=("session", "client", "stream", "transport"),
            )
            lines += metric_family(
                "nvr_rtsp_viewer_packets_sent_total",
                "counter",
                [(v._asdict(), v.packets_sent) for v in viewers if v.transport == "udp"],
                keys=("session", "client", "stream", "transport"),
            )
            groups = self.rtsp.multicast_stats()
            for name, index in (("packets", 2), ("bytes", 3)):
                lines += metric_family(
                    f"nvr_rtsp_multicast_{name}_sent_total",
                    "counter",
                    [({"stream": g[0], "group": g[1]}, int(g[index])) for g in groups],
                    keys=("stream", "group"),
                )
        if self.webrtc is not None:
            webrtc = self.webrtc.stats()
            for key, kind, value in (
                ("sessions", "gauge", webrtc["sessions"]),
                ("sessions_opened_total", "counter", webrtc["opened"]),
                ("frames_total", "counter", webrtc["frames"]),
                ("bytes_total", "counter", webrtc["bytes"]),
                ("frames_dropped_total", "counter", webrtc["dropped"]),
            ):
                lines += [f"# TYPE nvr_webrtc_{key} {kind}", f"nvr_webrtc_{key} {value}"]
        for key, value in self.events.stats().items():
            kind = "counter" if key == "published" else "gauge"
            name = f"nvr_events_{key}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
        subscriptions = self.events.per_subscription()
        for name, kind, index in (
            ("nvr_event_subscription_queued", "gauge", 1),
            ("nvr_event_subscription_delivered_total", "counter", 2),
            ("nvr_event_subscription_dropped_total", "counter", 3),
        ):
            lines += metric_family(
                name,
                kind,
                [({"subscription": s[0]}, int(s[index])) for s in subscriptions],
                ("subscription",),
            )
        return lines

    async def _soap(self, request: web.Request) -> web.StreamResponse:
        limit = self.settings.security.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return web.Response(status=413, text=f"request body larger than {limit} bytes\n")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"request body larger than {limit} bytes\n")
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        local_address = (
            _format_address(local) if local else f"{self.settings.bind}:{self.settings.http_port}"
        )
        http_request = HttpRequest(
            method=request.method,
            path=request.path,
            headers={
                "host": request.headers.get("Host", ""),
                "authorization": request.headers.get("Authorization", ""),
            },
            body=body,
            remote=request.remote or "",
            local_address=local_address,
            scheme=request.scheme,
            target=request.raw_path,
        )
        response = await self.endpoint.handle(http_request)
        resp = web.Response(status=response.status, body=response.body)
        for name, value in response.headers:
            if name.lower() == "content-type":
                resp.headers["Content-Type"] = value
            else:
                resp.headers.add(name, value)
        return resp

    async def _service_get(self, request: web.Request) -> web.StreamResponse:
        service = self.endpoint.service_at(request.path)
        if service is None:
            raise web.HTTPNotFound()
        if "wsdl" in request.query:
            raise web.HTTPFound(f"/onvif/wsdl/{service.definition.wsdl}")
        return web.Response(
            text=f"ONVIF {service.definition.key} service: POST SOAP requests here; ?wsdl for its WSDL\n"
        )

    async def _wsdl_file(self, request: web.Request) -> web.StreamResponse:
        root = catalog.wsdl_root().resolve()
        relative = request.match_info["path"]
        if not relative:
            listing = "\n".join(
                f"{s.definition.key}: /onvif/wsdl/{s.definition.wsdl}"
                for s in self.endpoint.services
            )
            return web.Response(text=listing + "\n")
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        content_type = (
            "application/xml"
            if target.suffix in (".wsdl", ".xsd")
            else mimetypes.guess_type(target.name)[0]
        )
        return web.FileResponse(
            target, headers={"Content-Type": content_type or "application/octet-stream"}
        )

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        """GET /snapshot/<receiver, recording or profile token>: the stream's latest
        keyframe as JPEG (HTTP Digest with the ONVIF users, READ_MEDIA)."""
        gate = self._snapshot_gate
        if gate is None:
            return web.Response(status=503, text="starting\n")
        verdict = gate.check(
            request.method,
            request.raw_path,
            request.headers.get("Authorization"),
            request.remote or "",
        )
        if verdict != "ok":
            response = web.Response(status=401, text="authentication required\n")
            for challenge in gate.challenges(stale=verdict == "stale"):
                response.headers.add("WWW-Authenticate", challenge)
            return response
        token = request.match_info["token"]
        recorder = self._stream(token)
        if recorder is None:
            raise web.HTTPNotFound(text=f"no stream {token!r}\n")
        try:
            # Keyed by recorder: its receiver, recording and profile tokens share a picture.
            key = f"{recorder.hub.name}@{id(recorder):x}"
            jpeg = await self.snapshots.jpeg(key, _keyframe_source(recorder))
        except NoPicture as exc:
            return web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "1"})
        return web.Response(
            body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    async def _rtsp_tunnel(self, request: web.Request) -> web.StreamResponse:
        """GET (server to client) or POST (client to server, base64) of an RTSP-over-HTTP
        tunnel: checked here, then the socket belongs to the RTSP server (replay/http_tunnel)."""
        if self.rtsp is None:
            return web.Response(status=503, text="live streaming is not running\n")
        tunnels = self.rtsp.tunnels
        cookie = request.headers.get("x-sessioncookie")
        post = request.method == "POST"
        refused = (
            tunnels.refuse_post(cookie)
            if post
            else tunnels.refuse_get(cookie, request.remote or "")
        )
        transport = request.transport
        if refused is None and not isinstance(transport, asyncio.Transport):
            refused = (400, "connection closed")
        if refused is not None:
            return web.Response(status=refused[0], text=refused[1] + "\n")
        assert cookie is not None and isinstance(transport, asyncio.Transport)
        if post:
            try:
                await tunnels.serve_post(cookie, transport, request.content.read_nowait())
            except ValueError as exc:
                return web.Response(status=400, text=f"{exc}\n")
        else:
            await tunnels.serve_get(cookie, transport)
        # The socket was the tunnel's; aiohttp must neither answer on it nor keep it.
        request.protocol.force_close()
        return web.Response(status=204)


def _recorder_feed(recorder: CameraRecorder) -> Feed:
    def parameters() -> tuple[Any, Any]:
        info = recorder.source_info
        return (info.video, info.audio) if info is not None else (None, None)

    # Lossy and deep: the fan-out must never end the hub's subscription (see live.HubFeed).
    return HubFeed(lambda: recorder.hub.subscribe("live", maxsize=3000, lossy=True), parameters)


def _keyframe_source(
    recorder: CameraRecorder,
) -> Callable[[], Coroutine[Any, Any, tuple[VideoParameters, TimedUnit] | None]]:
    async def latest() -> tuple[VideoParameters, TimedUnit] | None:
        info = recorder.source_info
        if info is None or info.video is None:
            return None
        # The hub hands a new subscription its cached GOP at once: its first unit is the
        # latest keyframe (unless the GOP outgrew the cache).
        subscription = recorder.hub.subscribe("snapshot", maxsize=1000, lossy=True)
        try:
            async with asyncio.timeout(0.1):  # nothing cached: no picture yet
                units = await subscription.get_batch(1)
        except TimeoutError:
            return None
        finally:
            subscription.close()
        if not units or units[0].track != 0 or not units[0].unit.keyframe:
            return None
        return info.video, units[0]

    return latest


def _format_address(sockname: tuple[object, ...]) -> str:
    host, port = str(sockname[0]), sockname[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def coverage_report() -> str:
    """Per served binding: every operation and whether it is implemented."""
    binding = catalog.load_binding(catalog.DEVICE)
    handled = {**DeviceService(None, binding).handlers(), **DeviceNetworkService(None).handlers()}  # type: ignore[arg-type]
    services = [SoapService(binding, handled)]
    event_handlers = EventService(None, None, None).handlers()  # type: ignore[arg-type]
    services += [
        SoapService(b, event_handlers[b.service.key])
        for b in catalog.load_bindings(catalog.EVENT_SERVICES)
    ]
    receiver_binding = catalog.load_binding(catalog.RECEIVER)
    services.append(
        SoapService(receiver_binding, ReceiverService(None, receiver_binding).handlers())  # type: ignore[arg-type]
    )
    recording_binding = catalog.load_binding(catalog.RECORDING)
    services.append(
        SoapService(recording_binding, RecordingService(None, recording_binding).handlers())  # type: ignore[arg-type]
    )
    search_binding, replay_binding = catalog.load_bindings((catalog.SEARCH, catalog.REPLAY))
    services.append(
        SoapService(search_binding, SearchService(None, None, None, search_binding).handlers())  # type: ignore[arg-type]
    )
    services.append(
        SoapService(
            replay_binding,
            ReplayService(None, None, replay_binding, lambda: None).handlers(),  # type: ignore[arg-type]
        )
    )
    media_binding, media2_binding = catalog.load_bindings((catalog.MEDIA, catalog.MEDIA2))
    services.append(
        SoapService(media_binding, MediaService(None, None, media_binding).handlers())  # type: ignore[arg-type]
    )
    services.append(
        SoapService(media2_binding, Media2Service(None, None, media2_binding).handlers())  # type: ignore[arg-type]
    )
    lines = []
    for service in services:
        definition = service.definition
        coverage = service.coverage()
        done = sum(coverage.values())
        lines.append(
            f"{definition.key} ({definition.binding}, {definition.path}): {done}/{len(coverage)} implemented"
        )
        for name, implemented in coverage.items():
            lines.append(f"  [{'x' if implemented else ' '}] {name}")
    return "\n".join(lines)
