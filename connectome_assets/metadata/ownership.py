"""Who holds an upload, and whether that process still exists.

An `uploading` state row names its owner as `host:pid:start`, where `start` is the process's
start time in clock ticks since boot (Linux `/proc/<pid>/stat`, field 22; 0 where unknown). A
pid alone is not an identity: after a restart a new process can get the same pid (in a container
it is often 1), but never the same start time. A process on another host cannot be inspected;
there the upload's lease (renewed by its heartbeat) is what says whether it is alive.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import Enum


class Liveness(Enum):
    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # another host: only the lease can tell


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in ticks since boot; None when there is no such process.

    Returns 0 for a live process where `/proc` is not available (the start time is then unknown).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the command name may contain spaces and parentheses
        return int(fields[19])  # field 22 overall; fields[0] is field 3
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: fall back to asking the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0


@dataclass(frozen=True)
class UploadOwner:
    host: str
    pid: int
    start_ticks: int

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start_ticks}"

    @classmethod
    def current(cls) -> UploadOwner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_ticks(pid) or 0)

    @classmethod
    def parse(cls, text: str | None) -> UploadOwner | None:
        """The owner recorded in a state row; None for rows written before owners were recorded."""
        if not text:
            return None
        host, _, rest = text.rpartition(":")
        host, _, pid = host.rpartition(":")
        try:
            return cls(host, int(pid), int(rest))
        except ValueError:
            return None

    def liveness(self) -> Liveness:
        if self.host != socket.gethostname():
            return Liveness.UNKNOWN
        ticks = process_start_ticks(self.pid)
        if ticks is None or (self.start_ticks and ticks and ticks != self.start_ticks):
            return Liveness.GONE
        return Liveness.ALIVE
