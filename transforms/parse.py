"""Parse: Kafka record values into ISP hits, and everything else into dead letters.

This is the blog's `from_json(value)` step made strict (SPEC "Data contract"):

* the value must be a UTF-8 JSON object;
* `hittime` is required: an ISO-8601 string with `Z` or an offset (normalised to UTC), or an integer of epoch
  milliseconds;
* `zipcode` is required: a non-empty string;
* `isp`, `ip`, `city`, `state`, `country`, `user_id` and `url` are optional: a string or null. Anything else is a dead
  letter rather than a silent `str()`, so a producer bug shows up in the dead-letter count instead of in the counts.

Unknown fields are ignored. A message that breaks a rule becomes exactly one `DeadLetter` with `step="parse"` and
increments the `hitstream/dead_letters` counter; `ParseHitFn.process` never raises, whatever the bytes.

`parse_value` is the pure rule set. The event generator's reference results and any faster batch path reuse it, so
there is one definition of a valid hit.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import sys
from typing import Any, Dict, Iterator, NamedTuple, Optional, Union

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import telemetry
from transforms.catalog import DEAD_LETTER
from transforms.rows import DeadLetter, Hit, HitBatch, KafkaBatch, KafkaRecord, new_row
from transforms.times import UTC, from_millis, to_micros, utc_day

_LOGGER = logging.getLogger(__name__)

PARSE_STEP = "parse"
DEAD_LETTER_TAG = DEAD_LETTER  # the parse's tagged output

OPTIONAL_FIELDS = ("isp", "ip", "city", "state", "country", "user_id", "url")

_FROMISOFORMAT_TAKES_Z = sys.version_info >= (3, 11)
_MAX_SHOWN = 64  # characters of an offending value quoted in an error message

_JSON_TYPE_NAMES = {
    dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean",
    type(None): "null",
}


class ParseError(ValueError):
    """A message value that is not a valid ISP hit. The message says which rule it broke."""


# Grouping keys are bounded: they become JDBC primary keys (VARCHAR(64) and VARCHAR(255)), and a zipcode becomes a
# Parquet directory name, percent-encoded (3 characters per byte) within the 255 bytes file systems allow. Real
# zipcodes and ISP names are far shorter; a longer one is a dead letter.
MAX_ZIPCODE_BYTES = 64
MAX_ISP_CHARACTERS = 255


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _shown(value: str) -> str:
    return repr(value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "...")


def parse_hittime(raw: Any) -> datetime.datetime:
    """`hittime` as a timezone-aware UTC datetime, or ParseError."""
    # bool is a subclass of int in Python, but `true` is not a time: check the exact type.
    if type(raw) is int:
        try:
            return from_millis(raw)
        except OverflowError:
            raise ParseError(
                f"field 'hittime' is out of range: {raw} epoch milliseconds is outside years 1..9999") from None
    if type(raw) is not str:
        raise ParseError(
            "field 'hittime' must be an ISO-8601 string with Z or an offset, or integer epoch milliseconds; "
            f"got {_json_type(raw)}")
    text = raw
    # fromisoformat knows 'Z' from Python 3.11 on, and 'z' not at all: spell those as an offset.
    if text[-1:] == "z" or (text[-1:] == "Z" and not _FROMISOFORMAT_TAKES_Z):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        # Years above 9999 land here too: datetime cannot represent them.
        raise ParseError(f"field 'hittime' is not an ISO-8601 time with a year in 1..9999: {_shown(raw)}") from None
    if parsed.tzinfo is UTC:
        return parsed  # 'Z' or +00:00, the usual case: already UTC
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        # A naive time would be read in whatever zone the worker runs in, so the same message could land in
        # different windows on different machines. Refuse it instead of guessing UTC.
        raise ParseError(f"field 'hittime' has no UTC offset: {_shown(raw)} (add Z or +HH:MM)")
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC.
        raise ParseError(f"field 'hittime' is out of range in UTC: {_shown(raw)}") from None


def parse_value(value: Optional[bytes]) -> Dict[str, Any]:
    """Apply the data contract to one Kafka message value.

    Returns a dict with `hittime` (UTC-aware datetime), `zipcode`, the optional string fields (None when absent) and
    `day` (the UTC date of hittime, YYYY-MM-DD). Raises ParseError, with a message naming the broken rule, for
    anything else.
    """
    return dict(zip(_FIELD_NAMES, parse_fields(value)))


_FIELD_NAMES = ("hittime", "zipcode", *OPTIONAL_FIELDS, "day")  # the order of Hit's first fields
_STRING_OR_NULL = frozenset((str, type(None)))


def parse_fields(value: Optional[bytes]) -> tuple:
    """`parse_value`'s fields as a tuple in Hit's order (hittime, zipcode, the optional fields, day): what the
    read's hot path builds a Hit from without a dict in between."""
    if value is None:
        raise ParseError("value is null (a tombstone or an empty message); expected a JSON object")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ParseError(f"value must be bytes, got {type(value).__name__}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        # orjson reports bad UTF-8 as a JSON error; tell the two apart for whoever reads the dead letter.
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as utf_err:
            raise ParseError(f"value is not valid UTF-8: {utf_err}") from None
        raise ParseError(f"value is not valid JSON: {err}") from None
    if type(doc) is not dict:
        raise ParseError(f"value must be a JSON object, got {_json_type(doc)}")

    if "hittime" not in doc:
        raise ParseError("required field 'hittime' is missing")
    hittime = parse_hittime(doc["hittime"])

    if "zipcode" not in doc:
        raise ParseError("required field 'zipcode' is missing")
    zipcode = doc["zipcode"]
    if type(zipcode) is not str:
        raise ParseError(f"field 'zipcode' must be a string, got {_json_type(zipcode)}")
    if not zipcode:
        raise ParseError("field 'zipcode' must be a non-empty string")
    # (Up to 16 characters is always within 64 bytes: no need to encode the usual zipcode.)
    if len(zipcode) > MAX_ZIPCODE_BYTES // 4 and len(zipcode.encode("utf-8", "surrogatepass")) > MAX_ZIPCODE_BYTES:
        raise ParseError(f"field 'zipcode' is longer than {MAX_ZIPCODE_BYTES} bytes of UTF-8: {_shown(zipcode)}")

    optional = tuple(map(doc.get, OPTIONAL_FIELDS))
    if not _STRING_OR_NULL.issuperset(map(type, optional)):  # one pass in C over the usual all-string hit
        for name, field in zip(OPTIONAL_FIELDS, optional):
            if field is not None and type(field) is not str:
                raise ParseError(f"field '{name}' must be a string or null, got {_json_type(field)}")
    isp = optional[0]
    if isp is not None and len(isp) > MAX_ISP_CHARACTERS:
        raise ParseError(f"field 'isp' is longer than {MAX_ISP_CHARACTERS} characters: {_shown(isp)}")
    return (hittime, zipcode, *optional, utc_day(hittime))


def parse_record(record: KafkaRecord) -> Union[Hit, DeadLetter]:
    """One record as a Hit, or as a DeadLetter saying which rule it broke. Never raises."""
    try:
        return new_row(Hit, (*parse_fields(record.value), record.topic, record.partition, record.offset,
                                record.timestamp, bool(record.late)))
    except ParseError as err:
        return _dead_letter(record, str(err))
    except Exception as err:  # pylint: disable=broad-except
        # Not a rule we know: still one dead letter with the reason, never a crashed bundle that the runner
        # would retry forever on the same poisoned message.
        _LOGGER.warning("Unexpected parse failure: %r", err)
        return _dead_letter(record, f"unexpected {type(err).__name__}: {err}")


class ParseHitFn(beam.DoFn):
    """KafkaRecord -> Hit (main output, timestamped at hittime) or DeadLetter (tagged `dead_letter`)."""

    def __init__(self) -> None:
        self._telemetry = telemetry.ParseTelemetry()

    def process(self, record: KafkaRecord) -> Iterator[Union[TimestampedValue, pvalue.TaggedOutput]]:
        parsed = parse_record(record)
        self._telemetry.parsed(1, (parsed,) if isinstance(parsed, Hit) else ())
        if isinstance(parsed, Hit):
            yield TimestampedValue(parsed, Timestamp(micros=to_micros(parsed.hittime)))
        else:
            yield pvalue.TaggedOutput(DEAD_LETTER_TAG, parsed)


class ParsedBatch(NamedTuple):
    """A KafkaBatch already through `parse_record`: one Hit or DeadLetter per record, in offset order.

    The Kafka source hands these on when its event-time extractor is `hittime_millis`, which has to apply the whole
    contract to every record anyway (kafka_source.KafkaSourceConfig.parses): each record is parsed once."""
    results: tuple


class ParseHitBatchFn(beam.DoFn):
    """KafkaBatch or ParsedBatch -> one HitBatch (main output, keeping the batch's timestamp) and a DeadLetter per
    bad record."""

    def __init__(self) -> None:
        self._telemetry = telemetry.ParseTelemetry()

    def process(self, batch: Union[KafkaBatch, ParsedBatch]) -> Iterator[Union[HitBatch, pvalue.TaggedOutput]]:
        results = batch.results if type(batch) is ParsedBatch else [parse_record(r) for r in batch.records]
        hits = []
        for parsed in results:
            if type(parsed) is Hit:
                hits.append(parsed)
            else:
                yield pvalue.TaggedOutput(DEAD_LETTER_TAG, parsed)
        self._telemetry.parsed(len(results), hits)
        last = results[-1]  # a Hit or a DeadLetter: both carry the record's coordinates
        # Emitted even when empty: the batch's offsets still count as read for the aggregation checkpoint.
        yield HitBatch(tuple(hits), last.topic, last.partition, last.offset + 1)


def _dead_letter(record: Any, error: str) -> DeadLetter:
    # getattr: this runs on the failure path, so it must not fail itself on a record of the wrong shape.
    value = getattr(record, "value", None)
    key = getattr(record, "key", None)
    return DeadLetter(
        topic=getattr(record, "topic", ""),
        partition=getattr(record, "partition", -1),
        offset=getattr(record, "offset", -1),
        kafka_timestamp=getattr(record, "timestamp", -1),
        key=key if key is None or isinstance(key, bytes) else None,
        value=value if value is None or isinstance(value, bytes) else None,
        error=error,
        step=PARSE_STEP,
        headers=getattr(record, "headers", None),
    )


@dataclasses.dataclass(frozen=True)
class ParseResult:
    """What ParseHits returns: both streams, so no caller can forget the dead letters."""
    good: beam.PCollection  # PCollection[Hit], timestamped at hittime
    dead_letter: beam.PCollection  # PCollection[DeadLetter]


class ParseHits(beam.PTransform):
    """PCollection[KafkaRecord] -> ParseResult(good: PCollection[Hit], dead_letter: PCollection[DeadLetter]).

    With `batched=True` it takes KafkaBatch (or ParsedBatch) elements and `good` holds HitBatch elements (the fast
    path)."""

    def __init__(self, batched: bool = False, label: Optional[str] = None) -> None:
        super().__init__(label)
        self._batched = batched

    def expand(self, records: beam.PCollection) -> ParseResult:  # type: ignore[override]
        fn = ParseHitBatchFn() if self._batched else ParseHitFn()
        outputs = records | "ParseHit" >> beam.ParDo(fn).with_outputs(DEAD_LETTER_TAG, main="good")
        good = outputs.good
        good.element_type = HitBatch if self._batched else Hit
        dead_letter = outputs[DEAD_LETTER_TAG]
        dead_letter.element_type = DeadLetter
        return ParseResult(good=good, dead_letter=dead_letter)


def hittime_millis(record: KafkaRecord) -> Optional[int]:
    """The event-time extractor for ISP hits: `hittime` in epoch ms, or None for a message the parse step will
    dead-letter. The whole data contract is applied, not just hittime's format: a dead letter with a readable
    far-future hittime must not move its partition's watermark and make every later hit late.
    """
    try:
        return to_micros(parse_fields(record.value)[0]) // 1000
    except Exception:  # a ParseError, or anything else parse_record dead-letters
        return None
