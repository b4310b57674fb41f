"""Every option of the blog's pipeline, in one PipelineOptions subclass, and the Kafka client settings.

Complex options are parsed into frozen dataclasses (`SinkChoice`, `Settings`, the source config) before the graph
is built; `pipelines/preflight.py` then checks what they point to.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.catalog import QUERIES
from transforms.kafka_source.config import IDLE_WATERMARKS
from transforms.output_modes import OutputConfig, OutputMode, QueryKind, Trigger, parse_duration

_LOGGER = logging.getLogger(__name__)

SINK_KINDS = ("console", "memory", "parquet", "jdbc", "kafka", "foreach")

# The blog's wiring: raw hits to partitioned files, windowed counts to memory and the console, running counts to
# MySQL (complete) and back to Kafka (update).
BLOG_SINKS = ("hits=parquet:append", "zip_window_counts=memory:complete", "zip_window_counts=console:complete",
              "zip_counts=jdbc:complete", "zip_counts=kafka:update")


def _true_or_false(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError("write true or false")
    return text == "true"


def _one_of(*allowed: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"choose from {', '.join(allowed)}")
        return text
    return check


# The settings a `--sink` may carry for itself (`--sink zip_counts=kafka:update,topic=counts`), per sink: each
# stands for a job-wide flag, for that sink alone, as (the SinkSettings field it sets, its parser). Parquet's path
# is used as given (pipelines.sinks.SinkSettings.parquet_path_for), so it sets no field.
SINK_SETTINGS: Dict[str, Dict[str, Tuple[Optional[str], Callable[[str], Any]]]] = {
    "console": {"num-rows": ("console_num_rows", int), "truncate": ("console_truncate", _true_or_false)},
    "memory": {},
    "parquet": {"path": (None, str), "partition-by": ("parquet_partition_by", str)},
    "jdbc": {"url": ("jdbc_url", str), "table": ("jdbc_table", str)},
    "kafka": {"topic": ("output_topic", str), "value-format": ("kafka_value_format", _one_of("json", "text")),
              "io": ("kafka_sink_io", _one_of("native", "java"))},
    "foreach": {"writer": ("foreach_writer", str), "topic": ("output_topic", str), "url": ("jdbc_url", str),
                "table": ("jdbc_table", str)},
}


@dataclasses.dataclass(frozen=True)
class SinkChoice:
    """One `--sink QUERY=SINK[:MODE][,KEY=VALUE...]`: the settings are that sink's own (SINK_SETTINGS), in place of
    the job-wide flags."""
    query: str
    sink: str
    mode: OutputMode
    settings: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "SinkChoice":
        head, *tokens = text.split(",")
        try:
            query, rest = head.split("=", 1)
            sink, _, mode = rest.partition(":")
        except ValueError:
            raise ValueError(f"--sink {text!r}: write QUERY=SINK[:MODE], e.g. zip_counts=console:update") from None
        if query not in QUERIES:
            raise ValueError(f"--sink {text!r}: unknown query {query!r}; choose from {', '.join(QUERIES)}")
        if sink not in SINK_KINDS:
            raise ValueError(f"--sink {text!r}: unknown sink {sink!r}; choose from {', '.join(SINK_KINDS)}")
        default = "append" if QUERIES[query].kind is QueryKind.PROJECTION else "update"
        return cls(query, sink, OutputMode.parse(mode or default), _sink_settings(text, sink, tokens))

    def setting(self, key: str) -> Optional[str]:
        return dict(self.settings).get(key)


def _sink_settings(text: str, sink: str, tokens: List[str]) -> Tuple[Tuple[str, str], ...]:
    """KEY=VALUE tokens; a token without "=" continues the value before it (partition-by=zipcode,day)."""
    pairs: List[List[str]] = []
    for token in tokens:
        if "=" in token:
            key, value = token.split("=", 1)
            pairs.append([key.strip(), value])
        elif pairs:
            pairs[-1][1] += "," + token
        else:
            raise ValueError(f"--sink {text!r}: write KEY=VALUE after the sink, e.g. zip_counts=kafka:update,"
                             f"topic=counts")
    allowed = SINK_SETTINGS[sink]
    for key, value in pairs:
        if key not in allowed:
            keys = ", ".join(allowed) or "none"
            raise ValueError(f"--sink {text!r}: the {sink} sink has no setting {key!r}; its settings: {keys}")
        try:
            allowed[key][1](value)
        except ValueError as error:
            raise ValueError(f"--sink {text!r}: {key}={value!r}: {error}") from None
    if len({key for key, _ in pairs}) < len(pairs):
        raise ValueError(f"--sink {text!r}: a setting is given twice")
    return tuple((key, value) for key, value in pairs)


class HitstreamOptions(PipelineOptions):
    """hitstream's options. Beam's own (--streaming, --job_name, runner flags) pass through untouched."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add = parser.add_argument
        # Source
        add("--source", dest="source", default="kafka", choices=("kafka", "socket", "directory"),
            help="where hits come from (default: kafka)")
        add("--kafka-io", dest="kafka_io", default="native", choices=("native", "java"),
            help="Kafka reader: hitstream's Python source, or Beam's Java ReadFromKafka (KafkaIO, on Prism; see "
                 "README, Kafka I/O) (default: native)")
        add("--bootstrap-servers", dest="bootstrap_servers", default="127.0.0.1:9092",
            help="Kafka bootstrap servers (default: 127.0.0.1:9092)")
        add("--topic", dest="topic", default="hits", help="topic(s) to subscribe to, comma-separated (default: hits)")
        add("--subscribe-pattern", dest="subscribe_pattern", default=None,
            help="regex of topics to subscribe to instead of --topic; new matching topics are picked up "
                 "(default: off)")
        add("--assign", dest="assign", default=None,
            help='JSON of topic partitions to read instead of --topic, e.g. {"hits":[0,1]} (default: off)')
        add("--starting-offsets", dest="starting_offsets", default="earliest",
            help="earliest, latest, or JSON per partition; used where the consumer group has no committed offset "
                 "(default: earliest)")
        add("--starting-offsets-by-timestamp", dest="starting_offsets_by_timestamp", default=None, metavar="JSON",
            help='Spark\'s startingOffsetsByTimestamp: JSON of epoch-millisecond timestamps per partition, e.g. '
                 '{"hits":{"0":1773612000000}}; each partition starts at its first record at or after its time, '
                 'where the consumer group has no committed offset; takes precedence over --starting-offsets '
                 '(default: off)')
        add("--starting-timestamp", dest="starting_timestamp", type=int, default=None, metavar="MILLIS",
            help="Spark's startingTimestamp: one epoch-millisecond timestamp for every partition, as above "
                 "(default: off)")
        add("--ending-offsets", dest="ending_offsets", default=None,
            help="latest or JSON per partition: makes the read bounded (default: unbounded, or latest with "
                 "--trigger=available-now)")
        add("--max-offsets-per-trigger", dest="max_offsets_per_trigger", type=int, default=None,
            help="rate limit: offsets read per trigger interval across all partitions (default: no limit)")
        add("--include-headers", dest="include_headers", action="store_true",
            help="Spark's includeHeaders: keep each record's Kafka headers, which the dead letters then carry (the "
                 "Parquet and Kafka dead-letter sinks; the JDBC dead_letters table has no headers column) "
                 "(default: off)")
        add("--fail-on-data-loss", dest="fail_on_data_loss", default="true", choices=("true", "false"),
            help="fail when offsets were deleted before being read, or warn and count them (default: true)")
        # Not dest="kafka_options": that name is the property below, which adds the file's and the environment's
        # settings without putting them into the pipeline options.
        add("--kafka-option", dest="kafka_option_args", action="append", default=[], metavar="KEY=VALUE",
            help="a Kafka client setting KEY=VALUE (librdkafka's names) for the source's consumer and the Kafka "
                 "sinks' producers, e.g. security.protocol=SASL_SSL (repeatable; default: none). Not for secrets: "
                 "the command line shows in `ps`, shell history and the job's pipeline options; put "
                 "sasl.password, ssl.key.password... in --kafka-options-file or HITSTREAM_KAFKA_<KEY>")
        add("--kafka-options-file", dest="kafka_options_file", default=None, metavar="PATH",
            help="a file of Kafka client settings, one KEY=VALUE per line as in a Kafka client.properties (# "
                 "comments), the place for secrets; it is read when the job is built, only its path is a "
                 "pipeline option. Environment variables HITSTREAM_KAFKA_<KEY> (HITSTREAM_KAFKA_SASL_PASSWORD is "
                 "sasl.password) override it, and --kafka-option overrides both (default: none)")
        add("--group-id", dest="group_id", default="hitstream",
            help="consumer group whose committed offsets are the resume point (default: hitstream)")
        add("--timestamp-policy", dest="timestamp_policy", default="event-time",
            choices=("event-time", "create-time", "log-append-time"),
            help="element time: hittime from the value, or the Kafka timestamp (default: event-time)")
        add("--source-path", dest="source_path", default=None,
            help="with --source=directory: folder watched for new JSON-lines files; with --source=socket: "
                 "HOST:PORT (default: none)")
        # Queries
        add("--trigger", dest="trigger", default="processing-time=5s",
            help="processing-time=<interval> or available-now (default: processing-time=5s)")
        add("--watermark-delay", dest="watermark_delay", default="10 minutes",
            help="like withWatermark: how late an event may be and still count in its windows "
                 "(default: 10 minutes)")
        add("--idle-watermark", dest="idle_watermark", default="data", choices=IDLE_WATERMARKS,
            help="where a caught-up Kafka partition's watermark goes, so that it holds no window back: 'data', "
                 "to the highest event time the job has read minus the delay, as Spark's global watermark (a "
                 "replay or backfill of old hits is not late); 'wall-clock', to now minus the delay, for sources "
                 "whose event time tracks real time and whose other partitions may be quiet too (default: data)")
        add("--window-size", dest="window_size", default="10 minutes", help="sliding window size (default: 10 minutes)")
        add("--window-period", dest="window_period", default="5 minutes",
            help="sliding window period (default: 5 minutes)")
        add("--window-offset", dest="window_offset", default="2 minutes",
            help="sliding window offset from the epoch (default: 2 minutes)")
        # Sinks
        add("--sink", dest="sinks", action="append", default=None,
            help="QUERY=SINK[:MODE][,KEY=VALUE...], repeatable; queries: " + ", ".join(QUERIES) + "; sinks: "
                 + ", ".join(SINK_KINDS) + "; modes: append, update, complete; KEY=VALUE: that sink's own "
                 "setting in place of its job-wide flag (--console-num-rows, --parquet-path, --jdbc-url, "
                 "--output-topic, ...): " + "; ".join(
                     f"{sink} {', '.join(keys)}" for sink, keys in SINK_SETTINGS.items() if keys)
                 + " (default: the blog's: " + " ".join(BLOG_SINKS) + ")")
        add("--console-num-rows", dest="console_num_rows", type=int, default=20,
            help="rows shown per console batch (default: 20)")
        add("--console-truncate", dest="console_truncate", default="true", choices=("true", "false"),
            help="cut long console cells (default: true)")
        add("--parquet-path", dest="parquet_path", default="./hitstream-output/hits",
            help="base folder of the Parquet sink (default: ./hitstream-output/hits)")
        add("--parquet-partition-by", dest="parquet_partition_by", default="zipcode,day",
            help="Hive partition columns of the Parquet sink (default: zipcode,day)")
        add("--jdbc-url", dest="jdbc_url", default=None,
            help="SQLAlchemy URL of the JDBC sink, with a user but no password (mysql+pymysql://user@host:3306/db): "
                 "the workers read the password from HITSTREAM_DB_PASSWORD, or from the file named by "
                 "HITSTREAM_DB_PASSWORD_FILE; a password in the URL shows in `ps` and the pipeline options "
                 "(default: sqlite:///hitstream-output/hitstream.db)")
        add("--jdbc-table", dest="jdbc_table", default=None, help="JDBC table (default: zip_test for zip_counts, "
                                                                  "else the query name)")
        add("--output-topic", dest="output_topic", default="hits-counts",
            help="topic of the Kafka sink (default: hits-counts)")
        add("--kafka-sink-io", dest="kafka_sink_io", default="native", choices=("native", "java"),
            help="Kafka sink writer: hitstream's confluent-kafka producer, or Beam's Java WriteToKafka (default: "
                 "native)")
        add("--kafka-value-format", dest="kafka_value_format", default="json", choices=("json", "text"),
            help="Kafka sink value: JSON, or the blog's zipcode:count text (default: json)")
        add("--foreach-writer", dest="foreach_writer", default=None,
            help="foreach sink: MODULE:NAME of a ForeachWriter subclass (open/process/close) or a function "
                 "fn(rows, batch_id) (default: the fan-out example, to --output-topic and --jdbc-url)")
        add("--dead-letter-topic", dest="dead_letter_topic", default=None,
            help="topic for dead letters (default: none)")
        add("--dead-letter-path", dest="dead_letter_path", default=None,
            help="folder for dead letters as Parquet (default: none)")
        add("--checkpoint-dir", dest="checkpoint_dir", default=None,
            help="folder for restart state: offsets and sink commit logs (default: none)")
        # Running
        add("--run-seconds", dest="run_seconds", type=float, default=0.0,
            help="stop a streaming run after this many seconds; 0 = until Ctrl-C (default: 0)")
        add("--dashboard", dest="dashboard", action="store_true", default=False,
            help="serve the live, read-only dashboard (default: off)")
        add("--dashboard-host", dest="dashboard_host", default="127.0.0.1",
            help="address the dashboard and SQL server listen on; anything but loopback lets other machines in, "
                 "with the token in the URL printed at start (or $HITSTREAM_DASHBOARD_TOKEN) (default: 127.0.0.1)")
        add("--dashboard-port", dest="dashboard_port", type=int, default=4040,
            help="dashboard and SQL port (default: 4040)")

    @property
    def kafka_options(self) -> List[str]:
        """Every Kafka client setting as KEY=VALUE (see `kafka_client_settings`), for the source and the sinks.

        A property, not a parsed option: the settings of --kafka-options-file and HITSTREAM_KAFKA_* are read
        here, when the graph is built, and never enter the pipeline options, which runners show and workers log.
        """
        return [f"{key}={value}" for key, value in kafka_client_settings(self).items()]


