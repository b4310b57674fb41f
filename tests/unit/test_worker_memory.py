"""The worker's memory settings: the collector's applied once per process, whoever calls first; the allocators'
from the environment the job's command sets for itself."""
import gc
import os
import subprocess
import sys

from transforms import worker_memory


def test_tune_gc_sets_the_thresholds_once():
    worker_memory.tune_gc()
    assert gc.get_threshold() == worker_memory.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what was alive at the first call is out of the collector's sight
    gc.set_threshold(700, 10, 10)
    worker_memory.tune_gc()  # a second DoFn's setup in the same process changes nothing
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(*worker_memory.GC_THRESHOLDS)


SHOW_ALLOCATORS = """
import os, sys
from transforms.worker_memory import exec_with_allocator_env
print("started", flush=True)  # once per exec
exec_with_allocator_env()
import pyarrow as pa
print(os.environ["MALLOC_ARENA_MAX"], pa.default_memory_pool().backend_name, sys.argv[1:])
"""


def test_a_job_command_execs_itself_once_with_the_allocator_environment():
    env = {k: v for k, v in os.environ.items() if k not in worker_memory.ALLOCATOR_ENV}
    out = subprocess.run([sys.executable, "-c", SHOW_ALLOCATORS, "--flag"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["started", "started", "2 system ['--flag']"]


def test_a_value_the_user_set_is_kept():
    env = dict(os.environ, MALLOC_ARENA_MAX="4", ARROW_DEFAULT_MEMORY_POOL="system")
    out = subprocess.run([sys.executable, "-c", SHOW_ALLOCATORS], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["started", "4 system []"]
