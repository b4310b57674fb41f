"""The processes of a job, from /proc: who is who in a process tree, and how much memory each holds. Shared by the
benchmarks and the fault suite's soak and slow-sink tests (no psutil: /proc says all they need)."""
from __future__ import annotations

import os
from typing import Dict


def process_roles(root: int) -> Dict[int, str]:
    """pid -> role of `root` and its descendants: "driver" (root), "worker" (a Python SDK worker), "prism" (the
    runner), or "other"."""
    parents, commands = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    commands[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    roles = {}
    for pid in tree:
        command = commands.get(pid, "")
        program = os.path.basename(command.split(" ", 1)[0])
        roles[pid] = ("driver" if pid == root else "worker" if "sdk_worker_main" in command
                      else "prism" if program == "prism" else "other")
    return roles


def rss_bytes(pid: int) -> int:
    """The resident set of a process now, or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError):
        return 0
