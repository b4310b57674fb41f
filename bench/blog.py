"""The benchmark: hitstream against the stream processors a Python user would pick instead, Spark Structured
Streaming, and hand-written confluent-kafka loops, in one run on one topic.

    python -m bench.blog                       # the full form: 1M events x 3 repeats, 4M for memory, latency
    python -m bench.blog --count 20000 --repeats 1 --memory-counts 20000 --latency-seconds 8 --latency-rates 1000
                                               # the short form CI runs (every contender, tiny)

The topic (bench.reference.blog_core_spec): 8 partitions, 200 zipcodes with a Zipf spread, 8 ISPs, 1% malformed,
1% up to a minute late, an hour of event time, each Kafka timestamp the hittime.

**Blog core**, every contender bounded over the same topic, writing to Kafka what bench.peers' contract says:
dead letters, `zip_counts` in update mode, `zip_window_counts` (10-minute windows every 5, 2 minutes past) in
update mode. Each run writes to new topics, and its output (the last message per key) is checked against
bench.reference before its time counts: a wrong contender is reported as wrong, not timed. Contenders:
  hitstream on Prism (`hitstream run --trigger available-now`); Bytewax and Quix Streams (bench/peers, each in a
  venv of its own), each in its fastest faithful form ("final": one message per key at the end) and its per-update
  form; Spark Structured Streaming (`local[2]`, Trigger.AvailableNow); the raw loop (count only: the limit).
processing s is the run's wall time minus the median wall time of the same command on an empty topic (start-up, shown
apart); for Spark, the queries' own wall time, the session start-up apart.

**Full blog pipeline**, the blog's sinks (Parquet hits by zipcode and day, memory and console windows, JDBC
complete and Kafka update of zip_counts): hitstream on Prism and on the direct runner; Spark; the raw loop without
sinks (consume, orjson, a dict count); the raw loop with the same sinks (bench/raw_loop.py).

Catch-up, the two Kafka reads side by side on the same topic: hitstream streaming (`processing-time=1s`) from the
earliest offset of the produced topic, with Parquet hits and zip_counts to Kafka (update), reading with the native
source (`prism`) and with Beam's Java ReadFromKafka (`prism:java`: `--kafka-io java --timestamp-policy create-time`,
the topic's Kafka timestamps being the hittimes). Streaming, because Java KafkaIO bounds an available-now read only
below 10,000 records (transforms/kafka_java.py). events/s = the hits counted between the first output message and
the one that completes the reference counts, over the time between; start-up (launch to the first output message)
is shown apart, and the two summed.

Latency: hits produced at a steady rate (200 zipcodes, 8 partitions) while a contender streams zip_counts in update
mode to a Kafka topic: hitstream on Prism with `processing-time=100ms` (the shortest interval it takes), and the
peers that emit per update, Bytewax (`stateful_map`) and Quix Streams (a running count), each its `--form updates
--streaming` (bench/peers). For every
message on the output topic, latency = arrival time - hittime (= produce time) of the event that brought that
zipcode's count to the value sent, arrival timed as each message is polled; p50 and p99 per rate (default 10k/s,
5k/s and 1k/s) and contender (`--latency-contenders`).

Peak RSS is the whole process tree (the Python driver and Prism, a peer's processes, or the Python driver and the
JVM); the memory table also gives Prism's own peak.
"""
from __future__ import annotations

import argparse
import datetime
import functools
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
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from bench import peers, reference
from bench.reference import differences
from bench import raw_loop
from bench.spark_blog import PeakRss, child_env
from hitstream.generator import ProduceSpec, ensure_topic, produce

REPO = Path(__file__).resolve().parents[1]


