"""POSIX TZ strings: parsing, offsets checked against zoneinfo, TZif footers, IANA lookup."""

from __future__ import annotations

import datetime
import zoneinfo
from pathlib import Path

import pytest

from onvif_nvr.system import posixtz
from onvif_nvr.system.posixtz import PosixTZ, TransitionRule

ZONEINFO = Path("/usr/share/zoneinfo")
NS = 1_000_000_000


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    when = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    return int(when.timestamp()) * NS


# --- parsing ---------------------------------------------------------------------------


def test_parse_onvif_schema_example() -> None:
    tz = posixtz.parse("CET-1CEST,M3.5.0/2,M10.5.0/3")
    assert tz == PosixTZ(
        text="CET-1CEST,M3.5.0/2,M10.5.0/3",
        std_name="CET",
        std_utcoffset_s=3600,
        dst_name="CEST",
        dst_utcoffset_s=7200,
        dst_start=TransitionRule("M", month=3, week=5, weekday=0, time_s=7200),
        dst_end=TransitionRule("M", month=10, week=5, weekday=0, time_s=3 * 3600),
    )


def test_parse_forms() -> None:
    assert posixtz.parse("UTC0") == PosixTZ("UTC0", "UTC", 0)
    assert posixtz.parse("  JST-9 ").text == "JST-9"
    assert posixtz.parse("JST-9").std_utcoffset_s == 9 * 3600
    kolkata = posixtz.parse("<+0530>-5:30")
    assert (kolkata.std_name, kolkata.std_utcoffset_s) == ("+0530", 19800)
    ny = posixtz.parse("EST5EDT,M3.2.0/2,M11.1.0/2")
    assert (ny.std_utcoffset_s, ny.dst_utcoffset_s) == (-5 * 3600, -4 * 3600)
    assert posixtz.parse("<-03>+3").std_utcoffset_s == -3 * 3600
    assert posixtz.parse("XXX-1:02:03").std_utcoffset_s == 3723
    lord_howe = posixtz.parse("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0")
    assert lord_howe.dst_utcoffset_s == 11 * 3600
    julian = posixtz.parse("AAA0BBB,J60/-1,300/26:30")
    assert julian.dst_start == TransitionRule("J", day=60, time_s=-3600)
    assert julian.dst_end == TransitionRule("N", day=300, time_s=26 * 3600 + 1800)
    assert posixtz.parse("AAA0BBB,M3.5.0/+167:59:59,M10.5.0/-167").dst_end is not None


