"""Where `hitstream run` spends its start-up: the bounded blog-core job on an empty topic, phase by phase.

    python -m bench.startup                 # 5 runs, the median of each phase
    python -m bench.startup --runs 1

A child process runs `hitstream run` (Prism, available-now, zip_counts and zip_window_counts to Kafka in update mode,
dead letters to Kafka) with timing wrappers around the steps below; the workers run in that process (LOOPBACK), so
their steps are timed too. Each phase is the time from its start to its end, with its start and end in seconds
from the launch; "returned" is when `hitstream run` returned and "exit" when its process had ended. Phases that
overlap are shown as they happened (the job's run holds the workers' steps).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# phase -> (module, attribute path) of the callable whose first call's start and end bound it
PHASES = {
    "preflight (broker, database, folders)": ("pipelines.blog", "preflight"),
    "graph build": ("pipelines.blog", "build_pipeline"),
    "Prism launch (hitstream's own)": ("runners.prism_service", "_PrismService.__init__"),
    "job service connection (Beam)": ("apache_beam.runners.portability.portable_runner",
                                      "PortableRunner.create_job_service"),
    "job submission": ("apache_beam.runners.portability.portable_runner", "PortableRunner.run_pipeline"),
    "partition resolution (worker)": ("transforms.kafka_source.partitions", "resolve_partitions"),
    "read set-up (worker)": ("transforms.kafka_source.read", "ReadPartitionsFn.setup"),
    "sink set-up (worker, first sink)": ("transforms.sinks.base", "SinkWriteFn.setup"),
    "job running, to its end": ("pipelines.blog", "wait_for_job"),
}


def _wrap(marks: dict, name: str, module: str, path: str) -> None:
    """Replace module.path by a wrapper that records its first call's start and end (as epoch seconds) in marks."""
    import importlib
    owner = importlib.import_module(module)
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, attribute)

    def timed(*args, **kwargs):
        started = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            marks.setdefault(name, (started, time.time()))

    setattr(owner, attribute, timed)


def child(argv: list, out: str) -> None:
    """Run `hitstream run argv` timed, write the marks to `out`, and end as the `hitstream` command does."""
    marks = {"interpreter up": (time.time(), time.time())}
    started = time.time()
    import hitstream.job  # noqa: F401  (what `hitstream run` imports, timed as one phase)
    from hitstream import cli
    marks["imports"] = (started, time.time())
    for name, (module, path) in PHASES.items():
        _wrap(marks, name, module, path)
    code = cli.main(["run", *argv])
    marks["returned"] = (time.time(), time.time())
    Path(out).write_text(json.dumps(marks))
    cli.end_process(code)  # as the `hitstream` command ends


def measure(bootstrap: str, topic: str, workdir: Path) -> dict:
    """One timed run; {phase: (start, end)} in seconds from the launch."""
    run_id = uuid.uuid4().hex[:8]
    out = workdir / f"{run_id}.json"
    argv = ["--runner=prism", f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=available-now",
            f"--group-id=startup-{run_id}", f"--sink=zip_counts=kafka:update,topic=startup-{run_id}-zip",
            f"--sink=zip_window_counts=kafka:update,topic=startup-{run_id}-window",
            f"--dead-letter-topic=startup-{run_id}-dead"]
    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "bench.startup", "--child", str(out), "--", *argv], cwd=str(REPO),
                          capture_output=True, text=True)
    exited = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"hitstream run exited {done.returncode}:\n{done.stderr[-3000:]}")
    phases = {name: (start - launched, end - launched) for name, (start, end) in json.loads(out.read_text()).items()}
    phases["exit"] = (exited - launched, exited - launched)
    return phases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--runs", type=int, default=5, help="(default: 5)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.rest, args.child)
    from hitstream.generator import ensure_topic
    topic = f"startup-empty-{uuid.uuid4().hex[:8]}"
    ensure_topic(args.bootstrap_servers, topic, 8)
    with tempfile.TemporaryDirectory(prefix="hitstream-startup-") as workdir:
        runs = [measure(args.bootstrap_servers, topic, Path(workdir)) for _ in range(args.runs)]
    print(f"\n`hitstream run` on an empty 8-partition topic (blog core, Prism), median of {args.runs} runs, "
          f"seconds from the launch\n")
    print("| phase | starts | ends | takes |\n|---|---|---|---|")
    for name in runs[0]:
        start = statistics.median(run[name][0] for run in runs if name in run)
        end = statistics.median(run[name][1] for run in runs if name in run)
        print(f"| {name} | {start:.2f} | {end:.2f} | {end - start:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
