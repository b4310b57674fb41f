"""The Dataflow job graph, built offline (`--dry_run --no_auth`): no network, no credentials."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2, standard_window_fns_pb2

import runners
from pipelines.blog import build_pipeline

SLIDING = "beam:window_fn:sliding_windows:v1"


def test_streaming_job_graph_has_stable_steps_windowing_and_setup_py():
    args = ["--topic=hits", "--sink=zip_window_counts=console:update", "--sink=zip_counts=console:complete",
            "--sink=isp_counts=console:update"]
    options = PipelineOptions(args + runners.pipeline_args("dataflow", streaming=True))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()
    assert result.state == "DONE"
    job = result.job
    assert job.proto.type == 2  # JOB_TYPE_STREAMING

    components = job.proto_pipeline.components
    names = {t.unique_name for t in components.transforms.values()}
    for step in ("Read/ResolvePartitions", "Read/SpreadPartitions", "Read/ReadPartitions", "Parse/ParseHit",
                 "ZipCountsComplete/Count", "ZipCountsComplete/CompleteTable", "IspCountsUpdate/Count",
                 "ZipWindowCountsUpdate/PreAggregate", "ZipWindowCountsUpdate/Window", "ZipWindowCountsUpdate/Count",
                 "WriteConsoleZipWindowCountsUpdate"):
        assert step in names, step

    sliding = [standard_window_fns_pb2.SlidingWindowsPayload.FromString(ws.window_fn.payload)
               for ws in components.windowing_strategies.values() if ws.window_fn.urn == SLIDING]
    assert sliding and all((p.size.seconds, p.period.seconds, p.offset.seconds) == (600, 300, 120)
                           for p in sliding)

    staged = {beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
              for env in components.environments.values() for d in env.dependencies}
    assert "workflow.tar.gz" in staged  # the setup.py sdist, installed on the workers
