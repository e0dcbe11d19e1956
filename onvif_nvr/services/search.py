"""Search service (tse, RecordingSearch specification): what is recorded and when, found
from the index.

Every operation of the SearchBinding of the 26.06 WSDL answers except the optional image
and natural-language searches (``ter:ActionNotSupported``, NLSearch/ImageSearch false).
The handlers translate to the domain (:mod:`onvif_nvr.recording.search`, ``event_search``,
``search_sessions``) and back. The box records no PTZ positions and no metadata
(MetadataSearch false, no metadata track can contain PTZ): FindPTZPosition and FindMetadata
open sessions that complete with no result, as the data dictates. Faults: an unknown search
token ``ter:InvalidArgVal/ter:InvalidToken``; FindRecordings' unknown recording or source
``ter:InvalidToken`` / ``ter:InvalidSource``; a filter outside the XPath dialect
``ter:InvalidArgVal``, an event filter outside the topic/ItemFilter dialects
``ter:InvalidArgVal/ter:InvalidFilterFault``; too many sessions
``env:Receiver/ter:Action/ter:ResourceProblem``.
"""

from __future__ import annotations

import calendar
import datetime
from typing import Any

from lxml import etree

from onvif_nvr.errors import InvalidArgument
from onvif_nvr.events import filters
from onvif_nvr.events.filters import EventFilter, FilterError
from onvif_nvr.events.notification import WSNT, notification_message
from onvif_nvr.events.termination import format_utc
from onvif_nvr.events.topics import TNS1, TNS1_PREFIX, TopicCatalog
from onvif_nvr.recording import search_filter
from onvif_nvr.recording.event_search import EventScan, FoundEvent
from onvif_nvr.recording.profile_g import RECEIVER_TYPE
from onvif_nvr.recording.search import (
    MediaAttributes,
    RecordingInformation,
    RecordingSearch,
    Scope,
    TrackInformation,
)
from onvif_nvr.recording.search_sessions import (
    EVENTS,
    METADATA,
    PTZ,
    RECORDINGS,
    EmptyScan,
    RecordingScan,
    SearchSessions,
)
from onvif_nvr.services.common import child_named, optional, render_service_capabilities
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.wsdl.catalog import Binding

TSE = "http://www.onvif.org/ver10/search/wsdl"
TT = "http://www.onvif.org/ver10/schema"
#: tt:Name (RecordingSourceInformation/Name) is at most 64 characters.
MAX_NAME = 64
_DURATION_EPOCH = datetime.datetime(2000, 1, 1)


