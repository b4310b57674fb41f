"""Collect a PCollection's elements in the test process, with arrival times.

Works on Prism and the DirectRunner with LOOPBACK: the SDK worker runs in the test's own process.
"""
import collections
import threading
import time

import apache_beam as beam

COLLECTED = collections.defaultdict(list)  # name -> [(wall time, element)]
_LOCK = threading.Lock()


class CollectFn(beam.DoFn):
    def __init__(self, name: str):
        self._name = name

    def process(self, element):
        with _LOCK:
            COLLECTED[self._name].append((time.time(), element))
        return ()


def collected(name: str) -> list:
    with _LOCK:
        return list(COLLECTED[name])