KAFKA_ENV_PREFIX = "HITSTREAM_KAFKA_"
# Kafka client settings whose values are secrets (librdkafka's names): masked in reprs, warned about on the
# command line.
_SECRET_KEY_PARTS = ("password", "secret", "jaas", "ssl.key.pem", "oauthbearer.config")


def is_secret_setting(key: str) -> bool:
    return any(part in key.lower() for part in _SECRET_KEY_PARTS)


class KafkaClientSettings(dict):
    """Kafka client settings: a plain dict to confluent-kafka, but its repr (which ends up in logs and
    tracebacks, e.g. inside the source config's) shows secret values as ***."""

    def __repr__(self) -> str:
        return repr({key: "***" if is_secret_setting(key) else value for key, value in self.items()})


def read_properties(path: str) -> Dict[str, str]:
    """The KEY=VALUE lines of a Java-style properties file; blank lines and `#` or `!` comments are skipped."""
    settings = {}
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line[0] in "#!":
                    continue
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    # The line is not quoted back: it may hold a secret.
                    raise ValueError(f"--kafka-options-file {path}, line {number}: write KEY=VALUE")
                settings[key.strip()] = value.strip()
    except OSError as error:
        raise ValueError(f"--kafka-options-file {path}: cannot read it ({error.strerror})") from None
    return settings