def test_dst_name_without_rules_uses_us_rule_and_one_hour() -> None:
    tz = posixtz.parse("EST5EDT")
    assert tz.dst_utcoffset_s == -4 * 3600
    assert tz.dst_start == TransitionRule("M", month=3, week=2, weekday=0, time_s=7200)
    assert tz.dst_end == TransitionRule("M", month=11, week=1, weekday=0, time_s=7200)
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 3, 10, 6, 59, 59)) == (-5 * 3600, False)
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 3, 10, 7)) == (-4 * 3600, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "TZ string is empty"),
        ("   ", "TZ string is empty"),
        ("UTC", "standard time name 'UTC' must be followed by a UTC offset"),
        ("CETCEST", "standard time name 'CETCEST' must be followed by a UTC offset"),
        ("CET-1CEST,M13.5.0,M10.5.0", "rule month must be 1..12, got 13"),
        ("CET-1CEST,M3.6.0,M10.5.0", "rule week must be 1..5, got 6"),
        ("CET-1CEST,M3.5.7,M10.5.0", "rule weekday must be 0..6 (0 is Sunday), got 7"),
        ("CET-1CEST,M3.0.0,M10.5.0", "rule week must be 1..5, got 0"),
        ("AAA0BBB,J0,J300", "rule Julian day must be 1..365, got 0"),
        ("AAA0BBB,J366,J300", "rule Julian day must be 1..365, got 366"),
        ("AAA0BBB,366,300", "rule day must be 0..365, got 366"),
        ("CET25", "UTC offset hour 25 is out of range 0..24"),
        ("CET-1CEST25", "DST UTC offset hour 25 is out of range 0..24"),
        ("CET-1:60", "UTC offset minute 60 is out of range 0..59"),
        ("CET-1:00:60", "UTC offset second 60 is out of range 0..59"),
        ("CET-1:", "expected UTC offset minutes at index 6, found end of string"),
        ("CET-", "expected UTC offset hours at index 4, found end of string"),
        ("CET-1CEST,M3.5.0/168,M10.5.0", "transition time hour 168 is out of range 0..167"),
        ("CET-1CEST,M3.5.0,M10.5.0/3x", "unexpected 'x' at index 26"),
        ("UTC0 junk", "unexpected ' junk' at index 4"),
        ("CET-1CEST-2x", "unexpected 'x' at index 11"),
        (
            "CET-1CEST,M3.5.0",
            "expected ',' before the DST end rule at index 16, found end of string",
        ),
        ("CET-1CEST,M3.5.0;M10.5.0", "expected ',' before the DST end rule at index 16, found ';'"),
        ("CET-1CEST,M3", "expected '.' after the rule month at index 12, found end of string"),
        ("CET-1CEST,X3,M10", "expected a transition date (Mm.w.d, Jn or n) at index 10, found 'X'"),
        (
            "CET-1CEST,",
            "expected a transition date (Mm.w.d, Jn or n) at index 10, found end of string",
        ),
        ("CET-1,M3.5.0,M10.5.0", "transition rules at index 5 need a daylight saving time name"),
        ("AB0", "standard time name 'AB' is shorter than 3 characters"),
        ("CET-1ST", "daylight saving time name 'ST' is shorter than 3 characters"),
        ("<+05>-5<+6", "daylight saving time name starting at index 7 has no closing '>'"),
        ("<+0530-5:30", "standard time name starting at index 0 has no closing '>'"),
        ("<+5>-5", "standard time name '+5' is shorter than 3 characters"),
        ("<+0 5>-5", "standard time name <+0 5> may only contain letters, digits, '+' and '-'"),
        ("-1CET", "expected the standard time name at index 0, found '-'"),
        ("CÉT-1", "standard time name 'C' is shorter than 3 characters"),
        (
            ":Europe/Paris",
            "TZ strings starting with ':' are implementation-defined, not POSIX rules",
        ),
        ("A" * 300 + "0", "TZ string is longer than 255 characters"),
    ],
)
def test_malformed_strings_are_rejected_exactly(text: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        posixtz.parse(text)
    assert str(excinfo.value) == message


# --- offsets ----------------------------------------------------------------------------


def zone_footer(name: str) -> str:
    path = ZONEINFO / name
    if not path.is_file():
        pytest.skip(f"{path} is not installed")
    footer = posixtz.read_tzif_footer(path.read_bytes())
    if footer is None:
        pytest.skip(f"{path} has no TZif v2+ footer")
    return footer


def zoneinfo_offset(zone: zoneinfo.ZoneInfo, t_s: int) -> tuple[int, bool]:
    local = datetime.datetime.fromtimestamp(t_s, zone)
    offset, dst = local.utcoffset(), local.dst()
    assert offset is not None and dst is not None
    return int(offset.total_seconds()), dst != datetime.timedelta(0)


# The first year from which each zone's footer rule matches its history; the footer only
# describes the rules in force after the zone's last change.
ZONES = {
    "Europe/Paris": 2011,
    "America/New_York": 2011,
    "Australia/Sydney": 2011,  # southern hemisphere: DST across New Year
    "Asia/Kolkata": 2011,
    "America/Sao_Paulo": 2020,  # DST abolished in 2019
    "America/Nuuk": 2025,  # "/-1": switches at 23:00 the day before; rule since 2024
    "Asia/Jerusalem": 2014,  # "/26": switches on the next day; rule since 2013
    "America/Santiago": 2023,  # southern, "/24"; rule since 2022
    "Europe/Dublin": 2011,  # negative DST: "IST-1GMT0" with GMT as the DST part
}


@pytest.mark.parametrize("name", sorted(ZONES))
def test_utcoffset_matches_zoneinfo(name: str) -> None:
    tz = posixtz.parse(zone_footer(name))
    zone = zoneinfo.ZoneInfo(name)
    start_s = utc_ns(ZONES[name], 1, 1) // NS
    end_s = utc_ns(2041, 1, 1) // NS
    # An odd step visits every hour of the day; where the offset changes between two
    # samples, bisection finds the exact second and both sides of it are compared.
    step_s = 7 * 3600 + 13 * 60 + 17
    previous = None
    for t_s in range(start_s, end_s, step_s):
        expected = zoneinfo_offset(zone, t_s)
        assert posixtz.utcoffset_at(tz, t_s * NS) == expected, (name, t_s)
        if previous is not None and previous != expected:
            low, high = t_s - step_s, t_s
            while high - low > 1:
                mid = (low + high) // 2
                if zoneinfo_offset(zone, mid) == previous:
                    low = mid
                else:
                    high = mid
            assert posixtz.utcoffset_at(tz, low * NS) == previous, (name, low)
            assert posixtz.utcoffset_at(tz, high * NS) == expected, (name, high)
            assert posixtz.utcoffset_at(tz, high * NS - 1) == previous, (name, high)
        previous = expected


def test_southern_hemisphere_new_year_is_dst() -> None:
    tz = posixtz.parse("AEST-10AEDT,M10.1.0,M4.1.0/3")
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 1, 1)) == (11 * 3600, True)
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 7, 1)) == (10 * 3600, False)
    # 2024-04-07 03:00 AEDT = 2024-04-06 16:00 UTC ends DST.
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 4, 6, 15, 59, 59)) == (11 * 3600, True)
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 4, 6, 16)) == (10 * 3600, False)


