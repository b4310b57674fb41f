"""Sinks built from explicit settings (pipelines/sinks.py): every kind builds, what a sink refuses is refused before
the graph is built, and each choice's output mode and the Kafka client settings reach the sink."""
from __future__ import annotations

import datetime
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import HitstreamOptions, SinkChoice
from pipelines.sinks import SinkSettings, check_sink_choices, sink_for
from transforms.kafka_java import WriteToKafkaJava
from transforms.rows import WindowCount
from transforms.sinks.base import Sink
from transforms.sinks.memory_store import STORE, memory_sql

UTC = datetime.timezone.utc


def _options(*args: str) -> HitstreamOptions:
    return PipelineOptions(list(args)).view_as(HitstreamOptions)


def _sink(text: str, options: HitstreamOptions) -> Sink:
    """What the pipeline does for one --sink choice: check the choices, then build the sink."""
    choice = SinkChoice.parse(text)
    check_sink_choices([SinkChoice.parse(s) for s in options.sinks or ()] + [choice], options)
    return sink_for(choice, SinkSettings.from_options(options))


def test_registry_builds_every_sink(tmp_path):
    options = _options(f"--parquet-path={tmp_path}/hits", f"--jdbc-url=sqlite:///{tmp_path}/x.db",
                       "--runner=PrismRunner", "--environment_type=LOOPBACK",
                       "--sink=hits=parquet:append", "--sink=zip_counts=memory:update")
    for kind, query in [("console", "zip_counts"), ("memory", "zip_counts"), ("parquet", "hits"),
                        ("jdbc", "zip_counts"), ("kafka", "zip_counts"), ("foreach", "zip_counts")]:
        assert isinstance(_sink(f"{query}={kind}", options), Sink), kind


def test_kafka_sink_io_java_builds_beams_java_write():
    options = _options("--kafka-sink-io=java", "--output-topic=counts", "--bootstrap-servers=broker:9092")
    sink = _sink("zip_counts=kafka:update", options)
    assert isinstance(sink, WriteToKafkaJava) and sink._topic == "counts"
    assert sink._producer_config["bootstrap.servers"] == "broker:9092"
    assert isinstance(_sink("zip_counts=kafka:update", _options()), Sink)  # native by default


def test_registry_refuses_parquet_in_update_or_complete_mode(tmp_path):
    options = _options(f"--parquet-path={tmp_path}/w", "--sink=zip_window_counts=parquet:update")
    with pytest.raises(ValueError, match="does not support"):
        _sink("zip_window_counts=parquet:update", options)


def test_registry_refuses_a_hostile_jdbc_table_name():
    with pytest.raises(ValueError, match="refused"):
        _sink("zip_counts=jdbc", _options("--jdbc-table=zip_test; DROP TABLE x"))


def test_registry_refuses_memory_on_dataflow():
    from runners.locality import RemoteRunnerError
    with pytest.raises(RemoteRunnerError, match="Dataflow"):
        _sink("zip_counts=memory:update", _options("--runner=DataflowRunner", "--sink=zip_counts=memory:update"))


@pytest.mark.parametrize("mode, kept", [("append", 3), ("update", 5)])
def test_memory_keeps_the_first_row_in_append_mode_and_the_newest_in_update_mode(mode, kept):
    # Before sinks got their choice's mode, --sink X=memory:append upserted like update mode.
    STORE.drop("zip_window_counts")
    writer = _sink(f"zip_window_counts=memory:{mode}", _options()).make_writer()
    start = datetime.datetime(2026, 3, 15, 22, 2, tzinfo=UTC)
    row = WindowCount(start, start + datetime.timedelta(minutes=10), "94107", 3)
    writer.write_rows([row], 0)
    writer.write_rows([row._replace(count=5)], 1)  # append mode: a window is final once written
    assert memory_sql("SELECT count FROM zip_window_counts") == [(kept,)]
    STORE.drop("zip_window_counts")


# --- settings per sink (`--sink QUERY=SINK[:MODE],KEY=VALUE...`) ---------------------------------------------------

def test_a_sinks_own_settings_replace_the_job_wide_flags_for_it_alone(tmp_path):
    options = _options("--output-topic=everyone", "--jdbc-url=sqlite:///a.db", "--console-num-rows=5")
    sinks = SinkSettings.from_options(options)
    kafka = SinkChoice.parse("zip_window_counts=kafka:update,topic=windows,value-format=text")
    assert kafka.settings == (("topic", "windows"), ("value-format", "text"))
    own = sinks.for_choice(kafka)
    assert (own.output_topic, own.kafka_value_format) == ("windows", "text")
    assert (sinks.output_topic, sinks.kafka_value_format) == ("everyone", "json"), "the job-wide ones are unchanged"
    assert sinks.for_choice(SinkChoice.parse("zip_counts=kafka")).output_topic == "everyone"
    jdbc = sinks.for_choice(SinkChoice.parse("zip_counts=jdbc:complete,url=sqlite:///b.db,table=totals"))
    assert (jdbc.jdbc_url, jdbc.jdbc_table) == ("sqlite:///b.db", "totals")
    console = sinks.for_choice(SinkChoice.parse("zip_counts=console,num-rows=50,truncate=false"))
    assert (console.console_num_rows, console.console_truncate) == (50, False)


def test_a_value_without_a_key_continues_the_one_before():
    choice = SinkChoice.parse("hits=parquet:append,path=/data/h,partition-by=zipcode,day")
    assert choice.settings == (("path", "/data/h"), ("partition-by", "zipcode,day"))
    settings = SinkSettings.from_options(_options("--parquet-path=/elsewhere/hits"))
    assert settings.for_choice(choice).parquet_partition_by == "zipcode,day"
    assert settings.parquet_path_for(choice) == "/data/h"
    assert settings.parquet_path_for(SinkChoice.parse("zip_window_counts=parquet,path=w")) == "w", "used as given"
    assert settings.parquet_path_for(SinkChoice.parse("zip_window_counts=parquet")) == "/elsewhere/zip_window_counts"


@pytest.mark.parametrize("text, message", [
    ("zip_counts=kafka:update,table=x", "the kafka sink has no setting 'table'; its settings: topic, value-format, io"),
    ("zip_counts=memory:complete,path=x", "the memory sink has no setting 'path'; its settings: none"),
    ("zip_counts=console,num-rows=many", "num-rows='many'"),
    ("zip_counts=console,truncate=yes", "write true or false"),
    ("zip_counts=kafka,value-format=avro", "choose from json, text"),
    ("zip_counts=kafka,topic=a,topic=b", "given twice"),
    ("zip_counts=kafka,counts", "write KEY=VALUE after the sink"),
])
def test_a_setting_the_sink_does_not_have_is_refused_with_its_settings(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SinkChoice.parse(text)
