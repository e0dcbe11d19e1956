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


def test_big_disagreement_is_a_counted_jump_and_only_a_jump_goes_back():
    m = WallClockMapper(90_000)
    m.report(T, 0)
    assert m.wall_ns(90_000) == T + S
    assert m.wall_ns(90_000 - 3000) == T + S  # a late unit: clamped, never earlier
    m.report(T - 60 * S, 90_000)  # the camera clock was set back a minute
    assert m.discontinuities == 0  # noticed when the next unit is mapped
    wall = m.wall_ns(2 * 90_000)
    assert m.discontinuities == 1
    assert wall == T - 59 * S  # the new mapping at once (the writer starts a new segment)
    assert m.wall_ns(3 * 90_000) == T - 58 * S


def test_arrival_only_follows_the_least_delayed_arrivals_and_host_steps():
    m = WallClockMapper(90_000)
    m.arrival(T + 80_000_000, 0)  # the first unit came 80 ms late
    for second in range(1, 10):  # then units with 20 ms of delay
        m.arrival(T + second * S + 20_000_000, second * 90_000)
        assert m.wall_ns(second * 90_000) == T + second * S + 80_000_000
    # After a 10 s window its least delay (20 ms) is the target, approached at 1 ms/s.
    m.arrival(T + 10 * S + 20_000_000, 10 * 90_000)
    assert m.wall_ns(10 * 90_000) == T + 10 * S + 79_000_000
    assert m.wall_ns(200 * 90_000) == T + 200 * S + 20_000_000
    assert m.discontinuities == 0
    m.arrival(T + 201 * S + 3600 * S, 201 * 90_000)  # the host clock was stepped an hour
    assert m.discontinuities == 1
    assert m.wall_ns(201 * 90_000) == T + 201 * S + 3600 * S


def test_media_clock_jump_keeps_the_camera_relation_until_the_next_report():
    m = WallClockMapper(90_000)
    m.arrival(T, 0)
    m.report(T - 30 * S, 0)  # the camera's clock is 30 s behind ours: its clock wins
    assert m.discontinuities == 1  # (a first report far from arrival counts as one)
    m.arrival(T + S + 10_000_000, 90_000)
    assert m.wall_ns(90_000) == T - 29 * S
    # The camera's RTP clock jumps an hour ahead (no report yet): arrivals disagree.
    jumped = (2 + 3600) * 90_000
    m.arrival(T + 2 * S + 10_000_000, jumped)
    assert m.discontinuities == 2
    assert m.wall_ns(jumped) == T - 28 * S  # still 30 s behind ours, not an hour ahead
    m.report(T - 27 * S, jumped + 90_000)  # the next report agrees: no second jump
    assert m.wall_ns(jumped + 2 * 90_000) == T - 26 * S
    assert m.discontinuities == 2


def test_errors():
    with pytest.raises(ValueError, match="clock rate must be positive"):
        WallClockMapper(0)
    with pytest.raises(ValueError, match="no arrival time or sender report yet"):
        WallClockMapper(8000).wall_ns(1)
