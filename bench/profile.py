"""Where a bounded hitstream run spends its time: py-spy over the benchmark's own command on a fresh topic.

    python -m bench.profile                   # 1M events on Prism: share of samples per area, then the top functions
    python -m bench.profile --count 200000 --runner direct

The areas are inclusive (a sample counts for every area on its stack, so the Kafka read holds its parse) and are
shares of the samples py-spy took from the job's Python threads while they were not idle.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.blog import REPO, _hitstream_cmd, produce_topic

# (area, a path fragment of the frame's file, and optionally its function); first match per frame wins
AREAS = [
    ("Kafka read (ReadPartitionsFn)", "transforms/kafka_source.py", "process"),
    ("  parse_record", "transforms/parse.py", "parse_record"),
    ("queries (pre-aggregation, windows, combine)", "transforms/queries.py", None),
    ("output modes (EmitChanged, snapshots)", "transforms/output_modes.py", None),
    ("checkpoint counter", "transforms/checkpoint.py", None),
    ("Parquet sink", "transforms/sinks/parquet.py", None),
    ("JDBC sink", "transforms/sinks/jdbc.py", None),
    ("Kafka sink", "transforms/sinks/kafka.py", None),
    ("memory sink", "transforms/sinks/memory.py", None),
    ("sink base (buffering, retries)", "transforms/sinks/base.py", None),
    ("Beam coders (encode/decode between stages)", "apache_beam/coders/", None),
    ("Beam data plane (gRPC)", "apache_beam/runners/worker/data_plane.py", None),
]


def _frame(frame: str):
    """'function (path/to/file.py)' as (function, path)."""
    function, _, rest = frame.partition(" (")
    return function, rest.rstrip(")")


def area_shares(stacks: dict) -> list:
    total = sum(stacks.values()) or 1
    counts = collections.Counter()
    for stack, samples in stacks.items():
        hit = set()
        for function, path in map(_frame, stack.split(";")):
            for name, fragment, wanted in AREAS:
                if fragment in path and (wanted is None or wanted == function):
                    hit.add(name)
        for name in hit:
            counts[name] += samples
    return [(name, counts[name] / total) for name, _, _ in AREAS]


def top_functions(stacks: dict, n: int) -> list:
    """The n functions found on the most samples (inclusive), with their share and their own (leaf) share."""
    total = sum(stacks.values()) or 1
    inclusive, own = collections.Counter(), collections.Counter()
    for stack, samples in stacks.items():
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    return [(frame, count / total, own[frame] / total) for frame, count in inclusive.most_common(n)]


def read_raw(path: Path) -> dict:
    """py-spy's raw (collapsed) output: one 'frame;frame;...;leaf count' per line, the thread first."""
    stacks = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            # drop the thread/process frames py-spy puts first; keep Python frames, which carry a file
            stacks[";".join(f for f in stack.split(";") if " (" in f)] += int(count)
    return stacks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=1_000_000, help="events (default: 1000000)")
    parser.add_argument("--runner", default="prism", help="prism or direct (default: prism)")
    parser.add_argument("--top", type=int, default=25, help="functions to list (default: 25)")
    args = parser.parse_args(argv)

    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        parser.error(f"{py_spy} is missing: bash scripts/setup installs it with the bench extra")
    topic, report = produce_topic(args.bootstrap_servers, args.count)
    print(f"produced {report.produced:,} hits to {topic}")
    work = Path(tempfile.mkdtemp(prefix="hitstream-profile-"))
    raw = work / "profile.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    command = [str(py_spy), "record", "--format", "raw", "--nolineno", "--subprocesses", "--rate", "100",
               "--output", str(raw), "--"] + _hitstream_cmd(args.runner, args.bootstrap_servers, topic, work)
    with open(work / "run.log", "wb") as log:
        code = subprocess.call(command, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        print((work / "run.log").read_text()[-3000:], file=sys.stderr)
        return code
    stacks = read_raw(raw)

    print(f"\n{sum(stacks.values()):,} samples, {args.count:,} events on {args.runner} (raw profile: {raw})\n")
    print("| area | share of samples |\n|---|---|")
    for name, share in area_shares(stacks):
        print(f"| {name} | {share:.1%} |")
    print("\n| function | inclusive | own |\n|---|---|---|")
    for frame, inclusive, own in top_functions(stacks, args.top):
        print(f"| {frame} | {inclusive:.1%} | {own:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
