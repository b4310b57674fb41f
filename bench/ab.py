"""Two revisions of hitstream, alternating on one topic: the bounded blog job's wall time, events/s and peak RSS
(the job's process tree, Prism included).

    python -m bench.ab b40d9dc                    # that revision against this checkout, 1M events, 3 runs each
    python -m bench.ab b40d9dc HEAD --count 200000 --repeats 5

This machine is noisy from hour to hour, so a change is judged against the code before it in the same half hour:
each revision is checked out into its own git worktree and runs `hitstream run --trigger available-now` with the
blog's default sinks on Prism, the two taking turns on the same topic. Each revision runs from its own tree (its
Prism build included) with this venv.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.blog import _hitstream_cmd, produce_topic
from bench.spark_blog import PeakRss
from stack import kafka, mariadb

REPO = Path(__file__).resolve().parent.parent
CURRENT = "checkout"  # the working tree as it is, uncommitted changes included


def _tree(revision: str, scratch: Path) -> Path:
    if revision == CURRENT:
        return REPO
    path = scratch / revision
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def _run(tree: Path, topic: str, workdir: Path) -> tuple:
    """(wall seconds, peak RSS MB) of one run."""
    command = _hitstream_cmd("prism", kafka.BOOTSTRAP, topic, workdir)
    env = dict(os.environ, PYTHONPATH=str(tree), HITSTREAM_PROGRESS="0")
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        job = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        with PeakRss(job.pid) as rss:
            code = job.wait(timeout=1800)
        if code != 0:
            errors.seek(0)
            raise RuntimeError(f"{tree} failed ({code}):\n{errors.read()[-3000:].decode(errors='replace')}")
    return time.monotonic() - started, rss.peak_mb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the revision to compare against (a commit, tag or branch)")
    parser.add_argument("head", nargs="?", default=CURRENT, help=f"default: {CURRENT}, this working tree")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    kafka.start()
    mariadb.start()
    scratch = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    revisions = (args.base, args.head)
    trees = {revision: _tree(revision, scratch) for revision in revisions}
    try:
        topic, _ = produce_topic(kafka.BOOTSTRAP, args.count)
        _run(trees[args.base], topic, scratch / "warm-up")  # builds the base's Prism if it differs; not counted
        runs = {revision: [] for revision in revisions}
        for _ in range(args.repeats):
            for revision in revisions:
                runs[revision].append(_run(trees[revision], topic, scratch / "runs"))
    finally:
        for revision, tree in trees.items():
            if tree != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    medians = {revision: statistics.median(wall for wall, _ in runs[revision]) for revision in revisions}
    print(f"\n{args.count:,} events on Prism, blog sinks, {args.repeats} runs each, alternating\n")
    print("| revision | wall s, each run | median wall s | events/s (median) | peak RSS MB, each run | median MB |")
    print("|---|---|---|---|---|---|")
    for revision in revisions:
        walls = " / ".join(f"{wall:.1f}" for wall, _ in runs[revision])
        peaks = " / ".join(f"{peak:,.0f}" for _, peak in runs[revision])
        print(f"| {revision} | {walls} | {medians[revision]:.1f} | {args.count / medians[revision]:,.0f} | {peaks} | "
              f"{statistics.median(peak for _, peak in runs[revision]):,.0f} |")
    change = medians[args.base] / medians[args.head] - 1
    print(f"\n{args.head} against {args.base}: {change:+.1%} events/s (median walls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
