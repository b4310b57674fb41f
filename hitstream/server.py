"""A tiny HTTP server for `hitstream sql`: read-only SQL over the memory tables of the job running in this process.

Started by the memory sink in its worker (with LOOPBACK that is the process that launched the job), on
127.0.0.1:<dashboard port> unless told otherwise. Endpoints, all GET, all JSON:

* `/sql?q=<SELECT ...>[&limit=N]` -> `{"columns": [...], "rows": [[...]], "truncated": bool}`, or 400 with
  `{"error": "..."}` (refused or failing SQL; see `transforms.sinks.memory_store` for the rules);
* `/tables` -> `{"tables": [...]}`;
* `/health` -> `{"ok": true}`.

On a loopback address it answers only requests whose Host is localhost, 127.0.0.1 or [::1] (403 otherwise), so a
web page on another site cannot read it through DNS rebinding. On any other address (`--dashboard-host 0.0.0.0`) it
requires a token, as Jupyter does: `access_token()`, from HITSTREAM_DASHBOARD_TOKEN or made at random once per
process, printed in the URL at start. A request carries it as `?token=`, which also sets a cookie so the page's own
requests need nothing more, as that cookie, or as `Authorization: token <token>` (`hitstream sql --token`). Without
it: 403.

Other components (the dashboard) may serve more paths from the same server with `add_route`.
"""
from __future__ import annotations

import errno
import hmac
import http.cookies
import ipaddress
import json
import logging
import os
import secrets
import sys
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


TOKEN_ENV = "HITSTREAM_DASHBOARD_TOKEN"
_TOKEN_COOKIE = "hitstream_token"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_TOKEN: Dict[str, str] = {}
_TOKEN_LOCK = threading.Lock()
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


def access_token() -> str:
    """The token a server bound beyond loopback requires: HITSTREAM_DASHBOARD_TOKEN, or one made at random, once
    per process."""
    with _TOKEN_LOCK:
        if "token" not in _TOKEN:
            _TOKEN["token"] = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
        return _TOKEN["token"]


def _is_token(given: str) -> bool:
    return hmac.compare_digest(given.encode(), access_token().encode())


def needs_token(host: str) -> bool:
    """Whether a server bound to `host` (an address or a name) asks for the token: on anything but loopback."""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def url(host: str, port: int, path: str = "/") -> str:
    """Where to open a server of this process: with the token in it when the server requires one."""
    query = f"?token={access_token()}" if needs_token(host) else ""
    return f"http://{host}:{port}{path}{query}"


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
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        given = params.pop("token", None)
        cookie = None
        if needs_token(self.server.server_address[0]):
            if given is not None and _is_token(given):
                cookie = f"{_TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"  # the page's requests
            elif not self._carries_token():
                self._reply(403, {"error": "this server is bound beyond loopback and requires its token: open the "
                                           "URL hitstream printed at start (.../?token=...), or pass --token to "
                                           f"hitstream sql (or set {TOKEN_ENV})"})
                return
        handler = _ROUTES.get(url.path)
        if handler is None:
            self._reply(404, {"error": f"no such path {url.path}; try /sql?q=SELECT..."})
            return
        try:
            status, body = handler(params)
        except Exception as error:  # a bug in a handler must answer 500, not kill the server thread
            _LOGGER.exception("server: %s failed", url.path)
            status, body = 500, {"error": f"internal error: {type(error).__name__}"}
        self._reply(status, body, cookie)

    def _carries_token(self) -> bool:
        """The token as the cookie that a first visit set, or as an Authorization header."""
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "token" and _is_token(value.strip()):
            return True
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie") or "")
        except http.cookies.CookieError:
            return False
        return _TOKEN_COOKIE in jar and _is_token(jar[_TOKEN_COOKIE].value)

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

    def _reply(self, status: int, body: object, cookie: Optional[str] = None) -> None:
        raw = body if isinstance(body, Raw) else Raw(json.dumps(body, default=str).encode(), "application/json")
        data = raw.data
        self.send_response(status)
        if cookie:
            self.send_header("Set-Cookie", cookie)
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
        if needs_token(host):
            print(f"server: {host}:{server.server_port} is reachable beyond loopback, so it requires a token; open "
                  f"{url(host, server.server_port)}", file=sys.stderr, flush=True)
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
