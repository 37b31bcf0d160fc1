"""What is left running: processes by what they mention, children by parent (Linux /proc)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    """The processes (of this user) whose command line or environment contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            contents = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if text.encode() in contents:
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            children.add(int(entry.name))
    return children


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
