"""RecordingHistory events (RecordingSearch §5.21): when a recording holds data, which of
its tracks do, and the parameters of their media. Published live on the event bus and
stored in the index (the ``events`` table) for FindEvents.

Each message's UtcTime is the recording time it describes (the first or last instant of
data written), not when it was sent. The writers report what they made durable; this
module turns that into property events (the bus drops repetitions of an unchanged value,
and only what it sends is stored).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lxml import etree

from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.message import ElementItem, Item, Message, PropertyOperation, SimpleItem
from onvif_nvr.events.topics import Topic
from onvif_nvr.media.units import AudioParameters, VideoParameters
from onvif_nvr.recording.index import EventRow, SegmentIndex

RECORDING_STATE = Topic.onvif("RecordingHistory/Recording/State")
TRACK_STATE = Topic.onvif("RecordingHistory/Track/State")
VIDEO_PARAMETERS = Topic.onvif("RecordingHistory/Track/VideoParameters")
AUDIO_PARAMETERS = Topic.onvif("RecordingHistory/Track/AudioParameters")
HISTORY_TOPICS = (RECORDING_STATE, TRACK_STATE, VIDEO_PARAMETERS, AUDIO_PARAMETERS)

TT = "http://www.onvif.org/ver10/schema"
#: tt:VideoEncoding names JPEG, MPEG4 and H264 only; H.265 is written as Media2 names it.
VIDEO_ENCODING = {"H264": "H264", "H265": "H265"}
#: tt:AudioEncoding is G711, G726 or AAC: other codecs (Opus) get no AudioParameters.
AUDIO_ENCODING = {"PCMU": "G711", "PCMA": "G711", "AAC": "AAC"}

#: What a writer reports: (data is being written, the recording time, the media written).
#: ``True`` at the first durable data of a stretch and again when a new segment's media
#: differ; ``False`` at the last instant of the stretch (stream ended, recorder stopped,
#: storage failed, media clock jump).
HistorySink = Callable[[bool, int, VideoParameters | None, AudioParameters | None], None]


@dataclasses.dataclass(frozen=True)
class HistoryTarget:
    """Where a recorder's data goes: the recording and the tracks its video and audio
    land in ("" when the job maps none)."""

    recording_id: int
    recording_token: str
    video_track: str = ""
    audio_track: str = ""


def _bool(value: bool) -> str:
    return "true" if value else "false"


def video_rate_control(frame_rate: float) -> bytes:
    """A ``tt:VideoRateControl`` with the stream's nominal frame rate (its SPS timing).
    The bitrate is not known when the data starts: BitrateLimit 0 says so."""
    element = etree.Element(f"{{{TT}}}VideoRateControl", nsmap={"tt": TT})
    for name, value in (
        ("FrameRateLimit", max(1, round(frame_rate))),
        ("EncodingInterval", 1),
        ("BitrateLimit", 0),
    ):
        etree.SubElement(element, f"{{{TT}}}{name}").text = str(value)
    return bytes(etree.tostring(element))


class _WriterState:
    def __init__(self, target: HistoryTarget) -> None:
        self.target = target
        self.writing = False
        self.audio = False


class RecordingHistory:
    """Publishes (and stores) the history of every recording the recorders write."""

    def __init__(self, bus: EventBus, index: SegmentIndex) -> None:
        self.bus = bus
        self.index = index
        #: Writers writing now, per recording token (several sources may feed one).
        self._writers: dict[str, int] = {}
        #: Recording id by token, of every recording that has had a writer.
        self._ids: dict[str, int] = {}

    def sink(self, target: HistoryTarget) -> HistorySink:
        """The callable one writer reports to."""
        state = _WriterState(target)
        self._ids[target.recording_token] = target.recording_id

        def report(
            writing: bool,
            wall_ns: int,
            video: VideoParameters | None,
            audio: AudioParameters | None,
        ) -> None:
            if writing:
                self._started(state, wall_ns, video, audio)
            else:
                self._stopped(state, wall_ns)

        return report

    def _started(
        self,
        state: _WriterState,
        wall_ns: int,
        video: VideoParameters | None,
        audio: AudioParameters | None,
    ) -> None:
        target = state.target
        token = target.recording_token
        if not state.writing:
            state.writing = True
            self._writers[token] = self._writers.get(token, 0) + 1
            self._publish(RECORDING_STATE, token, "", wall_ns, IsRecording=True)
            if target.video_track:
                self._publish(TRACK_STATE, token, target.video_track, wall_ns, IsDataPresent=True)
        if video is not None and target.video_track:
            data: list[Item] = [
                SimpleItem("VideoEncoding", VIDEO_ENCODING.get(video.codec, video.codec)),
                SimpleItem("VideoWidth", str(video.width)),
                SimpleItem("VideoHeight", str(video.height)),
            ]
            if video.frame_rate:
                data.append(ElementItem("VideoRateControl", video_rate_control(video.frame_rate)))
            self._emit(VIDEO_PARAMETERS, token, target.video_track, wall_ns, data)
        if target.audio_track and (audio is not None) != state.audio:
            state.audio = audio is not None
            self._publish(
                TRACK_STATE, token, target.audio_track, wall_ns, IsDataPresent=state.audio
            )
        if audio is not None and target.audio_track and audio.codec in AUDIO_ENCODING:
            self._emit(
                AUDIO_PARAMETERS,
                token,
                target.audio_track,
                wall_ns,
                [
                    SimpleItem("AudioEncoding", AUDIO_ENCODING[audio.codec]),
                    SimpleItem("AudioSampleRate", str(audio.sample_rate)),
                    # Kbps; not carried by the stream's parameters (0: unknown).
                    SimpleItem("AudioBitrate", "0"),
                ],
            )

    def _stopped(self, state: _WriterState, wall_ns: int) -> None:
        if not state.writing:
            return
        target = state.target
        token = target.recording_token
        state.writing = False
        left = self._writers.get(token, 1) - 1
        if left:
            self._writers[token] = left
        else:
            self._writers.pop(token, None)
        if target.video_track:
            self._publish(TRACK_STATE, token, target.video_track, wall_ns, IsDataPresent=False)
        if state.audio and target.audio_track:
            state.audio = False
            self._publish(TRACK_STATE, token, target.audio_track, wall_ns, IsDataPresent=False)
        if not left:
            self._publish(RECORDING_STATE, token, "", wall_ns, IsRecording=False)

    def forget(self, recording_token: str) -> None:
        """A deleted recording: its properties go (``Deleted``); nothing is stored (its
        rows went with it)."""
        self._ids.pop(recording_token, None)
        for message in self.bus.properties():
            if message.topic in HISTORY_TOPICS and _recording_of(message) == recording_token:
                self.bus.publish(
                    message.topic,
                    source=message.source,
                    data=message.data,
                    operation=PropertyOperation.DELETED,
                )

    # -- publishing --------------------------------------------------------------------------
    def _publish(
        self, topic: Topic, recording: str, track: str, wall_ns: int, **data: bool
    ) -> None:
        self._emit(
            topic,
            recording,
            track,
            wall_ns,
            [SimpleItem(name, _bool(value)) for name, value in data.items()],
        )

    def _emit(
        self, topic: Topic, recording: str, track: str, wall_ns: int, data: list[Item]
    ) -> None:
        # The specifications' own item names: Recording/State and Track/State say
        # RecordingToken, the parameters topics say Recording; tracks are "Track".
        recording_item = (
            "Recording" if topic in (VIDEO_PARAMETERS, AUDIO_PARAMETERS) else ("RecordingToken")
        )
        source = [SimpleItem(recording_item, recording)]
        if track:
            source.append(SimpleItem("Track", track))
        message = self.bus.publish(topic, source=source, data=data, utc_ns=wall_ns)
        if message is not None:
            self._store(message, recording, track)

    def _store(self, message: Message, recording: str, track: str) -> None:
        recording_id = self._ids.get(recording)
        if recording_id is None:
            return
        self.index.add_event(
            EventRow(
                recording_id=recording_id,
                recording_token=recording,
                track_token=track,
                topic=message.topic.text(),
                utc_ns=message.utc_ns,
                operation=message.operation.value if message.operation else "",
                source=_items_json(message.source),
                data=_items_json(message.data),
            )
        )


def _items_json(items: tuple[Item, ...]) -> list[list[str]]:
    return [
        [i.name, i.xml.decode(), "element"] if isinstance(i, ElementItem) else [i.name, i.value]
        for i in items
    ]


def _recording_of(message: Message) -> str | None:
    for item in message.source:
        if isinstance(item, SimpleItem) and item.name in ("RecordingToken", "Recording"):
            return item.value
    return None
