"""The benchmark's short form, run in CI: every contender side by side, the table, ratios, memory and latency.

The full form (1M events x 3 repeats, 4M for memory, 60 s at 10k/s) is `python -m bench.blog`; see the README.
This checks the harness end to end, not the speed.
"""
import json

import pytest

from bench import blog

pytestmark = pytest.mark.timeout(900)


def test_benchmark_short_form_prints_every_figure(kafka_bootstrap, tmp_path, capsys):
    figures = tmp_path / "bench.json"
    chart = tmp_path / "bench.png"
    assert blog.main(["--bootstrap-servers", kafka_bootstrap, "--count", "20000", "--repeats", "1",
                      "--runners", "prism", "--memory-counts", "20000", "--latency-seconds", "8",
                      "--latency-rate", "1000", "--chart", str(chart), "--json", str(figures)]) == 0
    printed = capsys.readouterr().out
    assert "| hitstream (prism) |" in printed and "| Spark Structured Streaming |" in printed
    assert "| raw confluent-kafka loop |" in printed and "a/b (hitstream prism / Spark)" in printed
    results = json.loads(figures.read_text())
    assert all(row["events_per_second"] > 0 for row in results["throughput"])
    # Both reads caught up with the reference in streaming (a rate needs more than one trigger's worth of hits).
    assert [row["contender"] for row in results["catch_up"]] == ["prism", "prism:java"]
    assert "| hitstream (prism:java) |" in printed
    assert results["latency"]["messages"] > 0 and results["latency"]["p99"] >= results["latency"]["p50"] > 0
    assert chart.stat().st_size > 1000