def kafka_client_settings(options, warn: bool = False) -> KafkaClientSettings:
    """The Kafka client settings (librdkafka's names) of the source's consumer and the sinks' producers, later ones
    winning: --kafka-options-file, then HITSTREAM_KAFKA_<KEY> variables (upper case, `_` for `.`:
    HITSTREAM_KAFKA_SASL_PASSWORD is sasl.password), then --kafka-option. `warn` logs secrets given on the command
    line and an options file that other users can read."""
    settings = KafkaClientSettings()
    path = options.kafka_options_file
    if path:
        settings.update(read_properties(path))
        if warn and os.stat(path).st_mode & 0o077:
            _LOGGER.warning("--kafka-options-file %s can be read by other users; chmod 600 it", path)
    for name, value in sorted(os.environ.items()):
        if name.startswith(KAFKA_ENV_PREFIX) and len(name) > len(KAFKA_ENV_PREFIX):
            settings[name[len(KAFKA_ENV_PREFIX):].lower().replace("_", ".")] = value
    for setting in options.kafka_option_args:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ValueError("a --kafka-option is not KEY=VALUE (not shown here: it may hold a secret)")
        if warn and is_secret_setting(key):
            _LOGGER.warning("--kafka-option %s: a secret on the command line shows in `ps`, shell history and the "
                            "pipeline options; put it in --kafka-options-file or %s%s instead", key,
                            KAFKA_ENV_PREFIX, key.upper().replace(".", "_"))
        settings[key] = value
    return settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """HitstreamOptions parsed and checked: what the graph builder reads."""
    trigger: Trigger
    watermark_delay: float
    window_size: float
    window_period: float
    window_offset: float
    sinks: tuple

    @property
    def streaming(self) -> bool:
        return not self.trigger.is_available_now

    @classmethod
    def from_options(cls, options: HitstreamOptions) -> "Settings":
        trigger = Trigger.parse(options.trigger)
        sinks = tuple(SinkChoice.parse(s) for s in (options.sinks or BLOG_SINKS))
        settings = cls(trigger=trigger, watermark_delay=parse_duration(options.watermark_delay),
                       window_size=parse_duration(options.window_size),
                       window_period=parse_duration(options.window_period),
                       window_offset=parse_duration(options.window_offset), sinks=sinks)
        settings.validate()
        return settings

    def validate(self) -> None:
        for choice in self.sinks:
            OutputConfig(mode=choice.mode, trigger=self.trigger, watermark_delay=self.watermark_delay).validate(
                QUERIES[choice.query].kind, choice.query)
        if self.window_period <= 0 or self.window_size <= 0:
            raise ValueError("--window-size and --window-period must be positive")
