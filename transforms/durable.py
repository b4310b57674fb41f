"""Durable file writes: a file replaced atomically (temp file, fsync, rename, fsync of its folder), and a folder's
fsync, so that a rename survives a crash. Readers see the old file or the new one, never part of one."""
from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """Make the entries of folder `path` (a rename into it, a new file) durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: str, data: bytes, temp: str, durable: bool = True) -> None:
    """Replace `path` with `data` through the temp file `temp` (in the same folder). `durable=False` skips the
    fsyncs (a test or a throwaway output may trade crash safety for speed)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        if durable:
            os.fsync(file.fileno())
    os.replace(temp, path)
    if durable:
        fsync_dir(folder)
