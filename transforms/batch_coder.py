"""The coder of the fast path's batch elements (KafkaBatch, ParsedBatch, HitBatch): pickle, with a cheap size.

The Python SDK samples the byte size of elements passed between fused steps (`OperationCounters.do_sample`: the
first ten of each counter, then fewer), and for a type without a coder of its own it measures by pickling the
whole element. A batch holds about a thousand records, so that measuring took ~8% of a bounded Prism run (py-spy,
`python -m bench.profile`). This coder encodes the same way but estimates a batch's size from its first 16 records.
"""
from __future__ import annotations

import pickle

import apache_beam as beam

from transforms.parse import ParsedBatch
from transforms.rows import HitBatch, KafkaBatch

BATCH_TYPES = (KafkaBatch, ParsedBatch, HitBatch)  # each holds its records as a tuple in its first field
SAMPLE = 16  # records encoded to estimate a batch's size


class BatchCoder(beam.coders.Coder):
    def encode(self, batch) -> bytes:
        return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes):
        return pickle.loads(encoded)

    def estimate_size(self, batch) -> int:
        records = batch[0]
        if len(records) <= SAMPLE:
            return len(self.encode(batch))
        return len(records) * len(self.encode(batch._replace(**{batch._fields[0]: records[:SAMPLE]}))) // SAMPLE

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


for batch_type in BATCH_TYPES:
    beam.coders.registry.register_coder(batch_type, BatchCoder)
