"""The `hitstream` command: the local stack, the hit generator, the blog's pipeline, SQL on memory tables, the demo."""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
import uuid

_LOGGER = logging.getLogger(__name__)


def _cmd_up(args) -> int:
    import stack
    stack.up()
    print(json.dumps(stack.status(), indent=2, default=str))
    return 0


def _cmd_down(args) -> int:
    import stack
    stack.down()
    return 0


def _cmd_status(args) -> int:
    import stack
    status = stack.status()
    print(json.dumps(status, indent=2, default=str))
    return 0


def _produce_spec(args):
    from hitstream.generator import ProduceSpec
    return ProduceSpec(topic=args.topic, bootstrap_servers=args.bootstrap_servers, count=args.count, rate=args.rate,
                       zipcodes=args.zipcodes, skew=args.skew, late_share=args.late_share,
                       late_by_seconds=args.late_by, malformed_share=args.malformed_share,
                       disorder_seconds=args.disorder, boundary_share=args.boundary_share,
                       partitions=args.partitions, seed=args.seed, keep_events=bool(args.report_events))


def _cmd_produce(args) -> int:
    from hitstream.generator import produce, write_events
    report = produce(_produce_spec(args), on_progress=lambda r: print(f"produced {r.produced}", file=sys.stderr))
    if args.report_events:
        write_events(report, args.report_events)
    print(json.dumps(report.summary(), indent=2))
    return 0


def _quiet_worker_disconnects(args) -> None:
    """Beam's LOOPBACK worker threads raise when Prism cancels or ends the job under them (UNAVAILABLE, "Connection
    reset by peer"); `hitstream run` reports how the job ended, so those tracebacks are not printed. Anything else
    is, as Python prints it."""
    if not _is_worker_disconnect(args.exc_value):
        threading.__excepthook__(args)


def _is_worker_disconnect(error) -> bool:
    import grpc
    return isinstance(error, grpc.RpcError) and error.code() in (grpc.StatusCode.UNAVAILABLE,
                                                                   grpc.StatusCode.CANCELLED)


