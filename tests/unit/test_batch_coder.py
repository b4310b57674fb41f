"""The batch types' coder: encodes losslessly and sizes a batch from a sample, not by pickling the batch."""
import datetime

import apache_beam as beam

from transforms.batch_coder import BATCH_TYPES, SAMPLE, BatchCoder
from transforms.parse import ParsedBatch
from transforms.rows import Hit, HitBatch, KafkaBatch, KafkaRecord

HIT = Hit(datetime.datetime(2026, 11, 24, 10, 2, tzinfo=datetime.timezone.utc), "94107", "isp", None, None, None,
          None, None, None, "2026-11-24", "hits", 3, 41, 1795989720000)


def test_every_batch_type_gets_the_batch_coder():
    for batch_type in BATCH_TYPES:
        assert isinstance(beam.coders.registry.get_coder(batch_type), BatchCoder)


def test_batches_survive_encoding():
    coder = BatchCoder()
    batches = [HitBatch((HIT, HIT._replace(offset=42)), "hits", 3, 43), ParsedBatch((HIT,)),
               KafkaBatch((KafkaRecord(None, b"{}", "hits", 0, 7, 1, 0),)), HitBatch(())]
    for batch in batches:
        assert coder.decode(coder.encode(batch)) == batch


def test_size_comes_from_a_sample():
    coder = BatchCoder()
    batch = HitBatch(tuple(HIT._replace(offset=i, zipcode=f"{i:05d}") for i in range(1000)), "hits", 3, 1000)
    estimate = coder.estimate_size(batch)
    assert estimate == 1000 * len(coder.encode(batch._replace(hits=batch.hits[:SAMPLE]))) // SAMPLE
    assert 0.8 < estimate / len(coder.encode(batch)) < 1.25  # close to what encoding the whole batch measures
    small = HitBatch((HIT,), "hits", 3, 42)
    assert coder.estimate_size(small) == len(coder.encode(small))
