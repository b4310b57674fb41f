"""Where a bounded hitstream run spends its time: py-spy over the benchmark's own command on a fresh topic.

    python -m bench.profile                   # 1M events on Prism: share per area of the bundle work, top functions
    python -m bench.profile --count 200000 --runner direct

py-spy samples every Python thread that is not idle, and a thread waiting for the GIL is not idle, so the shares are
of samples, not of CPU. "Bundle work" is the samples inside the SDK worker's bundle processing; the rest are gRPC,
progress and waiting threads. The areas are inclusive shares of the bundle work (a sample counts for every area on
its stack, so the Kafka read holds its parse); the functions are ranked by their own (leaf) samples.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.blog import REPO, _hitstream_cmd, produce_topic
from bench.spark_blog import child_env
from transforms.worker_memory import ALLOCATOR_ENV

BUNDLE = "BundleProcessor.process_bundle (apache_beam/runners/worker/bundle_processor.py)"
AREAS = [  # (area, a fragment of the frame's file)
    ("Kafka read (consume, records, watermark)", "transforms/kafka_source/"),
    ("  of it parse (orjson, data contract)", "transforms/parse.py"),
    ("queries (pre-aggregation, windows, combine)", "transforms/queries.py"),
    ("output modes (RunningTotals, snapshots)", "transforms/output_modes.py"),
    ("checkpoint (its share of the counting)", "transforms/checkpoint.py"),
    ("sinks (buffering, retries, writers)", "transforms/sinks/"),
    ("  of it Parquet", "transforms/sinks/parquet.py"),
    ("  of it rows to Arrow", "transforms/sinks/tables.py"),
    ("  of it JDBC", "transforms/sinks/jdbc.py"),
    ("  of it Kafka", "transforms/sinks/kafka.py"),
    ("Beam coders (between stages)", "apache_beam/coders/"),
]


def read_raw(path: Path) -> collections.Counter:
    """py-spy's raw (collapsed) output, one 'frame;frame;...;leaf count' per line, as {stack tuple: samples}. Its
    first frame names the process; Python frames read 'function (file)'."""
    stacks = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks[tuple(stack.split(";")[1:])] += int(count)
    return stacks


def bundle_work(stacks: collections.Counter) -> collections.Counter:
    return collections.Counter({stack: n for stack, n in stacks.items() if BUNDLE in stack})


def area_shares(work: collections.Counter) -> list:
    total = sum(work.values()) or 1
    counts = collections.Counter()
    for stack, samples in work.items():
        for name in {name for name, fragment in AREAS for frame in stack if f"({fragment}" in frame}:
            counts[name] += samples
    return [(name, counts[name] / total) for name, _ in AREAS]


def top_functions(work: collections.Counter, n: int) -> list:
    """The n functions with the most own (leaf) samples, as (frame, own share, inclusive share)."""
    total = sum(work.values()) or 1
    inclusive, own = collections.Counter(), collections.Counter()
    for stack, samples in work.items():
        for frame in set(stack):
            inclusive[frame] += samples
        own[stack[-1]] += samples
    return [(frame, count / total, inclusive[frame] / total) for frame, count in own.most_common(n)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=1_000_000, help="events (default: 1000000)")
    parser.add_argument("--runner", default="prism", help="prism or direct (default: prism)")
    parser.add_argument("--top", type=int, default=20, help="functions to list (default: 20)")
    args = parser.parse_args(argv)

    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        parser.error(f"{py_spy} is missing: bash scripts/setup installs it with the bench extra")
    topic, report = produce_topic(args.bootstrap_servers, args.count)
    print(f"produced {report.produced:,} hits to {topic}")
    workdir = Path(tempfile.mkdtemp(prefix="hitstream-profile-"))
    raw = workdir / "profile.txt"
    command = [str(py_spy), "record", "--format", "raw", "--nolineno", "--subprocesses", "--rate", "100",
               "--output", str(raw), "--"] + _hitstream_cmd(args.runner, args.bootstrap_servers, topic, workdir)
    # With the allocator settings already in its environment the job does not exec itself, which py-spy cannot follow
    # (it then sampled the first interpreter alone: 2 samples).
    env = dict(child_env(), **ALLOCATOR_ENV)
    with open(workdir / "run.log", "wb") as log:
        code = subprocess.call(command, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        print((workdir / "run.log").read_text()[-3000:], file=sys.stderr)
        return code
    stacks = read_raw(raw)
    work = bundle_work(stacks)
    print(f"\n{args.count:,} events on {args.runner}: {sum(stacks.values()):,} samples, of them "
          f"{sum(work.values()) / max(1, sum(stacks.values())):.0%} bundle work (raw profile: {raw})\n")
    print("| area | share of bundle work |\n|---|---|")
    for name, share in area_shares(work):
        print(f"| {name} | {share:.1%} |")
    print("\n| function | own | inclusive |\n|---|---|---|")
    for frame, own, inclusive in top_functions(work, args.top):
        print(f"| {frame} | {own:.1%} | {inclusive:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
