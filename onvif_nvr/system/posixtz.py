"""POSIX TZ strings: the time zone format of the ONVIF Device service.

GetSystemDateAndTime and SetSystemDateAndTime carry ``tt:TimeZone/TZ``, which ONVIF Core
("SetSystemDateAndTime") defines as a POSIX 1003.1 section 8.3 TZ string and says a device
"shall consider a Timezone which is not formed according to [those] rules as invalid".
So the SOAP front-end must use :func:`parse` and map its ``ValueError`` to
``ter:InvalidTimeZone``. Core does not mention IANA names (``Europe/Berlin``);
:func:`from_iana` and :func:`parse_any` exist for the host side (``/etc/timezone``, the
operator's config file), where an IANA name is turned into the POSIX string that the
zone's TZif file carries in its footer.

Everything here is sans-IO except :func:`from_iana`, and nothing touches ``time.tzset`` or
the ``TZ`` environment variable: both are process-global.

Accepted syntax (POSIX plus the extensions of RFC 8536 section 3.3.1, which TZif footers
use)::

    std offset [dst [offset] [,start[/time],end[/time]]]

* names are 3 or more ASCII letters, or ``<...>`` holding 3 or more letters, digits, ``+``
  and ``-`` (the brackets are quoting and not part of the name);
* ``offset`` is ``[+-]hh[:mm[:ss]]`` with hh 0..24, counted WEST of Greenwich;
* ``start``/``end`` are ``Mm.w.d`` (week 5 means the last), ``Jn`` (1..365, February 29
  never counted) or ``n`` (0..365, February 29 counted);
* ``time`` is ``[+-]hh[:mm[:ss]]`` with hh 0..167 (RFC 8536 allows the sign and more than
  24 hours), local time as it is just before the transition; default 02:00:00.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "PosixTZ",
    "TransitionRule",
    "from_iana",
    "local_fields",
    "parse",
    "parse_any",
    "read_tzif_footer",
    "utcoffset_at",
]

#: A TZ string longer than this is rejected before parsing: real ones are < 60 characters.
MAX_TZ_LENGTH = 255
#: TZif files are a few kB; the largest in tzdata is under 10 kB.
MAX_TZIF_BYTES = 1 << 20
_DEFAULT_RULE_TIME_S = 2 * 3600
_MAX_RULE_TIME_S = 167 * 3600 + 59 * 60 + 59
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NS_PER_S = 1_000_000_000
# Years whose neighbours (y - 1, y + 1 and a rule day 365 of y + 1) still fit in
# datetime.date, which the transition computation uses.
_MIN_YEAR = 2
_MAX_YEAR = 9997
_IANA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_][A-Za-z0-9_+\-]*)*")


@dataclass(frozen=True)
class TransitionRule:
    """The day and local time of a yearly switch between standard and daylight time.

    ``kind`` selects which fields matter: ``"M"`` uses ``month`` (1..12), ``week``
    (1..5, 5 = last) and ``weekday`` (0 = Sunday); ``"J"`` uses ``day`` 1..365 without
    February 29; ``"N"`` uses ``day`` 0..365 with February 29. ``time_s`` is the local
    time of the switch in seconds after midnight of that day and may be negative or
    beyond one day.
    """

    kind: Literal["M", "J", "N"]
    month: int = 0
    week: int = 0
    weekday: int = 0
    day: int = 0
    time_s: int = _DEFAULT_RULE_TIME_S

    def __post_init__(self) -> None:
        if self.kind == "M":
            if not 1 <= self.month <= 12:
                raise ValueError(f"rule month must be 1..12, got {self.month}")
            if not 1 <= self.week <= 5:
                raise ValueError(f"rule week must be 1..5, got {self.week}")
            if not 0 <= self.weekday <= 6:
                raise ValueError(f"rule weekday must be 0..6 (0 is Sunday), got {self.weekday}")
        elif self.kind == "J":
            if not 1 <= self.day <= 365:
                raise ValueError(f"rule Julian day must be 1..365, got {self.day}")
        elif self.kind == "N":
            if not 0 <= self.day <= 365:
                raise ValueError(f"rule day must be 0..365, got {self.day}")
        else:
            raise ValueError(f"rule kind must be 'M', 'J' or 'N', got {self.kind!r}")
        if not -_MAX_RULE_TIME_S <= self.time_s <= _MAX_RULE_TIME_S:
            raise ValueError(f"rule time must be within -167:59:59..167:59:59, got {self.time_s} s")

    def date_in(self, year: int) -> datetime.date:
        """The calendar day this rule selects in ``year`` (may be January 1 of the next)."""
        if self.kind == "J":
            leap_shift = 1 if self.day >= 60 and _is_leap(year) else 0
            return datetime.date(year, 1, 1) + datetime.timedelta(days=self.day - 1 + leap_shift)
        if self.kind == "N":
            return datetime.date(year, 1, 1) + datetime.timedelta(days=self.day)
        first = datetime.date(year, self.month, 1)
        first_weekday = (first.weekday() + 1) % 7  # date.weekday() has Monday = 0
        day = 1 + (self.weekday - first_weekday) % 7 + 7 * (self.week - 1)
        # Week 5 means "the last such weekday", which may be the 4th.
        while day > _days_in_month(year, self.month):
            day -= 7
        return first.replace(day=day)


# The US rule (second Sunday of March to first Sunday of November, 02:00) stands in when a
# DST name comes without rules. POSIX leaves this implementation-defined; glibc reads it from
# tzdata's "posixrules" file, which is America/New_York, so this matches common practice.
DEFAULT_DST_START = TransitionRule("M", month=3, week=2, weekday=0)
DEFAULT_DST_END = TransitionRule("M", month=11, week=1, weekday=0)


@dataclass(frozen=True)
class PosixTZ:
    """A parsed TZ string; offsets are seconds EAST of UTC, the opposite of POSIX's sign.

    ``text`` is the string as given, without surrounding whitespace, so that
    GetSystemDateAndTime can report back exactly what SetSystemDateAndTime stored. The DST
    fields are either all ``None`` or all set, with POSIX defaults filled in.
    """

    text: str
    std_name: str
    std_utcoffset_s: int
    dst_name: str | None = None
    dst_utcoffset_s: int | None = None
    dst_start: TransitionRule | None = None
    dst_end: TransitionRule | None = None


class _Cursor:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def found(self) -> str:
        ch = self.peek()
        return repr(ch) if ch else "end of string"

    def digits(self, what: str) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in "0123456789":
            self.pos += 1
        if self.pos == start:
            raise ValueError(f"expected {what} at index {start}, found {self.found()}")
        return int(self.text[start : self.pos])

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            raise ValueError(f"expected {ch!r} {what} at index {self.pos}, found {self.found()}")
        self.pos += 1


def parse(text: str) -> PosixTZ:
    """Parse a POSIX TZ string; ``ValueError`` says what is wrong and where."""
    text = text.strip()
    if not text:
        raise ValueError("TZ string is empty")
    if len(text) > MAX_TZ_LENGTH:
        raise ValueError(f"TZ string is longer than {MAX_TZ_LENGTH} characters")
    if text[0] == ":":
        raise ValueError("TZ strings starting with ':' are implementation-defined, not POSIX rules")
    cur = _Cursor(text)
    std_name = _parse_name(cur, "standard time")
    if cur.peek() == "" or cur.peek() not in "+-0123456789":
        raise ValueError(f"standard time name {std_name!r} must be followed by a UTC offset")
    std_offset_s = -_parse_hms(cur, "UTC offset", 24)
    if cur.peek() == "":
        return PosixTZ(text, std_name, std_offset_s)
    if cur.peek() == ",":
        raise ValueError(f"transition rules at index {cur.pos} need a daylight saving time name")
    if cur.peek() != "<" and not (cur.peek().isascii() and cur.peek().isalpha()):
        raise ValueError(f"unexpected {text[cur.pos :]!r} at index {cur.pos}")
    dst_name = _parse_name(cur, "daylight saving time")
    if cur.peek() != "" and cur.peek() in "+-0123456789":
        dst_offset_s = -_parse_hms(cur, "DST UTC offset", 24)
    else:
        dst_offset_s = std_offset_s + 3600
    start, end = DEFAULT_DST_START, DEFAULT_DST_END
    if cur.peek() == ",":
        cur.pos += 1
        start = _parse_rule(cur)
        cur.expect(",", "before the DST end rule")
        end = _parse_rule(cur)
    if cur.pos != len(text):
        raise ValueError(f"unexpected {text[cur.pos :]!r} at index {cur.pos}")
    return PosixTZ(text, std_name, std_offset_s, dst_name, dst_offset_s, start, end)


def _parse_name(cur: _Cursor, what: str) -> str:
    start = cur.pos
    if cur.peek() == "<":
        close = cur.text.find(">", start + 1)
        if close < 0:
            raise ValueError(f"{what} name starting at index {start} has no closing '>'")
        name = cur.text[start + 1 : close]
        for ch in name:
            if not (ch.isascii() and (ch.isalnum() or ch in "+-")):
                raise ValueError(
                    f"{what} name <{name}> may only contain letters, digits, '+' and '-'"
                )
        cur.pos = close + 1
    else:
        while cur.peek() != "" and cur.peek().isascii() and cur.peek().isalpha():
            cur.pos += 1
        name = cur.text[start : cur.pos]
        if not name:
            raise ValueError(f"expected the {what} name at index {start}, found {cur.found()}")
    if len(name) < 3:
        raise ValueError(f"{what} name {name!r} is shorter than 3 characters")
    return name


def _parse_hms(cur: _Cursor, what: str, max_hours: int) -> int:
    """``[+-]hh[:mm[:ss]]`` as signed seconds, with POSIX's sign (positive = west)."""
    sign = 1
    if cur.peek() in ("+", "-"):
        sign = -1 if cur.peek() == "-" else 1
        cur.pos += 1
    hours = cur.digits(f"{what} hours")
    if hours > max_hours:
        raise ValueError(f"{what} hour {hours} is out of range 0..{max_hours}")
    minutes = seconds = 0
    if cur.peek() == ":":
        cur.pos += 1
        minutes = cur.digits(f"{what} minutes")
        if minutes > 59:
            raise ValueError(f"{what} minute {minutes} is out of range 0..59")
        if cur.peek() == ":":
            cur.pos += 1
            seconds = cur.digits(f"{what} seconds")
            if seconds > 59:
                raise ValueError(f"{what} second {seconds} is out of range 0..59")
    return sign * (hours * 3600 + minutes * 60 + seconds)


