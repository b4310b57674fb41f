"""Sinks built from explicit settings: each `--sink QUERY=SINK[:MODE]` choice, with its query and output mode, and
the typed settings of the sinks (`SinkSettings`, read once from the options).

    settings = SinkSettings.from_options(hs)
    check_sink_choices(choices, options)        # before the graph is built: modes a sink refuses, remote runners
    rows | sink_for(SinkChoice.parse("zip_window_counts=memory:append"), settings)
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import apache_beam as beam

from pipelines.options import SINK_SETTINGS, KafkaClientSettings, SinkChoice, kafka_client_settings
from runners.jars import java_kafka_expansion_service
from runners.locality import check_local_runner
from transforms.kafka_java import WriteToKafkaJava
from transforms.output_modes import OutputMode
from transforms.sinks.console import WriteToConsole
from transforms.sinks.foreach import ForeachWriter, KafkaAndSqliteFanOut, WriteToForeach, WriteToForeachBatch
from transforms.sinks.jdbc import DEFAULT_URL, WriteToJdbc
from transforms.sinks.kafka import WriteDeadLettersToKafka, WriteToKafka
from transforms.sinks.memory import WriteToMemory
from transforms.sinks.parquet import WriteDeadLettersToParquet, WriteToParquet
from transforms.catalog import ROW_TYPES


@dataclasses.dataclass(frozen=True)
class SinkSettings:
    """What the sinks take from the options (see `hitstream run --help` for each)."""
    console_num_rows: int = 20
    console_truncate: bool = True
    parquet_path: str = "./hitstream-output/hits"  # the hits folder; other queries get a sibling folder
    parquet_partition_by: str = "zipcode,day"
    checkpoint_dir: Optional[str] = None
    jdbc_url: Optional[str] = None
    jdbc_table: Optional[str] = None
    bootstrap_servers: str = "127.0.0.1:9092"
    output_topic: str = "hits-counts"
    kafka_value_format: str = "json"
    kafka_sink_io: str = "native"  # or "java": Beam's Java WriteToKafka
    # Every Kafka producer's client settings (SASL/SSL, ...): the same as the source's consumer. Its repr masks
    # secrets.
    kafka_client: Mapping[str, str] = dataclasses.field(default_factory=KafkaClientSettings)
    foreach_writer: Optional[str] = None
    dead_letter_topic: Optional[str] = None
    dead_letter_path: Optional[str] = None

    @classmethod
    def from_options(cls, hs) -> "SinkSettings":
        """From the HitstreamOptions view."""
        return cls(console_num_rows=hs.console_num_rows, console_truncate=hs.console_truncate == "true",
                   parquet_path=hs.parquet_path, parquet_partition_by=hs.parquet_partition_by,
                   checkpoint_dir=hs.checkpoint_dir, jdbc_url=hs.jdbc_url, jdbc_table=hs.jdbc_table,
                   bootstrap_servers=hs.bootstrap_servers, output_topic=hs.output_topic,
                   kafka_value_format=hs.kafka_value_format, kafka_sink_io=hs.kafka_sink_io,
                   kafka_client=kafka_client_settings(hs),
                   foreach_writer=hs.foreach_writer, dead_letter_topic=hs.dead_letter_topic,
                   dead_letter_path=hs.dead_letter_path)

    def for_choice(self, choice: SinkChoice) -> "SinkSettings":
        """These settings with the choice's own (`--sink ...,KEY=VALUE`) in place of the job-wide flags."""
        own = SINK_SETTINGS[choice.sink]
        values = {}
        for key, value in choice.settings:
            field, parse = own[key]
            if field:
                values[field] = parse(value)
        return dataclasses.replace(self, **values)

    def parquet_path_for(self, choice: SinkChoice) -> str:
        """A Parquet sink's folder: its own `path` as given; else --parquet-path for hits and a sibling folder
        named after any other query."""
        own = choice.setting("path")
        if own:
            return own
        if choice.query == "hits":
            return self.parquet_path
        return os.path.join(os.path.dirname(os.path.abspath(self.parquet_path)), choice.query)


