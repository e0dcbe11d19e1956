"""Media time to wall time: arrival first, the first sender report outright, bounded slew
after, jumps over 5 s taken at once and counted, never backwards."""

import pytest

from onvif_nvr.media.wallclock import WallClockMapper

S = 10**9
T = 1_800_000_000 * S


def test_arrival_then_first_report_then_slew():
    m = WallClockMapper(90_000)
    m.arrival(T, 0)
    assert m.wall_ns(90_000) == T + S
    m.report(T + 2 * S + 300_000_000, 90_000)  # the camera says +1.3 s: taken outright (< 5 s)
    assert m.wall_ns(90_000 * 2) == T + 3 * S + 300_000_000
    assert m.discontinuities == 0
    # A later report 50 ms off moves the mapping by at most 1 ms per media second.
    m.report(T + 3 * S + 350_000_000, 90_000 * 2)
    assert m.wall_ns(90_000 * 12) == T + 13 * S + 300_000_000 + 10_000_000
    assert m.wall_ns(90_000 * 112) == T + 113 * S + 350_000_000  # caught up, no overshoot


def test_big_disagreement_is_a_counted_jump_and_time_never_goes_back():
    m = WallClockMapper(90_000)
    m.report(T, 0)
    assert m.wall_ns(90_000) == T + S
    m.report(T - 60 * S, 90_000)  # the camera clock was set back a minute
    assert m.discontinuities == 0  # noticed when the next unit is mapped
    wall = m.wall_ns(2 * 90_000)
    assert m.discontinuities == 1
    assert wall == T + S  # clamped: never earlier than what was already handed out


def test_errors():
    with pytest.raises(ValueError, match="clock rate must be positive"):
        WallClockMapper(0)
    with pytest.raises(ValueError, match="no arrival time or sender report yet"):
        WallClockMapper(8000).wall_ns(1)
