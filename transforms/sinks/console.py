"""The console sink: Spark's `format("console")`, "Batch: N" then a table, drawn with rich.

A batch is a complete-mode Snapshot, or the rows of one bundle in update and append modes.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable

import apache_beam as beam
from rich.console import Console
from rich.table import Table

from transforms.rows import Snapshot

_LOGGER = logging.getLogger(__name__)


def render_batch(batch_id: int, rows: list, num_rows: int = 20, truncate: bool = True, title: str = "") -> Table:
    """A rich Table of at most `num_rows` rows; with `truncate`, cells are cut at 20 characters, as in Spark."""
    table = Table(title=f"Batch: {batch_id}" + (f"  {title}" if title else ""), title_justify="left")
    if not rows:
        return table
    for name in rows[0]._fields:
        table.add_column(name)
    for row in rows[:num_rows]:
        cells = ["null" if v is None else str(v) for v in row]
        if truncate:
            cells = [c if len(c) <= 20 else c[:17] + "..." for c in cells]
        table.add_row(*cells)
    if len(rows) > num_rows:
        table.caption = f"only showing top {num_rows} rows"
    return table


class ConsoleWriteFn(beam.DoFn):
    def __init__(self, name: str, num_rows: int, truncate: bool):
        self._name = name
        self._num_rows = num_rows
        self._truncate = truncate
        self._batch_id = 0

    def setup(self):
        # One console per worker; force_terminal=False keeps logs and CI output free of escape codes.
        self._console = Console(file=sys.stdout, force_terminal=False, width=120)

    def start_bundle(self):
        self._rows = []

    def process(self, element) -> Iterable[None]:
        if isinstance(element, Snapshot):
            self._show(element.batch_id, list(element.rows))
        else:
            self._rows.append(element)
        return ()

    def finish_bundle(self):
        if self._rows:
            self._show(self._batch_id, sorted(self._rows))
            self._batch_id += 1
            self._rows = []

    def _show(self, batch_id: int, rows: list):
        self._console.print(render_batch(batch_id, rows, self._num_rows, self._truncate, self._name))
        sys.stdout.flush()


class WriteToConsole(beam.PTransform):
    def __init__(self, name: str = "", num_rows: int = 20, truncate: bool = True):
        super().__init__()
        if num_rows < 1:
            raise ValueError("console sink: numRows must be at least 1")
        self._fn = ConsoleWriteFn(name, num_rows, truncate)

    def expand(self, pcoll):
        return pcoll | "PrintBatches" >> beam.ParDo(self._fn)