def _foreach(choice: SinkChoice, settings: SinkSettings) -> beam.PTransform:
    spec = settings.foreach_writer
    if not spec:
        return WriteToForeach(KafkaAndSqliteFanOut(
            settings.bootstrap_servers, settings.output_topic, settings.jdbc_url or DEFAULT_URL, settings.jdbc_table,
            query=choice.query, producer_config=dict(settings.kafka_client)), name=choice.query)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"--foreach-writer {spec!r}: write MODULE:NAME, e.g. mypkg.sinks:MyWriter")
    target = getattr(importlib.import_module(module_name), attr)
    if isinstance(target, type) and issubclass(target, ForeachWriter):
        return WriteToForeach(target(), name=choice.query)
    if callable(target):
        return WriteToForeachBatch(target, name=choice.query)
    raise ValueError(f"--foreach-writer {spec!r} is neither a ForeachWriter subclass nor a function")


def _kafka(choice: SinkChoice, settings: SinkSettings) -> beam.PTransform:
    if settings.kafka_sink_io == "java":
        producer_config = {**dict(settings.kafka_client), "bootstrap.servers": settings.bootstrap_servers}
        return WriteToKafkaJava(settings.output_topic, settings.kafka_value_format, producer_config,
                                java_kafka_expansion_service())
    return WriteToKafka(settings.bootstrap_servers, settings.output_topic, settings.kafka_value_format,
                        producer_config=dict(settings.kafka_client), name=f"{choice.query}.{settings.output_topic}")


_FACTORIES: Dict[str, Callable[[SinkChoice, SinkSettings], beam.PTransform]] = {
    "console": lambda c, s: WriteToConsole(c.query, s.console_num_rows, s.console_truncate),
    "memory": lambda c, s: WriteToMemory(c.query, append=c.mode is OutputMode.APPEND),
    "parquet": lambda c, s: WriteToParquet(s.parquet_path_for(c), s.parquet_partition_by, s.checkpoint_dir,
                                           row_type=ROW_TYPES[c.query], name=c.query),
    "jdbc": lambda c, s: WriteToJdbc(s.jdbc_url, s.jdbc_table, query=c.query),
    "kafka": _kafka,
    "foreach": _foreach,
}


def sink_for(choice: SinkChoice, settings: SinkSettings) -> beam.PTransform:
    """The sink PTransform for one `--sink` choice, with its own settings."""
    return _FACTORIES[choice.sink](choice, settings.for_choice(choice))


def check_sink_choices(choices: Iterable[SinkChoice], options) -> None:
    """What a sink refuses, before the graph is built: a memory table with two modes, files in a mode other than
    append, the memory sink on a runner whose workers are not in this process (`options`: the PipelineOptions)."""
    modes: Dict[Tuple[str, str], set] = {}
    for choice in choices:
        modes.setdefault((choice.sink, choice.query), set()).add(choice.mode.value)
    for (sink, query), chosen in sorted(modes.items()):
        if sink == "memory":
            check_local_runner(options)
            if len(chosen) > 1:
                raise ValueError(f"--sink {query}=memory is given with two output modes; a memory table holds one "
                                 f"result, so choose one mode for {query}")
        if sink == "parquet" and chosen - {"append"}:
            raise ValueError(f"--sink {query}=parquet:{'/'.join(sorted(chosen - {'append'}))}: Data source parquet "
                             f"does not support that output mode (as in Spark, files take append only); use "
                             f"{query}=parquet:append, or the jdbc or memory sink")


def dead_letter_sinks(settings: SinkSettings) -> List[Tuple[str, beam.PTransform]]:
    """(label, PTransform) for `--dead-letter-topic` and `--dead-letter-path`, for the pipeline to apply to its
    dead-letter PCollection."""
    sinks = []
    if settings.dead_letter_topic:
        sinks.append(("WriteDeadLettersKafka", WriteDeadLettersToKafka(
            settings.bootstrap_servers, settings.dead_letter_topic, producer_config=dict(settings.kafka_client))))
    if settings.dead_letter_path:
        sinks.append(("WriteDeadLettersParquet", WriteDeadLettersToParquet(
            settings.dead_letter_path, checkpoint_dir=settings.checkpoint_dir)))
    return sinks
