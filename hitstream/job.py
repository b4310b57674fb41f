"""What `hitstream run` puts around a job: its observer (`observe_job`), which `pipelines.blog.run` calls before it
submits the job and closes when it returns.

- the progress publisher (`hitstream/progress.py`), StreamingQueryProgress records every second;
- the dashboard with `--dashboard`, and the SQL server over the memory tables whenever a memory sink is wired
  (`hitstream sql`, the dashboard's SQL box): both on `--dashboard-host`:`--dashboard-port`;
- the terminal panel when stderr is a terminal.
"""
from __future__ import annotations

import logging

from hitstream import dashboard, server
from hitstream.job_metrics import JobMetrics
from hitstream.kafka_results import KafkaResults
from hitstream.progress import DEFAULT_INTERVAL, StreamingQuery, query_id_for
from hitstream.terminal import TerminalProgress, terminal_wanted
from pipelines.options import Settings
from pipelines.sinks import SinkSettings
from transforms.catalog import AGGREGATION_OF_ROW
from transforms.telemetry import REGISTRY

_LOGGER = logging.getLogger(__name__)

IN_PROCESS_RUNNERS = ("prism", "direct", "flink", "spark")  # presets whose workers run in this process (LOOPBACK)


def start_for_job(options, runner: str = "prism") -> StreamingQuery:
    """The progress publisher, the dashboard with --dashboard, and the terminal panel when stderr is a terminal.
    `options` is the HitstreamOptions view."""
    topic = options.subscribe_pattern or options.assign or options.topic
    name = f"blog[{topic}]" if options.source == "kafka" else f"blog[{options.source}]"
    in_process = runner in IN_PROCESS_RUNNERS
    live_results = None if in_process or not options.dashboard else _kafka_results(options)
    query = StreamingQuery(name=name, interval=DEFAULT_INTERVAL, query_id=query_id_for(options.checkpoint_dir),
                           registry=REGISTRY if in_process else JobMetrics(live_results))
    if options.dashboard:
        if not in_process and live_results is None:
            _LOGGER.warning("dashboard: the %s runner's workers run in other processes and no query is written to "
                            "a Kafka sink in JSON, so the result charts stay empty (see README, Dashboard)", runner)
        dashboard.serve(query, options.dashboard_port, options.dashboard_host)
    if terminal_wanted():
        query.add_listener(TerminalProgress())
    return query.start()


def _kafka_results(options):
    """The Kafka sink's topic as the dashboard's results, when an aggregation is written there in JSON."""
    aggregations = set(AGGREGATION_OF_ROW.values())
    sinks = SinkSettings.from_options(options)
    for choice in Settings.from_options(options).sinks:
        own = sinks.for_choice(choice)
        if choice.sink == "kafka" and choice.query in aggregations and own.kafka_value_format == "json":
            return KafkaResults(own.bootstrap_servers, own.output_topic, own.kafka_client).start()
    return None


class ObservedJob:
    """The running job's progress query and servers; `close()` publishes a last record and stops the servers."""

    def __init__(self, query: StreamingQuery) -> None:
        self.query = query

    def bind(self, result) -> None:
        self.query.bind(result)

    def close(self) -> None:
        self.query.close()  # a last record, then the hooks turn off (and a JobMetrics stops tailing results)
        server.stop_all()  # the dashboard and SQL box, with their requests in flight, before the interpreter exits


def observe_job(options, runner: str = "prism") -> ObservedJob:
    """`pipelines.blog.run`'s observer for `hitstream run`."""
    query = start_for_job(options, runner)
    if any(choice.sink == "memory" for choice in Settings.from_options(options).sinks):
        # The memory tables live in this process (the memory sink runs only where the workers are in it).
        server.ensure_started(options.dashboard_port, options.dashboard_host)
    return ObservedJob(query)
