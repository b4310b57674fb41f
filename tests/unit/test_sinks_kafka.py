"""Tests for transforms/sinks/kafka.py that need no broker: message keys and values, and that an undeliverable
message fails the bundle instead of being dropped. Round trips through the real broker are in tests/integration/."""
from __future__ import annotations

import base64
import datetime

import orjson
import pytest

from transforms.rows import DeadLetter, Hit, IspCount, Snapshot, WindowCount, ZipCount
from transforms.sinks.base import RetryPolicy, SinkWriteFn
from transforms.sinks.kafka import DeliveryError, WriteDeadLettersToKafka, WriteToKafka, encode_key, encode_value

pytestmark = pytest.mark.timeout(120)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 19, 2, tzinfo=UTC)
T1 = T0 + datetime.timedelta(minutes=10)


def test_count_rows_as_json_and_as_the_blogs_text():
    assert encode_key(ZipCount("94107", 42)) == b"94107"
    assert orjson.loads(encode_value(ZipCount("94107", 42))) == {"zipcode": "94107", "count": 42}
    assert encode_value(ZipCount("94107", 42), "text") == b"94107:42"
    assert encode_key(IspCount("Cox", 1)) == b"Cox" and encode_key(IspCount(None, 1)) is None


def test_window_rows_carry_iso_8601_bounds():
    row = WindowCount(T0, T1, "94107", 3)
    assert orjson.loads(encode_value(row)) == {"window_start": "2026-11-23T19:02:00.000Z",
                                               "window_end": "2026-11-23T19:12:00.000Z",
                                               "zipcode": "94107", "count": 3}
    assert encode_value(row, "text") == b"2026-11-23T19:02:00.000Z,2026-11-23T19:12:00.000Z,94107:3"
    assert encode_key(row) == b"94107"


def test_hits_are_json_with_every_field():
    hit = Hit(T0, "94107", "Cox", "1.2.3.4", None, None, None, None, "/", "2026-11-23", "hits", 1, 9, 5)
    value = orjson.loads(encode_value(hit, "text"))
    assert value["hittime"] == "2026-11-23T19:02:00.000Z" and value["offset"] == 9 and value["isp"] == "Cox"


def test_dead_letters_keep_the_raw_bytes_in_base64():
    dead = DeadLetter("hits", 2, 40, 1_700_000_000_000, b"k\x00", b"\xff\xfe oops", "bad UTF-8", "parse")
    value = orjson.loads(encode_value(dead))
    assert base64.b64decode(value["value_base64"]) == b"\xff\xfe oops"
    assert base64.b64decode(value["key_base64"]) == b"k\x00"
    assert (value["topic"], value["partition"], value["offset"], value["error"], value["step"]) == \
        ("hits", 2, 40, "bad UTF-8", "parse")
    assert encode_key(dead) == b"k\x00"
    assert value["headers"] is None  # read without includeHeaders
    value = orjson.loads(encode_value(dead._replace(headers=(("trace", b"\x01"), ("empty", None)))))
    assert value["headers"] == [{"key": "trace", "value_base64": "AQ=="}, {"key": "empty", "value_base64": None}]


def test_config_is_checked_at_build_time():
    with pytest.raises(ValueError, match="value format"):
        WriteToKafka("127.0.0.1:9092", "t", "xml")
    with pytest.raises(ValueError, match="topic"):
        WriteDeadLettersToKafka("127.0.0.1:9092", "")


def test_an_undeliverable_message_fails_the_bundle():
    sink = WriteToKafka("127.0.0.1:1", "nowhere", producer_config={"message.timeout.ms": "1500"},
                        flush_timeout=5, retry=RetryPolicy(max_attempts=2, initial_backoff=0.0))
    writer = sink.make_writer()
    fn = SinkWriteFn(writer, sink.sink_name, retry=sink.retry)
    fn.setup()
    fn.start_bundle()
    fn.process(Snapshot(0, (ZipCount("94107", 1),)))
    with pytest.raises(DeliveryError):
        fn.finish_bundle()
    assert writer.delivered == 0
