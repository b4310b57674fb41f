"""Tests for transforms/parse.py: the data contract (SPEC), dead letters, and ParseHits in a pipeline."""
from __future__ import annotations

import datetime
import random

import apache_beam as beam
import orjson
import pytest
from apache_beam import pvalue
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stack.prism import prism_path
from transforms.parse import (
    DEAD_LETTER_TAG, ParseError, ParseHitFn, ParseHits, ParseResult, parse_value, to_micros)
from transforms.rows import CREATE_TIME, DeadLetter, Hit, KafkaRecord

pytestmark = pytest.mark.timeout(120)

UTC = datetime.timezone.utc
PRISM = prism_path()  # built by scripts/setup (stack.prism)

BLOG_HIT = (b'{"hittime": "2026-11-23T19:02:41.123Z", "zipcode": "94107", "isp": "Comcast", "ip": "73.15.2.9", '
            b'"city": "San Francisco", "state": "CA", "country": "US", "user_id": "u-8812", "url": "/watch?v=1"}')

# (value, a phrase the dead letter's error must contain). Every case in SPEC "Data contract", and a few more.
MALFORMED = [
    pytest.param(None, "value is null", id="none-value"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": "\xff\xfe"}', "not valid UTF-8", id="bad-utf8"),
    pytest.param(b"\xc3\x28", "not valid UTF-8", id="bad-utf8-only"),
    pytest.param(b"hello, kafka", "not valid JSON", id="not-json"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": "941', "not valid JSON", id="truncated-json"),
    pytest.param(b"", "not valid JSON", id="empty-bytes"),
    pytest.param(b'{"hittime": NaN, "zipcode": "94107"}', "not valid JSON", id="nan"),
    pytest.param(b'[{"hittime": "2026-11-23T19:02:41Z", "zipcode": "94107"}]', "JSON object, got array",
                 id="json-array"),
    pytest.param(b"42", "JSON object, got integer", id="json-number"),
    pytest.param(b'"94107"', "JSON object, got string", id="json-string"),
    pytest.param(b"null", "JSON object, got null", id="json-null"),
    pytest.param(b'{"zipcode": "94107"}', "required field 'hittime' is missing", id="missing-hittime"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z"}', "required field 'zipcode' is missing",
                 id="missing-zipcode"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": ""}', "'zipcode' must be a non-empty string",
                 id="empty-zipcode"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": 94107}', "'zipcode' must be a string, got integer",
                 id="zipcode-int"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": null}', "'zipcode' must be a string, got null",
                 id="zipcode-null"),
    pytest.param(b'{"hittime": true, "zipcode": "94107"}', "got boolean", id="hittime-bool"),
    pytest.param(b'{"hittime": 1795460561123.0, "zipcode": "94107"}', "got number", id="hittime-float"),
    pytest.param(b'{"hittime": null, "zipcode": "94107"}', "got null", id="hittime-null"),
    pytest.param(b'{"hittime": {"s": 1}, "zipcode": "94107"}', "got object", id="hittime-object"),
    pytest.param(b'{"hittime": "yesterday at noon", "zipcode": "94107"}', "not an ISO-8601 time",
                 id="hittime-garbage"),
    pytest.param(b'{"hittime": "", "zipcode": "94107"}', "not an ISO-8601 time", id="hittime-empty"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41", "zipcode": "94107"}', "has no UTC offset",
                 id="hittime-naive"),
    pytest.param(b'{"hittime": "2026-11-23", "zipcode": "94107"}', "has no UTC offset", id="hittime-date-only"),
    # 99999-01-01T00:00:00Z in epoch milliseconds.
    pytest.param(b'{"hittime": 3093527980800000, "zipcode": "94107"}', "out of range", id="hittime-year-99999-ms"),
    pytest.param(b'{"hittime": -62135596800001, "zipcode": "94107"}', "out of range", id="hittime-year-0-ms"),
    pytest.param(b'{"hittime": "99999-01-01T00:00:00Z", "zipcode": "94107"}', "year in 1..9999",
                 id="hittime-year-99999-iso"),
    pytest.param(b'{"hittime": "0001-01-01T00:00:00+01:00", "zipcode": "94107"}', "out of range in UTC",
                 id="hittime-before-year-1-in-utc"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": "94107", "isp": 7}',
                 "'isp' must be a string or null, got integer", id="optional-int"),
    pytest.param(b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": "94107", "url": ["/a"]}',
                 "'url' must be a string or null, got array", id="optional-array"),
]


def record(value, *, key=b"k", offset=7, late=False) -> KafkaRecord:
    return KafkaRecord(key=key, value=value, topic="hits", partition=2, offset=offset, timestamp=1795460561999,
                       timestampType=CREATE_TIME, late=late)


# --- parse_value -------------------------------------------------------------------------------------------------

def test_parse_value_blog_example():
    fields = parse_value(BLOG_HIT)
    assert fields == {
        "hittime": datetime.datetime(2026, 11, 23, 19, 2, 41, 123000, tzinfo=UTC), "zipcode": "94107",
        "isp": "Comcast", "ip": "73.15.2.9", "city": "San Francisco", "state": "CA", "country": "US",
        "user_id": "u-8812", "url": "/watch?v=1", "day": "2026-11-23",
    }


@pytest.mark.parametrize("hittime,expected", [
    ('"2026-11-23T19:02:41.123Z"', datetime.datetime(2026, 11, 23, 19, 2, 41, 123000, tzinfo=UTC)),
    ('"2026-11-23T19:02:41.123z"', datetime.datetime(2026, 11, 23, 19, 2, 41, 123000, tzinfo=UTC)),
    # An offset is normalised to UTC, and the day follows UTC: 01:30 at +02:00 is 23:30 the day before.
    ('"2026-11-24T01:30:00+02:00"', datetime.datetime(2026, 11, 23, 23, 30, tzinfo=UTC)),
    ('"2026-11-23T14:02:41-05:00"', datetime.datetime(2026, 11, 23, 19, 2, 41, tzinfo=UTC)),
    ('"2026-11-23T19:02:41+00:00"', datetime.datetime(2026, 11, 23, 19, 2, 41, tzinfo=UTC)),
    ('"2026-11-23T19:02:41.123456789Z"', datetime.datetime(2026, 11, 23, 19, 2, 41, 123456, tzinfo=UTC)),
    ("1795460561123", datetime.datetime(2026, 11, 23, 19, 2, 41, 123000, tzinfo=UTC)),  # epoch milliseconds
    ("0", datetime.datetime(1970, 1, 1, tzinfo=UTC)),
    ("-1000", datetime.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ('"9999-12-31T23:59:59.999Z"', datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
])
def test_parse_value_hittime_variants(hittime, expected):
    fields = parse_value(b'{"hittime": %s, "zipcode": "94107"}' % hittime.encode())
    assert fields["hittime"] == expected
    assert fields["hittime"].utcoffset() == datetime.timedelta(0)
    assert fields["day"] == expected.date().isoformat()


def test_parse_value_offset_day_is_utc_date():
    assert parse_value(b'{"hittime": "2026-11-24T01:30:00+02:00", "zipcode": "1"}')["day"] == "2026-11-23"


def test_parse_value_optional_fields_may_be_absent_or_null_and_unknown_fields_are_ignored():
    fields = parse_value(b'{"hittime": 0, "zipcode": "1", "isp": null, "extra": [1, 2], "referrer": 5}')
    assert fields["isp"] is None and fields["url"] is None
    assert "extra" not in fields and "referrer" not in fields


def test_parse_value_accepts_bytearray_and_memoryview():
    assert parse_value(bytearray(BLOG_HIT))["zipcode"] == "94107"
    assert parse_value(memoryview(BLOG_HIT))["zipcode"] == "94107"


@pytest.mark.parametrize("value,phrase", MALFORMED)
def test_parse_value_rejects(value, phrase):
    with pytest.raises(ParseError, match=phrase.replace(".", r"\.").replace("(", r"\(")):
        parse_value(value)


def test_parse_value_rejects_non_bytes():
    with pytest.raises(ParseError, match="must be bytes, got str"):
        parse_value('{"hittime": 0, "zipcode": "1"}')  # type: ignore[arg-type]


def test_to_micros_is_exact():
    assert to_micros(datetime.datetime(2026, 11, 23, 19, 2, 41, 123456, tzinfo=UTC)) == 1795460561123456
    assert to_micros(datetime.datetime(1, 1, 1, tzinfo=UTC)) == -62135596800000000


# --- ParseHitFn --------------------------------------------------------------------------------------------------

def test_parse_hit_fn_good_record_is_a_timestamped_hit_with_kafka_columns():
    (out,) = list(ParseHitFn().process(record(BLOG_HIT, late=True)))
    assert isinstance(out, TimestampedValue)
    assert out.timestamp == Timestamp(micros=1795460561123000)  # the element's event time is hittime
    assert out.value == Hit(
        datetime.datetime(2026, 11, 23, 19, 2, 41, 123000, tzinfo=UTC), "94107", "Comcast", "73.15.2.9",
        "San Francisco", "CA", "US", "u-8812", "/watch?v=1", "2026-11-23", "hits", 2, 7, 1795460561999, True)


@pytest.mark.parametrize("value,phrase", MALFORMED)
def test_parse_hit_fn_malformed_is_exactly_one_dead_letter(value, phrase):
    outputs = list(ParseHitFn().process(record(value)))
    assert len(outputs) == 1
    (out,) = outputs
    assert isinstance(out, pvalue.TaggedOutput) and out.tag == DEAD_LETTER_TAG
    dead: DeadLetter = out.value
    assert phrase in dead.error
    assert dead == DeadLetter("hits", 2, 7, 1795460561999, b"k", value, dead.error, "parse")


def test_a_dead_letter_keeps_the_records_headers():
    headers = (("trace", b"t1"), ("empty", None))
    (out,) = ParseHitFn().process(record(b"not json")._replace(headers=headers))
    assert out.value.headers == headers
    (out,) = ParseHitFn().process(record(b"not json"))
    assert out.value.headers is None  # a read without includeHeaders


def test_parse_hit_fn_never_raises_on_random_bytes():
    rng = random.Random(20261123)
    fn = ParseHitFn()
    pieces = [b"{", b"}", b"[", b"]", b'"hittime"', b'"zipcode"', b":", b",", b'"94107"', b"1795460561123",
              b'"2026-11-23T19:02:41Z"', b"null", b"true", b"1e400", b"\xff", b"\x00", b'"\\ud800"', b" "]
    for _ in range(3000):
        if rng.random() < 0.5:
            value = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        else:
            value = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        outputs = list(fn.process(record(value)))
        assert len(outputs) == 1, value


def test_parse_hit_fn_wrong_shaped_record_still_dead_letters():
    # Not a KafkaRecord at all: still one dead letter, no exception out of process().
    (out,) = list(ParseHitFn().process(object()))  # type: ignore[arg-type]
    assert out.tag == DEAD_LETTER_TAG
    assert out.value.step == "parse" and out.value.error.startswith("unexpected AttributeError")


# --- ParseHits in a pipeline -------------------------------------------------------------------------------------

class _WithTimestampFn(beam.DoFn):
    def process(self, hit: Hit, timestamp=beam.DoFn.TimestampParam):
        yield hit.zipcode, timestamp.micros


RUNNERS = [
    pytest.param(["--runner=FnApiRunner"], id="fnapi"),
    pytest.param(["--runner=PrismRunner", f"--prism_location={PRISM}", "--environment_type=LOOPBACK"], id="prism"),
]


@pytest.mark.parametrize("argv", RUNNERS)
def test_parse_hits_splits_good_and_dead_letters_and_counts_them(argv):
    records = [
        record(BLOG_HIT, offset=1),
        record(b'{"hittime": 1795460561000, "zipcode": "10001"}', offset=2),
        record(b"not json", offset=3),
        record(None, key=None, offset=4),
        record(b'{"hittime": "2026-11-23T19:02:41", "zipcode": "94107"}', offset=5),
    ]
    p = beam.Pipeline(options=PipelineOptions(argv))
    result = p | beam.Create(records) | ParseHits()
    assert isinstance(result, ParseResult)
    assert_that(result.good | beam.ParDo(_WithTimestampFn()),
                equal_to([("94107", 1795460561123000), ("10001", 1795460561000000)]), label="CheckGood")
    assert_that(result.dead_letter | beam.Map(lambda d: (d.offset, d.key, d.value, d.step)),
                equal_to([(3, b"k", b"not json", "parse"), (4, None, None, "parse"),
                          (5, b"k", b'{"hittime": "2026-11-23T19:02:41", "zipcode": "94107"}', "parse")]),
                label="CheckDead")
    run = p.run()
    run.wait_until_finish()
    counters = run.metrics().query(MetricsFilter().with_namespace("hitstream").with_name("dead_letters"))["counters"]
    assert sum(c.committed for c in counters) == 3


@pytest.mark.parametrize("doc, phrase", [
    ({"hittime": 0, "zipcode": "9" * 65}, "'zipcode' is longer than 64 bytes"),
    ({"hittime": 0, "zipcode": "é" * 33}, "'zipcode' is longer than 64 bytes"),  # 66 bytes of UTF-8
    ({"hittime": 0, "zipcode": "94107", "isp": "x" * 256}, "'isp' is longer than 255 characters"),
])
def test_parse_value_bounds_the_grouping_keys(doc, phrase):
    with pytest.raises(ParseError, match=phrase):
        parse_value(orjson.dumps(doc))


def test_parse_value_keeps_keys_at_their_bounds():
    fields = parse_value(orjson.dumps({"hittime": 0, "zipcode": "é" * 32, "isp": "x" * 255}))
    assert (fields["zipcode"], fields["isp"]) == ("é" * 32, "x" * 255)


def test_parse_fields_are_in_hit_order():
    # parse_record builds a Hit from parse_fields' tuple by position, so the two orders must agree.
    from transforms.parse import _FIELD_NAMES
    assert Hit._fields[:len(_FIELD_NAMES)] == _FIELD_NAMES
    assert len(Hit._fields) == len(_FIELD_NAMES) + 5  # topic, partition, offset, kafka_timestamp, late
