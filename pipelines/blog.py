"""The blog's pipeline: Kafka -> parse -> hits, zip_counts, isp_counts, zip_window_counts -> the chosen sinks.

Run it (after `hitstream up`):

    # Prism, the embedded default, streaming with a 5 s trigger
    hitstream run --topic hits --sink zip_counts=console:update
    # a bounded run over what the topic holds now
    hitstream run --topic hits --trigger available-now --sink zip_window_counts=console:complete
    # the same graph on other runners
    hitstream run --runner direct --trigger available-now ...
    hitstream run --runner flink ...      # needs Beam's Flink job-server jar (see README, Runners)
    hitstream run --runner spark ...      # needs Beam's Spark job-server jar
    hitstream run --runner dataflow ...   # builds the job offline (--dry_run); see runners/dataflow.py to submit
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

import runners
from pipelines.options import HitstreamOptions, KafkaClientSettings, Settings, SinkChoice, kafka_client_settings
from pipelines.preflight import preflight
from pipelines.sinks import SinkSettings, check_sink_choices, dead_letter_sinks, sink_for
from pipelines.wait import WorkerDied, wait_for_job
from runners.jars import java_kafka_expansion_service
from transforms.checkpoint import AggregateCheckpoint, QuerySpec, forget_save_failure, save_failure
from transforms.directory_source import ReadFromDirectory
from transforms.kafka_java import ReadFromKafkaJava
from transforms.catalog import QUERIES
from transforms.kafka_source import KafkaSourceConfig, ReadFromKafka
from transforms.output_modes import OutputConfig, OutputMode, QueryKind
from transforms.parse import ParseHits
from transforms.queries import IspCounts, ZipCounts, ZipWindowCounts, window_accounting
from transforms.socket_source import ReadFromSocket
from transforms.worker_memory import exec_with_allocator_env

_LOGGER = logging.getLogger(__name__)


def kafka_source_config(options: HitstreamOptions, settings: Settings,
                        checkpoint: Optional[AggregateCheckpoint] = None) -> KafkaSourceConfig:
    spark_options = {"kafka.bootstrap.servers": options.bootstrap_servers,
                     "startingOffsets": options.starting_offsets,
                     "failOnDataLoss": options.fail_on_data_loss,
                     "includeHeaders": str(options.include_headers).lower()}
    if options.subscribe_pattern:
        spark_options["subscribePattern"] = options.subscribe_pattern
    elif options.assign:
        spark_options["assign"] = options.assign
    else:
        spark_options["subscribe"] = options.topic
    if options.starting_offsets_by_timestamp:
        spark_options["startingOffsetsByTimestamp"] = options.starting_offsets_by_timestamp
    elif options.starting_timestamp is not None:
        spark_options["startingTimestamp"] = str(options.starting_timestamp)
    ending = options.ending_offsets or ("latest" if not settings.streaming else None)
    if ending:
        spark_options["endingOffsets"] = ending
    if options.max_offsets_per_trigger:
        spark_options["maxOffsetsPerTrigger"] = str(options.max_offsets_per_trigger)
    # --kafka-options-file, HITSTREAM_KAFKA_* and --kafka-option (secrets warned about there), as kafka.* options.
    for key, value in kafka_client_settings(options, warn=True).items():
        spark_options[f"kafka.{key}"] = value
    config = KafkaSourceConfig.from_spark_options(
        spark_options, group_id=options.group_id, timestamp_policy=options.timestamp_policy, batched=True,
        watermark_delay_seconds=settings.watermark_delay, idle_watermark=options.idle_watermark,
        trigger_interval_seconds=settings.trigger.interval or 1.0, checkpoint=checkpoint)
    # The same settings, in a dict whose repr masks secrets, should the config ever be logged.
    return dataclasses.replace(config, kafka_options=KafkaClientSettings(config.kafka_options))


def _reader(hs: HitstreamOptions, settings: Settings, checkpoint: Optional[AggregateCheckpoint]) -> beam.PTransform:
    """The source: Kafka (native or Java), or the blog's other streams, a socket or a directory."""
    event_time = hs.timestamp_policy == "event-time"
    if hs.source == "socket":
        return ReadFromSocket(hs.source_path or "", event_time, settings.watermark_delay)
    if hs.source == "directory":
        return ReadFromDirectory(hs.source_path or "", bounded=not settings.streaming, event_time=event_time)
    config = kafka_source_config(hs, settings, checkpoint)
    if hs.kafka_io == "java":
        windowed = any(QUERIES[choice.query].kind is QueryKind.WINDOWED_AGGREGATION for choice in settings.sinks)
        return ReadFromKafkaJava(config, java_kafka_expansion_service(), streaming=settings.streaming,
                                 windowed=windowed)
    return ReadFromKafka(config)


