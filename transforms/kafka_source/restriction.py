"""A partition's restriction: an OffsetRange of Kafka offsets, split only at checkpoints."""
from __future__ import annotations

from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider

from transforms.kafka_source.consumers import HIGH_WATERMARKS
from transforms.kafka_source.partitions import UNBOUNDED, PartitionSpec


class CheckpointOnlyTracker(OffsetRestrictionTracker):
    """Offset tracking that splits a range only at checkpoints (`defer_remainder`): a Kafka partition's offsets, or a
    socket's line numbers.

    A runner may ask to split a running restriction at some fraction of its remainder. For an unbounded range that
    point would be an offset near 2**62. For a bounded one, the per-partition watermark and late flags assume one
    reader per partition, in offset order, which is also what Kafka offers. (Runner splits were first refused
    because on Prism they made whole windows late; the cause was Prism taking a stage's watermark from the last
    bundle's residuals alone, fixed by the stack's patched Prism, see stack/prism.py.)
    """

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder > 0:
            return None
        return super().try_split(fraction_of_remainder)


class OffsetRangeProvider(RestrictionProvider):
    def initial_restriction(self, spec: PartitionSpec) -> OffsetRange:
        return OffsetRange(spec.start, spec.stop)

    def create_tracker(self, restriction: OffsetRange) -> CheckpointOnlyTracker:
        return CheckpointOnlyTracker(restriction)

    def restriction_size(self, spec: PartitionSpec, restriction: OffsetRange) -> int:
        if restriction.stop != UNBOUNDED:
            return restriction.size()
        high = HIGH_WATERMARKS.get((spec.topic, spec.partition))
        return max(1, high - restriction.start) if high is not None else 1

    def truncate(self, spec, restriction):
        # On drain a streaming read stops at its checkpoint; a bounded read finishes.
        return None if restriction.stop == UNBOUNDED else restriction
