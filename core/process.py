"""Child processes that cannot outlive their parent.

Each child gets its own process group (so a stop reaches its grandchildren too) and
PR_SET_PDEATHSIG (so even a SIGKILLed supervisor leaves no orphans behind).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import pwd
import random
import resource
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the process group still gets cleaned up on a normal stop
        pass


def set_group_priority(pid: int, nice: int) -> None:
    """Give `pid`'s scheduling group the niceness `nice` too.

    Linux's autogroup scheduling (on by default in many distributions and on this project's
    machines: /proc/sys/kernel/sched_autogroup_enabled) puts each session in a scheduling group of
    its own and shares the CPU between groups first; a process's own nice value then only weighs
    against its own group. Every child here starts a session (setsid), so a spare gateway at nice 15
    took as much CPU as the user's agent it was meant to yield to (measured: two busy processes on
    one core in separate sessions took equal shares at nice 0 and 15; with the group's nice set to
    15 as well, the niced one got next to nothing)."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
    except OSError as error:  # no autogroup here (or not ours to change): the process's nice is what there is
        log.debug("could not set the scheduling group's priority of %s: %s", pid, error)


def _preexec(nice: int, limits: Mapping[int, int]) -> None:
    # Runs after the switch to `user` (subprocess sets ids first): the death signal survives it.
    _die_with_parent()
    if nice:
        os.nice(nice)
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def grant_traverse(path: Path) -> None:
    """Let unprivileged users reach `path` through our folders (x only: they can't list them)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o011)


class ChildProcess:
    """One supervised child: start, wait, stop gracefully then forcefully."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        log_path: str | None = None,
        nice: int = 0,
        limits: Mapping[int, int] | None = None,
        extra_groups: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.nice = nice
        self.limits = dict(limits or {})  # resource.RLIMIT_* -> soft and hard limit
        self.extra_groups = list(extra_groups)  # with `user`: its supplementary groups (else none)
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        # Another user gets that user's own group and none of ours (root's groups would leak through).
        ids = ({"user": self.user, "group": pwd.getpwnam(self.user).pw_gid, "extra_groups": self.extra_groups}
               if self.user else {})
        output = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (owned by the child)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT if output else None,
                preexec_fn=lambda: _preexec(self.nice, self.limits),
                **ids,
            )
        finally:
            if output:
                output.close()
        if self.nice:
            set_group_priority(self.proc.pid, self.nice)  # its session is its own: see there
        log.info("started %s (pid %s)", self.name, self.proc.pid)

    def set_priority(self, nice: int) -> None:
        """Renice the process, everything it started, and its scheduling group (e.g. a spare gateway
        becoming a user's agent). Raising a priority needs CAP_SYS_NICE (the platform runs as root
        where it confines agents as Unix users)."""
        if not self.running:
            return
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                threads = [thread.id for thread in process.threads()]
            except psutil.Error:
                continue
            # Linux keeps a nice value per thread: renicing a process's id changes its main thread
            # only, and a gateway started low kept its worker threads (the ones a turn waits on) low.
            for thread in threads:
                try:
                    os.setpriority(os.PRIO_PROCESS, thread, nice)
                except OSError:  # gone meanwhile, or raising it without CAP_SYS_NICE
                    pass
        set_group_priority(self.proc.pid, nice)
        self.nice = nice

    async def wait_until(self, probe: Callable[[], Awaitable[bool]], *, what: str, timeout: float,
                         interval: float = 0.1) -> float:
        """Poll `probe` until it answers True (errors count as not yet); seconds taken.
        Fails at once if the process exits, and after `timeout`."""
        started = time.monotonic()
        while True:
            if not self.running:
                raise RuntimeError(f"{what} exited during start-up; see {self.log_path or 'its output'}")
            try:
                if await probe():
                    return time.monotonic() - started
            except Exception:  # not listening yet
                pass
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{what} not ready after {timeout:.0f}s; see {self.log_path or 'its output'}")
            await asyncio.sleep(interval)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    def pause(self) -> None:
        """Freeze the whole group (SIGSTOP): memory kept, no CPU, back at once with `resume`."""
        if self.running:
            self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            self._signal_group(signal.SIGCONT)

    async def stop(self, timeout: float = 8.0) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.resume()  # a frozen process would handle its stop signal only once thawed
            self._signal_group(self.stop_signal)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
        # Whatever the leader did, nothing of its group may survive.
        self._signal_group(signal.SIGKILL)
        await self.proc.wait()
        log.info("stopped %s (exit %s)", self.name, self.proc.returncode)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port nobody listens on right now, for a server started a little later.

    Drawn from below the kernel's ephemeral range: a port the kernel hands out for bind(0) is one it
    also hands to outgoing connections, so on a busy machine a connection can take it as its local
    port before the server binds it (a Temporal dev server once exited at start-up so in CI)."""
    low, _ = _ephemeral_range()
    if low > 11000:
        for _ in range(200):
            port = random.randrange(10000, low)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            if len(_handed_out) > 2000:  # a long-lived process: old ones are long bound or gone
                _handed_out.clear()
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