# -- request values ------------------------------------------------------------------------------
def time_ns(value: Any, name: str) -> int:
    """An xs:dateTime (zeep's datetime; without a zone it is taken as UTC)."""
    if not isinstance(value, datetime.datetime):
        raise InvalidArgument(f"{name} is not a date and time: {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC)
    seconds: int = calendar.timegm(value.timetuple())
    micros: int = value.microsecond
    return seconds * 10**9 + micros * 1000


def duration_ns(value: Any, name: str) -> int:
    """An xs:duration (timedelta, or isodate's Duration for years and months)."""
    if hasattr(value, "totimedelta"):
        value = value.totimedelta(start=_DURATION_EPOCH)
    if not isinstance(value, datetime.timedelta):
        raise InvalidArgument(f"{name} is not a duration: {value!r}")
    if value < datetime.timedelta(0):
        raise InvalidArgument(f"{name} is negative")
    return (value.days * 86_400 + value.seconds) * 10**9 + value.microseconds * 1000


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def scope_from(value: Any) -> Scope:
    """A ``tt:SearchScope``."""
    recordings = tuple(str(t) for t in optional(value, "IncludedRecordings") or [])
    sources = tuple(
        (str(optional(s, "Token") or ""), str(optional(s, "Type") or RECEIVER_TYPE))
        for s in optional(value, "IncludedSources") or []
    )
    text = optional(value, "RecordingInformationFilter")
    expression = None
    if text is not None and str(text).strip():
        try:
            expression = search_filter.parse(str(text))
        except search_filter.SearchFilterError as exc:
            raise InvalidArgument(f"RecordingInformationFilter: {exc}") from None
    return Scope(recordings, sources, expression)


def event_filter_from(request: etree._Element | None) -> EventFilter:
    """FindEvents' ``SearchFilter`` (wsnt:FilterType): topic expressions in the Concrete
    or ConcreteSet dialect and ItemFilter message content, read from the raw request (the
    topic's prefixes are bound there). A topic the box never records matches nothing."""
    element = child_named(request, "SearchFilter")
    if element is None:
        return EventFilter()
    try:
        return filters.parse_filter_element(element)
    except FilterError as exc:
        raise InvalidArgument(f"SearchFilter: {exc}", "InvalidFilterFault") from None


# -- response values -----------------------------------------------------------------------------
def track_value(track: TrackInformation) -> dict[str, Any]:
    """A ``tt:TrackInformation``."""
    return {
        "TrackToken": track.token,
        "TrackType": track.track_type,
        "Description": track.description,
        "DataFrom": format_utc(track.data_from_ns),
        "DataTo": format_utc(track.data_to_ns),
    }


def information_value(info: RecordingInformation) -> dict[str, Any]:
    """A ``tt:RecordingInformation``."""
    source = info.source
    earliest, latest = info.earliest_ns, info.latest_ns
    return {
        "RecordingToken": info.token,
        "Source": {
            "SourceId": source.source_id,
            "Name": source.name[:MAX_NAME],
            "Location": source.location,
            "Description": source.description,
            "Address": source.address,
        },
        "EarliestRecording": None if earliest is None else format_utc(earliest),
        "LatestRecording": None if latest is None else format_utc(latest),
        "Content": info.content,
        "Track": [track_value(t) for t in info.tracks],
        "RecordingStatus": info.status,
    }


def media_attributes_value(media: MediaAttributes) -> dict[str, Any]:
    """A ``tt:MediaAttributes``."""
    tracks = []
    for t in media.tracks:
        value: dict[str, Any] = {"TrackInformation": track_value(t.track)}
        if t.video is not None:
            value["VideoAttributes"] = {
                "Bitrate": t.video.bitrate_kbps,
                "Width": t.video.width,
                "Height": t.video.height,
                "Encoding": t.video.encoding,
                "Framerate": t.video.framerate,
            }
        if t.audio is not None:
            value["AudioAttributes"] = {
                "Encoding": t.audio.encoding,
                "Samplerate": t.audio.sample_rate,
            }
        if t.metadata:
            value["MetadataAttributes"] = {
                "CanContainPTZ": False,
                "CanContainAnalytics": False,
                "CanContainNotifications": False,
            }
        tracks.append(value)
    return {
        "RecordingToken": media.recording_token,
        "TrackAttributes": tracks,
        "From": format_utc(media.from_ns),
        "Until": format_utc(media.until_ns),
    }


def event_results_element(state: str, found: list[FoundEvent]) -> etree._Element:
    """``tse:GetEventSearchResultsResponse``, built here: each result's Event is a
    ``wsnt:NotificationMessageHolderType`` around a ``tt:Message`` (xs:any)."""
    response = etree.Element(
        f"{{{TSE}}}GetEventSearchResultsResponse", nsmap={"tse": TSE, "tt": TT, "wsnt": WSNT}
    )
    results = etree.SubElement(response, f"{{{TSE}}}ResultList")
    etree.SubElement(results, f"{{{TT}}}SearchState").text = state
    scratch = etree.Element("scratch")
    for event in found:
        result = etree.SubElement(results, f"{{{TT}}}Result")
        etree.SubElement(result, f"{{{TT}}}RecordingToken").text = event.recording_token
        etree.SubElement(result, f"{{{TT}}}TrackToken").text = event.track_token
        etree.SubElement(result, f"{{{TT}}}Time").text = format_utc(event.utc_ns)
        holder = etree.SubElement(result, f"{{{TT}}}Event", nsmap={TNS1_PREFIX: TNS1})
        message = notification_message(
            scratch, event.message, subscription_address=None, producer_address=None
        )
        holder.extend(list(message))
        scratch.remove(message)
        etree.SubElement(result, f"{{{TT}}}StartStateEvent").text = (
            "true" if event.start_state else "false"
        )
    return response


#: Required request elements a zeep-based client leaves out when they are empty: no Scope
#: is every recording, no SearchFilter every event.
OPTIONAL_ARGUMENTS = {
    "FindRecordings": ("Scope",),
    "FindEvents": ("Scope", "SearchFilter"),
    "FindPTZPosition": ("Scope", "SearchFilter"),
    "FindMetadata": ("Scope",),
}


class SearchService:
    """Handlers of the SearchBinding (serve them with ``optional=OPTIONAL_ARGUMENTS``)."""

    def __init__(
        self,
        search: RecordingSearch,
        sessions: SearchSessions,
        topics: TopicCatalog,
        binding: Binding,
    ) -> None:
        self.search = search
        self.sessions = sessions
        self.topics = topics
        self.binding = binding

    # -- capabilities ------------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        return {
            "MetadataSearch": False,
            # Start-state events are given for the recording events, the only ones stored.
            "GeneralStartEvents": False,
            "NLSearch": False,
            "ImageSearch": False,
        }

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        """``tse:Capabilities`` for GetServices(IncludeCapability=true)."""
        return render_service_capabilities(self.binding, self.capabilities())

    def legacy_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Extension/Search`` (tt:SearchCapabilities) besides XAddr."""
        return {"MetadataSearch": False}

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.capabilities()}

    # -- what is recorded --------------------------------------------------------------------
    async def get_recording_summary(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        summary = await self.search.summary()
        # With no data the range is empty at the present ("can be safely ignored").
        now = self.sessions.clock.wall_ns()
        return {
            "Summary": {
                "DataFrom": format_utc(
                    now if summary.data_from_ns is None else summary.data_from_ns
                ),
                "DataUntil": format_utc(
                    now if summary.data_until_ns is None else summary.data_until_ns
                ),
                "NumberRecordings": summary.number_recordings,
            }
        }

    async def get_recording_information(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        info = await self.search.information(str(req.RecordingToken))
        return {"RecordingInformation": information_value(info)}

    async def get_media_attributes(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        tokens = [str(t) for t in optional(req, "RecordingTokens") or []]
        at_ns = time_ns(optional(req, "Time"), "Time")
        found = await self.search.media_attributes(tokens, at_ns)
        return {"MediaAttributes": [media_attributes_value(m) for m in found]}

    # -- recordings --------------------------------------------------------------------------
    async def find_recordings(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        scope = scope_from(optional(req, "Scope"))
        keepalive = duration_ns(optional(req, "KeepAliveTime"), "KeepAliveTime")
        recordings = await self.search.scope(scope, strict=True)
        token = self.sessions.open(
            RECORDINGS,
            RecordingScan(self.search, [rid for rid, _ in recordings]),
            keepalive,
            optional_int(optional(req, "MaxMatches")),
        )
        return {"SearchToken": token}

    async def get_recording_search_results(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state, found = await self._results(req, RECORDINGS)
        return {
            "ResultList": {
                "SearchState": state,
                "RecordingInformation": [information_value(i) for i in found],
            }
        }

    # -- events ------------------------------------------------------------------------------
    async def find_events(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        start = time_ns(optional(req, "StartPoint"), "StartPoint")
        end_value = optional(req, "EndPoint")
        end = None if end_value is None else time_ns(end_value, "EndPoint")
        event_filter = event_filter_from(ctx.payload)
        scope = scope_from(optional(req, "Scope"))
        keepalive = duration_ns(optional(req, "KeepAliveTime"), "KeepAliveTime")
        recordings = await self.search.scope(scope, strict=False)
        everything = not scope.recordings and not scope.sources and scope.information_filter is None
        scan = EventScan(
            self.search.db,
            self.topics,
            recordings,
            all_recordings=everything,
            start_ns=start,
            end_ns=end,
            event_filter=event_filter,
            include_start_state=bool(optional(req, "IncludeStartState", False)),
        )
        token = self.sessions.open(
            EVENTS, scan, keepalive, optional_int(optional(req, "MaxMatches"))
        )
        return {"SearchToken": token}

    async def get_event_search_results(self, ctx: CallContext, req: Any) -> etree._Element:
        state, found = await self._results(req, EVENTS)
        return event_results_element(state, found)

    # -- PTZ positions and metadata (never recorded) -----------------------------------------
    async def find_ptz_position(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"SearchToken": await self._empty_search(req, PTZ)}

    async def get_ptz_position_search_results(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state, _ = await self._results(req, PTZ)
        return {"ResultList": {"SearchState": state}}

    async def find_metadata(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        text = optional(optional(req, "MetadataFilter"), "MetadataStreamFilter")
        try:
            search_filter.parse(str(text or ""))
        except search_filter.SearchFilterError as exc:
            raise InvalidArgument(f"MetadataStreamFilter: {exc}") from None
        return {"SearchToken": await self._empty_search(req, METADATA)}

    async def get_metadata_search_results(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state, _ = await self._results(req, METADATA)
        return {"ResultList": {"SearchState": state}}

    async def _empty_search(self, req: Any, kind: str) -> str:
        start = time_ns(optional(req, "StartPoint"), "StartPoint")
        end_value = optional(req, "EndPoint")
        end = None if end_value is None else time_ns(end_value, "EndPoint")
        scope_from(optional(req, "Scope"))  # a bad RecordingInformationFilter still faults
        keepalive = duration_ns(optional(req, "KeepAliveTime"), "KeepAliveTime")
        return self.sessions.open(
            kind, EmptyScan(start, end), keepalive, optional_int(optional(req, "MaxMatches"))
        )

    # -- sessions ----------------------------------------------------------------------------
    async def _results(self, req: Any, kind: str) -> tuple[str, list[Any]]:
        wait = optional(req, "WaitTime")
        return await self.sessions.results(
            str(req.SearchToken),
            kind,
            min_results=optional_int(optional(req, "MinResults")),
            max_results=optional_int(optional(req, "MaxResults")),
            wait_ns=None if wait is None else duration_ns(wait, "WaitTime"),
        )

    async def get_search_state(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"State": self.sessions.state(str(req.SearchToken))}

    async def end_search(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Endpoint": format_utc(self.sessions.end(str(req.SearchToken)))}

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetServiceCapabilities": self.get_service_capabilities,
            "GetRecordingSummary": self.get_recording_summary,
            "GetRecordingInformation": self.get_recording_information,
            "GetMediaAttributes": self.get_media_attributes,
            "FindRecordings": self.find_recordings,
            "GetRecordingSearchResults": self.get_recording_search_results,
            "FindEvents": self.find_events,
            "GetEventSearchResults": self.get_event_search_results,
            "FindPTZPosition": self.find_ptz_position,
            "GetPTZPositionSearchResults": self.get_ptz_position_search_results,
            "FindMetadata": self.find_metadata,
            "GetMetadataSearchResults": self.get_metadata_search_results,
            "GetSearchState": self.get_search_state,
            "EndSearch": self.end_search,
        }
