"""bench/profile.py's reading of py-spy's raw output and its shares, on a hand-written profile."""
from bench.profile import area_shares, read_raw, top_functions

RAW = """\
process 7 (python -m hitstream.cli run);thread (MainThread);run (apache_beam/runners/worker/sdk_worker.py);process (transforms/kafka_source.py);parse_record (transforms/parse.py) 30
process 7 (python -m hitstream.cli run);thread (MainThread);run (apache_beam/runners/worker/sdk_worker.py);process (transforms/kafka_source.py) 20
process 7 (python -m hitstream.cli run);thread (MainThread);run (apache_beam/runners/worker/sdk_worker.py);write_rows (transforms/sinks/parquet.py) 50
"""


def test_areas_are_inclusive_shares_of_all_samples(tmp_path):
    path = tmp_path / "raw.txt"
    path.write_text(RAW)
    stacks = read_raw(path)
    assert sum(stacks.values()) == 100
    shares = dict(area_shares(stacks))
    assert shares["Kafka read (ReadPartitionsFn)"] == 0.5  # holds its parse
    assert shares["  parse_record"] == 0.3
    assert shares["Parquet sink"] == 0.5
    assert shares["JDBC sink"] == 0.0


def test_top_functions_give_inclusive_and_own_shares(tmp_path):
    path = tmp_path / "raw.txt"
    path.write_text(RAW)
    top = {frame: (inclusive, own) for frame, inclusive, own in top_functions(read_raw(path), 10)}
    assert top["run (apache_beam/runners/worker/sdk_worker.py)"] == (1.0, 0.0)
    assert top["process (transforms/kafka_source.py)"] == (0.5, 0.2)
    assert top["write_rows (transforms/sinks/parquet.py)"] == (0.5, 0.5)
