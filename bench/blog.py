"""The benchmark: hitstream's blog pipeline against Spark Structured Streaming and the raw-client limit, one run.

    python -m bench.blog                       # the full form: 1M events x 3 repeats, 4M for memory, 60 s latency
    python -m bench.blog --count 20000 --repeats 1 --memory-counts 20000 --latency-seconds 8 --latency-rate 1000
                                               # the short form CI runs

Contenders, each in bounded (available-now) mode over the same topic (8 partitions, zipcodes with a Zipf spread, 8
ISPs, a small share of late events):
  (a) hitstream: `hitstream run --trigger available-now` with the blog's sinks (Parquet hits, memory and console
      for zip_window_counts, JDBC complete of zip_counts on MariaDB, Kafka update of zip_counts) on Prism, and on
      the direct runner's in-process engine;
  (b) Spark Structured Streaming, `local[2]`, the same queries and sinks with Trigger.AvailableNow (bench/spark_blog.py);
  (c) the practical limit: one Python loop of confluent-kafka batch consume, orjson parse and a dict count.
Each is run `--repeats` times; the table gives medians. events/s is events over processing seconds: for hitstream
the run's wall time minus the same command's wall time on an empty topic (start-up, graph, sink set-up); for Spark
the queries' own wall time, without the session start-up (both wall times are shown too). Peak RSS is the whole
process tree (the Python driver and Prism, or the Python driver and the JVM); the memory table also gives Prism's
own peak.

Latency: hits produced at a steady rate (default 10k/s for 60 s) while hitstream runs with `processing-time=250ms`;
for every message on the Kafka output topic, latency = arrival time - hittime (= produce time) of the event that
brought that zipcode's count to the value sent, arrival timed as each message is polled. p50 and p99 are printed;
`--latency-rates` adds more rates.

Catch-up, the two Kafka reads side by side on the same topic: hitstream streaming (`processing-time=1s`) from the
earliest offset of the produced topic, with Parquet hits and zip_counts to Kafka (update), reading with the native
source (`prism`) and with Beam's Java ReadFromKafka (`prism:java`: `--kafka-io java --timestamp-policy create-time`,
the topic's Kafka timestamps being the hittimes). Streaming, because Java KafkaIO bounds an available-now read only
below 10,000 records (transforms/kafka_java.py). events/s = the hits counted between the first output message and
the one that completes the reference counts, over the time between; start-up (launch to the first output message)
is shown apart, and the two summed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench.spark_blog import PeakRss, child_env
from hitstream.generator import ProduceSpec, ensure_topic, produce
from transforms.kafka_source import KafkaSourceConfig, resolve_partitions

REPO = Path(__file__).resolve().parents[1]


def produce_topic(bootstrap: str, count: int, partitions: int = 8, rate: float = 0.0, keep_events=False):
    """A new topic of `count` hits, each stamped with its hittime as Kafka timestamp (for the Java read's windows)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=bootstrap, count=count, partitions=partitions,
                                 zipcodes=200, skew=1.0, late_share=0.01, late_by_seconds=60, rate=rate,
                                 keep_events=keep_events, kafka_timestamp_is_hittime=True))
    return topic, report


# A contender's name in --runners -> (runner, extra arguments of hitstream run)
KAFKA_IO = {"java": ["--kafka-io=java", "--timestamp-policy=create-time"]}


