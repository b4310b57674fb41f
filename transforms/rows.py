"""The row types that flow between hitstream's steps.

One module so that the source, the parser, the queries and the sinks agree on field names. Field names follow
Spark's Kafka source schema and the blog's queries.
"""
from __future__ import annotations

import datetime
from typing import NamedTuple, Optional, Tuple

# Builds a row from its fields in order, without a NamedTuple's Python-level __new__ (a measurable cost per record
# on the read's hot path): new_row(Hit, (hittime, zipcode, ...)).
new_row = tuple.__new__

# Spark's timestampType values.
CREATE_TIME = 0
LOG_APPEND_TIME = 1


class KafkaRecord(NamedTuple):
    """One Kafka message, with Spark's source columns.

    `late` is hitstream's addition: True when the record's event time was already behind its partition's watermark
    (max event time seen in that partition minus the watermark delay) when it was read. Windowed queries drop such
    records and count them; other queries keep them.
    """
    key: Optional[bytes]
    value: Optional[bytes]
    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch milliseconds
    timestampType: int  # CREATE_TIME or LOG_APPEND_TIME
    headers: Optional[Tuple[Tuple[str, Optional[bytes]], ...]] = None
    late: bool = False


class KafkaBatch(NamedTuple):
    """Records of one partition read in one poll, carried as one Beam element (the fast path: Beam's cost is per
    element, so a batch of a thousand records pays it once). Its element timestamp is the earliest on-time event
    time in it."""
    records: tuple  # of KafkaRecord


class Hit(NamedTuple):
    """A parsed ISP hit: the `hits` query's row."""
    hittime: datetime.datetime  # UTC, timezone-aware
    zipcode: str
    isp: Optional[str]
    ip: Optional[str]
    city: Optional[str]
    state: Optional[str]
    country: Optional[str]
    user_id: Optional[str]
    url: Optional[str]
    day: str  # UTC date of hittime, YYYY-MM-DD
    topic: str
    partition: int
    offset: int
    kafka_timestamp: int  # epoch milliseconds
    late: bool = False


class HitBatch(NamedTuple):
    """The parsed hits of one KafkaBatch, and which records the batch covered (dead letters included), so the
    aggregation checkpoint (transforms/checkpoint.py) knows how far a partition has been counted."""
    hits: tuple  # of Hit
    topic: str = ""
    partition: int = -1
    next_offset: int = -1  # one past the batch's last record


class DeadLetter(NamedTuple):
    """A message that could not be turned into a Hit, with everything needed to replay or inspect it."""
    topic: str
    partition: int
    offset: int
    kafka_timestamp: int
    key: Optional[bytes]
    value: Optional[bytes]
    error: str
    step: str
    # The source record's headers when the read includes them (--include-headers, Spark's includeHeaders), else None.
    headers: Optional[Tuple[Tuple[str, Optional[bytes]], ...]] = None


class ZipCount(NamedTuple):
    zipcode: str
    count: int


class IspCount(NamedTuple):
    isp: Optional[str]
    count: int


class WindowCount(NamedTuple):
    window_start: datetime.datetime  # UTC, timezone-aware
    window_end: datetime.datetime
    zipcode: str
    count: int


class Snapshot(NamedTuple):
    """A complete-mode result: every row of the query's table at one trigger.

    Sinks replace their contents with `rows` (JDBC deletes keys that vanished; memory swaps the table).
    """
    batch_id: int
    rows: tuple


def result_key(row: tuple) -> tuple:
    """A result row's identity (ZipCount, IspCount, WindowCount): every field before its count."""
    return tuple(row[:-1])


def replaces(row: tuple, seen: Optional[tuple]) -> bool:
    """Whether result `row` replaces `seen`, the row held for the same key: the higher count wins. Accumulating
    totals only grow, so this keeps the newest whatever order a runner delivers rows in."""
    return seen is None or row[-1] > seen[-1]
