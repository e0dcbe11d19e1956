"""Media time to wall time for one stream, as docs/design/time.md describes.

The mapping is an offset (wall − media). It starts from the arrival clock; the first RTCP
sender report sets it outright (the camera's own capture clock is what ONVIF replay must
report); later reports move it by at most ``max_slew_ns_per_s`` per second of media, so
drift and NTP steps bend the timeline instead of tearing it. Without reports the mapping
follows the arrival clock the same way: towards the least-delayed arrival of each window.

A disagreement over ``rebase_ns`` is taken at once and counted as a discontinuity (the writer
starts a new segment on it): a report far from the mapping, or arrivals that stop agreeing
with it — the stream's media clock jumped (a camera that restarts its RTP clock, a timestamp
glitch) or the host clock was stepped. After a media clock jump the mapping keeps the
camera's relation to the arrival clock until the next report. Wall time never goes
backwards between discontinuities; a discontinuity may step it either way.
"""

from __future__ import annotations


class WallClockMapper:
    def __init__(
        self,
        clock_rate: int,
        *,
        max_slew_ns_per_s: int = 1_000_000,
        rebase_ns: int = 5_000_000_000,
        window_s: int = 10,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.clock_rate = clock_rate
        self.max_slew_ns_per_s = max_slew_ns_per_s
        self.rebase_ns = rebase_ns
        self._window_ns = window_s * 1_000_000_000
        self._offset_ns: int | None = None
        self._target_ns: int | None = None
        self._from_report = False
        self._last_media_ns: int | None = None
        self._last_wall_ns = 0
        #: Arrival offset minus mapping offset when the mapping was last set (the network
        #: delay, plus the camera clock's error once reports are used); None: not measured.
        self._skew_ref_ns: int | None = None
        #: Least arrival offset of the current window, and the window's first media time.
        self._window_min_ns: int | None = None
        self._window_start_ns = 0
        #: Times the mapping jumped (a camera clock set, a media clock jump, a host clock step).
        self.discontinuities = 0

    def media_ns(self, media_ticks: int) -> int:
        return media_ticks * 1_000_000_000 // self.clock_rate

    def arrival(self, wall_ns: int, media_ticks: int) -> None:
        """The arrival clock's reading for a unit."""
        media = self.media_ns(media_ticks)
        offset = wall_ns - media
        if self._offset_ns is None:
            self._offset_ns, self._skew_ref_ns = offset, 0
            self._window_min_ns, self._window_start_ns = offset, media
            return
        mapping = self._offset_ns if self._target_ns is None else self._target_ns
        skew = offset - mapping
        if self._skew_ref_ns is None:
            self._skew_ref_ns = skew
        elif abs(skew - self._skew_ref_ns) > self.rebase_ns:
            self._jump(offset - self._skew_ref_ns)
            self._window_min_ns, self._window_start_ns = offset, media
            return
        if self._from_report:
            return
        if self._window_min_ns is None or offset < self._window_min_ns:
            self._window_min_ns = offset
        if media - self._window_start_ns >= self._window_ns:
            self._target_ns = self._window_min_ns
            self._window_min_ns, self._window_start_ns = None, media

    def report(self, wall_ns: int, media_ticks: int) -> None:
        """A sender report: ``media_ticks`` (unwrapped RTP time) was captured at ``wall_ns``."""
        offset = wall_ns - self.media_ns(media_ticks)
        if not self._from_report or self._offset_ns is None:
            # The first report is taken outright (a jump only if it is far from arrival).
            if self._offset_ns is not None and abs(offset - self._offset_ns) > self.rebase_ns:
                self._jump(offset)
            self._offset_ns, self._from_report = offset, True
            self._target_ns = None
            self._skew_ref_ns = None
            return
        self._target_ns = offset

    def wall_ns(self, media_ticks: int) -> int:
        media = self.media_ns(media_ticks)
        if self._offset_ns is None:
            raise ValueError("no arrival time or sender report yet")
        if self._target_ns is not None:
            diff = self._target_ns - self._offset_ns
            if abs(diff) > self.rebase_ns:
                self._jump(self._target_ns)
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

    def _jump(self, offset: int) -> None:
        """Take ``offset`` at once: a discontinuity, after which time may step back."""
        self._offset_ns = offset
        self._target_ns = None
        self._skew_ref_ns = None
        self._last_wall_ns = 0
        self.discontinuities += 1