def test_julian_and_zero_based_days_around_february_29() -> None:
    julian = posixtz.parse("AAA0BBB,J60,J300")  # J60 is March 1 in every year
    plain = posixtz.parse("AAA0BBB,59,299")  # day 59 is February 29 in leap years
    for tz, month, day in ((julian, 3, 1), (plain, 2, 29)):
        assert posixtz.utcoffset_at(tz, utc_ns(2024, month, day, 1, 59, 59)) == (0, False)
        assert posixtz.utcoffset_at(tz, utc_ns(2024, month, day, 2)) == (3600, True)
    for tz in (julian, plain):
        assert posixtz.utcoffset_at(tz, utc_ns(2023, 3, 1, 2)) == (3600, True)
        assert posixtz.utcoffset_at(tz, utc_ns(2023, 3, 1, 1, 59, 59)) == (0, False)


def test_negative_and_over_24_hour_transition_times() -> None:
    tz = posixtz.parse("AAA0BBB,M3.5.0/-1,M10.5.0/26")
    # Last Sunday of March 2024 is the 31st: -1:00 is Saturday 23:00 standard time.
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 3, 30, 22, 59, 59)) == (0, False)
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 3, 30, 23)) == (3600, True)
    # Last Sunday of October 2024 is the 27th: 26:00 DST is Monday 02:00 DST = 01:00 UTC.
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 10, 28, 0, 59, 59)) == (3600, True)
    assert posixtz.utcoffset_at(tz, utc_ns(2024, 10, 28, 1)) == (0, False)


def test_dst_all_year() -> None:
    # RFC 8536 section 3.3.1 writes permanent DST as a start right after the end.
    tz = posixtz.parse("EST5EDT4,0/0,J365/25")
    for t_ns in (utc_ns(2023, 12, 31, 23), utc_ns(2024, 1, 1, 5), utc_ns(2024, 6, 1)):
        assert posixtz.utcoffset_at(tz, t_ns) == (-4 * 3600, True)


def test_week_five_means_last() -> None:
    assert TransitionRule("M", month=2, week=5, weekday=4).date_in(2024) == datetime.date(
        2024, 2, 29
    )
    assert TransitionRule("M", month=2, week=5, weekday=5).date_in(2024) == datetime.date(
        2024, 2, 23
    )
    assert TransitionRule("N", day=365).date_in(2023) == datetime.date(2024, 1, 1)


def test_local_fields() -> None:
    tz = posixtz.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    local, is_dst = posixtz.local_fields(tz, utc_ns(2024, 7, 1, 12) + 123_456_789)
    assert (local, is_dst) == (datetime.datetime(2024, 7, 1, 14, 0, 0, 123456), True)
    local, is_dst = posixtz.local_fields(tz, utc_ns(2024, 1, 1, 12))
    assert (local, is_dst) == (datetime.datetime(2024, 1, 1, 13), False)
    assert local.tzinfo is None


def test_instants_outside_supported_years() -> None:
    with pytest.raises(ValueError) as excinfo:
        posixtz.utcoffset_at(posixtz.parse("UTC0"), utc_ns(9999, 1, 1))
    assert str(excinfo.value) == "instant is outside the years 2..9997"


# --- TZif and IANA names ----------------------------------------------------------------


