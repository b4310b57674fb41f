"""`hitstream sql`'s client: a read-only SELECT sent to a running job's SQL server (hitstream/server.py)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from hitstream.server import TOKEN_ENV
from transforms.sinks.memory_store import DEFAULT_ROW_LIMIT, DEFAULT_TIMEOUT, SqlResult


class RemoteSqlError(SystemExit):
    """`hitstream sql` could not get an answer. A SystemExit so the CLI prints the message, not a traceback."""


def query_remote(query: str, port: int = 4040, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT + 5,
                 row_limit: int = DEFAULT_ROW_LIMIT, token: Optional[str] = None) -> SqlResult:
    """Ask a running job's SQL server (`GET /sql?q=...`, with the token of a server bound beyond loopback);
    print the result for a table."""
    url = f"http://{host}:{port}/sql?" + urllib.parse.urlencode({"q": query, "limit": row_limit})
    token = token or os.environ.get(TOKEN_ENV)
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return SqlResult.from_json(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", str(error))
        except ValueError:
            message = str(error)
        raise RemoteSqlError(f"hitstream sql: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        raise RemoteSqlError(
            f"hitstream sql: no job answers on {host}:{port} ({getattr(error, 'reason', error)}). Start one with a "
            f"memory sink, e.g. `hitstream run --sink zip_window_counts=memory:complete`, and pass its "
            f"--dashboard-port as --port.") from None
