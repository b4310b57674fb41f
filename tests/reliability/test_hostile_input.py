"""Hostile input: fuzzed messages mixed into valid traffic on several partitions, on Prism, against the real broker
and MariaDB.

Every bad message must reach the dead-letter queue (the dead-letter topic and the dead-letter Parquet files), each
exactly once by its (partition, offset) and with its raw bytes intact; the job must finish (never crash); and the
valid hits' counts must be exact: zip_test and zip_window_counts in MariaDB against a DuckDB reference over the
fuzzer's own record of what it wrote (tests/reliability/fuzz.py builds each message valid or bad by construction).

5 MiB values: the input topic allows 16 MiB messages, and the dead-letter sink creates its topic with room for their
dead letters (base64 makes them 4/3 the size). A dead letter too big for an existing dead-letter topic is not dropped:
the job fails, naming the record and the setting to raise. With --include-headers, the dead letters carry the source
record's headers.
"""
from __future__ import annotations

import base64
import collections
import random
import uuid

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.runner import PipelineState
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from hitstream.generator import wait_for_leaders
from tests.reliability import fuzz
from tests.reliability.faults import (consume_all, count_diff, print_figures, record_diff, scratch_database,
                                      start_on_prism, table_rows, window_reference)
from tests.reliability.scale import scale
from transforms.sinks.kafka import DEAD_LETTER_MAX_MESSAGE_BYTES

pytestmark = pytest.mark.timeout(scale(300, 1200))

START_MS = 1795478400000  # 2026-11-23T19:20:00Z
INPUT_MAX_BYTES = 16 * 1024 * 1024


