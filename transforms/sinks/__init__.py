"""The blog's sinks, one module each, on one base (`base.py`): console, memory, parquet, jdbc, kafka, foreach.

`sink_for(kind, query, options)` turns `--sink QUERY=KIND[:MODE]` and the sink options into a sink PTransform; the
pipeline calls it for each choice. Every sink takes rows (update/append) and Snapshots (complete) alike.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import apache_beam as beam

from transforms.sinks.tables import QUERY_ROW_TYPES


def _modes(options, kind: str, query: str) -> set:
    from pipelines.options import Settings
    return {choice.mode.value for choice in Settings.from_options(options).sinks
            if choice.sink == kind and choice.query == query}


def _foreach(options, query: str) -> beam.PTransform:
    from transforms.sinks.foreach import (
        ForeachWriter, KafkaAndSqliteFanOut, WriteToForeach, WriteToForeachBatch)
    from transforms.sinks.jdbc import DEFAULT_URL
    spec: Optional[str] = getattr(options, "foreach_writer", None)
    if not spec:
        return WriteToForeach(KafkaAndSqliteFanOut(
            options.bootstrap_servers, options.output_topic, options.jdbc_url or DEFAULT_URL,
            options.jdbc_table, query=query), name=query)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"--foreach-writer {spec!r}: write MODULE:NAME, e.g. mypkg.sinks:MyWriter")
    target = getattr(importlib.import_module(module_name), attr)
    if isinstance(target, type) and issubclass(target, ForeachWriter):
        return WriteToForeach(target(), name=query)
    if callable(target):
        return WriteToForeachBatch(target, name=query)
    raise ValueError(f"--foreach-writer {spec!r} is neither a ForeachWriter subclass nor a function")


def sink_for(kind: str, query: str, options) -> beam.PTransform:
    """The sink PTransform for one `--sink` choice. `options` is the pipeline's HitstreamOptions view."""
    if kind == "console":
        from transforms.sinks.console import WriteToConsole
        return WriteToConsole(query, options.console_num_rows, options.console_truncate == "true")
    if kind == "memory":
        from transforms.sinks.memory import WriteToMemory, check_local_runner
        check_local_runner(options)
        if len(_modes(options, kind, query)) > 1:
            raise ValueError(f"--sink {query}=memory is given with two output modes; a memory table holds one "
                             f"result, so choose one mode for {query}")
        return WriteToMemory(query, sql_port=options.dashboard_port, sql_host=options.dashboard_host)
    if kind == "parquet":
        from transforms.sinks.parquet import WriteToParquet
        modes = _modes(options, kind, query)
        if modes - {"append"}:
            raise ValueError(f"--sink {query}=parquet:{'/'.join(sorted(modes - {'append'}))}: Data source parquet "
                             f"does not support that output mode (as in Spark, files take append only); use "
                             f"{query}=parquet:append, or the jdbc or memory sink")
        # --parquet-path is the hits folder; other queries get a sibling folder named after them.
        path = options.parquet_path if query == "hits" else os.path.join(
            os.path.dirname(os.path.abspath(options.parquet_path)), query)
        return WriteToParquet(path, options.parquet_partition_by, options.checkpoint_dir,
                              row_type=QUERY_ROW_TYPES[query], name=query)
    if kind == "jdbc":
        from transforms.sinks.jdbc import WriteToJdbc
        return WriteToJdbc(options.jdbc_url, options.jdbc_table, query=query)
    if kind == "kafka":
        from transforms.sinks.kafka import WriteToKafka
        return WriteToKafka(options.bootstrap_servers, options.output_topic, options.kafka_value_format,
                            producer_config=_kafka_options(options), name=f"{query}.{options.output_topic}")
    if kind == "foreach":
        return _foreach(options, query)
    raise ValueError(f"unknown sink {kind!r}; choose console, memory, parquet, jdbc, kafka or foreach")


def _kafka_options(options) -> dict:
    config = {}
    for setting in getattr(options, "kafka_options", None) or ():
        key, sep, value = setting.partition("=")
        if sep:
            config[key] = value
    return config


def dead_letter_sinks(options) -> list:
    """(label, PTransform) for `--dead-letter-topic` and `--dead-letter-path`, for the pipeline to apply to its
    dead-letter PCollection."""
    sinks = []
    if getattr(options, "dead_letter_topic", None):
        from transforms.sinks.kafka import WriteDeadLettersToKafka
        sinks.append(("WriteDeadLettersKafka", WriteDeadLettersToKafka(
            options.bootstrap_servers, options.dead_letter_topic, producer_config=_kafka_options(options))))
    if getattr(options, "dead_letter_path", None):
        from transforms.sinks.parquet import WriteDeadLettersToParquet
        sinks.append(("WriteDeadLettersParquet", WriteDeadLettersToParquet(
            options.dead_letter_path, checkpoint_dir=options.checkpoint_dir)))
    return sinks