def _hitstream_cmd(contender: str, bootstrap: str, topic: str, workdir: Path, trigger: str = "available-now") -> list:
    """`hitstream run` with the blog's sinks; `contender` is a runner, or `<runner>:java` for the Java read."""
    from stack import mariadb
    runner, _, kafka_io = contender.partition(":")
    run_id = uuid.uuid4().hex[:8]
    return [sys.executable, "-m", "hitstream.cli", "run", "--runner", runner, *KAFKA_IO.get(kafka_io, []),
            f"--topic={topic}",
            f"--bootstrap-servers={bootstrap}", f"--trigger={trigger}", f"--group-id=bench-{run_id}",
            f"--parquet-path={workdir / run_id / 'hits'}", f"--checkpoint-dir={workdir / run_id / 'checkpoint'}",
            f"--jdbc-url={mariadb.url()}", f"--jdbc-table=zip_test_bench_{run_id}",
            f"--output-topic={topic}-counts", f"--dashboard-port={_free_port()}"]


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_measured(cmd: list, log: Path, timeout: float = 3600) -> dict:
    started = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(cmd, cwd=str(REPO), env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        with PeakRss(child.pid, apart="prism") as rss:
            code = child.wait(timeout)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {code}; see {log}:\n{log.read_text()[-3000:]}")
    return {"wall_seconds": time.perf_counter() - started, "peak_rss_mb": rss.peak_mb,
            "peak_prism_rss_mb": rss.peak_apart / 2 ** 20}


def run_hitstream(runner: str, bootstrap: str, topic: str, events: int, workdir: Path, startup: float) -> dict:
    measured = run_measured(_hitstream_cmd(runner, bootstrap, topic, workdir), workdir / f"hitstream-{runner}.log")
    seconds = max(1e-3, measured["wall_seconds"] - startup)
    return dict(measured, seconds=seconds, events_per_second=events / seconds)


def run_raw(bootstrap: str, topic: str, events: int) -> dict:
    """One loop: batch consume, orjson parse, count per zipcode. No sinks, no windows."""
    config = KafkaSourceConfig(bootstrap_servers=bootstrap, subscribe=(topic,), starting_offsets="earliest",
                               ending_offsets="latest", group_id=f"raw-{uuid.uuid4().hex}")
    consumer = Consumer(config.consumer_config())
    consumer.assign([TopicPartition(s.topic, s.partition, s.start) for s in resolve_partitions(config)])
    counts, seen = {}, 0
    started = time.perf_counter()
    while seen < events:
        for message in consumer.consume(num_messages=10000, timeout=1.0):
            if message.error() is not None:
                continue
            seen += 1
            try:
                zipcode = orjson.loads(message.value()).get("zipcode")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            counts[zipcode] = counts.get(zipcode, 0) + 1
    seconds = time.perf_counter() - started
    consumer.close()
    return {"seconds": seconds, "wall_seconds": seconds, "events_per_second": events / seconds, "peak_rss_mb": None}


def run_spark(bootstrap: str, topic: str, workdir: Path) -> dict:
    from bench.spark_blog import run_spark_blog
    return run_spark_blog(bootstrap, topic, str(workdir / "spark"))


def run_catch_up(contender: str, bootstrap: str, topic: str, report, workdir: Path, timeout: float = 1800) -> dict:
    """Streaming from the earliest offset until the Kafka sink holds the reference counts (see the docstring)."""
    output = f"{topic}-catch-up-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, output, 1)
    cmd = [c for c in _hitstream_cmd(contender, bootstrap, topic, workdir, trigger="processing-time=1s")
           if not c.startswith(("--output-topic", "--checkpoint-dir"))]
    cmd += [f"--output-topic={output}", "--starting-offsets=earliest", "--sink=hits=parquet",
            "--sink=zip_counts=kafka:update", f"--run-seconds={timeout}"]
    want, total = dict(report.zip_counts), sum(report.zip_counts.values())
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"catch-up-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([output])
    latest, first = {}, None
    log = workdir / f"catch-up-{contender}.log"
    started = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(cmd, cwd=str(REPO), env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        while latest != want:
            if child.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(f"catch-up of {contender} ended before the reference; see {log}:\n"
                                   f"{log.read_text()[-3000:]}")
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None:
                    latest[message.key().decode()] = orjson.loads(message.value())["count"]
            if latest and first is None:
                first = (time.perf_counter(), sum(latest.values()))
        done = time.perf_counter()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=120)
        consumer.close()
    seconds, counted = done - first[0], total - first[1]
    # None when the first output already held every hit (a topic read within one trigger): no rate to measure.
    return {"events_per_second": counted / seconds if counted else None, "seconds": seconds,
            "startup_seconds": first[0] - started}


def _median(runs: list, key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def measure_latency(bootstrap: str, rate: float, seconds: float, workdir: Path, trigger: str = "processing-time=250ms") -> dict:
    """p50/p99 from produce to the count on the output topic, hitstream streaming with `trigger`."""
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 8)
    output = f"{topic}-counts"
    ensure_topic(bootstrap, output, 1)
    cmd = _hitstream_cmd("prism", bootstrap, topic, workdir, trigger=trigger)
    cmd = [c for c in cmd if not c.startswith("--output-topic")] + [
        f"--output-topic={output}", f"--run-seconds={seconds + 25}", "--sink=zip_counts=kafka:update"]
    arrivals = []
    stop = threading.Event()

    def consume_output():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([output])
        while not stop.is_set():
            # One message per poll, timed as it returns: consume(n, timeout) would hold early arrivals until it has
            # n messages or times out, adding up to its timeout to their latency.
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                body = orjson.loads(message.value())
                arrivals.append((time.time() * 1000, body["zipcode"], body["count"]))
        consumer.close()

    job = subprocess.Popen(cmd, cwd=str(REPO), env=child_env(), stdout=open(workdir / "latency-job.log", "wb"),
                           stderr=subprocess.STDOUT)
    reader = threading.Thread(target=consume_output, daemon=True)
    reader.start()
    time.sleep(15)  # the job is up and reading before the clock starts
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=bootstrap, count=int(rate * seconds), rate=rate,
                                 partitions=8, zipcodes=200, keep_events=True))
    time.sleep(8)
    stop.set()
    reader.join()
    job.terminate()
    job.wait(60)
    # The n-th event of a zipcode (its key, so one partition, in offset order) is what brought its count to n.
    produced_at = {}
    for hittime_ms, zipcode, _, partition, offset in sorted(report.events, key=lambda e: (e[3], e[4])):
        produced_at.setdefault(zipcode, []).append(hittime_ms)
    latencies = sorted(at - produced_at[zipcode][count - 1] for at, zipcode, count in arrivals
                       if count <= len(produced_at.get(zipcode, ())))
    if not latencies:
        raise RuntimeError(f"no counts arrived on {output}; see {workdir / 'latency-job.log'}")
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000.0  # noqa: E731
    return {"rate": rate, "seconds": seconds, "trigger": trigger, "messages": len(latencies), "p50": pick(0.50), "p99": pick(0.99),
            "produced": report.produced, "achieved_rate": report.produced / report.seconds}