def _query(name: str, mode: OutputMode, settings: Settings, batched: bool, seed: Sequence[tuple] = (),
           checkpoint: Optional[AggregateCheckpoint] = None, checkpoint_name: str = "") -> beam.PTransform:
    output = OutputConfig(mode=mode, trigger=settings.trigger, watermark_delay=settings.watermark_delay)
    counting = dict(batched=batched, seed=seed, checkpoint=checkpoint, checkpoint_name=checkpoint_name)
    if name == "zip_counts":
        return ZipCounts(output, **counting)
    if name == "isp_counts":
        return IspCounts(output, **counting)
    return ZipWindowCounts(settings.window_size, settings.window_period, settings.window_offset, output, **counting)


def _checkpoint_name(choice: SinkChoice) -> str:
    """The aggregation checkpoint's entry for a query in a mode: one per query, and one more for windows in complete
    mode, which keep the late hits the other modes drop."""
    windowed = QUERIES[choice.query].kind is QueryKind.WINDOWED_AGGREGATION
    return f"{choice.query}:complete" if windowed and choice.mode is OutputMode.COMPLETE else choice.query


def _aggregate_checkpoint(hs: HitstreamOptions, settings: Settings) -> Tuple[AggregateCheckpoint, Dict[str, list]]:
    """With --checkpoint-dir on the Kafka fast path: what the aggregation checkpoint counts (see
    `_checkpoint_name`), and the saved counts each query starts from. A broken or foreign file is refused here,
    before the job starts, not by the read inside it."""
    modes = {_checkpoint_name(choice): choice for choice in settings.sinks
             if QUERIES[choice.query].kind is not QueryKind.PROJECTION}
    specs = []
    for name, choice in sorted(modes.items()):
        query = _query(choice.query, choice.mode, settings, batched=True)
        window = query.window_params()
        specs.append(QuerySpec(name, query.KEY_FIELD, window, keep_late=query.keeps_late))
    checkpoint = AggregateCheckpoint(os.path.abspath(hs.checkpoint_dir), tuple(specs))
    forget_save_failure(checkpoint.directory)
    return checkpoint, checkpoint.seeds()


def build_pipeline(p: beam.Pipeline, options: PipelineOptions, records: Optional[beam.PCollection] = None
                   ) -> Dict[str, beam.PCollection]:
    """Wire the blog's graph onto `p`; returns every query's PCollection by name ("hits", "dead_letter",
    "<query>:<mode>"), so tests can attach assertions. `records` replaces the Kafka read (e.g. a TestStream).
    Reading Kafka natively, "hits" holds HitBatch elements (the fast path); otherwise Hit elements."""
    hs = options.view_as(HitstreamOptions)
    settings = Settings.from_options(hs)
    check_sink_choices(settings.sinks, options)
    sink_settings = SinkSettings.from_options(hs)
    # The fast path carries one element per Kafka poll (KafkaBatch, then HitBatch) instead of one per record.
    batched = records is None and hs.source == "kafka" and hs.kafka_io == "native"
    checkpoint, seeds = _aggregate_checkpoint(hs, settings) if batched and hs.checkpoint_dir else (None, {})
    if records is None:
        records = p | "Read" >> _reader(hs, settings, checkpoint)
    parsed = records | "Parse" >> ParseHits(batched=batched)
    # On the fast path "hits" holds HitBatch elements: every sink takes a batch's hits as its rows (SinkWriteFn), so
    # no step pays Beam's per-element cost once per hit.
    outputs = {"dead_letter": parsed.dead_letter, "hits": parsed.good}
    for label, sink in dead_letter_sinks(sink_settings):
        parsed.dead_letter | label >> sink
    labels: Dict[str, int] = {}
    for choice in settings.sinks:
        name = choice.query if QUERIES[choice.query].kind is QueryKind.PROJECTION else f"{choice.query}:{choice.mode.value}"
        if name not in outputs:
            label = "".join(part.title() for part in choice.query.split("_")) + choice.mode.value.title()
            # Each query's pre-aggregation counts into the aggregation checkpoint (one entry per _checkpoint_name).
            entry = _checkpoint_name(choice)
            outputs[name] = parsed.good | label >> _query(choice.query, choice.mode, settings, batched,
                                                          seeds.get(entry, ()), checkpoint, entry)
        sink_label = f"Write{choice.sink.title()}{name.replace(':', '_').title().replace('_', '')}"
        labels[sink_label] = labels.get(sink_label, 0) + 1
        if labels[sink_label] > 1:  # the same query to a second sink of the kind, with settings of its own
            sink_label += str(labels[sink_label])
        outputs[name] | sink_label >> sink_for(choice, sink_settings)
    return outputs


