"""The dashboard's server: bound to 127.0.0.1 by default, GET only, loopback Host names only, a token beyond loopback,
and a SQL box that can neither write nor reach files or extensions (read-only SELECT, DuckDB external access off).

The server and DuckDB are the real ones, in this process, as the memory sink runs them in a LOOPBACK worker."""
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hitstream import dashboard, server
from hitstream.progress import StreamingQuery
from hitstream.sql_client import RemoteSqlError, query_remote
from tests.security.net import free_port, get, other_addresses, refuses, request
from transforms.rows import ZipCount
from transforms.sinks.memory_store import STORE

MARKER = "hitstream-local-file-marker"


@pytest.fixture
def served():
    """(port, table): a memory table with one row, behind the dashboard's server on its default address."""
    table = f"sec_{uuid.uuid4().hex[:12]}"
    STORE.upsert(table, [ZipCount("94107", 3)])
    query = StreamingQuery(name="security")
    port = free_port()
    http = dashboard.serve(query, port)  # the default host, as `hitstream run --dashboard` calls it
    assert http is not None
    yield port, table
    server.stop(port)
    STORE.drop(table)


def _sql(port: int, query: str):
    return get(port, "/sql?" + urllib.parse.urlencode({"q": query}))


def test_default_bind_is_127_0_0_1_and_no_other_interface_answers(served):
    port, table = served
    assert server.ensure_started(port).server_address[0] == "127.0.0.1"
    assert get(port, "/health") == (200, {"ok": True})
    for address in other_addresses():
        assert refuses(address, port), f"the dashboard answered on {address}:{port}"


def test_a_foreign_host_name_is_refused(served):
    # A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its own Host.
    port, table = served
    status, body = get(port, f"/sql?q=SELECT+*+FROM+{table}", host=f"rebind.example:{port}")
    assert status == 403 and "localhost" in body["error"]
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        status, body = get(port, f"/sql?q=SELECT+*+FROM+{table}", host=name)
        assert status == 200 and body["rows"] == [["94107", 3]], name


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get_is_served(served, method):
    port, table = served
    status, _ = get(port, "/sql?q=SELECT+1", method=method)
    assert status == 501


@pytest.fixture
def local_files(tmp_path):
    """A CSV and a Parquet file holding MARKER, which the SQL box must not be able to read."""
    csv = tmp_path / "secret.csv"
    csv.write_text(f"marker\n{MARKER}\n")
    parquet = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"marker": [MARKER]}), parquet)
    return tmp_path


# (query, what the error says). {t}: the memory table; {d}: a folder with secret.csv and secret.parquet.
REFUSED = [
    ("CREATE TABLE evil (a INTEGER)", "only SELECT is allowed"),
    ("CREATE TABLE evil AS SELECT * FROM {t}", "only SELECT is allowed"),
    ("INSERT INTO {t} VALUES ('00000', 1)", "only SELECT is allowed"),
    ("UPDATE {t} SET count = 0", "only SELECT is allowed"),
    ("DELETE FROM {t}", "only SELECT is allowed"),
    ("DROP TABLE {t}", "only SELECT is allowed"),
    ("COPY {t} TO '{d}/copied.csv'", "only SELECT is allowed"),
    ("COPY (SELECT 1) TO '{d}/copied.parquet' (FORMAT parquet)", "only SELECT is allowed"),
    ("ATTACH '{d}/attached.duckdb' AS other", "only SELECT is allowed"),
    ("INSTALL httpfs", "only SELECT is allowed"),
    ("LOAD httpfs", "only SELECT is allowed"),
    ("SET enable_external_access = true", "only SELECT is allowed"),
    ("SELECT 1; DROP TABLE {t}", "one statement per query"),
    ("SELECT * FROM read_csv('{d}/secret.csv')", "file system operations are disabled"),
    ("SELECT * FROM read_csv_auto('{d}/secret.csv')", "file system operations are disabled"),
    ("SELECT * FROM read_parquet('{d}/secret.parquet')", "file system operations are disabled"),
    ("SELECT * FROM read_text('{d}/secret.csv')", "file system operations are disabled"),
    ("SELECT * FROM glob('{d}/*')", "file system operations are disabled"),
    ("SELECT * FROM query('CREATE TABLE evil (a INTEGER)')", "SELECT"),
]


