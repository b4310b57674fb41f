"""A MariaDB server from Debian's packages, run as a plain process with its own datadir.

Not the system service: the datadir, socket and config live under the cache dir, so the
stack needs no systemd and `rm -rf` of the cache resets it. The server listens on
127.0.0.1:3306. The application account is `hitstream` with the password from
HITSTREAM_DB_PASSWORD (default `hitstream`); it owns the database `hitstream` and may
create and drop scratch databases named `hitstream_<anything>`.
"""
import getpass
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import pymysql
from pymysql.converters import escape_string

from stack import paths, process

_LOGGER = logging.getLogger(__name__)

NAME = "mariadb"
HOST = "127.0.0.1"
PORT = 3306
DATABASE = "hitstream"
USER = "hitstream"


def password() -> str:
    return os.environ.get("HITSTREAM_DB_PASSWORD", "hitstream")


def url() -> str:
    """SQLAlchemy URL of the application database."""
    return f"mysql+pymysql://{USER}:{quote(password(), safe='')}@{HOST}:{PORT}/{DATABASE}"


def _masked_url() -> str:
    return f"mysql+pymysql://{USER}:***@{HOST}:{PORT}/{DATABASE}"


def _datadir() -> Path:
    return paths.data_dir("mariadb")


def _write_config() -> Path:
    """One option file shared by install-db, the server and the admin client."""
    run = paths.run_dir()
    server = {
        "datadir": _datadir(),
        "socket": run / "mariadb.sock",
        "pid-file": run / "mariadbd.pid",  # the server's own; process.py keeps mariadb.pid
        "port": PORT,
        "bind-address": HOST,
        "skip-name-resolve": None,
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_unicode_ci",
        "innodb_buffer_pool_size": "256M",
        "max_connections": 500,
        # 2 (the default) logs every port probe of healthy() as an aborted connection.
        "log_warnings": 1,
    }
    if os.geteuid() == 0:
        server["user"] = "root"  # mariadbd refuses to run as root unless told to
    lines = ["[client]", f"socket={run / 'mariadb.sock'}", "", "[mariadbd]"]
    lines += [key if value is None else f"{key}={value}" for key, value in server.items()]
    config = run / "mariadb.cnf"
    config.write_text("\n".join(lines) + "\n")
    return config


def _install_db(config: Path) -> None:
    if (_datadir() / "mysql").is_dir():
        return
    shutil.rmtree(_datadir(), ignore_errors=True)  # a half-done earlier attempt; _datadir() remakes it
    _LOGGER.info("creating MariaDB system tables in %s", _datadir())
    # The OS user who runs this becomes a MariaDB admin authenticated by the socket.
    result = subprocess.run(
        ["mariadb-install-db", f"--defaults-file={config}", "--skip-test-db",
         "--auth-root-authentication-method=socket", f"--auth-root-socket-user={getpass.getuser()}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")


def _client(config: Path, tool: str, *args: str, sql: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a MariaDB CLI tool as the socket-authenticated admin."""
    return subprocess.run([tool, f"--defaults-file={config}", f"--user={getpass.getuser()}", *args],
                          input=sql, capture_output=True, text=True)


def _bootstrap(config: Path) -> None:
    """Create the database and account; re-running it also applies a changed password."""
    pw = escape_string(password())
    statements = [f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`;"]
    for host in ("%", "127.0.0.1", "localhost"):
        account = f"'{USER}'@'{host}'"
        statements += [
            f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{pw}';",
            f"ALTER USER {account} IDENTIFIED BY '{pw}';",
            f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO {account};",
            # Scratch databases (hitstream_<uuid>) for tests that want a whole schema.
            f"GRANT ALL PRIVILEGES ON `{DATABASE}\\_%`.* TO {account};",
        ]
    result = _client(config, "mariadb", sql="\n".join(statements))
    if result.returncode != 0:
        raise RuntimeError(f"creating the {DATABASE} database and user failed:\n{result.stderr}")


def admin_sql(sql: str) -> None:
    """Run statements as the socket-authenticated admin, e.g. to make an account with fewer rights than the
    application's (the fault suite's permission errors)."""
    result = _client(paths.run_dir() / "mariadb.cnf", "mariadb", sql=sql)
    if result.returncode != 0:
        raise RuntimeError(f"mariadb admin statements failed:\n{result.stderr}")


def connect(**kwargs) -> pymysql.connections.Connection:
    return pymysql.connect(host=HOST, port=PORT, user=USER, password=password(), database=DATABASE,
                           connect_timeout=5, **kwargs)


def healthy() -> bool:
    """True when the application account can log in and run a query."""
    if not process.port_in_use(PORT):
        return False
    try:
        with connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except pymysql.MySQLError:
        return False


def start(timeout: float = 120.0) -> None:
    """Start the server unless the application account can already log in."""
    if healthy():
        return
    config = _write_config()
    pid = process.running_pid(NAME)
    if pid is None:
        if process.port_in_use(PORT):
            raise RuntimeError(f"{HOST}:{PORT} is taken by a process that is not this stack's MariaDB "
                               "(a system service? try `service mariadb stop`)")
        _install_db(config)
        pid = process.spawn(NAME, ["mariadbd", f"--defaults-file={config}"])
    process.wait_until_ready(NAME, pid, lambda: _client(config, "mariadb-admin", "ping").returncode == 0, timeout)
    _bootstrap(config)
    if not healthy():
        raise RuntimeError(f"MariaDB is up but {USER} cannot log in; log tail:\n{process.log_tail(NAME)}")
    _LOGGER.info("MariaDB ready: %s", _masked_url())


def stop() -> None:
    process.stop(NAME)


def status() -> dict:
    return {
        "url": _masked_url(),
        "pid": process.running_pid(NAME),
        "healthy": healthy(),
        "log": str(process.log_file(NAME)),
    }