@pytest.fixture
def topics(kafka_bootstrap):
    """make(partitions, max_message_bytes=None) -> a uuid-named topic; `name(prefix)` -> a name to be created by
    someone else. Every one is deleted afterwards."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    names = []

    def make(partitions: int, max_message_bytes: int = INPUT_MAX_BYTES) -> str:
        name = f"fuzz-{uuid.uuid4().hex}"
        config = {"max.message.bytes": str(max_message_bytes)}
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                      config=config)])[name].result(30)
        names.append(name)
        wait_for_leaders(admin, name, partitions)
        return name

    def name(prefix: str) -> str:
        names.append(f"{prefix}-{uuid.uuid4().hex}")
        return names[-1]

    make.name = name
    yield make
    existing = admin.list_topics(timeout=10).topics
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            future.exception(30)


def _run_available_now(topic: str, bootstrap: str, *extra: str):
    return start_on_prism([f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=available-now",
                           f"--group-id=g-{topic}", *extra])


def _parquet_dead_letters(path: str) -> list:
    """(partition, offset, sha1 of value) of every dead letter in the Parquet files."""
    try:
        rows = duckdb.connect().execute(f"SELECT \"partition\", \"offset\", value FROM read_parquet("
                                        f"'{path}/**/*.parquet', hive_partitioning=true)").fetchall()
    except duckdb.IOException:  # no file
        return []
    return [(p, o, fuzz.sha1(value)) for p, o, value in rows]


def _kafka_dead_letters(bootstrap: str, topic: str) -> list:
    """(partition, offset, sha1 of value, step, error) of every record on the dead-letter topic."""
    out = []
    for _, _, _, value in consume_all(bootstrap, topic):
        doc = orjson.loads(value)
        raw = None if doc["value_base64"] is None else base64.b64decode(doc["value_base64"])
        out.append((doc["partition"], doc["offset"], fuzz.sha1(raw), doc["step"], doc["error"]))
    return out


def test_fuzzed_input_goes_to_the_dead_letter_queue_and_valid_counts_stay_exact(
        kafka_bootstrap, topics, mysql_url, tmp_path, capsys):
    topic = topics(partitions=4)
    dlq_topic = topics.name("fuzz-dlq")  # absent: the dead-letter sink creates it, with room for 5 MiB dead letters
    batch = fuzz.messages(bad=scale(1500, 10_000), good=scale(1500, 10_000), big_count=scale(2, 4), partitions=4,
                          seed=2026, start_ms=START_MS, span_ms=2 * 3600 * 1000)
    fuzz.produce(kafka_bootstrap, topic, batch, max_message_bytes=INPUT_MAX_BYTES)
    good = [m for m in batch if m.valid]
    bad = {(m.partition, m.offset): m for m in batch if not m.valid}
    categories = collections.Counter(m.category for m in bad.values())
    assert set(categories) == set(fuzz.BAD) | {"big_5mb"}  # every category is in the input
    assert len({m.partition for m in batch}) == 4

    # The reference: valid hits are in event-time order on each partition, and bad messages carry no later time, so
    # none is behind the 10-minute watermark delay: every valid hit counts, in zip_test and in its two windows.
    zip_ref = dict(collections.Counter(m.hit[1] for m in good))
    windows_ref = window_reference([m.hit for m in good])

    with scratch_database(mysql_url) as db_url:
        result = _run_available_now(topic, kafka_bootstrap, "--sink=zip_counts=jdbc:complete",
                                    "--sink=zip_window_counts=jdbc:update", f"--jdbc-url={db_url}",
                                    f"--dead-letter-topic={dlq_topic}", f"--dead-letter-path={tmp_path / 'dlq'}")
        state = result.wait_until_finish()
        zip_got = dict(table_rows(db_url, "zip_test"))
        windows_got = {(start, zipcode): n for start, _, zipcode, n in table_rows(db_url, "zip_window_counts")}
    kafka_dlq = _kafka_dead_letters(kafka_bootstrap, dlq_topic)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    (dlq_config,) = admin.describe_configs([ConfigResource("topic", dlq_topic)]).values()
    dlq_max_bytes = int(dlq_config.result(30)["max.message.bytes"].value)
    parquet_dlq = _parquet_dead_letters(str(tmp_path / "dlq"))

    zip_lost, zip_dup = count_diff(zip_got, zip_ref)
    win_lost, win_dup = count_diff(windows_got, windows_ref)
    kafka_lost, kafka_dup = record_diff([d[:2] for d in kafka_dlq], set(bad))
    parquet_lost, parquet_dup = record_diff([d[:2] for d in parquet_dlq], set(bad))
    print_figures(capsys, "hostile input", 1, len(batch), zip_lost + win_lost + kafka_lost + parquet_lost,
                  zip_dup + win_dup + kafka_dup + parquet_dup, valid=len(good), bad=len(bad),
                  dead_letters_kafka=len(kafka_dlq), dead_letters_parquet=len(parquet_dlq),
                  categories=",".join(f"{c}:{n}" for c, n in sorted(categories.items())))
    assert state == PipelineState.DONE
    assert zip_got == zip_ref, "zip_test equals the reference of the valid hits"
    assert windows_got == windows_ref, "zip_window_counts equals the DuckDB reference of the valid hits"
    # Exactly the bad messages, once each, with their raw bytes (the digest of the value; None for a tombstone).
    assert (kafka_lost, kafka_dup) == (0, 0) and (parquet_lost, parquet_dup) == (0, 0)
    assert {d[:3] for d in kafka_dlq} == {(p, o, m.digest) for (p, o), m in bad.items()}
    assert {d[:3] for d in parquet_dlq} == {(p, o, m.digest) for (p, o), m in bad.items()}
    assert all(step == "parse" and error for *_, step, error in kafka_dlq)
    assert dlq_max_bytes == DEAD_LETTER_MAX_MESSAGE_BYTES  # the sink made its topic with room for big dead letters


def test_a_dead_letter_too_big_for_its_topic_fails_the_job_loudly(kafka_bootstrap, topics):
    topic = topics(partitions=1)
    dlq_topic = topics(partitions=1, max_message_bytes=1024 * 1024)  # an existing topic with Kafka's usual limit
    batch = fuzz.messages(bad=0, good=20, big_count=0, partitions=1, seed=1, start_ms=START_MS, span_ms=60_000)
    # Random bytes: the sink compresses with lz4, and the broker's limit applies to the compressed batch.
    batch.insert(10, fuzz.Message("big", None, random.Random(3).randbytes(2 * 1024 * 1024), 0))
    fuzz.produce(kafka_bootstrap, topic, batch, max_message_bytes=INPUT_MAX_BYTES)
    result = _run_available_now(topic, kafka_bootstrap, "--sink=zip_counts=console:complete",
                                f"--dead-letter-topic={dlq_topic}")
    with pytest.raises(Exception) as failure:
        result.wait_until_finish()
    assert result.state == PipelineState.FAILED
    message = str(failure.value)
    assert f"the dead letter of {topic} [0] offset 10" in message and "max.message.bytes" in message, message
    assert consume_all(kafka_bootstrap, dlq_topic) == []  # nothing half-sent in its place


def _hits(zipcodes, start_ms: int = START_MS) -> list:
    """One valid hit per zipcode given, on partition 0, a second apart."""
    return [fuzz.Message("valid", None, orjson.dumps({"hittime": start_ms + i * 1000, "zipcode": zipcode}), 0,
                         (start_ms + i * 1000, zipcode)) for i, zipcode in enumerate(zipcodes)]


def test_zipcodes_that_differ_in_case_accents_or_spaces_are_counted_apart(kafka_bootstrap, topics, mysql_url):
    topic = topics(partitions=1)
    zipcodes = ["ab", "AB", "AB", "94107", "94107 ", "é", "e", "e"]  # valid per the data contract: non-empty strings
    fuzz.produce(kafka_bootstrap, topic, _hits(zipcodes), max_message_bytes=INPUT_MAX_BYTES)
    with scratch_database(mysql_url) as db_url:
        state = _run_available_now(topic, kafka_bootstrap, "--sink=zip_counts=jdbc:complete",
                                   f"--jdbc-url={db_url}").wait_until_finish()
        got = dict(table_rows(db_url, "zip_test"))
    assert state == PipelineState.DONE
    assert got == dict(collections.Counter(zipcodes))


def test_a_long_zipcode_does_not_fail_the_job(kafka_bootstrap, topics, mysql_url, tmp_path):
    topic = topics(partitions=1)
    zipcodes = ["94107", "z" * 100, "94107"]
    fuzz.produce(kafka_bootstrap, topic, _hits(zipcodes), max_message_bytes=INPUT_MAX_BYTES)
    with scratch_database(mysql_url) as db_url:
        result = _run_available_now(topic, kafka_bootstrap, "--sink=zip_counts=jdbc:complete",
                                    f"--jdbc-url={db_url}", f"--dead-letter-path={tmp_path / 'dlq'}")
        try:
            result.wait_until_finish()
        except Exception:  # the state says it
            pass
        got = dict(table_rows(db_url, "zip_test"))
    dead = {(p, o) for p, o, _ in _parquet_dead_letters(str(tmp_path / "dlq"))}
    assert result.state == PipelineState.DONE
    # Each valid hit is counted, or (should the contract bound zipcodes) dead-lettered: never lost.
    assert got.get("94107") == 2 and (got.get("z" * 100) == 1 or dead == {(0, 1)})


def test_include_headers_puts_the_source_headers_on_the_dead_letters(kafka_bootstrap, topics, tmp_path):
    topic = topics(partitions=1)
    dlq_topic = topics.name("headers-dlq")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    sent = {}  # offset -> headers of each bad message
    for i in range(40):
        value = b"not json" if i % 4 == 0 else orjson.dumps({"hittime": START_MS + i * 1000, "zipcode": "94107"})
        headers = [("trace", f"t{i}".encode()), ("empty", None)]
        producer.produce(topic, value=value, partition=0, headers=headers)
        if i % 4 == 0:
            sent[i] = tuple(headers)
    assert producer.flush(30) == 0
    state = _run_available_now(topic, kafka_bootstrap, "--sink=zip_counts=console:complete", "--include-headers",
                               f"--dead-letter-topic={dlq_topic}", f"--dead-letter-path={tmp_path / 'dlq'}"
                               ).wait_until_finish()

    in_kafka = {}
    for _, _, _, value in consume_all(kafka_bootstrap, dlq_topic):
        doc = orjson.loads(value)
        in_kafka[doc["offset"]] = tuple(
            (h["key"], None if h["value_base64"] is None else base64.b64decode(h["value_base64"]))
            for h in doc["headers"])
    table = pq.read_table(tmp_path / "dlq", columns=["offset", "headers"])
    in_parquet = {offset: tuple((h["key"], h["value"]) for h in headers)
                  for offset, headers in zip(table["offset"].to_pylist(), table["headers"].to_pylist())}
    assert state == PipelineState.DONE
    assert len(sent) == 10 and in_kafka == sent and in_parquet == sent
