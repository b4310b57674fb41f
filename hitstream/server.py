"""A tiny HTTP server for `hitstream sql`: read-only SQL over the memory tables of the job running in this process.

Started by the memory sink in its worker (with LOOPBACK that is the process that launched the job), on
127.0.0.1:<dashboard port> unless told otherwise. Endpoints, all GET, all JSON:

* `/sql?q=<SELECT ...>[&limit=N]` -> `{"columns": [...], "rows": [[...]], "truncated": bool}`, or 400 with
  `{"error": "..."}` (refused or failing SQL; see `transforms.sinks.memory_store` for the rules);
* `/tables` -> `{"tables": [...]}`;
* `/health` -> `{"ok": true}`.

On a loopback address it answers only requests whose Host is localhost, 127.0.0.1 or [::1] (403 otherwise), so a
web page on another site cannot read it through DNS rebinding.

Other components (the dashboard) may serve more paths from the same server with `add_route`.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from transforms.sinks.memory_store import DEFAULT_ROW_LIMIT, STORE, SqlError, memory_sql_result

_LOGGER = logging.getLogger(__name__)

MAX_ROW_LIMIT = 10_000

# path -> handler(query parameters) -> (HTTP status, JSON-able body, or Raw for a file such as the dashboard's)
Route = Callable[[Dict[str, str]], Tuple[int, object]]


class Raw(NamedTuple):
    """A non-JSON reply body: the bytes and their Content-Type."""
    data: bytes
    content_type: str


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_ROUTES: Dict[str, Route] = {}
_SERVERS: Dict[Tuple[str, int], ThreadingHTTPServer] = {}
_LOCK = threading.Lock()


def add_route(path: str, handler: Route) -> None:
    """Serve GET `path` with `handler(params) -> (status, body)` on every server of this process."""
    _ROUTES[path] = handler


def _sql(params: Dict[str, str]) -> Tuple[int, object]:
    query = params.get("q", "")
    try:
        limit = min(MAX_ROW_LIMIT, max(1, int(params.get("limit", DEFAULT_ROW_LIMIT))))
    except ValueError:
        return 400, {"error": "limit must be an integer"}
    try:
        return 200, memory_sql_result(query, row_limit=limit).to_json()
    except SqlError as error:
        return 400, {"error": str(error)}


def _tables(params: Dict[str, str]) -> Tuple[int, object]:
    return 200, {"tables": STORE.tables()}


add_route("/sql", _sql)
add_route("/tables", _tables)
add_route("/health", lambda params: (200, {"ok": True}))


class _Handler(BaseHTTPRequestHandler):
    server_version = "hitstream"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._host_allowed():
            self._reply(403, {"error": "this server answers only to localhost, 127.0.0.1 or [::1]"})
            return
        url = urllib.parse.urlsplit(self.path)
        handler = _ROUTES.get(url.path)
        if handler is None:
            self._reply(404, {"error": f"no such path {url.path}; try /sql?q=SELECT..."})
            return
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        try:
            status, body = handler(params)
        except Exception as error:  # a bug in a handler must answer 500, not kill the server thread
            _LOGGER.exception("server: %s failed", url.path)
            status, body = 500, {"error": f"internal error: {type(error).__name__}"}
        self._reply(status, body)

    def _host_allowed(self) -> bool:
        """On a loopback address, the Host header must be a loopback name too: a web page whose own domain was
        pointed at 127.0.0.1 (DNS rebinding) would otherwise read the job's data through the visitor's browser."""
        if not ipaddress.ip_address(self.server.server_address[0]).is_loopback:
            return True  # bound to a chosen interface: whoever chose it decides who may connect
        host = self.headers.get("Host")
        try:
            return host is None or urllib.parse.urlsplit(f"//{host}").hostname in _LOOPBACK_NAMES
        except ValueError:  # not even a host name ("[::1")
            return False

    def _reply(self, status: int, body: object) -> None:
        raw = body if isinstance(body, Raw) else Raw(json.dumps(body, default=str).encode(), "application/json")
        data = raw.data
        self.send_response(status)
        self.send_header("Content-Type", raw.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        _LOGGER.debug("server: " + format, *args)


def ensure_started(port: int, host: str = "127.0.0.1") -> Optional[ThreadingHTTPServer]:
    """Serve on host:port in a daemon thread, once per process. Returns None (and warns) if the port is taken."""
    with _LOCK:
        server = _SERVERS.get((host, port))
        if server is not None:
            return server
        try:
            server = ThreadingHTTPServer((host, port), _Handler)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            _LOGGER.warning("server: %s:%d is in use, so `hitstream sql` will not reach this job's memory tables; "
                            "pass another --dashboard-port", host, port)
            return None
        # Request threads are joined on close (ThreadingMixIn's block_on_close): a daemon thread still inside DuckDB
        # when the interpreter exits is unwound by force through DuckDB's C++ and aborts the process (SIGABRT,
        # "FATAL: exception not rethrown"), so the job's exit code would be -6 rather than its own.
        server.daemon_threads = False
        threading.Thread(target=server.serve_forever, name=f"hitstream-sql-{port}", daemon=True).start()
        _SERVERS[(host, port)] = server
        _LOGGER.info("server: SQL over memory tables on http://%s:%d/sql?q=...", host, server.server_port)
        return server


def stop(port: int, host: str = "127.0.0.1") -> None:
    """Stop serving host:port and wait for the requests in flight (a SQL query ends within its timeout)."""
    with _LOCK:
        server = _SERVERS.pop((host, port), None)
    if server is not None:
        server.shutdown()
        server.server_close()


def stop_all() -> None:
    """Stop every server of this process; the job that ends calls it before the interpreter exits."""
    with _LOCK:
        addresses = list(_SERVERS)
    for host, port in addresses:
        stop(port, host)
