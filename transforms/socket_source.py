"""A TCP line source, the blog's "sockets" (Spark's `format("socket")`): each line is one message.

A splittable DoFn whose restriction counts lines: it reads what the peer sent for up to a second, checkpoints with
`defer_remainder`, and finishes when the peer closes the connection, so it serves both streaming and
available-now runs. As in Spark, a socket cannot replay: lines sent while the job is down are lost.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Iterable

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.kafka_source import (NO_WATERMARK_STATE, UNBOUNDED, CheckpointOnlyTracker, PartitionWatermark,
                                     PartitionWatermarkProvider)
from transforms.parse import hittime_millis
from transforms.rows import CREATE_TIME, KafkaRecord

_LOGGER = logging.getLogger(__name__)


class _LineRangeProvider(RestrictionProvider):
    def initial_restriction(self, address: str) -> OffsetRange:
        return OffsetRange(0, UNBOUNDED)

    def create_tracker(self, restriction: OffsetRange) -> CheckpointOnlyTracker:
        return CheckpointOnlyTracker(restriction)

    def restriction_size(self, address, restriction) -> int:
        return 1


class _LineWatermarkProvider(PartitionWatermarkProvider):
    """A socket cannot replay, so its watermark always starts from nothing."""

    def initial_estimator_state(self, address: str, restriction):
        return NO_WATERMARK_STATE


@beam.DoFn.unbounded_per_element()
class ReadSocketLinesFn(beam.DoFn):
    def __init__(self, event_time: bool, watermark_delay_seconds: float, max_read_seconds: float = 1.0):
        self._event_time = event_time
        self._delay_micros = int(watermark_delay_seconds * 1e6)
        self._max_read_seconds = max_read_seconds

    def setup(self):
        self._connections = {}  # address -> (socket, unread bytes); kept across checkpoints

    def teardown(self):
        for sock, _ in self._connections.values():
            sock.close()

    def process(self, address: str, tracker=beam.DoFn.RestrictionParam(_LineRangeProvider()),
                watermark=beam.DoFn.WatermarkEstimatorParam(_LineWatermarkProvider())
                ) -> Iterable[beam.window.TimestampedValue]:
        if address not in self._connections:
            host, _, port = address.rpartition(":")
            self._connections[address] = (socket.create_connection((host, int(port)), timeout=10), b"")
        sock, pending = self._connections[address]
        sock.settimeout(0.2)
        line_no = start = tracker.current_restriction().start
        watermark.start_call(self._delay_micros)
        deadline = time.monotonic() + self._max_read_seconds
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            closed = not chunk
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not tracker.try_claim(line_no):
                    return
                yield self._record(address, line_no, line.rstrip(b"\r"), watermark)
                line_no += 1
        self._connections[address] = (sock, pending)
        if closed:
            sock.close()
            del self._connections[address]
            tracker.try_claim(UNBOUNDED)  # the peer hung up: this restriction is done
            return
        if line_no == start:  # nothing emitted in this call (see PartitionWatermark)
            watermark.advance_idle(Timestamp.now().micros - self._delay_micros)  # a live stream: the clock
        tracker.defer_remainder(Duration(seconds=0.1))

    def _record(self, address, line_no, line, watermark: PartitionWatermark) -> beam.window.TimestampedValue:
        now_ms = int(time.time() * 1000)
        record = KafkaRecord(key=None, value=line, topic=f"socket:{address}", partition=0, offset=line_no,
                             timestamp=now_ms, timestampType=CREATE_TIME)
        event_ms = (hittime_millis(record) if self._event_time else None) or now_ms
        if watermark.observe_event(event_ms * 1000, self._delay_micros):
            record = record._replace(late=True)
        return beam.window.TimestampedValue(record, event_ms / 1000.0)


class ReadFromSocket(beam.PTransform):
    """Lines from a TCP server at HOST:PORT as KafkaRecords (topic "socket:HOST:PORT", offset = line number)."""

    def __init__(self, address: str, event_time: bool = True, watermark_delay_seconds: float = 0.0):
        super().__init__()
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"socket source: expected HOST:PORT, got {address!r}")
        self._address = address
        self._fn = ReadSocketLinesFn(event_time, watermark_delay_seconds)

    def expand(self, pbegin):
        return (pbegin | "Address" >> beam.Create([self._address])
                | "ReadLines" >> beam.ParDo(self._fn).with_output_types(KafkaRecord))
