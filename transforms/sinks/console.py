"""The console sink: Spark's `format("console")`, "Batch: N" then a table, drawn with rich.

A batch is a complete-mode Snapshot (its own batch id), or the rows of one bundle in update and append modes (a
batch id counted per worker). Options as in Spark: `numRows` (default 20) and `truncate` (cut cells at 20
characters). Timestamps print whole, in UTC, as Spark prints them (`2026-03-15 22:05:00`): truncation is for text.
"""
from __future__ import annotations

import datetime
import logging
import sys
import threading
from typing import List, Optional

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from transforms.rows import Snapshot
from transforms.times import spark_show_text
from transforms.sinks.base import RetryPolicy, Sink, SinkWriter

_LOGGER = logging.getLogger(__name__)

_TRUNCATE_AT = 20
_PRINT_LOCK = threading.Lock()  # bundles run on several threads; one table must not interleave with another


def _sort_key(row: tuple) -> tuple:
    return tuple((value is not None, value) for value in row)


def _cell(value) -> str:
    if value is None:
        return "null"
    return spark_show_text(value) if isinstance(value, datetime.datetime) else str(value)


def render_batch(batch_id: int, rows: list, num_rows: int = 20, truncate: bool = True, title: str = "") -> Group:
    """Spark's console block: a "Batch: N" header, a table of at most `num_rows` rows, and "only showing top N
    rows" when cut. With `truncate`, cells are cut at 20 characters, as in Spark."""
    rule = "-" * 43
    header = Text(f"{rule}\nBatch: {batch_id}" + (f"  ({title})" if title else "") + f"\n{rule}")
    if not rows:
        return Group(header)
    table = Table()
    for name in rows[0]._fields:
        table.add_column(name)
    for row in rows[:num_rows]:
        cells = [_cell(v) for v in row]
        if truncate:
            cells = [c if len(c) <= _TRUNCATE_AT or isinstance(v, datetime.datetime) else c[:_TRUNCATE_AT - 3] + "..."
                     for c, v in zip(cells, row)]
        table.add_row(*cells)
    if len(rows) > num_rows:
        return Group(header, table, Text(f"only showing top {num_rows} rows"))
    return Group(header, table)


class ConsoleWriter(SinkWriter):
    def __init__(self, name: str, num_rows: int, truncate: bool) -> None:
        self._name = name
        self._num_rows = num_rows
        self._truncate = truncate
        self._console: Optional[Console] = None

    def setup(self) -> None:
        # force_terminal=False keeps logs and CI output free of escape codes.
        self._console = Console(file=sys.stdout, force_terminal=False, width=120)

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        self._show(batch_id, sorted(rows, key=_sort_key))

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self._show(snapshot.batch_id, list(snapshot.rows))

    def _show(self, batch_id: int, rows: list) -> None:
        with _PRINT_LOCK:
            self._console.print(render_batch(batch_id, rows, self._num_rows, self._truncate, self._name))
            sys.stdout.flush()


class WriteToConsole(Sink):
    """Rows or Snapshots -> printed tables. `name` titles each table (the query's name)."""

    def __init__(self, name: str = "", num_rows: int = 20, truncate: bool = True,
                 max_batch_size: int = 100_000) -> None:
        super().__init__(f"console.{name or 'rows'}", max_batch_size=max_batch_size,
                         retry=RetryPolicy(max_attempts=1))
        if num_rows < 1:
            raise ValueError("console sink: numRows must be at least 1")
        self._title = name
        self._num_rows = num_rows
        self._truncate = truncate

    def make_writer(self) -> ConsoleWriter:
        return ConsoleWriter(self._title, self._num_rows, self._truncate)
