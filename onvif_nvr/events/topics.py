"""Event topics: names (``tns1:RecordingConfig/JobState``) and what their messages hold.

A topic is a root QName plus child names (WS-Topics). Every topic the box may emit is
described in a :class:`TopicCatalog` (is it a property, which Source/Key/Data items with
which types); GetEventProperties renders the catalogue and the bus refuses to publish a
topic it does not hold, so the two cannot drift apart. Services extend the catalogue by
adding their own :class:`TopicDescription` rows before the box starts serving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

#: The ONVIF topic namespace and its conventional prefix.
TNS1 = "http://www.onvif.org/ver10/topics"
TNS1_PREFIX = "tns1"


@dataclasses.dataclass(frozen=True, order=True)
class Topic:
    """A concrete topic: the root's namespace and the path of local names below it."""

    namespace: str
    path: tuple[str, ...]

    @classmethod
    def onvif(cls, text: str) -> Topic:
        """``Topic.onvif("RecordingConfig/JobState")`` (the ``tns1:`` prefix is optional)."""
        if text.startswith(TNS1_PREFIX + ":"):
            text = text[len(TNS1_PREFIX) + 1 :]
        parts = tuple(text.split("/"))
        if not all(parts):
            raise ValueError(f"topic {text!r} has an empty level")
        return cls(TNS1, parts)

    def text(self, prefix: str = TNS1_PREFIX) -> str:
        """The topic as it appears in ``wsnt:Topic`` (with ``prefix`` bound to the namespace)."""
        return f"{prefix}:{'/'.join(self.path)}"

    def is_within(self, other: Topic) -> bool:
        """True when this topic is ``other`` or one of its descendants."""
        return self.namespace == other.namespace and self.path[: len(other.path)] == other.path

    def __str__(self) -> str:
        return (
            self.text() if self.namespace == TNS1 else f"{{{self.namespace}}}{'/'.join(self.path)}"
        )


@dataclasses.dataclass(frozen=True)
class ItemDescription:
    """A ``tt:SimpleItemDescription`` (or ElementItemDescription when ``element``)."""

    name: str
    #: QName text of the value's type, with the ``tt:`` / ``xs:`` prefixes.
    type: str
    element: bool = False


@dataclasses.dataclass(frozen=True)
class TopicDescription:
    topic: Topic
    is_property: bool
    source: tuple[ItemDescription, ...] = ()
    key: tuple[ItemDescription, ...] = ()
    data: tuple[ItemDescription, ...] = ()

    def __post_init__(self) -> None:
        names = [i.name for i in (*self.source, *self.key, *self.data)]
        if len(names) != len(set(names)):
            # Core §9.4.1: item names are unique across Source, Key and Data.
            raise ValueError(f"{self.topic}: an item name is used twice: {names}")
        if self.key and not self.is_property:
            raise ValueError(f"{self.topic}: only a property has Key items")


class TopicCatalog:
    """Every topic the box emits, in the order GetEventProperties lists them."""

    def __init__(self, descriptions: Iterable[TopicDescription] = ()) -> None:
        self._topics: dict[Topic, TopicDescription] = {}
        for description in descriptions:
            self.add(description)

    def add(self, description: TopicDescription) -> None:
        if description.topic in self._topics:
            raise ValueError(f"topic {description.topic} is described twice")
        self._topics[description.topic] = description

    def get(self, topic: Topic) -> TopicDescription | None:
        return self._topics.get(topic)

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    def __iter__(self) -> Iterator[TopicDescription]:
        return iter(self._topics.values())

    def __len__(self) -> int:
        return len(self._topics)

    def has_subtree(self, topic: Topic) -> bool:
        """True when ``topic`` is a described topic or an ancestor of one."""
        return any(t.is_within(topic) for t in self._topics)


def _simple(name: str, type_: str) -> ItemDescription:
    return ItemDescription(name, type_)


def _element(name: str, type_: str) -> ItemDescription:
    return ItemDescription(name, type_, element=True)


_RECORDING = _simple("RecordingToken", "tt:RecordingReference")
_TRACK = _simple("TrackToken", "tt:TrackReference")
_JOB = _simple("RecordingJobToken", "tt:RecordingJobReference")

