"""The benchmark's short form, run in CI: every contender side by side on a tiny topic, each checked against the
reference, the tables, ratios, memory and latency.

The full form (1M events x 3 repeats, 4M for memory, 60 s per latency rate and contender) is `python -m bench.blog`;
see the README. This checks the harness and every contender's correctness end to end, not the speed.
"""
import json

import pytest

from bench import blog

pytestmark = pytest.mark.timeout(1500)


def test_benchmark_short_form_runs_every_contender_correctly(kafka_bootstrap, tmp_path, capsys):
    figures = tmp_path / "bench.json"
    chart = tmp_path / "bench.png"
    assert blog.main(["--bootstrap-servers", kafka_bootstrap, "--count", "20000", "--repeats", "1",
                      "--runners", "prism", "--memory-counts", "20000", "--latency-seconds", "8",
                      "--latency-rates", "1000", "--chart", str(chart), "--json", str(figures)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(figures.read_text())
    core = {row["contender"]: row for row in results["core"]}
    assert set(core) == {*blog.CORE_COMMANDS, blog.SPARK, "raw confluent-kafka loop (counts only)"}
    # A broken contender fails here: every blog-core output equalled the reference before it was timed.
    assert {name: row["problems"] for name, row in core.items() if row["problems"]} == {}
    # The full pipeline's checked contenders too: hitstream's JDBC and Kafka sinks, every sink of the raw loop.
    assert {row["contender"]: row["problems"] for row in results["full"] if row["problems"]} == {}
    # A tiny topic can take less time than the noise of start-up: events/s is then not measured (None).
    assert all(row["wall_seconds"] > 0 and (row["events_per_second"] or 1) > 0
               for row in results["core"] + results["full"])
    assert [row["contender"] for row in results["full"]] == [
        "hitstream (prism)", blog.SPARK, "raw confluent-kafka loop", "raw loop with the same sinks"]
    assert "| Bytewax (final) |" in printed and "| raw loop with the same sinks |" in printed
    # A ratio is None only where a rate it divides was not measured; the wall-time ratio always is.
    rates_measured = all(row["events_per_second"] for row in results["core"] + results["full"])
    assert all(value is not None for name, value in results["ratios"].items()
               if rates_measured or "wall time" in name), results["ratios"]
    # Both reads caught up with the reference in streaming (a rate needs more than one trigger's worth of hits).
    assert [row["contender"] for row in results["catch_up"]] == ["prism", "prism:java"]
    assert {row["contender"]: row["problems"] for row in results["catch_up"] if row["problems"]} == {}
    assert "| hitstream (prism:java) |" in printed
    # One rate: a latency row per contender, hitstream's first, the peers' per-update forms after it.
    assert [row["contender"] for row in results["latency"]] == list(blog.LATENCY_COMMANDS)
    latency = results["latency"][0]
    assert latency["messages"] > 0 and latency["p99"] >= latency["p50"] > 0
    assert all(row["messages"] > 0 and row["p99"] >= row["p50"] > 0 for row in results["latency"][1:]), \
        results["latency"]
    assert chart.stat().st_size > 1000
