"""The live dashboard: `hitstream run --dashboard` (and `hitstream demo`) serve it on http://127.0.0.1:<port>/.

It is the blog's two views in one page: Spark's streaming tab (input rate against processing rate, batch duration)
and the notebook's auto-updating charts (a bar chart per zipcode, a pie chart per window), plus what a Kafka user
watches (lag per partition, the watermark, late and dead-letter counts) and a SQL box over the memory tables.

Served by the job's own small HTTP server (`hitstream/server.py`, shared with `hitstream sql`), bound to 127.0.0.1
unless told otherwise, GET only, so nothing on the page can change the job. The page is three static files shipped in
the package (`hitstream/dashboard/`: index.html, app.js, style.css) and draws its charts as inline SVG with plain
JavaScript: no CDN, no third-party script. It polls JSON once a second:

* `/progress` -> the newest progress record (hitstream/progress.py: Spark's StreamingQueryProgress fields), or null;
* `/progress/recent[?since=<batchId>]` -> `{"progress": [...]}`, the last 100 records (newer than `since`);
* `/status` -> the query's status (message, isDataAvailable, isTriggerActive, jobState, id, runId, name, batchId);
* `/results` -> the current zip_counts, isp_counts and the newest windows of zip_window_counts, as the job's sinks
  last wrote them (any sink: memory, jdbc, kafka...), for the bar and pie charts;
* `/sql?q=...`, `/tables` -> the memory sink's read-only DuckDB (external access off, a row limit), for the SQL box.
"""
from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hitstream import server
from hitstream.progress import RESULT_WINDOWS, StreamingQuery
from transforms.times import iso_utc

_LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("dashboard")
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}

_QUERY: Dict[str, Optional[StreamingQuery]] = {"current": None}


def _static(name: str, content_type: str):
    def handler(params: Dict[str, str]) -> Tuple[int, object]:
        return 200, server.Raw((STATIC_DIR / name).read_bytes(), content_type)
    return handler


def _progress(params: Dict[str, str]) -> Tuple[int, object]:
    query = _QUERY["current"]
    return 200, query.last_progress if query else None


def _recent(params: Dict[str, str]) -> Tuple[int, object]:
    query = _QUERY["current"]
    records = query.recent_progress if query else []
    try:
        since = int(params.get("since", -1))
    except ValueError:
        return 400, {"error": "since must be an integer batchId"}
    return 200, {"progress": [r for r in records if r["batchId"] > since]}


def _status(params: Dict[str, str]) -> Tuple[int, object]:
    query = _QUERY["current"]
    if query is None:
        return 200, {"message": "No query", "isDataAvailable": False, "isTriggerActive": False}
    return 200, query.status


def _iso(moment: Any) -> str:
    if isinstance(moment, datetime.datetime):
        return iso_utc(moment, timespec="seconds")
    return str(moment)


def results_json(results: Dict[str, List[tuple]], windows: int = RESULT_WINDOWS) -> Dict[str, Any]:
    """The chart data: zip_counts and isp_counts as [[key, count]], and the newest `windows` windows of
    zip_window_counts as [{window_start, window_end, counts: [[zipcode, count]]}], newest last."""
    out: Dict[str, Any] = {}
    if "zip_counts" in results:
        out["zip_counts"] = sorted([[r.zipcode, r.count] for r in results["zip_counts"]])
    if "isp_counts" in results:
        out["isp_counts"] = sorted([[r.isp, r.count] for r in results["isp_counts"]], key=lambda kv: -kv[1])
    if "zip_window_counts" in results:
        by_window: Dict[tuple, list] = {}
        for row in results["zip_window_counts"]:
            by_window.setdefault((row.window_start, row.window_end), []).append([row.zipcode, row.count])
        newest = sorted(by_window)[-windows:]
        out["zip_window_counts"] = [{"window_start": _iso(start), "window_end": _iso(end),
                                     "counts": sorted(by_window[(start, end)])} for start, end in newest]
    return out


def _results(params: Dict[str, str]) -> Tuple[int, object]:
    query = _QUERY["current"]
    return 200, results_json(query.results() if query else {})


def install_routes() -> None:
    for path, (name, content_type) in _STATIC.items():
        server.add_route(path, _static(name, content_type))
    server.add_route("/progress", _progress)
    server.add_route("/progress/recent", _recent)
    server.add_route("/status", _status)
    server.add_route("/results", _results)


def serve(query: StreamingQuery, port: int, host: str = "127.0.0.1"):
    """Show `query` on http://host:port/ (the server is shared with `hitstream sql`). Returns the server, or None
    when the port is taken (the server module warns)."""
    _QUERY["current"] = query
    install_routes()
    started = server.ensure_started(port, host)
    if started is None:
        print(f"dashboard: {host}:{port} is in use, so the dashboard is not served; pass another --dashboard-port",
              file=sys.stderr, flush=True)
    else:
        print(f"dashboard: {server.url(host, started.server_port)}", file=sys.stderr, flush=True)
    return started
