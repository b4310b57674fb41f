"""A directory source, the blog's "directory" stream (Spark's file source): new JSON-lines files in a folder.

Each line becomes a KafkaRecord (topic "file:<path>", offset = line number). In streaming runs Beam's
`MatchContinuously` polls the folder and picks up each new file once; in available-now runs the files present at
start are read. Write files atomically (write elsewhere, then rename into the folder), as Spark also requires.
"""
from __future__ import annotations

import os
from typing import Iterable

import apache_beam as beam
from apache_beam.io import fileio

from transforms.parse import hittime_millis
from transforms.rows import CREATE_TIME, KafkaRecord


class ReadLinesFn(beam.DoFn):
    def __init__(self, event_time: bool):
        self._event_time = event_time

    def process(self, readable: fileio.ReadableFile) -> Iterable[beam.window.TimestampedValue]:
        path = readable.metadata.path
        modified_ms = int(readable.metadata.last_updated_in_seconds * 1000)
        with readable.open(compression_type=fileio.CompressionTypes.UNCOMPRESSED) as handle:
            for line_no, line in enumerate(handle):
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                record = KafkaRecord(key=None, value=line, topic=f"file:{path}", partition=0, offset=line_no,
                                     timestamp=modified_ms, timestampType=CREATE_TIME)
                event_ms = (hittime_millis(record) if self._event_time else None) or modified_ms
                yield beam.window.TimestampedValue(record, event_ms / 1000.0)


class ReadFromDirectory(beam.PTransform):
    def __init__(self, folder: str, bounded: bool, pattern: str = "*", poll_seconds: float = 1.0,
                 event_time: bool = True):
        super().__init__()
        if not os.path.isdir(folder):
            raise ValueError(f"directory source: {folder!r} is not a folder")
        self._glob = os.path.join(os.path.abspath(folder), pattern)
        self._bounded = bounded
        self._poll_seconds = poll_seconds
        self._event_time = event_time

    def expand(self, pbegin):
        if self._bounded:
            matches = pbegin | "MatchFiles" >> fileio.MatchFiles(self._glob)
        else:
            matches = pbegin | "MatchNewFiles" >> fileio.MatchContinuously(self._glob, interval=self._poll_seconds)
        return (matches
                | "ReadMatches" >> fileio.ReadMatches()
                | "ReadLines" >> beam.ParDo(ReadLinesFn(self._event_time)).with_output_types(KafkaRecord))
