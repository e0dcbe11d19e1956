"""The ElementItems of the Profile G events (``tt:RecordingConfiguration``,
``tt:TrackConfiguration``, ``tt:RecordingJobConfiguration``,
``tt:RecordingJobStateInformation``), rendered with the Recording service's schema so they
are exactly what its Get* operations answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree

from onvif_nvr.services.recording import (
    job_configuration_value,
    job_state_value,
    recording_configuration_value,
    track_configuration_value,
)
from onvif_nvr.wsdl.catalog import Binding

TT = "http://www.onvif.org/ver10/schema"

#: ONVIF type -> (the operation whose response holds one, its part, the value function).
_SOURCES: dict[str, tuple[str, str, Callable[[Any], dict[str, Any]]]] = {
    "RecordingConfiguration": (
        "GetRecordingConfiguration",
        "RecordingConfiguration",
        recording_configuration_value,
    ),
    "TrackConfiguration": (
        "GetTrackConfiguration",
        "TrackConfiguration",
        track_configuration_value,
    ),
    "RecordingJobConfiguration": (
        "GetRecordingJobConfiguration",
        "JobConfiguration",
        job_configuration_value,
    ),
    "RecordingJobStateInformation": ("GetRecordingJobState", "State", job_state_value),
}


def element_renderer(binding: Binding) -> Callable[[str, Any], bytes]:
    """``render(type_name, domain object)`` -> the serialized ``tt:<type_name>`` element."""

    def render(type_name: str, value: Any) -> bytes:
        operation, part, to_value = _SOURCES[type_name]
        holder = etree.Element("holder")
        binding.operations[operation].output.render(  # type: ignore[no-untyped-call]
            holder, {part: to_value(value)}
        )
        element = holder[0][0]
        element.tag = f"{{{TT}}}{type_name}"
        return bytes(etree.tostring(element))

    return render
