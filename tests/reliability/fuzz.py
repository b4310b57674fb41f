"""A seeded fuzzer of Kafka messages for the hostile-input test: valid ISP hits mixed with every kind of bad message.

Each message is built to be valid or bad by construction (SPEC "Data contract"), never by asking the parse step, so
the verdict is an independent reference. Bad categories:

* random_bytes   - 1 to 2,000 random bytes
* deep_nesting   - 10,000 levels of arrays or objects, alone or inside a hit
* huge_string    - a hit whose hittime, or a bad field beside a huge one, is 10 kB to 1 MB; a bare huge JSON string
* wrong_types    - zipcode or hittime of another JSON type, an optional field that is not a string, a non-object
* nan_infinity   - NaN, Infinity, -Infinity, 1e999 (not JSON, or not an integer time)
* far_time       - times outside years 1..9999 (year 10000, 0000, +/-10^16 ms, a UTC offset that crosses the limit)
* non_utf8       - latin-1 or UTF-16 text, a lone surrogate, an overlong or truncated sequence
* empty          - an empty value, whitespace, {}, null, "", empty hittime or zipcode
* null_value     - a null value (a tombstone), with or without a key
* big_5mb        - 5 MiB values: random bytes (every other one), or a hit with a mistyped zipcode padded to 5 MiB

Valid hits vary too: ISO-8601 with Z or an offset, epoch milliseconds, a null or binary key, unknown fields (one of
10 kB), nulls in optional fields, escaped and non-ASCII text. A bad message that carries a readable hittime carries
the stream's current time, so it cannot move a partition's watermark past the valid hits.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import random
from typing import List, Optional

import orjson
from confluent_kafka import Producer

BIG_VALUE_BYTES = 5 * 1024 * 1024
DEPTH = 10_000
ZIPCODES = tuple(f"{94000 + i * 7:05d}" for i in range(30)) + ("東京-100",)


@dataclasses.dataclass
class Message:
    category: str  # "valid" or a bad category
    key: Optional[bytes]
    value: Optional[bytes]
    partition: int
    hit: Optional[tuple] = None  # (hittime_ms, zipcode) for a valid hit
    offset: int = -1  # set when Kafka acknowledges it
    digest: Optional[str] = None  # sha1 of the value (None for a null value), to check dead letters' raw bytes

    @property
    def valid(self) -> bool:
        return self.category == "valid"


def sha1(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else hashlib.sha1(value).hexdigest()


def _iso(ms: int, offset_minutes: int = 0) -> str:
    zone = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    text = datetime.datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _hit(rng: random.Random, ms: int) -> dict:
    return {"hittime": _iso(ms), "zipcode": rng.choice(ZIPCODES), "isp": rng.choice(("Comcast", "AT&T", "Cox")),
            "ip": f"73.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}", "city": "Austin",
            "state": "TX", "country": "US", "user_id": f"u-{rng.randrange(10**6)}", "url": "/watch?v=1"}


def valid(rng: random.Random, ms: int) -> tuple:
    """(key, value, (hittime_ms, zipcode)) of one valid hit, in one of several valid spellings."""
    body = _hit(rng, ms)
    variant = rng.randrange(8)
    if variant == 1:
        body["hittime"] = ms  # epoch milliseconds
    elif variant == 2:
        body["hittime"] = _iso(ms, rng.choice((-480, 120, 330)))  # another UTC offset, the same instant
    elif variant == 3:
        body.update({"isp": None, "ip": None, "city": None, "url": None})  # optional fields may be null
    elif variant == 4:
        body.update({"referrer": "x" * 10_000, "tags": [1, {"a": None}], "score": 1.5})  # unknown fields: ignored
    elif variant == 5:
        body = {"zipcode": body["zipcode"], "hittime": body["hittime"]}  # the two required fields only
    value = orjson.dumps(body)
    if variant == 6:
        value = b' \n{ "note" : "Z\\u00fcrich \xc3\xbc" ,\n' + value[1:] + b"\n"  # whitespace, escapes, UTF-8
    key = rng.choice((body["zipcode"].encode(), None, rng.randbytes(8)))
    return key, value, (ms, body["zipcode"])


def _bad_hit(rng: random.Random, ms: int, **fields) -> bytes:
    body = _hit(rng, ms)
    body.update(fields)
    return orjson.dumps(body)


def _huge(rng: random.Random) -> int:
    return rng.choices((10_000, 100_000, 1_000_000), weights=(80, 18, 2))[0]


# Each bad category is a tuple of variants, each a function (rng, event time in ms) -> value.
BAD: dict = {
    "random_bytes": (lambda rng, ms: rng.randbytes(rng.randint(1, 2000)),),
    "deep_nesting": (
        lambda rng, ms: b"[" * DEPTH + b"]" * DEPTH,
        lambda rng, ms: b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        lambda rng, ms: _bad_hit(rng, ms)[:-1] + b',"extra":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    ),
    "huge_string": (
        lambda rng, ms: orjson.dumps("s" * _huge(rng)),
        lambda rng, ms: _bad_hit(rng, ms, hittime="9" * _huge(rng)),
        lambda rng, ms: _bad_hit(rng, ms, zipcode=None, note="n" * _huge(rng)),
    ),
    "wrong_types": (
        lambda rng, ms: _bad_hit(rng, ms, zipcode=rng.choice((94107, 9.5, True, None, [], {}, ["94107"]))),
        lambda rng, ms: _bad_hit(rng, ms, hittime=rng.choice((True, None, float(ms), [ms], {"ms": ms}))),
        lambda rng, ms: _bad_hit(rng, ms, **{rng.choice(("isp", "ip", "city", "url", "user_id")):
                                             rng.choice((5, [], {}, False))}),
        lambda rng, ms: orjson.dumps([_hit(rng, ms)]),
        lambda rng, ms: orjson.dumps(rng.choice((42, "94107", True))),
    ),
    "nan_infinity": (
        lambda rng, ms: b'{"hittime": NaN, "zipcode": "94107"}',
        lambda rng, ms: b'{"hittime": Infinity, "zipcode": "94107"}',
        lambda rng, ms: b'{"hittime": -Infinity, "zipcode": "94107"}',
        lambda rng, ms: b'{"hittime": 1e999, "zipcode": "94107"}',
        lambda rng, ms: _bad_hit(rng, ms)[:-1] + b',"score":NaN}',
    ),
    "far_time": (lambda rng, ms: _bad_hit(rng, ms, hittime=rng.choice((
        "10000-01-01T00:00:00Z", "99999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", 10**16, -(10**16), 2**63 - 1, -(2**63)))),),
    "non_utf8": (
        lambda rng, ms: _bad_hit(rng, ms, city="Zürich", zipcode="94107").decode().encode("latin-1"),
        lambda rng, ms: _bad_hit(rng, ms).decode().encode("utf-16"),
        lambda rng, ms: _bad_hit(rng, ms)[:-1] + b',"x":"\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        lambda rng, ms: _bad_hit(rng, ms)[:-1] + b',"x":"\xc0\xaf"}',  # overlong
        lambda rng, ms: _bad_hit(rng, ms)[:-2] + b'\xe6\x9d"}',  # truncated sequence
        lambda rng, ms: b"\xff\xfe\xfd" + rng.randbytes(20),
    ),
    "empty": (
        lambda rng, ms: rng.choice((b"", b" ", b"\n", b"{}", b"null", b"[]", b'""',
                                    b'{"hittime": "", "zipcode": ""}')),
        lambda rng, ms: _bad_hit(rng, ms, zipcode=""),
        lambda rng, ms: _bad_hit(rng, ms, hittime=""),
    ),
    "null_value": (lambda rng, ms: None,),
}

# Relative frequency of the bad categories (huge strings are big: fewer of them).
BAD_WEIGHTS = {"random_bytes": 12, "deep_nesting": 8, "huge_string": 4, "wrong_types": 16, "nan_infinity": 10,
               "far_time": 12, "non_utf8": 12, "empty": 12, "null_value": 6}


def big(rng: random.Random, ms: int, incompressible: bool) -> bytes:
    if incompressible:  # random bytes: lz4 cannot shrink them under a topic's limit
        return rng.randbytes(BIG_VALUE_BYTES)
    head = _bad_hit(rng, ms, zipcode=94107)[:-1] + b',"pad":"'
    return head + b"p" * (BIG_VALUE_BYTES - len(head) - 2) + b'"}'


def messages(bad: int, good: int, big_count: int, partitions: int, seed: int, start_ms: int,
             span_ms: int) -> List[Message]:
    """`bad` fuzzed messages (every category at least once), `good` valid hits and `big_count` 5 MiB bad values,
    shuffled, on random partitions. Event time rises with the position in the list."""
    rng = random.Random(seed)
    categories = list(BAD_WEIGHTS)[:bad] + rng.choices(list(BAD_WEIGHTS), weights=list(BAD_WEIGHTS.values()),
                                                      k=max(0, bad - len(BAD_WEIGHTS)))
    kinds = categories + ["valid"] * good + ["big_5mb"] * big_count
    rng.shuffle(kinds)
    step = span_ms / max(1, len(kinds))
    out, bigs = [], 0
    for i, kind in enumerate(kinds):
        ms = start_ms + int(i * step)
        partition = rng.randrange(partitions)
        if kind == "valid":
            key, value, hit = valid(rng, ms)
            out.append(Message(kind, key, value, partition, hit))
            continue
        key = rng.choice((None, b"k", rng.randbytes(4)))
        if kind == "big_5mb":
            value = big(rng, ms, incompressible=bigs % 2 == 0)
            bigs += 1
        else:
            value = rng.choice(BAD[kind])(rng, ms)
        out.append(Message(kind, key, value, partition))
    return out


def produce(bootstrap: str, topic: str, batch: List[Message], max_message_bytes: int) -> None:
    """Write every message to its partition; set each one's offset and digest (then its value is dropped)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                         "message.max.bytes": max_message_bytes})
    failures = []

    def delivered(error, record, message: Message) -> None:
        if error is not None:
            failures.append((message.category, error))
        else:
            message.offset = record.offset()

    for message in batch:
        while True:
            try:
                producer.produce(topic, value=message.value, key=message.key, partition=message.partition,
                                 on_delivery=lambda e, r, m=message: delivered(e, r, m))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        message.digest = sha1(message.value)
        message.value = None  # the digest is enough from here on; 5 MiB values need not stay in memory
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(f"fuzz: {remaining} message(s) undelivered, {len(failures)} failed: {failures[:3]}")