@pytest.mark.parametrize("query, says", REFUSED, ids=[q for q, _ in REFUSED])
def test_sql_box_refuses_writes_files_and_extensions(served, local_files, query, says):
    port, table = served
    status, body = _sql(port, query.format(t=table, d=local_files))
    assert status == 400, body
    assert says in body["error"], body["error"]
    assert MARKER not in str(body)
    # Nothing was written: no new file, the table as it was, no new table.
    assert sorted(p.name for p in local_files.iterdir()) == ["secret.csv", "secret.parquet"]
    assert _sql(port, f"SELECT * FROM {table}") == (200, {"columns": ["zipcode", "count"],
                                                          "rows": [["94107", 3]], "truncated": False})
    assert "evil" not in get(port, "/tables")[1]["tables"]


def test_sql_box_runs_with_external_access_off(served):
    port, table = served
    status, body = _sql(port, "SELECT current_setting('enable_external_access') AS external")
    assert status == 200 and body["rows"] == [[False]]


def test_dashboard_host_is_loopback_unless_told_otherwise():
    from apache_beam.options.pipeline_options import PipelineOptions

    from hitstream.job import observe_job
    from pipelines.options import HitstreamOptions

    default = PipelineOptions([]).view_as(HitstreamOptions)
    assert default.dashboard_host == "127.0.0.1"
    port = free_port()
    told = PipelineOptions(["--dashboard-host=0.0.0.0", f"--dashboard-port={port}",
                            "--sink=zip_counts=memory:update"]).view_as(HitstreamOptions)
    job = observe_job(told)  # what `hitstream run` does before it submits a job with a memory sink
    try:
        # The SQL server of that address is the job's (a second one could not bind it): it listens on 0.0.0.0.
        assert server.ensure_started(port, "0.0.0.0") is not None
        assert get(port, "/tables")[0] == 403  # beyond loopback, a token is required
        assert get(port, f"/tables?token={server.access_token()}")[0] == 200  # asked on loopback only
    finally:
        job.close()


@pytest.fixture
def served_beyond_loopback():
    """(port, table, token): the dashboard bound to 0.0.0.0, as `--dashboard-host 0.0.0.0` does. Every request of
    these tests goes to 127.0.0.1, so the traffic stays on loopback."""
    table = f"sec_{uuid.uuid4().hex[:12]}"
    STORE.upsert(table, [ZipCount("94107", 3)])
    port = free_port()
    assert dashboard.serve(StreamingQuery(name="security"), port, "0.0.0.0") is not None
    yield port, table, server.access_token()
    server.stop(port, "0.0.0.0")
    STORE.drop(table)


def test_beyond_loopback_every_path_needs_the_token(capsys, served_beyond_loopback):
    port, table, token = served_beyond_loopback
    assert f"?token={token}" in capsys.readouterr().err  # the URL printed at start, as Jupyter prints its own
    assert len(token) >= 32
    for path in ("/", "/health", "/tables", f"/sql?q=SELECT+*+FROM+{table}", "/nowhere"):
        status, body = get(port, path)
        assert status == 403 and "token" in body["error"], path
        assert get(port, path + ("&" if "?" in path else "?") + "token=wrong")[0] == 403, path
        assert get(port, path, headers={"Cookie": "hitstream_token=wrong"})[0] == 403, path
        assert get(port, path, headers={"Authorization": "token wrong"})[0] == 403, path
    # The token in the URL answers and sets the cookie; then the cookie alone does, as the page's own requests.
    status, body, headers = request(port, f"/?token={token}")
    assert status == 200 and "<html" in body.lower()
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"hitstream_token={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    sent = {"Cookie": cookie.split(";")[0]}
    assert get(port, f"/sql?q=SELECT+*+FROM+{table}", headers=sent) == (
        200, {"columns": ["zipcode", "count"], "rows": [["94107", 3]], "truncated": False})
    assert get(port, "/tables", headers={"Authorization": f"token {token}"})[0] == 200  # hitstream sql --token
    assert query_remote(f"SELECT count FROM {table}", port=port, token=token).rows == [(3,)]
    with pytest.raises(RemoteSqlError, match="token"):
        query_remote(f"SELECT count FROM {table}", port=port)


@pytest.mark.parametrize("query, says", REFUSED[:6] + REFUSED[-6:], ids=[q for q, _ in REFUSED[:6] + REFUSED[-6:]])
def test_beyond_loopback_the_sql_box_still_refuses(served_beyond_loopback, local_files, query, says):
    port, table, token = served_beyond_loopback
    status, body = get(port, "/sql?" + urllib.parse.urlencode({"q": query.format(t=table, d=local_files)}),
                       headers={"Authorization": f"token {token}"})
    assert status == 400 and says in body["error"], body
    assert MARKER not in str(body)