def produce_topic(bootstrap: str, count: int):
    """A new topic of `count` messages as bench.reference.blog_core_spec says, and the generator's report."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    return topic, produce(reference.blog_core_spec(topic, count, bootstrap))


# A contender's name in --runners -> (runner, extra arguments of hitstream run)
KAFKA_IO = {"java": ["--kafka-io=java", "--timestamp-policy=create-time"]}


def _hitstream_cmd(contender: str, bootstrap: str, topic: str, workdir: Path, trigger: str = "available-now",
                   run_id: str = "") -> list:
    """`hitstream run` with the blog's sinks; `contender` is a runner, or `<runner>:java` for the Java read. Its JDBC
    table is `zip_test_bench_<run_id>`, its output topic `<topic>-counts`."""
    from stack import mariadb
    runner, _, kafka_io = contender.partition(":")
    run_id = run_id or uuid.uuid4().hex[:8]
    return [sys.executable, "-m", "hitstream.cli", "run", "--runner", runner, *KAFKA_IO.get(kafka_io, []),
            f"--topic={topic}",
            f"--bootstrap-servers={bootstrap}", f"--trigger={trigger}", f"--group-id=bench-{run_id}",
            f"--parquet-path={workdir / run_id / 'hits'}", f"--checkpoint-dir={workdir / run_id / 'checkpoint'}",
            f"--jdbc-url={mariadb.url()}", f"--jdbc-table=zip_test_bench_{run_id}",
            f"--output-topic={topic}-counts", f"--dashboard-port={_free_port()}"]


def delete_new_topics(bootstrap: str, before: set) -> None:
    """Deletes the bench topics made since `before` was listed: a full run leaves some 5 GB of them, which fill the
    broker's disk and slow its restarts."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:  # best effort, and called from main's finally: it must not hide the error that ended the run
        made = [t for t in admin.list_topics(timeout=10).topics
                if t not in before and t.startswith(("bench-", "core-"))]
        for future in (admin.delete_topics(made).values() if made else ()):
            future.exception(30)  # a failed delete only leaves a stray topic
    except (KafkaException, TimeoutError) as error:
        print(f"bench: the bench topics were not deleted ({error})", file=sys.stderr)


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


def _processing_seconds(wall: float, startup: float):
    """A run's wall time less its command's start-up on an empty topic; None when that leaves nothing to measure (a
    topic too small for the noise of two wall times)."""
    seconds = wall - startup
    return seconds if seconds > 0.05 * wall else None


def run_hitstream(runner: str, bootstrap: str, topic: str, report, workdir: Path, startup: float) -> dict:
    """The full blog pipeline on `runner`; its JDBC table and Kafka topic are checked against the reference."""
    from stack import mariadb
    run_id = uuid.uuid4().hex[:8]
    measured = run_measured(_hitstream_cmd(runner, bootstrap, topic, workdir, run_id=run_id),
                            workdir / f"hitstream-{runner}.log")
    seconds = _processing_seconds(measured["wall_seconds"], startup)
    want = dict(report.zip_counts)
    problems = [f"jdbc: {d}" for d in differences(want, reference.table_counts(mariadb.url(),
                                                                              f"zip_test_bench_{run_id}"))]
    problems += [f"kafka: {d}" for d in differences(want, reference.latest(
        reference.read_topic(bootstrap, f"{topic}-counts"), False))]
    return dict(measured, seconds=seconds, events_per_second=seconds and report.produced / seconds, problems=problems)


def run_spark(bootstrap: str, topic: str, workdir: Path) -> dict:
    from bench.spark_blog import run_spark_blog
    return run_spark_blog(bootstrap, topic, str(workdir / "spark"))


def core_outputs(bootstrap: str) -> dict:
    """Three new one-partition topics for one blog-core run, as keyword arguments of bench.reference.check."""
    run_id = uuid.uuid4().hex[:8]
    outputs = {f"{name}_topic": f"core-{run_id}-{name}" for name in ("zip", "window", "dead_letter")}
    for topic in outputs.values():
        ensure_topic(bootstrap, topic, 1)
    return outputs


def hitstream_core_cmd(bootstrap: str, topic: str, zip_topic: str, window_topic: str, dead_letter_topic: str) -> list:
    return [sys.executable, "-m", "hitstream.cli", "run", "--runner=prism", f"--topic={topic}",
            f"--bootstrap-servers={bootstrap}", "--trigger=available-now", f"--group-id=bench-{uuid.uuid4().hex[:8]}",
            f"--sink=zip_counts=kafka:update,topic={zip_topic}",
            f"--sink=zip_window_counts=kafka:update,topic={window_topic}", f"--dead-letter-topic={dead_letter_topic}"]


