"""Media time to wall time for one stream, as docs/design/time.md describes.

The mapping is an offset (wall − media). It starts from the arrival clock; the first RTCP
sender report sets it outright (the camera's own capture clock is what ONVIF replay must
report); later reports move it by at most ``max_slew_ns_per_s`` per second of media, so
drift and NTP steps bend the timeline instead of tearing it; a disagreement over
``rebase_ns`` is taken at once and counted as a discontinuity (the writer starts a new
segment on it). Wall time never goes backwards.
"""

from __future__ import annotations


class WallClockMapper:
    def __init__(
        self, clock_rate: int, *, max_slew_ns_per_s: int = 1_000_000, rebase_ns: int = 5_000_000_000
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.clock_rate = clock_rate
        self.max_slew_ns_per_s = max_slew_ns_per_s
        self.rebase_ns = rebase_ns
        self._offset_ns: int | None = None
        self._target_ns: int | None = None
        self._from_report = False
        self._last_media_ns: int | None = None
        self._last_wall_ns = 0
        #: Times the mapping jumped (a camera clock set, or the first report far from arrival).
        self.discontinuities = 0

    def media_ns(self, media_ticks: int) -> int:
        return media_ticks * 1_000_000_000 // self.clock_rate

    def arrival(self, wall_ns: int, media_ticks: int) -> None:
        """The arrival clock's reading for a unit (used until a sender report comes)."""
        if self._offset_ns is None:
            self._offset_ns = wall_ns - self.media_ns(media_ticks)

    def report(self, wall_ns: int, media_ticks: int) -> None:
        """A sender report: ``media_ticks`` (unwrapped RTP time) was captured at ``wall_ns``."""
        offset = wall_ns - self.media_ns(media_ticks)
        if not self._from_report or self._offset_ns is None:
            if self._offset_ns is not None and abs(offset - self._offset_ns) > self.rebase_ns:
                self.discontinuities += 1
            self._offset_ns, self._from_report = offset, True
            self._target_ns = None
            return
        self._target_ns = offset

    def wall_ns(self, media_ticks: int) -> int:
        media = self.media_ns(media_ticks)
        if self._offset_ns is None:
            raise ValueError("no arrival time or sender report yet")
        if self._target_ns is not None:
            diff = self._target_ns - self._offset_ns
            if abs(diff) > self.rebase_ns:
                self._offset_ns = self._target_ns
                self._target_ns = None
                self.discontinuities += 1
            elif self._last_media_ns is not None and media > self._last_media_ns:
                step = (media - self._last_media_ns) * self.max_slew_ns_per_s // 1_000_000_000
                self._offset_ns += max(-step, min(step, diff))
                if self._offset_ns == self._target_ns:
                    self._target_ns = None
        self._last_media_ns = (
            media if self._last_media_ns is None else max(media, self._last_media_ns)
        )
        wall = max(media + self._offset_ns, self._last_wall_ns)
        self._last_wall_ns = wall
        return wall
