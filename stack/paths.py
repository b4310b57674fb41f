"""Where the local stack keeps its downloads, data, pid files and logs.

Everything lives under one cache root so that `rm -rf` of it gives a fresh machine.
The root is ~/.cache/hitstream unless HITSTREAM_CACHE says otherwise; it is read on
every call so tests and scripts can point a process at a throwaway cache.
"""
import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("HITSTREAM_CACHE") or "~/.cache/hitstream").expanduser()


def _dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir() -> Path:
    """Pid files and sockets of running services."""
    return _dir("run")


def log_dir() -> Path:
    return _dir("logs")


def data_dir(service: str) -> Path:
    """Persistent state of one service (Kafka log dirs, MariaDB datadir)."""
    return _dir("data", service)


def tool_dir(*parts: str) -> Path:
    """Downloaded or built tools: Kafka jars, the Prism binary, Beam jars."""
    return _dir("tools", *parts)
