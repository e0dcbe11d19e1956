"""Times on the event service's wire, sans-IO: ``wsnt:AbsoluteOrRelativeTimeType``
(an ``xs:dateTime`` or an ``xs:duration``), PullMessages' ``Timeout`` and the UTC
``...Z`` form every answer uses (Core §9.1: "utc using the 'Z' indicator")."""

from __future__ import annotations

import datetime
import functools
import re

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_DATETIME = re.compile(
    r"^(?P<y>-?\d{4,})-(?P<mo>\d\d)-(?P<d>\d\d)T(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    r"(?P<frac>\.\d+)?(?P<tz>Z|[+-]\d\d:\d\d)?$"
)
#: xs:duration months and years have no fixed length; WS-BN leaves it to the producer.
_DAYS_PER_MONTH = 30
_DAYS_PER_YEAR = 365
_MAX_NS = 100 * 365 * 86400 * 10**9


def parse_duration_ns(text: str) -> int:
    """``PT60S`` -> 60 000 000 000. Raise ValueError for anything else, or a negative one."""
    match = _DURATION.match(text.strip())
    if match is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f"{text!r} is not an xs:duration")
    if match.group("sign"):
        raise ValueError(f"negative duration {text!r}")
    parts = {k: v for k, v in match.groupdict().items() if k != "sign" and v}
    days = (
        int(parts.get("years", 0)) * _DAYS_PER_YEAR
        + int(parts.get("months", 0)) * _DAYS_PER_MONTH
        + int(parts.get("days", 0))
    )
    seconds_text = parts.get("seconds", "0")
    whole, _, frac = seconds_text.partition(".")
    ns = (
        ((days * 24 + int(parts.get("hours", 0))) * 60 + int(parts.get("minutes", 0))) * 60
        + int(whole)
    ) * 10**9 + int((frac + "000000000")[:9])
    return min(ns, _MAX_NS)


def parse_datetime_ns(text: str) -> int:
    """An ``xs:dateTime`` as ns since the epoch; one without a zone is taken as UTC
    (ONVIF asks for 'Z'; a client that leaves it out means UTC in practice)."""
    match = _DATETIME.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an xs:dateTime")
    g = match.groupdict()
    tz = datetime.UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime.datetime(
            int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]), int(g["mi"]), int(g["s"]), 0, tz
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time: {exc}") from None
    frac = int(((g["frac"] or ".")[1:] + "000000000")[:9])
    seconds = int(moment.timestamp())
    return seconds * 10**9 + frac


def parse_termination(text: str, now_ns: int) -> int:
    """``AbsoluteOrRelativeTimeType``: a duration counts from ``now_ns``."""
    text = (text or "").strip()
    if text.startswith(("P", "-P")):
        return now_ns + parse_duration_ns(text)
    return parse_datetime_ns(text)


def format_utc(ns: int) -> str:
    """``2026-01-01T12:00:00.123Z`` (milliseconds, always UTC)."""
    seconds, rest = divmod(ns, 10**9)
    return f"{_utc_seconds(seconds)}.{rest // 10**6:03d}Z"


@functools.lru_cache(maxsize=64)
def _utc_seconds(seconds: int) -> str:
    # Every answer carries CurrentTime and each message its UtcTime, mostly the same
    # few seconds: strftime once per second instead of per use.
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def format_duration(ns: int) -> str:
    """``PT60S`` (whole seconds, or with a fraction)."""
    seconds, rest = divmod(ns, 10**9)
    if rest:
        return f"PT{seconds}.{rest:09d}".rstrip("0") + "S"
    return f"PT{seconds}S"
