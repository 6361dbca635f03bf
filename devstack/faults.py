"""Faults on the local platform, for the chaos bench and the suite's fault cases: a process killed
as an OOM kill or a lost node would kill it (SIGKILL, no clean-up), found by what it serves."""

from __future__ import annotations

import os
import signal

import psutil


class NothingListening(LookupError):
    pass


def listener(port: int) -> int:
    """The pid listening on 127.0.0.1:`port`."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port \
                and connection.pid:
            return connection.pid
    raise NothingListening(f"nothing listens on :{port}")


def kill_group_of(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """`sig` to `pid`'s whole process group (an OpenClaw gateway and its tools), never to our own."""
    group = os.getpgid(pid)
    if group == os.getpgid(0):
        os.kill(pid, sig)  # a process of our own group: that one only
    else:
        os.killpg(group, sig)


def kill_listener(port: int, sig: signal.Signals = signal.SIGKILL) -> int:
    """Kills what serves `port` (its process group); returns its pid."""
    pid = listener(port)
    kill_group_of(pid, sig)
    return pid
