"""One camera's recording: its source under supervision, its hub, its segment writer.

The source is restarted after any failure with capped exponential backoff and jitter, until
the camera is stopped; an outage becomes an explicit gap in the index. A source that fails
on something the native client does not handle is retried with the PyAV fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import AudioParameters, SourceInfo, TimedUnit
from onvif_nvr.recording.cameras import Camera, display_url
from onvif_nvr.recording.hub import Hub
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.writer import HistorySink, Placement, SegmentWriter
from onvif_nvr.rtsp.client import READ_LATENCY_S

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0


class Source(Protocol):
    #: What the source learned about its streams (the writer reads the audio parameters).
    info: SourceInfo

    async def run(self) -> Any: ...

    def stop(self) -> None: ...


SourceFactory = Callable[[Camera, str, Callable[[list[TimedUnit]], None]], Source]


def default_source_factory(clock: Clock) -> SourceFactory:
    def make(camera: Camera, backend: str, on_units: Callable[[list[TimedUnit]], None]) -> Source:
        if backend == "native":
            try:
                from onvif_nvr.rtsp.client import RtspSource  # the native client
            except ImportError:
                backend = "pyav"
            else:
                native: Source = RtspSource(
                    camera.url_with_credentials,
                    transport=camera.transport,
                    clock=clock,
                    on_units=on_units,
                )
                return native
        from onvif_nvr.recording.pyav_source import PyAVSource

        return PyAVSource(
            camera.url_with_credentials, transport=camera.transport, clock=clock, on_units=on_units
        )

    return make


class CameraRecorder:
    def __init__(
        self,
        camera: Camera,
        *,
        index: SegmentIndex,
        clock: Clock,
        source_factory: SourceFactory,
        placement: Placement | None = None,
        volume_id: int = 0,
        volume_path: Path = Path(),
        segment_s: float = 60.0,
        fragment_s: float = 1.0,
        fsync: str = "fragment",
        fsync_interval_s: float = 5.0,
        recording_id: int | None = None,
        record: bool = True,
        history: HistorySink | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        """Each segment's volume comes from ``placement``; without it, ``volume_id`` and
        ``volume_path`` name the one volume. Segments belong to ``recording_id``. Without
        ``record`` the stream is only received (an AlwaysConnect receiver no job uses):
        nothing is written, no gap is noted. ``history`` hears when data is written;
        ``on_state(old, new)`` every change of :attr:`state`."""
        self.on_state = on_state
        self._state = "starting"
        self.camera = camera
        self.record = record
        self.hub = Hub(camera.name)
        self.hub.on_subscribers = self._subscribers_changed
        self.index = index
        self.clock = clock
        self._factory = source_factory
        self.writer = SegmentWriter(
            camera.id,
            volume_id,
            volume_path,
            index,
            segment_s=segment_s,
            fragment_s=fragment_s,
            fsync=fsync,
            fsync_interval_s=fsync_interval_s,
            clock=clock,
            placement=placement,
            audio_parameters=self._audio_parameters,
            recording_id=recording_id,
            history=history,
        )
        self._source: Source | None = None
        self._stopping = asyncio.Event()
        self._supervisor: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self.last_error = ""
        self.reconnects = 0
        self._in_gap = False
        #: Packets dropped / lost by the sources before the current one (see packet_counts).
        self._dropped_before = 0
        self._lost_before = 0

    def packet_counts(self) -> tuple[int, int]:
        """(dropped, lost) RTP packets since the camera started, over every connection:
        dropped = received but unusable, lost = missing from the sequence numbers."""
        source = self._source
        dropped, lost = self._dropped_before, self._lost_before
        if source is not None:
            dropped += int(getattr(source, "dropped", 0))
            lost += int(getattr(source, "lost", 0))
        return dropped, lost

    @property
    def state(self) -> str:
        """starting, connecting, recording, retrying (after a failure), stopped."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        old, self._state = self._state, value
        if old != value and self.on_state is not None:
            self.on_state(old, value)

    def _audio_parameters(self) -> AudioParameters | None:
        return self._source.info.audio if self._source is not None else None

    @property
    def source_info(self) -> SourceInfo | None:
        """What the current source learned about the stream (None before the first)."""
        return self._source.info if self._source is not None else None

    @property
    def has_audio(self) -> bool:
        return self._source is not None and self._source.info.audio is not None

    def start(self) -> None:
        if self.record:
            recorder = self.hub.subscribe("recorder", maxsize=3000, lossy=True)
            self._writing = asyncio.ensure_future(self.writer.run(recorder))
        self._supervisor = asyncio.ensure_future(self._supervise())

    async def stop(self) -> None:
        self._stopping.set()
        if self._source is not None:
            self._source.stop()
        if self._supervisor is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._supervisor), 15)
            except TimeoutError:
                self._supervisor.cancel()
        self.hub.end("camera stopped")
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        self.state = "stopped"

    def _subscribers_changed(self, count: int) -> None:
        """Someone besides the recorder watches: the source reads at once; otherwise it may
        let the kernel gather data for fewer, bigger reads (sources that can)."""
        set_latency = getattr(self._source, "set_read_latency", None)
        if set_latency is not None:
            set_latency(0.0 if count > 1 else READ_LATENCY_S)

    def _publish(self, units: list[TimedUnit]) -> None:
        if self._in_gap and units and self.record:
            self._in_gap = False
            asyncio.ensure_future(self.index.close_gaps(self.camera.id, units[0].wall_ns))
        self.state = "recording"
        self.hub.publish_many(units)

    async def _supervise(self) -> None:
        backend = self.camera.backend
        delay = BACKOFF_START_S
        while not self._stopping.is_set():
            self.state = "connecting"
            # The old source's counts carry over (its info stays readable until replaced).
            self._dropped_before, self._lost_before = self.packet_counts()
            self._source = self._factory(self.camera, backend, self._publish)
            self._subscribers_changed(self.hub.subscriber_count)
            started = self.clock.monotonic_ns()
            try:
                await self._source.run()
                if self._stopping.is_set():
                    return
                self.last_error = "the stream ended"
            except NotImplementedError as exc:
                self.last_error = str(exc)
                if backend == "native":
                    log.warning("%s: %s; using the PyAV fallback", self.camera.name, exc)
                    backend = "pyav"
            except Exception as exc:  # any failure of a camera is retried, never fatal
                self.last_error = f"{type(exc).__name__}: {exc}"
            if self._stopping.is_set():
                return
            self.reconnects += 1
            self.state = "retrying"
            if self.record:
                await self.writer.interrupt("source lost")
            if not self._in_gap and self.record:
                self._in_gap = True
                await self.index.open_gap(self.camera.id, self.clock.wall_ns(), "offline")
            if self.clock.monotonic_ns() - started > 60 * 10**9:
                delay = BACKOFF_START_S  # it ran for a while: start over
            log.info(
                "%s (%s): %s; retrying in %.1f s",
                self.camera.name,
                display_url(self.camera.url),
                self.last_error,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX_S)