class _QuietDataPlaneDisconnects(logging.Filter):
    """The same disconnects, as Beam's data plane logs them ("Failed to read inputs in the data plane.")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_worker_disconnect(record.exc_info[1]))


def _cmd_run(args, rest) -> int:
    from hitstream.job import observe_job
    from pipelines import blog
    threading.excepthook = _quiet_worker_disconnects
    logging.getLogger("apache_beam.runners.worker.data_plane").addFilter(_QuietDataPlaneDisconnects())
    return blog.run(rest, observe=observe_job)


def _cmd_sql(args) -> int:
    from hitstream.sql_client import query_remote
    result = query_remote(args.query, port=args.port, host=args.host, token=args.token)
    print(result)
    return 0


def _cmd_demo(args, rest) -> int:
    """Stack up, a live stream of hits, and the blog's pipeline on Prism reading it, with the live dashboard on
    http://127.0.0.1:<--dashboard-port, default 4040>/, until Ctrl-C or --seconds."""
    import stack
    from hitstream.generator import ProduceSpec, ensure_topic, produce
    from hitstream.job import observe_job
    from pipelines import blog
    stack.up()
    topic = args.topic or f"hits-demo-{uuid.uuid4().hex[:6]}"
    ensure_topic(args.bootstrap_servers, topic, 4)
    spec = ProduceSpec(topic=topic, bootstrap_servers=args.bootstrap_servers, count=int(args.rate * args.seconds),
                       rate=args.rate, zipcodes=12, late_share=0.02, malformed_share=0.01, partitions=4,
                       keep_events=False)
    producer = threading.Thread(target=produce, args=(spec,), daemon=True, name="demo-producer")
    print(f"demo: producing {args.rate:g} hits/s to topic {topic} for {args.seconds:g}s; counts follow.",
          file=sys.stderr)
    producer.start()
    argv = [f"--topic={topic}", f"--bootstrap-servers={args.bootstrap_servers}", "--trigger=processing-time=3s",
            "--starting-offsets=earliest", f"--run-seconds={args.seconds + 10:g}", "--dashboard", *rest]
    return blog.run(argv, observe=observe_job)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitstream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (default: WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="start the local stack: Kafka (KRaft) on 127.0.0.1:9092, MariaDB on 127.0.0.1:3306, "
                              "and build Prism; idempotent")
    sub.add_parser("down", help="stop the local stack")
    sub.add_parser("status", help="show the local stack's state as JSON")

    produce = sub.add_parser("produce", help="write ISP hits to a Kafka topic and print the per-zipcode totals")
    produce.add_argument("--topic", default="hits", help="topic to write (default: hits)")
    produce.add_argument("--bootstrap-servers", default="127.0.0.1:9092", help="default: 127.0.0.1:9092")
    produce.add_argument("--count", type=int, default=10_000, help="messages to write (default: 10000)")
    produce.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible "
                                                                 "(default: 0)")
    produce.add_argument("--zipcodes", type=int, default=50, help="distinct zipcodes (default: 50)")
    produce.add_argument("--skew", type=float, default=1.0, help="Zipf exponent of zipcode popularity; 0 = uniform "
                                                                 "(default: 1.0)")
    produce.add_argument("--late-share", type=float, default=0.0, help="share of hits with an older hittime "
                                                                       "(default: 0)")
    produce.add_argument("--late-by", type=float, default=120.0, help="how far back a late hit's hittime goes, "
                                                                      "seconds (default: 120)")
    produce.add_argument("--disorder", type=float, default=0.0, help="move each hittime back by up to this many "
                                                                     "seconds: out-of-order input (default: 0)")
    produce.add_argument("--boundary-share", type=float, default=0.0,
                         help="share of hits moved back onto a window boundary (hh:02, hh:07, ...) at most 150 s "
                              "behind them (default: 0)")
    produce.add_argument("--malformed-share", type=float, default=0.0, help="share of malformed messages "
                                                                            "(default: 0)")
    produce.add_argument("--partitions", type=int, default=4, help="partitions when the topic is created "
                                                                   "(default: 4)")
    produce.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    produce.add_argument("--report-events", default="", help="also write every well-formed hit with its partition "
                                                             "and offset to this Parquet file (default: off)")

    sub.add_parser("run", help="run the blog's pipeline; `hitstream run --help` lists its options", add_help=False)

    sql = sub.add_parser("sql", help="query a running job's memory tables with SQL (read-only DuckDB)")
    sql.add_argument("query", help='for example "SELECT * FROM zip_window_counts ORDER BY count DESC"')
    sql.add_argument("--port", type=int, default=4040, help="the job's dashboard port (default: 4040)")
    sql.add_argument("--host", default="127.0.0.1", help="the job's address (default: 127.0.0.1)")
    sql.add_argument("--token", default=None, help="the token that a job bound beyond loopback printed at start "
                                                   "(default: $HITSTREAM_DASHBOARD_TOKEN)")

    demo = sub.add_parser("demo", help="stack up, a live stream of hits, and the blog's pipeline with its sinks; "
                                       "extra options go to `hitstream run`")
    demo.add_argument("--topic", default="", help="topic (default: a new hits-demo-<id>)")
    demo.add_argument("--bootstrap-servers", default="127.0.0.1:9092", help="default: 127.0.0.1:9092")
    demo.add_argument("--rate", type=float, default=200.0, help="hits per second (default: 200)")
    demo.add_argument("--seconds", type=float, default=60.0, help="how long to produce (default: 60)")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "run":
        return _cmd_run(args, argv[argv.index("run") + 1:])
    if args.command == "demo":
        return _cmd_demo(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "produce": _cmd_produce,
            "sql": _cmd_sql}[args.command](args)


def end_process(code: int) -> None:
    """End this process quickly with `code`. Python's own teardown of a process that ran a job (its final garbage
    collection over Beam's objects) took 0.85 s after the job had ended; so the exit handlers run here (the Prism
    service's stop, logging's flush), the output is flushed, and the process ends without that teardown. The
    worker threads' disconnects as Prism stops are kept quiet by `_cmd_run`'s hooks."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> None:
    """The `hitstream` command."""
    from transforms.worker_memory import exec_with_allocator_env
    exec_with_allocator_env()
    end_process(main())


if __name__ == "__main__":
    entry()
