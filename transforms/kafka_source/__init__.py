"""A native Kafka source for Beam: a splittable DoFn over confluent-kafka, with Spark's options.

Why not Beam's ReadFromKafka: it is a Java cross-language transform that needs a Java SDK harness (Docker by default),
never emits on the DirectRunner (apache/beam#25114, #22809), and holds the watermark on idle partitions (#20908).
This source is plain Python and streams on Prism, Flink, Spark and Dataflow alike.

Shape:
    Impulse -> ResolvePartitions (one PartitionSpec per topic-partition, offsets resolved when the job starts)
            -> Reshuffle -> ReadPartitions (SDF; restriction = OffsetRange of Kafka offsets)

- One restriction per topic-partition. A process() call reads for at most `max_read_seconds`, then checkpoints with
  `defer_remainder`, so the runner can commit output and move the watermark.
- Available-now (bounded) reads stop at the high watermark seen when the job started; streaming reads have an
  unbounded stop offset.
- The watermark is per partition and follows the timestamp policy; a caught-up, idle partition moves its watermark
  with the wall clock, so it never holds back the others.
- Offsets are committed to the consumer group in bundle finalization (after the runner has durably taken the
  bundle's output) and used as the resume point on the next start. That is at-least-once for downstream sinks.

Modules: `config` (Spark's options), `partitions` (discovery and offsets), `consumers` (kept between calls),
`restriction` (offset ranges), `watermark` (per partition), `read` (the splittable read and `ReadFromKafka`).
"""
from transforms.kafka_source.config import TIMESTAMP_POLICIES, KafkaSourceConfig
from transforms.kafka_source.partitions import NO_WATERMARK_STATE, UNBOUNDED, PartitionSpec, resolve_partitions
from transforms.kafka_source.read import ReadFromKafka
from transforms.kafka_source.restriction import CheckpointOnlyTracker
from transforms.kafka_source.watermark import PartitionWatermark, PartitionWatermarkProvider

__all__ = [
    "NO_WATERMARK_STATE", "TIMESTAMP_POLICIES", "UNBOUNDED", "CheckpointOnlyTracker", "KafkaSourceConfig",
    "PartitionSpec", "PartitionWatermark", "PartitionWatermarkProvider", "ReadFromKafka", "resolve_partitions",
]