#: The topics of Recording Control §5.29, Recording Search §5.21, Receiver §5.6 and the
#: device's storage failure (Core §8.9.10). Item names are the specifications' own,
#: inconsistencies included (``Recording``/``Track`` in the history parameters topics,
#: ``RecordingToken``/``Track`` in Track/State). Type names the specifications misspell
#: (``xs:String``, ``xsDateTime``, ``"tt:ReferenceToken "``) are written as the XSD names
#: them, and Receiver's MediaUri, a SimpleItem typed with the complex type tt:MediaUri in
#: the text, carries the URI itself (xs:anyURI).
ONVIF_TOPICS: tuple[TopicDescription, ...] = (
    TopicDescription(
        Topic.onvif("RecordingConfig/JobState"),
        True,
        source=(_JOB,),
        data=(
            _simple("State", "xs:string"),
            _element("Information", "tt:RecordingJobStateInformation"),
        ),
    ),
    TopicDescription(
        Topic.onvif("RecordingConfig/RecordingConfiguration"),
        False,
        source=(_RECORDING,),
        data=(_element("Configuration", "tt:RecordingConfiguration"),),
    ),
    TopicDescription(
        Topic.onvif("RecordingConfig/TrackConfiguration"),
        False,
        source=(_RECORDING, _TRACK),
        data=(_element("Configuration", "tt:TrackConfiguration"),),
    ),
    TopicDescription(
        Topic.onvif("RecordingConfig/RecordingJobConfiguration"),
        False,
        source=(_JOB,),
        data=(_element("Configuration", "tt:RecordingJobConfiguration"),),
    ),
    TopicDescription(
        Topic.onvif("RecordingConfig/DeleteTrackData"),
        False,
        source=(_RECORDING, _TRACK),
        data=(_simple("StartTime", "xs:dateTime"), _simple("EndTime", "xs:dateTime")),
    ),
    TopicDescription(Topic.onvif("RecordingConfig/CreateRecording"), False, source=(_RECORDING,)),
    TopicDescription(Topic.onvif("RecordingConfig/DeleteRecording"), False, source=(_RECORDING,)),
    TopicDescription(
        Topic.onvif("RecordingConfig/CreateTrack"), False, source=(_RECORDING, _TRACK)
    ),
    TopicDescription(
        Topic.onvif("RecordingConfig/DeleteTrack"), False, source=(_RECORDING, _TRACK)
    ),
    TopicDescription(
        Topic.onvif("RecordingHistory/Recording/State"),
        True,
        source=(_simple("RecordingToken", "tt:ReferenceToken"),),
        data=(_simple("IsRecording", "xs:boolean"),),
    ),
    TopicDescription(
        Topic.onvif("RecordingHistory/Track/State"),
        True,
        source=(
            _simple("RecordingToken", "tt:ReferenceToken"),
            _simple("Track", "tt:ReferenceToken"),
        ),
        data=(_simple("IsDataPresent", "xs:boolean"),),
    ),
    TopicDescription(
        Topic.onvif("RecordingHistory/Track/VideoParameters"),
        True,
        source=(
            _simple("Recording", "tt:ReferenceToken"),
            _simple("Track", "tt:ReferenceToken"),
        ),
        data=(
            _simple("VideoEncoding", "tt:VideoEncoding"),
            _simple("VideoWidth", "xs:int"),
            _simple("VideoHeight", "xs:int"),
            _element("VideoRateControl", "tt:VideoRateControl"),
        ),
    ),
    TopicDescription(
        Topic.onvif("RecordingHistory/Track/AudioParameters"),
        True,
        source=(
            _simple("Recording", "tt:ReferenceToken"),
            _simple("Track", "tt:ReferenceToken"),
        ),
        data=(
            _simple("AudioEncoding", "tt:AudioEncoding"),
            _simple("AudioSampleRate", "xs:int"),
            _simple("AudioBitrate", "xs:int"),
        ),
    ),
    TopicDescription(
        Topic.onvif("Receiver/ChangeState"),
        False,
        source=(_simple("ReceiverToken", "tt:ReferenceToken"),),
        data=(_simple("NewState", "tt:ReceiverState"), _simple("MediaUri", "xs:anyURI")),
    ),
    TopicDescription(
        Topic.onvif("Receiver/ConnectionFailed"),
        False,
        source=(_simple("ReceiverToken", "tt:ReferenceToken"),),
        data=(_simple("MediaUri", "xs:anyURI"),),
    ),
    TopicDescription(
        Topic.onvif("Device/HardwareFailure/StorageFailure"),
        True,
        source=(_simple("Token", "tt:ReferenceToken"),),
        data=(_simple("Failed", "xs:boolean"),),
    ),
)

STORAGE_FAILURE = Topic.onvif("Device/HardwareFailure/StorageFailure")


def onvif_catalog() -> TopicCatalog:
    """A fresh catalogue with the topics above (services may add theirs)."""
    return TopicCatalog(ONVIF_TOPICS)