def _parse_rule(cur: _Cursor) -> TransitionRule:
    ch = cur.peek()
    if ch == "M":
        cur.pos += 1
        month = cur.digits("rule month")
        cur.expect(".", "after the rule month")
        week = cur.digits("rule week")
        cur.expect(".", "after the rule week")
        weekday = cur.digits("rule weekday")
        fields: dict[str, int] = {"month": month, "week": week, "weekday": weekday}
        kind: Literal["M", "J", "N"] = "M"
    elif ch == "J":
        cur.pos += 1
        fields, kind = {"day": cur.digits("rule Julian day")}, "J"
    elif ch != "" and ch in "0123456789":
        fields, kind = {"day": cur.digits("rule day")}, "N"
    else:
        raise ValueError(
            f"expected a transition date (Mm.w.d, Jn or n) at index {cur.pos}, found {cur.found()}"
        )
    time_s = _DEFAULT_RULE_TIME_S
    if cur.peek() == "/":
        cur.pos += 1
        # Transition times keep their POSIX sign: "/-1" is 23:00 the day before.
        time_s = _parse_hms(cur, "transition time", 167)
    return TransitionRule(kind, time_s=time_s, **fields)


def utcoffset_at(tz: PosixTZ, wall_ns: int) -> tuple[int, bool]:
    """The offset east of UTC in seconds and whether DST is in force at a UTC instant."""
    t_s = wall_ns // _NS_PER_S
    year = _year_of(t_s + tz.std_utcoffset_s)
    if tz.dst_name is None or tz.dst_start is None or tz.dst_end is None:
        return tz.std_utcoffset_s, False
    dst_offset_s = tz.dst_utcoffset_s if tz.dst_utcoffset_s is not None else tz.std_utcoffset_s
    # Every switch of the neighbouring years as (UTC second, DST after it). Taking the last
    # one at or before t needs no special case for the southern hemisphere (start after end
    # in the year) nor for times beyond 24 h that push a switch into another year. On a tie
    # False sorts first, so a start coinciding with the previous end (RFC 8536's way of
    # writing "DST all year") leaves DST in force.
    switches: list[tuple[int, bool]] = []
    for y in (year - 1, year, year + 1):
        # A start is written in standard time, an end in daylight time: the local time
        # in force just before each switch.
        start = _epoch_s(tz.dst_start.date_in(y)) + tz.dst_start.time_s - tz.std_utcoffset_s
        end = _epoch_s(tz.dst_end.date_in(y)) + tz.dst_end.time_s - dst_offset_s
        switches += [(start, True), (end, False)]
    switches.sort()
    is_dst = not switches[0][1]
    for at_s, dst_after in switches:
        if at_s > t_s:
            break
        is_dst = dst_after
    return (dst_offset_s, True) if is_dst else (tz.std_utcoffset_s, False)


