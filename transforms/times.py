"""Time helpers, in one home: Spark's UTC timestamp text, the UTC day, and epoch millis and micros."""
from __future__ import annotations

import datetime
from typing import Dict, Optional

UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = datetime.timedelta(microseconds=1)
_ONE_MILLISECOND = datetime.timedelta(milliseconds=1)


def iso_utc(value: datetime.datetime, timespec: str = "milliseconds") -> str:
    """2026-11-23T19:05:00.000Z, as Spark's to_json writes timestamps (naive values are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def spark_show_text(value: datetime.datetime) -> str:
    """2026-11-23 19:05:00 (fraction only when not zero), in UTC: how Spark's show() and console sink print a
    timestamp."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    text = value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds").rstrip("0")
    return text.rstrip(".")


def iso_utc_micros(micros: Optional[float]) -> Optional[str]:
    """Epoch microseconds as `iso_utc` text; None, or a time outside years 1..9999, gives None."""
    if micros is None:
        return None
    try:
        return iso_utc(_EPOCH + int(micros) * _ONE_MICROSECOND)
    except OverflowError:
        return None


def from_millis(ms: float) -> datetime.datetime:
    """Epoch milliseconds (a Kafka timestamp, a numeric hittime) as an aware UTC datetime."""
    return _EPOCH + ms * _ONE_MILLISECOND


def to_micros(moment: datetime.datetime) -> int:
    """Epoch microseconds of a UTC-aware datetime, exactly (no float rounding): Beam's timestamps."""
    return (moment - _EPOCH) // _ONE_MICROSECOND


_DAYS: Dict[int, str] = {}  # date ordinal -> YYYY-MM-DD: a stream's hits fall on a few days


def utc_day(value: datetime.datetime) -> str:
    """YYYY-MM-DD of a datetime in UTC (naive values are taken as UTC): the `day` of parsed hits and Parquet paths."""
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    ordinal = value.toordinal()
    day = _DAYS.get(ordinal)
    if day is None:
        if len(_DAYS) >= 4096:  # hostile input spread over many days: stay small
            _DAYS.clear()
        day = _DAYS[ordinal] = value.date().isoformat()
    return day
