"""The optional Java Kafka I/O: behind `--kafka-io java`, Beam's own ReadFromKafka (cross-language, Java KafkaIO with
metadata), giving the same KafkaRecord rows as the native source; behind `--kafka-sink-io java`, Beam's
WriteToKafka, with the same keys and values as the native Kafka sink.

The expansion service is passed in (an address, or an object Beam's ExternalTransform enters for the expansion,
such as `stack.java_kafkaio.JavaExpansionService`); Prism runs the Java step in a PROCESS environment.

What of Spark's source options the Java path takes (`check_java_options` refuses the rest before the job starts):
`subscribe`, `startingOffsets` earliest or latest (as `auto.offset.reset`; the group's committed offsets win, as in
Java KafkaIO), `kafka.*` (`kafka.enable.auto.commit=true` for the Kafka client's own periodic commits: the path
commits no offsets itself, as Java KafkaIO's commit-in-finalize cannot run on Prism), and available-now (bounded at
the offsets present at start, as `max_num_records`, their count, below JAVA_BOUNDED_MAX_RECORDS). Not `assign`,
`subscribePattern`, per-partition JSON offsets, `startingOffsetsByTimestamp`, `endingOffsets`,
`maxOffsetsPerTrigger` or `includeHeaders`.
"""
from __future__ import annotations

import apache_beam as beam

from typing import Tuple

from transforms.kafka_source import KafkaSourceConfig, resolve_partitions
from transforms.rows import CREATE_TIME, LOG_APPEND_TIME, KafkaRecord, Snapshot
from transforms.sinks.kafka import encode_key, encode_value


# Below this, BoundedReadFromUnboundedSource reads with one reader, so the record count bounds the read exactly.
JAVA_BOUNDED_MAX_RECORDS = 10_000
_LIBRDKAFKA_ONLY = ("enable.auto.offset.store", "enable.partition.eof")  # the Java client warns of unknown keys
JAVA_TIMESTAMP_POLICIES = {"create-time": "CreateTime", "log-append-time": "LogAppendTime"}


def check_java_options(config: KafkaSourceConfig, streaming: bool, windowed: bool) -> None:
    """Refuse, naming it, a source option the Java path cannot honour."""
    if windowed and config.timestamp_policy not in JAVA_TIMESTAMP_POLICIES:
        raise ValueError(
            "--kafka-io=java cannot window on hittime: Java KafkaIO's watermark follows the Kafka record timestamps "
            "(its timestamp policy), and a step after the read cannot move it back to the hits' event time, so "
            "windows of older hittimes would all be late. Use --kafka-io=native, or, when the producers stamp each "
            "record with its hittime, --timestamp-policy=create-time (or log-append-time).")
    unsupported = {
        "assign": config.assign, "subscribePattern": config.subscribe_pattern,
        "startingOffsets as JSON": not isinstance(config.starting_offsets, str),
        "startingOffsetsByTimestamp": config.starting_timestamps, "maxOffsetsPerTrigger": config.max_offsets_per_trigger,
        "includeHeaders": config.include_headers,
        "endingOffsets": streaming and config.ending_offsets is not None,
    }
    refused = [name for name, value in unsupported.items() if value]
    if refused:
        raise ValueError(f"--kafka-io=java does not support {', '.join(refused)} (Beam's Java ReadFromKafka, as "
                         f"called from Python, takes topics, auto.offset.reset and a record count); use the default "
                         f"--kafka-io=native")


class ReadFromKafkaJava(beam.PTransform):
    """KafkaRecord rows read by Beam's Java KafkaIO (`with_metadata`, so dead letters keep topic, partition and
    offset). Bounded configs read the records present at start: their count, resolved now."""

    def __init__(self, config: KafkaSourceConfig, expansion_service, streaming: bool, windowed: bool):
        super().__init__()
        check_java_options(config, streaming, windowed)
        self._config = config
        self._expansion_service = expansion_service
        self._streaming = streaming

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka  # the cross-language wrapper: only this path needs it
        consumer_config = {key: str(value) for key, value in self._config.consumer_config().items()
                           if key not in _LIBRDKAFKA_ONLY}
        consumer_config["auto.offset.reset"] = self._config.starting_offsets
        max_records = None
        if not self._streaming:
            max_records = sum(spec.stop - spec.start for spec in resolve_partitions(self._config))
            if max_records >= JAVA_BOUNDED_MAX_RECORDS:
                raise ValueError(
                    f"--kafka-io=java with --trigger=available-now reads fewer than {JAVA_BOUNDED_MAX_RECORDS:,} "
                    f"records, and the topic holds {max_records:,} from the starting offsets: Java KafkaIO bounds a "
                    f"read by a record count, which Beam's BoundedReadFromUnboundedSource splits evenly among its "
                    f"readers (one per 10,000 records, each a group of partitions), so a reader whose partitions "
                    f"hold more stops short and one whose partitions hold fewer waits forever. Use a streaming "
                    f"trigger with --kafka-io=java, or the default --kafka-io=native")
        return (pbegin
                | "ReadKafkaJava" >> ReadFromKafka(consumer_config=consumer_config,
                                                   topics=list(self._config.subscribe),
                                                   max_num_records=max_records, with_metadata=True,
                                                   # Its commit step needs @RequiresStableInput, which Prism
                                                   # refuses ("prism runner doesn't support ... stable_input").
                                                   commit_offset_in_finalize=False,
                                                   timestamp_policy=JAVA_TIMESTAMP_POLICIES.get(
                                                       self._config.timestamp_policy, "CreateTime"),
                                                   expansion_service=self._expansion_service)
                | "ToKafkaRecords" >> beam.Map(_to_record).with_output_types(KafkaRecord))


def _to_record(row) -> KafkaRecord:
    """Java KafkaIO's metadata row (topic, partition, offset, timestamp, key, value, headers, timestampTypeId,
    timestampTypeName) as a KafkaRecord."""
    timestamp_type = LOG_APPEND_TIME if row.timestampTypeName == "LogAppendTime" else CREATE_TIME
    return KafkaRecord(key=row.key, value=row.value, topic=row.topic, partition=row.partition, offset=row.offset,
                       timestamp=row.timestamp, timestampType=timestamp_type)


class WriteToKafkaJava(beam.PTransform):
    """A query's rows (or complete-mode Snapshots, or batches of hits) -> one message per row, written by Beam's Java
    WriteToKafka: key and value as the native sink encodes them (a row without a key gets an empty one)."""

    def __init__(self, topic: str, value_format: str, producer_config: dict, expansion_service):
        super().__init__()
        self._topic = topic
        self._value_format = value_format
        self._producer_config = {key: str(value) for key, value in producer_config.items()}
        self._expansion_service = expansion_service

    def expand(self, elements):
        from apache_beam.io.kafka import WriteToKafka  # the cross-language wrapper: only this path needs it
        return (elements
                | "ToMessages" >> beam.FlatMap(_messages, self._value_format).with_output_types(Tuple[bytes, bytes])
                | "WriteKafkaJava" >> WriteToKafka(producer_config=self._producer_config, topic=self._topic,
                                                   expansion_service=self._expansion_service))


def _messages(element, value_format: str):
    """(key, value) of each row of an element: a row, a Snapshot, or a batch of rows."""
    rows = element.rows if isinstance(element, Snapshot) else [element] if hasattr(element, "_fields") else element
    for row in rows:
        yield encode_key(row) or b"", encode_value(row, value_format)