# Blog-core contenders that run as one command each: name -> command(bootstrap, topic, **outputs).
CORE_COMMANDS = {"hitstream (prism)": hitstream_core_cmd,
                 **{f"{label} ({form})": functools.partial(peers.command, peer, form)
                    for peer, label in (("bytewax", "Bytewax"), ("quix", "Quix Streams")) for form in peers.FORMS}}
SPARK = "Spark Structured Streaming"


def run_core(name: str, bootstrap: str, topic: str, report, workdir: Path, startup: float = 0.0) -> dict:
    """One blog-core run of contender `name` over `topic`, checked against the reference of `report`."""
    outputs = core_outputs(bootstrap)
    if name == SPARK:
        from bench.spark_blog import run_spark_core
        measured = run_spark_core(bootstrap, topic, workdir=str(workdir / "spark-core"), **outputs)
    else:
        log = workdir / f"core-{name.replace(' ', '_').replace('(', '').replace(')', '')}.log"
        measured = run_measured(CORE_COMMANDS[name](bootstrap, topic, **outputs), log)
        measured["seconds"] = _processing_seconds(measured["wall_seconds"], startup)
        measured["events_per_second"] = measured["seconds"] and report.produced / measured["seconds"]
    return dict(measured, problems=reference.check(report, bootstrap, **outputs))


def core_table(bootstrap: str, topic: str, report, empty: str, empty_report, repeats: int, workdir: Path,
               names: list) -> list:
    """Median figures per blog-core contender; a contender with any wrong run is reported wrong, untimed."""
    rows = []
    for name in names:
        # Start-up is subtracted from every run's wall, so it is a median too: one empty run of 2026-12-07 took 7.1 s
        # where a dozen others took 1.9-2.3 s.
        startups = [] if name == SPARK else [run_core(name, bootstrap, empty, empty_report, workdir)["wall_seconds"]
                                              for _ in range(repeats)]
        startup = statistics.median(startups) if startups else 0.0
        runs = [run_core(name, bootstrap, topic, report, workdir, startup) for _ in range(repeats)]
        problems = [p for run in runs for p in run["problems"]]
        row = {"contender": name, "problems": problems, "startup_runs": startups,
               "startup_seconds": _median(runs, "startup_seconds") if name == SPARK else startup}
        if not problems:
            row.update({key: _median(runs, key) for key in ("events_per_second", "seconds", "wall_seconds",
                                                            "peak_rss_mb")})
        rows.append(row)
    raw = [raw_loop.run_raw(bootstrap, topic, report.produced) for _ in range(repeats)]
    rows.append({"contender": "raw confluent-kafka loop (counts only)", "problems": [], "startup_seconds": None,
                 **{key: _median(raw, key) for key in ("events_per_second", "seconds", "wall_seconds", "peak_rss_mb")}})
    return rows


