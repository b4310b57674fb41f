"""The live terminal panel of a running job: each progress record drawn with rich (rates, durations, lag per
partition, the watermark, late and dead-letter rows, the window accounting)."""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hitstream.progress import StreamingQuery


def terminal_wanted(stream=None) -> bool:
    """Live terminal progress: on when stderr is a terminal; HITSTREAM_PROGRESS=1 forces it on, =0 off."""
    forced = os.environ.get("HITSTREAM_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def _fmt_int(n: Optional[float]) -> str:
    return "-" if n is None else f"{n:,.0f}"


def render_progress(record: Optional[Dict[str, Any]]):
    """A rich renderable of one progress record: rates, durations, lag per partition, watermark, late, dead."""
    # Topic, sink and query names are data, not rich markup: "blog[hits]" must print as written.
    if record is None:
        return Panel(Text("waiting for the first progress record..."), title="hitstream")
    head = Table.grid(padding=(0, 2))
    for _ in range(4):
        head.add_column()
    duration = record["durationMs"]
    head.add_row("input", f"{record['inputRowsPerSecond']:,.1f} rows/s",
                 "processed", f"{record['processedRowsPerSecond']:,.1f} rows/s")
    head.add_row("batch", str(record["batchId"]), "rows", f"{_fmt_int(record['numInputRows'])} "
                                                          f"(total {_fmt_int(record['totalInputRows'])})")
    head.add_row("read", f"{duration['getBatch']} ms", "write", f"{duration['addBatch']} ms")
    head.add_row("watermark", record["eventTime"].get("watermark") or "-",
                 "late / dead", f"{_fmt_int(record['totalLateRows'])} / {_fmt_int(record['totalDeadLetterRows'])}")
    windows = record["windowAccounting"]
    head.add_row("into windows", _fmt_int(windows["hitsIntoWindows"]),
                 "in final windows", _fmt_int(windows["hitsInFinalWindows"]))
    parts = [head]
    for source in record["sources"]:
        lag = Table(title=Text(source["description"]), show_edge=False, pad_edge=False)
        for column in ("partition", "end offset", "latest", "lag"):
            lag.add_column(column, justify="right")
        for topic, offsets in source["endOffset"].items():
            for partition, end in offsets.items():
                latest = source["latestOffset"].get(topic, {}).get(partition)
                behind = source["lag"].get(topic, {}).get(partition)
                lag.add_row(Text(f"{topic}[{partition}]"), _fmt_int(end), _fmt_int(latest), _fmt_int(behind))
        parts.append(lag)
    if record["sinks"]:
        sinks = Table(show_edge=False, pad_edge=False)
        for column in ("sink", "rows", "errors"):
            sinks.add_column(column, justify="right" if column != "sink" else "left")
        for sink in record["sinks"]:
            sinks.add_row(Text(sink["description"]), _fmt_int(sink["totalOutputRows"]), _fmt_int(sink["totalErrors"]))
        parts.append(sinks)
    return Panel(Group(*parts), title=Text(f"hitstream · {record['name']}"), subtitle=Text(record["timestamp"]))


class TerminalProgress:
    """A rich Live panel on stderr, redrawn on each progress record. A listener: `query.add_listener(it)`."""

    def __init__(self, stream=None) -> None:
        self._console = Console(file=stream or sys.stderr)
        # Redirect prints (the console sink's tables) above the panel only when stdout is the same terminal;
        # a redirected stdout must keep its own output.
        same_terminal = sys.stdout.isatty() and self._console.is_terminal
        self._live = Live(render_progress(None), console=self._console, refresh_per_second=2, transient=False,
                          redirect_stdout=same_terminal, redirect_stderr=False)
        self._started = False

    def on_query_started(self, query: StreamingQuery) -> None:
        if not self._started:
            self._live.start()
            self._started = True

    def on_query_progress(self, record: Dict[str, Any]) -> None:
        self._live.update(render_progress(record))

    def on_query_terminated(self, query: StreamingQuery) -> None:
        if self._started:
            self._live.update(render_progress(query.last_progress))
            self._live.stop()
            self._started = False