def local_fields(tz: PosixTZ, wall_ns: int) -> tuple[datetime.datetime, bool]:
    """The naive local date and time (microseconds) and DST flag at a UTC instant.

    Meant only for filling ONVIF's ``LocalDateTime`` at the edge; keep ``wall_ns`` inside.
    """
    offset_s, is_dst = utcoffset_at(tz, wall_ns)
    seconds, rest_ns = divmod(wall_ns, _NS_PER_S)
    local = datetime.datetime(1970, 1, 1) + datetime.timedelta(
        seconds=seconds + offset_s, microseconds=rest_ns // 1000
    )
    return local, is_dst


def read_tzif_footer(data: bytes) -> str | None:
    """The POSIX TZ footer of TZif data (RFC 8536), ``None`` for version 1 or an empty footer."""
    v1_end = _tzif_block_end(data, 0, time_size=4)
    if data[4] == 0:
        return None
    v2_end = _tzif_block_end(data, v1_end, time_size=8)
    if data[v2_end : v2_end + 1] != b"\n":
        raise ValueError("TZif footer does not start with a newline")
    close = data.find(b"\n", v2_end + 1)
    if close < 0:
        raise ValueError("TZif footer does not end with a newline")
    raw = data[v2_end + 1 : close]
    if not raw.isascii():
        raise ValueError("TZif footer is not ASCII")
    return raw.decode("ascii") or None