def chart(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r[0] for r in rows]
    rates = [r[1] or 0 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(names, rates, color=["#2b6cb0" if n.startswith("hitstream") else "#a0aec0" for n in names])
    ax.set_xlabel("events/s (median, bounded run)")
    for i, v in enumerate(rates):
        ax.text(v, i, f" {v:,.0f}", va="center")
    ax.set_xlim(0, max(rates) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=1_000_000, help="events per bounded run (default: 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (default: 3)")
    parser.add_argument("--runners", default="prism,direct", help="hitstream runners (default: prism,direct)")
    parser.add_argument("--catch-up", default="prism,prism:java",
                        help="streaming catch-up contenders; <runner>:java reads with Beam's Java KafkaIO "
                             "(default: prism,prism:java; empty: none)")
    parser.add_argument("--memory-counts", default="1000000,4000000",
                        help="event counts for hitstream's peak RSS (default: 1000000,4000000)")
    parser.add_argument("--latency-rate", type=float, default=10_000, help="events/s (default: 10000)")
    parser.add_argument("--latency-rates", default="",
                        help="more rates to measure latency at, comma-separated, e.g. 1000,3000,5000 (default: none)")
    parser.add_argument("--latency-seconds", type=float, default=60, help="(default: 60)")
    parser.add_argument("--no-spark", action="store_true", help="leave Spark out (only to debug; not a result)")
    parser.add_argument("--chart", default="", help="write the throughput chart PNG here (default: off)")
    parser.add_argument("--json", default="", help="write every figure as JSON here (default: off)")
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap_servers
    workdir = Path(tempfile.mkdtemp(prefix="hitstream-bench-"))
    results = {"date": datetime.date.today().isoformat(), "count": args.count, "repeats": args.repeats}
    try:
        topic, report = produce_topic(bootstrap, args.count)
        empty, _ = produce_topic(bootstrap, 0)
        runs = {}
        for runner in args.runners.split(","):
            startup = run_measured(_hitstream_cmd(runner, bootstrap, empty, workdir),
                                   workdir / f"startup-{runner}.log")["wall_seconds"]
            runs[f"hitstream ({runner})"] = [run_hitstream(runner, bootstrap, topic, args.count, workdir, startup)
                                            for _ in range(args.repeats)]
        if not args.no_spark:
            runs["Spark Structured Streaming"] = [run_spark(bootstrap, topic, workdir) for _ in range(args.repeats)]
        runs["raw confluent-kafka loop"] = [run_raw(bootstrap, topic, args.count) for _ in range(args.repeats)]
        table = [(name, _median(r, "events_per_second"), _median(r, "seconds"), _median(r, "wall_seconds"),
                  _median(r, "peak_rss_mb")) for name, r in runs.items()]
        results["throughput"] = [dict(zip(("contender", "events_per_second", "seconds", "wall_seconds",
                                           "peak_rss_mb"), row)) for row in table]
        print(f"\n{args.count:,} events, 8 partitions, median of {args.repeats}, {results['date']}\n")
        print("| contender | events/s | processing s | wall s | peak RSS MB |\n|---|---|---|---|---|")
        for name, eps, secs, wall, rss in table:
            print(f"| {name} | {eps:,.0f} | {secs:.1f} | {wall:.1f} | {'-' if rss is None else f'{rss:,.0f}'} |")
        prism = dict((r[0], r[1]) for r in table).get("hitstream (prism)")
        spark = dict((r[0], r[1]) for r in table).get("Spark Structured Streaming")
        raw = dict((r[0], r[1]) for r in table)["raw confluent-kafka loop"]
        if prism:
            ratios = {"a/b (hitstream prism / Spark)": prism / spark if spark else None,
                      "a/c (hitstream prism / raw loop)": prism / raw}
            results["ratios"] = ratios
            for name, ratio in ratios.items():
                print(f"{name}: {'-' if ratio is None else f'{ratio:.2f}'}")

        catch_up = {name: [run_catch_up(name, bootstrap, topic, report, workdir) for _ in range(args.repeats)]
                    for name in args.catch_up.split(",") if name}
        if catch_up:
            results["catch_up"] = [{"contender": name, **{key: _median(runs, key) for key in runs[0]}}
                                   for name, runs in catch_up.items()]
            print(f"\nCatch-up: streaming over the same {args.count:,} events (Parquet hits, zip_counts to Kafka), "
                  f"median of {args.repeats}\n")
            print("| contender | events/s | catch-up s | start-up s | launch to caught-up s |\n|---|---|---|---|---|")
            for row in results["catch_up"]:
                rate = row["events_per_second"]
                print(f"| hitstream ({row['contender']}) | {'-' if rate is None else f'{rate:,.0f}'} | "
                      f"{row['seconds']:.1f} | {row['startup_seconds']:.1f} | "
                      f"{row['seconds'] + row['startup_seconds']:.1f} |")

        memory = []
        for n in [int(c) for c in args.memory_counts.split(",") if c]:
            mem_topic, _ = produce_topic(bootstrap, n) if n != args.count else (topic, None)
            measured = run_measured(_hitstream_cmd("prism", bootstrap, mem_topic, workdir), workdir / f"mem-{n}.log")
            memory.append({"events": n, "peak_rss_mb": measured["peak_rss_mb"],
                           "peak_prism_rss_mb": measured["peak_prism_rss_mb"]})
        results["memory"] = memory
        print("\n| events | hitstream (prism) peak RSS MB | of which Prism |\n|---|---|---|")
        for row in memory:
            print(f"| {row['events']:,} | {row['peak_rss_mb']:,.0f} | {row['peak_prism_rss_mb']:,.0f} |")

        rates = [args.latency_rate] + [float(r) for r in args.latency_rates.split(",") if r]
        results["latency_by_rate"] = [measure_latency(bootstrap, rate, args.latency_seconds, workdir)
                                      for rate in rates]
        results["latency"] = results["latency_by_rate"][0]
        for latency in results["latency_by_rate"]:
            print(f"\nlatency at {latency['achieved_rate']:,.0f} events/s for {args.latency_seconds:g} s "
                  f"({latency['trigger']}, {latency['messages']} output messages): p50 {latency['p50']:.2f} s, "
                  f"p99 {latency['p99']:.2f} s")
        if args.chart:
            chart([(name, eps) for name, eps, *_ in table], Path(args.chart))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
