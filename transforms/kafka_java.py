"""The optional Java read: Beam's own ReadFromKafka (cross-language), behind `--kafka-io=java`.

It needs Beam's io expansion-service jar, which the pipeline finds through `runners.jars` (the local stack fetches
it with `mvn`; where Maven Central does not serve it, asking for this path fails at start naming the jar). It also
needs a Java SDK harness for the Kafka step, which Beam starts with Docker by default (not available here): see
README, "Kafka I/O". There is no Java Kafka sink yet.
"""
from __future__ import annotations

import apache_beam as beam

from transforms.kafka_source import KafkaSourceConfig
from transforms.rows import CREATE_TIME, KafkaRecord


class ReadFromKafkaJava(beam.PTransform):
    """The same KafkaRecord rows as the native source, read by Beam's Java KafkaIO."""

    def __init__(self, config: KafkaSourceConfig, expansion_jar: str):
        super().__init__()
        self._config = config
        self._jar = expansion_jar

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka
        from apache_beam.transforms.external import JavaJarExpansionService
        consumer_config = {k: str(v) for k, v in self._config.consumer_config().items()}
        consumer_config["auto.offset.reset"] = "earliest" if self._config.starting_offsets == "earliest" \
            else "latest"
        return (pbegin
                | "ReadKafkaJava" >> ReadFromKafka(consumer_config=consumer_config,
                                                   topics=list(self._config.subscribe),
                                                   topic_pattern=self._config.subscribe_pattern,
                                                   with_metadata=True,
                                                   expansion_service=JavaJarExpansionService(self._jar))
                | "ToKafkaRecords" >> beam.Map(_to_record).with_output_types(KafkaRecord))


def _to_record(row) -> KafkaRecord:
    return KafkaRecord(key=row.msg_key, value=row.msg_value, topic=row.topic, partition=row.partition,
                       offset=row.offset, timestamp=row.timestamp, timestampType=CREATE_TIME)