def _figure(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_core(rows: list, count: int, repeats: int) -> None:
    print(f"\nBlog core: {count:,} events, 8 partitions, median of {repeats}\n")
    print("| contender | events/s | processing s | start-up s | wall s | peak RSS MB |\n|---|---|---|---|---|---|")
    for row in rows:
        if row["problems"]:
            print(f"| {row['contender']} | wrong: {row['problems'][0]} | | | | |")
            continue
        print(f"| {row['contender']} | {_figure(row['events_per_second'])} | {_figure(row['seconds'], '.1f')} | "
              f"{_figure(row['startup_seconds'], '.1f')} | {_figure(row['wall_seconds'], '.1f')} | "
              f"{_figure(row['peak_rss_mb'])} |")


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


def _catch_up_or_failure(contender: str, bootstrap: str, topic: str, report, workdir: Path) -> dict:
    """A catch-up's figures, or {"problem": why} when it did not reach the reference: reported, not timed."""
    try:
        return run_catch_up(contender, bootstrap, topic, report, workdir)
    except RuntimeError as error:
        return {"problem": str(error)}


def _median(runs: list, key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


LATENCY_TRIGGER = "processing-time=100ms"  # the shortest interval hitstream takes


def hitstream_latency_cmd(bootstrap: str, topic: str, output: str, run_seconds: float, workdir: Path) -> list:
    """hitstream on Prism streaming zip_counts (update mode) to `output` on every LATENCY_TRIGGER."""
    cmd = _hitstream_cmd("prism", bootstrap, topic, workdir, trigger=LATENCY_TRIGGER)
    return [c for c in cmd if not c.startswith("--output-topic")] + [
        f"--output-topic={output}", f"--run-seconds={run_seconds:g}", "--sink=zip_counts=kafka:update"]


def peer_latency_cmd(peer: str, bootstrap: str, topic: str, output: str, run_seconds: float, _workdir: Path) -> list:
    return peers.streaming_command(peer, bootstrap, topic, output, run_seconds)


# Latency contenders: name -> (when it emits, command(bootstrap, topic, output, run_seconds, workdir)).
LATENCY_COMMANDS = {"hitstream (prism)": (LATENCY_TRIGGER, hitstream_latency_cmd),
                    "Bytewax (updates)": ("every update", functools.partial(peer_latency_cmd, "bytewax")),
                    "Quix Streams (updates)": ("every update", functools.partial(peer_latency_cmd, "quix"))}
LATENCY_STARTUP_SECONDS, LATENCY_DRAIN_SECONDS = 15, 8


def measure_latency(contender: str, bootstrap: str, rate: float, seconds: float, workdir: Path) -> dict:
    """p50/p99 from produce to the count on the output topic, `contender` (of LATENCY_COMMANDS) streaming."""
    trigger, command = LATENCY_COMMANDS[contender]
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 8)
    output = f"{topic}-counts"
    ensure_topic(bootstrap, output, 1)
    # The job outlives the measurement by a margin: it is stopped (SIGTERM) once the output has been read.
    cmd = command(bootstrap, topic, output, LATENCY_STARTUP_SECONDS + seconds + LATENCY_DRAIN_SECONDS + 10, workdir)
    log = workdir / f"{topic}.log"
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

    with open(log, "wb") as out:
        job = subprocess.Popen(cmd, cwd=str(REPO), env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    reader = threading.Thread(target=consume_output, daemon=True)
    reader.start()
    time.sleep(LATENCY_STARTUP_SECONDS)  # the job is up and reading before the clock starts
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=bootstrap, count=int(rate * seconds), rate=rate,
                                 partitions=8, zipcodes=200, keep_events=True))
    time.sleep(LATENCY_DRAIN_SECONDS)
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
        raise RuntimeError(f"{contender}: no counts arrived on {output}; see {log}:\n{log.read_text()[-3000:]}")
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000.0  # noqa: E731
    return {"contender": contender, "rate": rate, "seconds": seconds, "trigger": trigger, "messages": len(latencies),
            "p50": pick(0.50), "p99": pick(0.99), "produced": report.produced,
            "achieved_rate": report.produced / report.seconds}