def _tzif_block_end(data: bytes, start: int, *, time_size: int) -> int:
    header = data[start : start + 44]
    if len(header) < 44 or header[:4] != b"TZif":
        raise ValueError("data is not a TZif file" if start == 0 else "TZif v2 header is missing")
    counts = [int.from_bytes(header[20 + 4 * i : 24 + 4 * i], "big") for i in range(6)]
    isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt = counts
    end = (
        start
        + 44
        + timecnt * (time_size + 1)
        + typecnt * 6
        + charcnt
        + leapcnt * (time_size + 4)
        + isstdcnt
        + isutcnt
    )
    if end > len(data):
        raise ValueError("TZif data is truncated")
    return end


def from_iana(name: str, zoneinfo_dir: Path = Path("/usr/share/zoneinfo")) -> PosixTZ:
    """The POSIX rule of an IANA zone, read from the footer of its TZif file.

    ``name`` is hostile input: it must look like a tzdata name (no ``.`` components, no
    leading ``/``) and must resolve to a regular file inside ``zoneinfo_dir``.
    """
    if len(name) > MAX_TZ_LENGTH or _IANA_NAME.fullmatch(name) is None:
        raise ValueError(f"{name!r} is not a valid IANA time zone name")
    base = zoneinfo_dir.resolve()
    path = (base / name).resolve()
    # tzdata itself holds links that leave the directory (Debian's "localtime" points to
    # /etc/localtime); refusing them keeps a client from reading the host's files.
    if not path.is_relative_to(base):
        raise ValueError(f"IANA time zone {name!r} resolves outside {zoneinfo_dir}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"unknown IANA time zone {name!r}")
        data = os.read(fd, MAX_TZIF_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TZIF_BYTES:
        raise ValueError(f"time zone file of {name!r} is larger than {MAX_TZIF_BYTES} bytes")
    try:
        footer = read_tzif_footer(data)
    except ValueError as exc:
        raise ValueError(f"time zone file of {name!r} is not valid TZif: {exc}") from None
    if footer is None:
        raise ValueError(f"time zone file of {name!r} has no POSIX TZ footer")
    return parse(footer)


def parse_any(text: str, zoneinfo_dir: Path = Path("/usr/share/zoneinfo")) -> PosixTZ:
    """A POSIX TZ string, else an IANA name (also as ``:Area/City``), for host-side input.

    Not for SetSystemDateAndTime, which must reject what is not POSIX (see module doc).
    A name such as ``EST5EDT`` is valid both ways; the POSIX reading wins, as it does in
    libc. When both readings fail, the POSIX error is raised unless the text can only be
    an IANA name (it has a ``/`` or a leading ``:``).
    """
    text = text.strip()
    if text.startswith(":"):
        return from_iana(text[1:], zoneinfo_dir)
    try:
        return parse(text)
    except ValueError as posix_error:
        if _IANA_NAME.fullmatch(text) is None:
            raise
        if "/" in text:
            return from_iana(text, zoneinfo_dir)
        try:
            return from_iana(text, zoneinfo_dir)
        except ValueError:
            raise posix_error from None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if _is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _epoch_s(day: datetime.date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * 86400


def _year_of(local_s: int) -> int:
    ordinal = local_s // 86400 + _EPOCH_ORDINAL
    if (
        not datetime.date(_MIN_YEAR, 1, 1).toordinal()
        <= ordinal
        <= datetime.date(_MAX_YEAR, 12, 31).toordinal()
    ):
        raise ValueError(f"instant is outside the years {_MIN_YEAR}..{_MAX_YEAR}")
    return datetime.date.fromordinal(ordinal).year
