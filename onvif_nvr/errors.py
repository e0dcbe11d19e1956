"""One error taxonomy for the whole box.

Domain code raises these; each front-end maps them to its protocol in one small table
(SOAP faults in ``soap/faults.py``, later RTSP and HTTP status codes). The ``subcodes``
are ONVIF ``ter:`` local names, the most specific last, so the SOAP mapping is direct.
"""

from __future__ import annotations


class NvrError(Exception):
    """Base of every expected, client-visible failure."""

    #: "Sender" (the request is at fault) or "Receiver" (the box cannot do it).
    side = "Receiver"
    #: ONVIF fault subcodes (local names in the ``ter`` namespace), outermost first.
    subcodes: tuple[str, ...] = ("Action",)

    def __init__(self, message: str, *, subcodes: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if subcodes is not None:
            self.subcodes = subcodes


class InvalidArgument(NvrError):
    """A request argument is wrong (``env:Sender/ter:InvalidArgVal/...``)."""

    side = "Sender"
    subcodes = ("InvalidArgVal",)

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message, subcodes=("InvalidArgVal", detail) if detail else None)


class InvalidArgs(NvrError):
    """Request arguments are inconsistent (``env:Sender/ter:InvalidArgs/...``)."""

    side = "Sender"
    subcodes = ("InvalidArgs",)

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message, subcodes=("InvalidArgs", detail) if detail else None)


class OperationProhibited(NvrError):
    """The request is understood but not allowed (``env:Sender/ter:OperationProhibited/...``)."""

    side = "Sender"
    subcodes = ("OperationProhibited",)

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message, subcodes=("OperationProhibited", detail) if detail else None)


class ActionFailed(NvrError):
    """The box could not carry out an action (``env:Receiver/ter:Action/...``)."""

    side = "Receiver"
    subcodes = ("Action",)

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message, subcodes=("Action", detail) if detail else None)


class NotSupported(NvrError):
    """The operation or option is not implemented (``env:Receiver/ter:ActionNotSupported``)."""

    side = "Receiver"
    subcodes = ("ActionNotSupported",)

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message, subcodes=("ActionNotSupported", detail) if detail else None)


class NotAuthorized(NvrError):
    """Missing, wrong or insufficient credentials (``env:Sender/ter:NotAuthorized``)."""

    side = "Sender"
    subcodes = ("NotAuthorized",)


class ResourceProblem(NvrError):
    """The box is out of a resource (``env:Receiver/ter:Action/ter:ResourceProblem``... )."""

    side = "Receiver"
    subcodes = ("Action", "ResourceProblem")


# -- Profile G (RecordingControl and Receiver specifications) -------------------------------
class NoRecording(InvalidArgument):
    """``env:Sender/ter:InvalidArgVal/ter:NoRecording``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "NoRecording")


class NoTrack(InvalidArgument):
    """``env:Sender/ter:InvalidArgVal/ter:NoTrack``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "NoTrack")


class NoRecordingJob(InvalidArgument):
    """``env:Sender/ter:InvalidArgVal/ter:NoRecordingJob``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "NoRecordingJob")


class NoReceiver(InvalidArgument):
    """An unknown ReceiverToken: ``env:Sender/ter:InvalidArgVal/ter:UnknownToken`` (the
    Receiver specification's fault for every operation that takes a token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "UnknownToken")


class BadConfiguration(InvalidArgument):
    """``env:Sender/ter:InvalidArgVal/ter:BadConfiguration``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "BadConfiguration")


class InvalidMediaUri(BadConfiguration):
    """A MediaUri the receivers cannot use (an ill-formed or non-RTSP URI, too long);
    ONVIF has no own subcode for it: ``ter:BadConfiguration``."""


class BadMode(InvalidArgument):
    """``env:Sender/ter:InvalidArgVal/ter:BadMode``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "BadMode")


class MaxRecordings(ActionFailed):
    """``env:Receiver/ter:Action/ter:MaxRecordings``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "MaxRecordings")


class MaxTracks(ActionFailed):
    """``env:Receiver/ter:Action/ter:MaxTracks``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "MaxTracks")


class MaxRecordingJobs(ActionFailed):
    """``env:Receiver/ter:Action/ter:MaxRecordingJobs``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "MaxRecordingJobs")


class MaxReceivers(ActionFailed):
    """``env:Receiver/ter:Action/ter:MaxReceivers``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "MaxReceivers")


class CannotDelete(ActionFailed):
    """``env:Receiver/ter:Action/ter:CannotDelete`` (a recording or track)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "CannotDelete")


class CannotDeleteReceiver(ActionFailed):
    """``env:Receiver/ter:Action/ter:CannotDeleteReceiver`` (e.g. a job uses it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "CannotDeleteReceiver")