def chart(tables: dict, path: Path) -> None:
    """One bar panel per table ({title: rows}), events/s of each timed contender."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(tables), 1, figsize=(8, 1.2 + 0.45 * sum(len(r) for r in tables.values())),
                             squeeze=False)
    for ax, (title, rows) in zip(axes[:, 0], tables.items()):
        names = [r["contender"] for r in rows]
        rates = [r.get("events_per_second") or 0 for r in rows]
        ax.barh(names, rates, color=["#2b6cb0" if n.startswith("hitstream") else "#a0aec0" for n in names])
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for i, row in enumerate(rows):
            label = " wrong" if row.get("problems") else f" {rates[i]:,.0f}" if rates[i] else " not measured"
            ax.text(rates[i], i, label, va="center", fontsize=8)
        ax.set_xlim(0, max(rates + [1]) * 1.3)
    axes[-1, 0].set_xlabel("events/s (median, bounded run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def full_table(bootstrap: str, topic: str, report, empty: str, repeats: int, workdir: Path, runners: list,
               spark: bool) -> list:
    """Median figures per contender on the full blog pipeline (the blog's sinks); `problems` lists what a checked
    contender (hitstream's JDBC and Kafka sinks, every sink of the raw loop with sinks) got wrong."""
    from stack import mariadb
    runs = {}
    for runner in runners:
        startup = statistics.median(run_measured(_hitstream_cmd(runner, bootstrap, empty, workdir),
                                                 workdir / f"startup-{runner}.log")["wall_seconds"]
                                    for _ in range(repeats))
        runs[f"hitstream ({runner})"] = [run_hitstream(runner, bootstrap, topic, report, workdir, startup)
                                        for _ in range(repeats)]
    if spark:
        runs[SPARK] = [run_spark(bootstrap, topic, workdir) for _ in range(repeats)]
    runs["raw confluent-kafka loop"] = [raw_loop.run_raw(bootstrap, topic, report.produced) for _ in range(repeats)]
    with_sinks = []
    for _ in range(repeats):
        run = raw_loop.run_raw(bootstrap, topic, report.produced, sinks=True, workdir=str(workdir / "raw"),
                               jdbc_url=mariadb.url())
        with_sinks.append(dict(run, problems=raw_loop.check(run, report, bootstrap, mariadb.url())))
    runs["raw loop with the same sinks"] = with_sinks
    return [{"contender": name, "problems": [p for run in r for p in run.get("problems", ())],
             **{key: _median(r, key) for key in ("events_per_second", "seconds", "wall_seconds", "peak_rss_mb")}}
            for name, r in runs.items()]


def ratios(core: list, full: list) -> dict:
    """The issue's targets as ratios of this run's medians (None where a side is missing or wrong)."""
    core_by, full_by = {r["contender"]: r for r in core}, {r["contender"]: r for r in full}
    hit = core_by.get("hitstream (prism)", {})
    peers_timed = [r for r in core if r["contender"].startswith(("Bytewax", "Quix")) and not r["problems"]]
    fastest = max((r for r in peers_timed if r["events_per_second"]), key=lambda r: r["events_per_second"],
                  default=None)
    quickest = min(peers_timed, key=lambda r: r["wall_seconds"], default=None)
    div = lambda a, b: a / b if a and b else None  # noqa: E731
    prism = full_by.get("hitstream (prism)", {}).get("events_per_second")
    return {
        f"core: hitstream / fastest peer ({fastest and fastest['contender']}), events/s":
            div(hit.get("events_per_second"), fastest and fastest["events_per_second"]),
        f"core: hitstream / quickest peer ({quickest and quickest['contender']}), wall time":
            div(hit.get("wall_seconds"), quickest and quickest["wall_seconds"]),
        "full: hitstream / Spark": div(prism, full_by.get(SPARK, {}).get("events_per_second")),
        "full: hitstream / raw loop": div(prism, full_by["raw confluent-kafka loop"]["events_per_second"]),
        "full: hitstream / raw loop with the same sinks":
            div(prism, full_by["raw loop with the same sinks"]["events_per_second"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=1_000_000, help="events per bounded run (default: 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (default: 3)")
    parser.add_argument("--core", default=",".join([*CORE_COMMANDS, SPARK]),
                        help="blog-core contenders, comma-separated (default: all: "
                             f"{', '.join([*CORE_COMMANDS, SPARK])}; empty: none)")
    parser.add_argument("--runners", default="prism,direct",
                        help="hitstream runners on the full pipeline (default: prism,direct)")
    parser.add_argument("--catch-up", default="prism,prism:java",
                        help="streaming catch-up contenders; <runner>:java reads with Beam's Java KafkaIO "
                             "(default: prism,prism:java; empty: none)")
    parser.add_argument("--memory-counts", default="1000000,4000000",
                        help="event counts for hitstream's peak RSS (default: 1000000,4000000)")
    parser.add_argument("--latency-rates", default="10000,5000,1000",
                        help="events/s to measure latency at, comma-separated (default: 10000,5000,1000)")
    parser.add_argument("--latency-seconds", type=float, default=60, help="(default: 60)")
    parser.add_argument("--latency-contenders", default=",".join(LATENCY_COMMANDS),
                        help=f"latency contenders, comma-separated (default: all: {', '.join(LATENCY_COMMANDS)}; "
                             "empty: none)")
    parser.add_argument("--no-spark", action="store_true", help="leave Spark out (only to debug; not a result)")
    parser.add_argument("--chart", default="", help="write the throughput chart PNG here (default: off)")
    parser.add_argument("--json", default="", help="write every figure as JSON here (default: off)")
    args = parser.parse_args(argv)
    latency_names = [n for n in args.latency_contenders.split(",") if n]
    unknown = set(latency_names) - set(LATENCY_COMMANDS)
    if unknown:  # caught now, not after the hour of sections before latency
        parser.error(f"unknown --latency-contenders {sorted(unknown)}; choose from {', '.join(LATENCY_COMMANDS)}")
    bootstrap = args.bootstrap_servers
    workdir = Path(tempfile.mkdtemp(prefix="hitstream-bench-"))
    results = {"date": datetime.date.today().isoformat(), "count": args.count, "repeats": args.repeats}
    topics_before = set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)
    try:
        topic, report = produce_topic(bootstrap, args.count)
        empty, empty_report = produce_topic(bootstrap, 0)
        core_names = [n for n in args.core.split(",") if n and not (args.no_spark and n == SPARK)]
        results["core"] = core_table(bootstrap, topic, report, empty, empty_report, args.repeats, workdir, core_names)
        print_core(results["core"], args.count, args.repeats)

        results["full"] = full_table(bootstrap, topic, report, empty, args.repeats, workdir,
                                     [r for r in args.runners.split(",") if r], not args.no_spark)
        print(f"\nFull blog pipeline: {args.count:,} events, 8 partitions, median of {args.repeats}, "
              f"{results['date']}\n")
        print("| contender | events/s | processing s | wall s | peak RSS MB |\n|---|---|---|---|---|")
        for row in results["full"]:
            wrong = f" (wrong: {row['problems'][0]})" if row["problems"] else ""
            print(f"| {row['contender']}{wrong} | {_figure(row['events_per_second'])} | "
                  f"{_figure(row['seconds'], '.1f')} | {_figure(row['wall_seconds'], '.1f')} | "
                  f"{_figure(row['peak_rss_mb'])} |")
        results["ratios"] = ratios(results["core"], results["full"])
        print()
        for name, ratio in results["ratios"].items():
            print(f"{name}: {_figure(ratio, '.2f')}")

        catch_up = {name: [_catch_up_or_failure(name, bootstrap, topic, report, workdir)
                           for _ in range(args.repeats)] for name in args.catch_up.split(",") if name}
        if catch_up:
            results["catch_up"] = [
                {"contender": name, "problems": [run["problem"] for run in runs if "problem" in run],
                 **{key: _median(runs, key) for key in ("events_per_second", "seconds", "startup_seconds")}}
                for name, runs in catch_up.items()]
            print(f"\nCatch-up: streaming over the same {args.count:,} events (Parquet hits, zip_counts to Kafka), "
                  f"median of {args.repeats}\n")
            print("| contender | events/s | catch-up s | start-up s | launch to caught-up s |\n|---|---|---|---|---|")
            for row in results["catch_up"]:
                if row["problems"]:
                    print(f"| hitstream ({row['contender']}) | failed: {row['problems'][0][:200]} | | | |")
                    continue
                print(f"| hitstream ({row['contender']}) | {_figure(row['events_per_second'])} | "
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

        # Rate by rate, the contenders one after the other: each rate's rows are measured close together.
        results["latency"] = [measure_latency(name, bootstrap, float(rate), args.latency_seconds, workdir)
                              for rate in args.latency_rates.split(",") if rate for name in latency_names]
        print(f"\nLatency, {args.latency_seconds:g} s per rate and contender\n")
        print("| contender | events/s | emits on | output messages | p50 s | p99 s |\n|---|---|---|---|---|---|")
        for row in results["latency"]:
            print(f"| {row['contender']} | {row['achieved_rate']:,.0f} | {row['trigger']} | {row['messages']:,} | "
                  f"{row['p50']:.2f} | {row['p99']:.2f} |")
        if args.chart:
            chart({"blog core": results["core"], "full blog pipeline": results["full"]}, Path(args.chart))
    finally:
        if args.json:  # what was measured, also when a later section failed
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        shutil.rmtree(workdir, ignore_errors=True)
        delete_new_topics(bootstrap, topics_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