def test_read_tzif_footer() -> None:
    footer = zone_footer("Europe/Paris")
    assert footer == "CET-1CEST,M3.5.0,M10.5.0/3"
    data = (ZONEINFO / "Europe/Paris").read_bytes()
    v1 = data[:4] + b"\0" + data[5:]
    assert posixtz.read_tzif_footer(v1) is None
    with pytest.raises(ValueError, match="^data is not a TZif file$"):
        posixtz.read_tzif_footer(b"not a time zone")
    with pytest.raises(ValueError, match="^TZif data is truncated$"):
        posixtz.read_tzif_footer(data[: len(data) - len(footer) - 10])
    with pytest.raises(ValueError, match="^TZif footer does not end with a newline$"):
        posixtz.read_tzif_footer(data.rstrip(b"\n"))


def test_from_iana_reads_footer() -> None:
    zone_footer("America/New_York")
    tz = posixtz.from_iana("America/New_York")
    assert tz.text == "EST5EDT,M3.2.0,M11.1.0"
    assert tz.std_utcoffset_s == -5 * 3600


def test_from_iana_with_injected_directory(tmp_path: Path) -> None:
    paris = ZONEINFO / "Europe/Paris"
    if not paris.is_file():
        pytest.skip(f"{paris} is not installed")
    (tmp_path / "Test").mkdir()
    (tmp_path / "Test/Zone").write_bytes(paris.read_bytes())
    assert posixtz.from_iana("Test/Zone", tmp_path).std_name == "CET"
    (tmp_path / "Test/Old").write_bytes(b"TZif" + bytes(40))
    with pytest.raises(ValueError) as excinfo:
        posixtz.from_iana("Test/Old", tmp_path)
    assert str(excinfo.value) == "time zone file of 'Test/Old' has no POSIX TZ footer"
    (tmp_path / "Test/Text").write_text("hello")
    with pytest.raises(ValueError) as excinfo:
        posixtz.from_iana("Test/Text", tmp_path)
    assert (
        str(excinfo.value)
        == "time zone file of 'Test/Text' is not valid TZif: data is not a TZif file"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../etc/passwd", "'../etc/passwd' is not a valid IANA time zone name"),
        ("/etc/passwd", "'/etc/passwd' is not a valid IANA time zone name"),
        (
            "Europe/../../../etc/passwd",
            "'Europe/../../../etc/passwd' is not a valid IANA time zone name",
        ),
        ("Europe//Paris", "'Europe//Paris' is not a valid IANA time zone name"),
        ("Europe/Paris\n", "'Europe/Paris\\n' is not a valid IANA time zone name"),
        ("", "'' is not a valid IANA time zone name"),
        ("Nowhere/Special", "unknown IANA time zone 'Nowhere/Special'"),
        ("Europe", "unknown IANA time zone 'Europe'"),
    ],
)
def test_from_iana_rejects_bad_names(name: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        posixtz.from_iana(name)
    assert str(excinfo.value) == message


def test_from_iana_refuses_links_out_of_the_directory(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"TZif2")
    zones = tmp_path / "zoneinfo"
    zones.mkdir()
    (zones / "localtime").symlink_to(secret)
    with pytest.raises(ValueError) as excinfo:
        posixtz.from_iana("localtime", zones)
    assert str(excinfo.value) == f"IANA time zone 'localtime' resolves outside {zones}"


def test_parse_any() -> None:
    zone_footer("Europe/Paris")
    assert posixtz.parse_any("Europe/Paris").text == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert posixtz.parse_any(":Europe/Paris").std_name == "CET"
    assert posixtz.parse_any("JST-9").text == "JST-9"
    # Both readings are valid; POSIX wins (and means the US rule, as in libc).
    assert posixtz.parse_any("EST5EDT").text == "EST5EDT"
    with pytest.raises(ValueError) as excinfo:
        posixtz.parse_any("Nowhere/Special")
    assert str(excinfo.value) == "unknown IANA time zone 'Nowhere/Special'"
    with pytest.raises(ValueError) as excinfo:
        posixtz.parse_any("Nowhere")
    assert str(excinfo.value) == "standard time name 'Nowhere' must be followed by a UTC offset"
    with pytest.raises(ValueError) as excinfo:
        posixtz.parse_any("CET-1CEST,M13.5.0,M10.5.0")
    assert str(excinfo.value) == "rule month must be 1..12, got 13"
