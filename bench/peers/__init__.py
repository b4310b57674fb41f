"""The Python stream processors a user would try instead of hitstream, run on the benchmark's "blog core" workload.

Each peer is one standalone script, `bench/peers/<name>_core.py`, run by the Python of a venv of its own
(`$HITSTREAM_CACHE/peer-venvs/<name>`, pinned by `bench/peers/<name>.txt`), because its dependencies need not agree
with Beam's. The scripts import nothing from hitstream.

The contract every peer script keeps (hitstream's own blog-core run writes the same):

    <python> bench/peers/<name>_core.py --bootstrap-servers B --topic T --zip-topic Z --window-topic W \
        --dead-letter-topic D --form final|updates

* Reads T (every partition) from the earliest offset up to the end offsets it finds at start, then stops: a bounded
  run, as hitstream's `--trigger available-now`.
* Parses each value as hitstream's data contract says: a JSON object; `hittime` an ISO-8601 string with `Z` or an
  offset, or an integer of epoch milliseconds (not a bool); `zipcode` a non-empty string. Anything else goes, as
  its raw bytes, to D.
* `zip_counts`: hits per zipcode, to Z, key the zipcode, value `{"zipcode": "94107", "count": 42}`.
* `zip_window_counts`: hits per zipcode over event-time sliding windows of 10 minutes every 5, starting 2 minutes
  past the hour (windows [hh:02, hh:12), [hh:07, hh:17), ...), to W, key the zipcode, value
  `{"zipcode", "count", "window_start", "window_end"}` with the bounds as ISO-8601 UTC with milliseconds and `Z`
  (`"2026-03-15T22:02:00.000Z"`). No hit is dropped as late (the input's hits are at most minutes out of order).
* `--form final`: one message per key at the end, the fastest faithful form; `--form updates`: the library's
  per-update form (a message per change).
* Exits 0 once its producer has flushed every message; the last message per key must equal the reference
  (`bench.reference`).

The latency measurement (`bench.blog.measure_latency`) runs the per-update form unbounded:

    <python> bench/peers/<name>_core.py --bootstrap-servers B --topic T --zip-topic Z --form updates \
        --streaming [--run-seconds S] [--window-topic W] [--dead-letter-topic D]

* Reads T from the earliest offset and on past its end, a message to Z per zip_counts update, until SIGTERM or
  SIGINT, or S seconds (0, the default: no limit); then exits 0.
* Builds zip_window_counts and the dead letters only when W and D are given: the measurement gives neither, as
  hitstream's run there has only the zip_counts sink.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from stack.paths import cache_root

HERE = Path(__file__).resolve().parent
PEERS = ("bytewax", "quix")
FORMS = ("final", "updates")


def script(name: str) -> Path:
    return HERE / f"{name}_core.py"


def python(name: str) -> Path:
    """The peer's venv's Python, made (or remade, when its pins changed) from `bench/peers/<name>.txt`."""
    requirements = HERE / f"{name}.txt"
    venv = cache_root() / "peer-venvs" / name
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / ".hitstream-key"
    if not (venv / "bin" / "python").exists() or not stamp.exists() or stamp.read_text() != key:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        "-r", str(requirements)], check=True)
        stamp.write_text(key)
    return venv / "bin" / "python"


def command(name: str, form: str, bootstrap: str, topic: str, zip_topic: str, window_topic: str,
            dead_letter_topic: str) -> list:
    return [str(python(name)), str(script(name)), f"--bootstrap-servers={bootstrap}", f"--topic={topic}",
            f"--zip-topic={zip_topic}", f"--window-topic={window_topic}",
            f"--dead-letter-topic={dead_letter_topic}", f"--form={form}"]


def streaming_command(name: str, bootstrap: str, topic: str, zip_topic: str, run_seconds: float) -> list:
    """The per-update form reading on past the topic's end, zip_counts only (see the docstring)."""
    return [str(python(name)), str(script(name)), f"--bootstrap-servers={bootstrap}", f"--topic={topic}",
            f"--zip-topic={zip_topic}", "--form=updates", "--streaming", f"--run-seconds={run_seconds:g}"]
