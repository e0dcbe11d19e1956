"""Recording service (trc): recordings, their tracks and the recording jobs that fill them.

Every operation of the RecordingBinding answers. The ones of RecordingControl §5 the box
does translate to the Profile G domain API
(:class:`~onvif_nvr.recording.control.RecordingControl`) and back, nothing more; the domain
raises the ``ter:`` faults the specification names (NoRecording, NoTrack, NoRecordingJob,
BadConfiguration, BadMode, MaxRecordings, MaxTracks, MaxRecordingJobs, MaxReceivers,
CannotDelete). Export of recorded data is not offered (no SupportedExportFileFormats), and
segment export and segment-duration overrides answer ``ter:ActionNotSupported``.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from lxml import etree

from onvif_nvr.errors import BadConfiguration
from onvif_nvr.recording.control import (
    RECEIVER_TYPE,
    JobConfiguration,
    JobSource,
    JobState,
    JobTrack,
    Recording,
    RecordingConfiguration,
    RecordingControl,
    RecordingJob,
    RecordingSource,
    Track,
    TrackConfiguration,
)
from onvif_nvr.services.common import optional, render_service_capabilities
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.wsdl.catalog import Binding

#: tt:Name (RecordingSourceInformation/Name) is at most 64 characters; the other
#: descriptive strings are unbounded in the schema and cut by the domain (a device may
#: truncate them without a fault, RecordingControl §5.3.1).
MAX_NAME = 64
#: What GetCapabilities reports as Recording/MaxStringLength: every string of the
#: recording source information is kept whole up to this length (tt:Name's limit).
MAX_STRING_LENGTH = MAX_NAME
#: What the recorders store without transcoding (tt:VideoEncoding / tt:AudioEncoding
#: names; H.265 and Opus by their IANA media subtype names, as §5.25 asks).
ENCODINGS = ("H264", "H265", "G711", "AAC", "opus")
#: MaximumRetentionTime given in years or months is measured from this date.
_DURATION_EPOCH = datetime.datetime(2000, 1, 1)


# -- requests (zeep values) to domain objects ------------------------------------------------
def retention_seconds(value: Any) -> int:
    """An xs:duration (timedelta, or isodate's Duration for years and months) in whole
    seconds, rounded up so that a short non-zero time never becomes 0 (unlimited)."""
    if value is None:
        raise BadConfiguration("MaximumRetentionTime is missing")
    if hasattr(value, "totimedelta"):  # zeep's value for a duration in years or months
        value = value.totimedelta(start=_DURATION_EPOCH)
    if not isinstance(value, datetime.timedelta):
        raise BadConfiguration(f"MaximumRetentionTime is not a duration: {value!r}")
    return math.ceil(value.total_seconds())


def recording_configuration_from(value: Any) -> RecordingConfiguration:
    """A ``tt:RecordingConfiguration`` of a request."""
    if value is None:
        raise BadConfiguration("RecordingConfiguration is missing")
    if optional(value, "Target") is not None:
        raise BadConfiguration("the box records to its own storage only (no Target)")
    source = optional(value, "Source")
    if source is None:
        raise BadConfiguration("Source is missing")

    def text(holder: Any, name: str) -> str:
        found = optional(holder, name)
        return "" if found is None else str(found)

    return RecordingConfiguration(
        RecordingSource(
            source_id=text(source, "SourceId"),
            name=text(source, "Name")[:MAX_NAME],
            location=text(source, "Location"),
            description=text(source, "Description"),
            address=text(source, "Address"),
        ),
        content=text(value, "Content"),
        max_retention_s=retention_seconds(optional(value, "MaximumRetentionTime")),
    )


def track_configuration_from(value: Any) -> TrackConfiguration:
    """A ``tt:TrackConfiguration`` of a request."""
    if value is None or optional(value, "TrackType") is None:
        raise BadConfiguration("TrackConfiguration needs a TrackType")
    description = optional(value, "Description")
    return TrackConfiguration(str(value.TrackType), "" if description is None else str(description))


def job_configuration_from(value: Any) -> JobConfiguration:
    """A ``tt:RecordingJobConfiguration`` of a request."""
    if value is None:
        raise BadConfiguration("JobConfiguration is missing")
    if optional(value, "ScheduleToken"):
        raise BadConfiguration("the box has no schedules (ScheduledRecording is false)")
    if optional(value, "EventFilter") is not None:
        raise BadConfiguration("the box records continuously (EventRecording is false)")
    token, mode, priority = (optional(value, n) for n in ("RecordingToken", "Mode", "Priority"))
    if token is None or mode is None or priority is None:
        raise BadConfiguration("RecordingToken, Mode and Priority are required")
    sources = []
    for source in optional(value, "Source") or []:
        reference = optional(source, "SourceToken")
        sources.append(
            JobSource(
                token=str(reference.Token) if reference is not None and reference.Token else None,
                # The attribute's schema default is the Receiver type.
                type=str(optional(reference, "Type") or RECEIVER_TYPE),
                auto_create_receiver=bool(optional(source, "AutoCreateReceiver", False)),
                tracks=tuple(
                    JobTrack(str(t.SourceTag or ""), str(t.Destination or ""))
                    for t in optional(source, "Tracks") or []
                ),
            )
        )
    return JobConfiguration(str(token), str(mode), int(priority), tuple(sources))


# -- domain objects to response values -------------------------------------------------------
def recording_configuration_value(config: RecordingConfiguration) -> dict[str, Any]:
    """A ``tt:RecordingConfiguration``."""
    source = config.source
    return {
        "Source": {
            "SourceId": source.source_id,
            # Recordings made by camera commands carry the camera's name, which may be longer.
            "Name": source.name[:MAX_NAME],
            "Location": source.location,
            "Description": source.description,
            "Address": source.address,
        },
        "Content": config.content,
        "MaximumRetentionTime": datetime.timedelta(seconds=config.max_retention_s),
    }


def track_configuration_value(config: TrackConfiguration) -> dict[str, Any]:
    """A ``tt:TrackConfiguration``."""
    return {"TrackType": config.track_type, "Description": config.description}


def recording_item(recording: Recording) -> dict[str, Any]:
    """A ``tt:GetRecordingsResponseItem``."""
    return {
        "RecordingToken": recording.token,
        "Configuration": recording_configuration_value(recording.configuration),
        "Tracks": {"Track": [track_item(t) for t in recording.tracks]},
    }


def track_item(track: Track) -> dict[str, Any]:
    return {
        "TrackToken": track.token,
        "Configuration": track_configuration_value(track.configuration),
    }


def job_configuration_value(config: JobConfiguration) -> dict[str, Any]:
    """A ``tt:RecordingJobConfiguration`` as the box uses it: every source with its
    receiver's token, never AutoCreateReceiver (§5.3.6)."""
    return {
        "RecordingToken": config.recording_token,
        "Mode": config.mode,
        "Priority": config.priority,
        "Source": [
            {
                "SourceToken": {"Token": s.token or "", "Type": s.type},
                "Tracks": [
                    {"SourceTag": t.source_tag, "Destination": t.destination} for t in s.tracks
                ],
            }
            for s in config.sources
        ],
    }


def job_item(job: RecordingJob) -> dict[str, Any]:
    """A ``tt:GetRecordingJobsResponseItem``."""
    return {"JobToken": job.token, "JobConfiguration": job_configuration_value(job.configuration)}


def job_state_value(state: JobState) -> dict[str, Any]:
    """A ``tt:RecordingJobStateInformation``."""
    return {
        "RecordingToken": state.recording_token,
        "State": state.state,
        "Sources": [
            {
                "SourceToken": {"Token": s.token, "Type": s.type},
                "State": s.state,
                "Tracks": {
                    "Track": [
                        {
                            "SourceTag": t.source_tag,
                            "Destination": t.destination,
                            "Error": t.error or None,
                            "State": t.state,
                        }
                        for t in s.tracks
                    ]
                },
            }
            for s in state.sources
        ],
    }


class RecordingService:
    """Handlers of the RecordingBinding."""

    def __init__(self, control: RecordingControl, binding: Binding) -> None:
        self.control = control
        self.binding = binding

    # -- capabilities ----------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        """``trc:Capabilities``: the limits of ``[recording]`` in the settings."""
        limits = self.control.limits
        return {
            "DynamicRecordings": True,
            "DynamicTracks": True,
            "Encoding": list(ENCODINGS),
            "MaxRate": float(limits.max_rate_kbps),
            "MaxTotalRate": float(limits.max_total_rate_kbps),
            "MaxRecordings": float(limits.max_recordings),
            "MaxRecordingJobs": limits.max_recording_jobs,
            "Options": True,
            # The META001 tracks exist (CreateRecording makes them) but stay empty.
            "MetadataRecording": False,
            "EventRecording": False,
            "ScheduledRecording": False,
            "OverrideSegmentDuration": False,
            "OnboardStorage": True,
            "SegmentExport": False,
        }

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        """``trc:Capabilities`` for GetServices(IncludeCapability=true)."""
        return render_service_capabilities(self.binding, self.capabilities())

    def legacy_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Extension/Recording`` (tt:RecordingCapabilities) besides XAddr."""
        return {
            "ReceiverSource": True,
            # A job may record one of the box's media profiles (its receiver's stream).
            "MediaProfileSource": True,
            "DynamicRecordings": True,
            "DynamicTracks": True,
            "MaxStringLength": MAX_STRING_LENGTH,
        }

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.capabilities()}

    # -- recordings --------------------------------------------------------------------------
    async def create_recording(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        config = recording_configuration_from(req.RecordingConfiguration)
        recording = await self.control.create_recording(config)
        return {"RecordingToken": recording.token}

    async def delete_recording(self, ctx: CallContext, req: Any) -> None:
        await self.control.delete_recording(req.RecordingToken)

    async def get_recordings(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"RecordingItem": [recording_item(r) for r in await self.control.recordings()]}

    async def set_recording_configuration(self, ctx: CallContext, req: Any) -> None:
        config = recording_configuration_from(req.RecordingConfiguration)
        await self.control.set_recording_configuration(req.RecordingToken, config)

    async def get_recording_configuration(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        recording = await self.control.get_recording(req.RecordingToken)
        return {"RecordingConfiguration": recording_configuration_value(recording.configuration)}

    async def get_recording_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        spare = await self.control.recording_options(req.RecordingToken)
        return {
            "Options": {
                "Job": {"Spare": spare["spare_jobs"]},
                "Track": {
                    "SpareTotal": spare["spare_total"],
                    "SpareVideo": spare["spare_video"],
                    "SpareAudio": spare["spare_audio"],
                    "SpareMetadata": spare["spare_metadata"],
                },
            }
        }

    # -- tracks ------------------------------------------------------------------------------
    async def create_track(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        track = await self.control.create_track(
            req.RecordingToken, track_configuration_from(req.TrackConfiguration)
        )
        return {"TrackToken": track.token}

    async def delete_track(self, ctx: CallContext, req: Any) -> None:
        await self.control.delete_track(req.RecordingToken, req.TrackToken)

    async def get_track_configuration(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        track = await self.control.get_track(req.RecordingToken, req.TrackToken)
        return {"TrackConfiguration": track_configuration_value(track.configuration)}

    async def set_track_configuration(self, ctx: CallContext, req: Any) -> None:
        await self.control.set_track_configuration(
            req.RecordingToken, req.TrackToken, track_configuration_from(req.TrackConfiguration)
        )

    # -- recording jobs ----------------------------------------------------------------------
    async def create_recording_job(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        job = await self.control.create_job(job_configuration_from(req.JobConfiguration))
        return {
            "JobToken": job.token,
            "JobConfiguration": job_configuration_value(job.configuration),
        }

    async def delete_recording_job(self, ctx: CallContext, req: Any) -> None:
        await self.control.delete_job(req.JobToken)

    async def get_recording_jobs(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"JobItem": [job_item(j) for j in await self.control.jobs()]}

    async def set_recording_job_configuration(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        job = await self.control.set_job_configuration(
            req.JobToken, job_configuration_from(req.JobConfiguration)
        )
        return {"JobConfiguration": job_configuration_value(job.configuration)}

    async def get_recording_job_configuration(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        job = await self.control.get_job(req.JobToken)
        return {"JobConfiguration": job_configuration_value(job.configuration)}

    async def set_recording_job_mode(self, ctx: CallContext, req: Any) -> None:
        await self.control.set_job_mode(req.JobToken, str(req.Mode))

    async def get_recording_job_state(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"State": job_state_value(await self.control.job_state(req.JobToken))}

    # -- export (not offered) ----------------------------------------------------------------
    async def export_recorded_data(self, ctx: CallContext, req: Any) -> None:
        # The operation's own fault for a FileFormat the box cannot write (§5.21): it
        # writes none, and says so by leaving SupportedExportFileFormats out.
        raise BadConfiguration(f"the box exports no file format ({req.FileFormat!r} included)")

    async def no_export_operation(self, ctx: CallContext, req: Any) -> None:
        # §5.22/§5.23: "The requested operation does not exist" (none ever does).
        raise BadConfiguration(f"no export operation {req.OperationToken!r}")

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetServiceCapabilities": self.get_service_capabilities,
            "CreateRecording": self.create_recording,
            "DeleteRecording": self.delete_recording,
            "GetRecordings": self.get_recordings,
            "SetRecordingConfiguration": self.set_recording_configuration,
            "GetRecordingConfiguration": self.get_recording_configuration,
            "GetRecordingOptions": self.get_recording_options,
            "CreateTrack": self.create_track,
            "DeleteTrack": self.delete_track,
            "GetTrackConfiguration": self.get_track_configuration,
            "SetTrackConfiguration": self.set_track_configuration,
            "CreateRecordingJob": self.create_recording_job,
            "DeleteRecordingJob": self.delete_recording_job,
            "GetRecordingJobs": self.get_recording_jobs,
            "SetRecordingJobConfiguration": self.set_recording_job_configuration,
            "GetRecordingJobConfiguration": self.get_recording_job_configuration,
            "SetRecordingJobMode": self.set_recording_job_mode,
            "GetRecordingJobState": self.get_recording_job_state,
            "ExportRecordedData": self.export_recorded_data,
            "StopExportRecordedData": self.no_export_operation,
            "GetExportRecordedDataState": self.no_export_operation,
        }
