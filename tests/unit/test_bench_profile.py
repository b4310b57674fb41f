"""bench/profile.py's reading of py-spy's raw output and its shares, on a hand-written profile in py-spy's format."""
from bench.profile import area_shares, bundle_work, read_raw, top_functions

BUNDLE = "_Worker.run (apache_beam/utils/thread_pool_executor.py);" \
         "BundleProcessor.process_bundle (apache_beam/runners/worker/bundle_processor.py)"
RAW = f"""\
process 7:"python -m hitstream.cli run";{BUNDLE};ReadPartitionsFn.process (transforms/kafka_source/read.py);parse_record (transforms/parse.py) 30
process 7:"python -m hitstream.cli run";{BUNDLE};ReadPartitionsFn.process (transforms/kafka_source/read.py) 20
process 7:"python -m hitstream.cli run";{BUNDLE};ParquetWriter.write_rows (transforms/sinks/parquet.py) 50
process 7:"python -m hitstream.cli run";Thread.run (threading.py);Condition.wait (threading.py) 100
"""


def _work(tmp_path):
    path = tmp_path / "raw.txt"
    path.write_text(RAW)
    stacks = read_raw(path)
    assert sum(stacks.values()) == 200
    return bundle_work(stacks)


def test_areas_are_inclusive_shares_of_the_bundle_work(tmp_path):
    shares = dict(area_shares(_work(tmp_path)))
    assert shares["Kafka read (consume, records, watermark)"] == 0.5  # holds its parse
    assert shares["  of it parse (orjson, data contract)"] == 0.3
    assert shares["sinks (buffering, retries, writers)"] == 0.5
    assert shares["  of it Parquet"] == 0.5
    assert shares["  of it JDBC"] == 0.0


def test_top_functions_are_ranked_by_own_samples(tmp_path):
    top = top_functions(_work(tmp_path), 3)
    assert [frame for frame, _, _ in top] == ["ParquetWriter.write_rows (transforms/sinks/parquet.py)",
                                              "parse_record (transforms/parse.py)",
                                              "ReadPartitionsFn.process (transforms/kafka_source/read.py)"]
    assert [(own, inclusive) for _, own, inclusive in top] == [(0.5, 0.5), (0.3, 0.3), (0.2, 0.5)]