def _split_runner(argv: list) -> tuple:
    """hitstream's `--runner NAME` (a preset) is taken out; everything else goes to Beam."""
    runner, rest, i = "prism", [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--runner" and i + 1 < len(argv):
            runner, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return runner, rest


class _Unobserved:
    """The observer of a job nobody watches: `run` without one (`python -m pipelines.blog`)."""

    def bind(self, result) -> None:
        pass

    def close(self) -> None:
        pass


def run(argv=None, observe: Optional[Callable[[HitstreamOptions, str], Any]] = None) -> int:
    """Build and run the blog's pipeline from `hitstream run`'s arguments; the exit code.

    `observe(options, runner)` is called before the job is submitted and returns what watches it: its
    `bind(result)` gets the running job, its `close()` comes when run returns. `hitstream run` passes
    `hitstream.job.observe_job` (progress records, the dashboard, the SQL server over memory tables)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        parser = argparse.ArgumentParser(prog="hitstream run", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--runner", default="prism", choices=runners.RUNNERS,
                            help="where the job runs (default: prism)")
        HitstreamOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    runner, beam_argv = _split_runner(argv)
    try:
        hs = PipelineOptions(beam_argv).view_as(HitstreamOptions)
        settings = Settings.from_options(hs)
        preflight(hs, settings)
        options = PipelineOptions(beam_argv + runners.pipeline_args(
            runner, streaming=settings.streaming,
            checkpoint_dir=os.path.abspath(hs.checkpoint_dir) if hs.checkpoint_dir else "", user_args=beam_argv))
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options)
    except (ValueError, RuntimeError) as error:  # bad options, a missing runner or jar: say what to change
        print(f"hitstream run: {error}", file=sys.stderr)
        return 2
    query = (observe or (lambda *_: _Unobserved()))(hs, runner)
    try:
        with runners.WorkerExits() as exits:
            result = pipeline.run()
            query.bind(result)
            state = wait_for_job(result, exits, settings.streaming, hs.run_seconds)
    except WorkerDied as error:
        print(f"hitstream run: the job failed: {error}", file=sys.stderr)
        return 1
    finally:
        query.close()
    failure = save_failure(hs.checkpoint_dir) if hs.checkpoint_dir else None
    if failure:  # the last saves of a bounded run come after its reads, so only the job's end can tell
        print(f"hitstream run: {failure}. The file holds the last whole save; free space and run again on the same "
              f"checkpoint dir: it goes on from there.", file=sys.stderr)
        return 1
    if state is None:  # a streaming job stopped as asked
        return 0
    if settings.streaming:
        return 0 if state == PipelineState.DONE else 1
    return 0 if state == PipelineState.DONE and _windows_balance(result) else 1


def _windows_balance(result) -> bool:
    """At the end of a bounded run every window has closed, so the windowed queries' final windows must hold every
    hit that went into them (transforms.queries.WindowAccounting). If not, the runner dropped hits without a word:
    say so and fail the run rather than leave short windows in the sinks unnoticed."""
    accounting = window_accounting(result.metrics())
    if not accounting.balanced:
        _LOGGER.error("zip_window_counts: the final windows hold %s (hit, window) memberships of the %s that went in: "
                      "the runner dropped hits behind the watermark (%s)", f"{accounting.slots_final:,}",
                      f"{accounting.slots_in:,}", accounting)
        print(f"hitstream run: windows lost hits: {accounting}", file=sys.stderr)
    return accounting.balanced


if __name__ == "__main__":
    exec_with_allocator_env()
    logging.basicConfig(level=logging.INFO)
    sys.exit(run())
