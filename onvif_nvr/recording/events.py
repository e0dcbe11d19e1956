"""What the write side publishes on the event bus (ONVIF topics)."""

from __future__ import annotations

from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.message import SimpleItem
from onvif_nvr.events.topics import STORAGE_FAILURE

#: Volume statuses that mean the storage failed (Core §8.9.10): a write error, or the disk
#: gone (unmounted). A full volume works as designed (retention makes room): no failure.
FAILED_STATUSES = frozenset({"failed", "offline"})


def volume_token(volume_id: int) -> str:
    """The ``Token`` of a volume in storage events."""
    return f"volume{volume_id}"


class StorageEvents:
    """``tns1:Device/HardwareFailure/StorageFailure``, a property per volume: Initialized
    when the volume is attached, Changed when it fails or recovers (repeated reports of
    the same state publish nothing: the bus compares with the stored state)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def volume_status(self, volume_id: int, status: str) -> None:
        if status in ("foreign", "new"):
            return
        self.bus.publish(
            STORAGE_FAILURE,
            source=[SimpleItem("Token", volume_token(volume_id))],
            data=[SimpleItem("Failed", "true" if status in FAILED_STATUSES else "false")],
        )
