"""Each local gateway runs as an unprivileged system user of its own, so an agent's code execution
is confined to its own user's files and processes.

OpenClaw's security model is one trusted operator per gateway and "do not co-locate mutually
untrusted users in one OpenClaw process or one OS user" (docs/gateway/multi-tenant-hosting.md).
On Kubernetes the pod is that boundary; locally it is a Unix user: `deepclaw-agent-<n>`, created on
first use, held through a lock file while one gateway runs as it (so two runtimes on one machine
never share one), and handed back with every process it left killed. The user's folder belongs to
that Unix user (0700) only while their gateway runs; otherwise it is root's again, so a later
gateway under the same Unix user cannot read it.

Every agent user also has the supplementary group `deepclaw-agents`, which agent_network.py uses to
keep agents off the platform's own loopback services.

Confinement needs root (to create users and switch to them). A non-root platform runs gateways
as itself and says so once in the log.
"""

from __future__ import annotations

import fcntl
import grp
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from activities.runtime.agent_network import AgentFirewall, FirewallUnavailable
from core.process import grant_traverse

log = logging.getLogger(__name__)

PREFIX = "deepclaw-agent-"
GROUP = "deepclaw-agents"
MAX_USERS = 1000
LOCKS = Path("/run/lock/deepclaw-agent-users")
NOLOGIN = "/usr/sbin/nologin"


@dataclass(frozen=True)
class AgentUser:
    name: str
    uid: int
    gid: int
    lock_fd: int
    scratch: Path  # persistent TMPDIR (Node's compile cache) owned by this user
    groups: tuple[int, ...]  # supplementary: the agents' group (network rules match on it)

    @property
    def ids(self) -> tuple[int, int]:
        return self.uid, self.gid


class AgentUsers:
    def __init__(self, scratch_root: Path, *, loopback_ports: Iterable[int] = (), enabled: bool | None = None) -> None:
        self.enabled = os.geteuid() == 0 if enabled is None else enabled
        self.scratch_root = scratch_root
        self.loopback_ports = set(loopback_ports)  # what agents may reach on loopback (model, MCP server)
        self.firewall: AgentFirewall | None = None
        if not self.enabled:
            log.warning("not running as root: local agents run as %s and their code execution is not confined "
                        "to their own files", pwd.getpwuid(os.geteuid()).pw_name)

    def _group(self) -> int:
        """The agents' group, and the network rules for it (set up once, with the first agent user)."""
        gid = _ensure_group(GROUP)
        if self.firewall is None:
            firewall = AgentFirewall(gid, LOCKS / "firewall.lock")
            try:
                firewall.start(self.loopback_ports)
            except FirewallUnavailable as error:
                log.error("agents' network is NOT confined (they can reach the platform's loopback services): %s",
                          error)
            self.firewall = firewall
        return gid

    def close(self) -> None:
        if self.firewall is not None:
            self.firewall.close()
            self.firewall = None

    def acquire(self) -> AgentUser | None:
        """A Unix user no other gateway on this machine runs as; None when not confining."""
        if not self.enabled:
            return None
        LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        grant_traverse(self.scratch_root)
        group = self._group()
        for n in range(MAX_USERS):
            fd = os.open(LOCKS / f"{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                entry = _ensure_user(f"{PREFIX}{n}")
                _kill_processes_of(entry.pw_uid)  # a crashed runtime's leftovers
                scratch = self.scratch_root / entry.pw_name
                scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chown(scratch, entry.pw_uid, entry.pw_gid)
            except BaseException:
                os.close(fd)
                raise
            return AgentUser(entry.pw_name, entry.pw_uid, entry.pw_gid, fd, scratch, (group,))
        raise RuntimeError(f"all {MAX_USERS} agent users are in use on this machine")

    def release(self, user: AgentUser | None) -> None:
        """After its gateway stopped: nothing it started may outlive it (exec can daemonise)."""
        if user is None:
            return
        _kill_processes_of(user.uid)
        os.close(user.lock_fd)

    def hand_over(self, folder: Path, user: AgentUser | None) -> None:
        if user is not None:
            _chown_tree(folder, *user.ids)

    def take_back(self, folder: Path, user: AgentUser | None) -> None:
        if user is not None and folder.exists():
            _chown_tree(folder, os.geteuid(), os.getegid())


def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    result = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True)
    if result.returncode not in (0, 9):  # 9: created meanwhile
        raise RuntimeError(f"groupadd {name} failed: {result.stderr.strip()}")
    return grp.getgrnam(name).gr_gid


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                             "--shell", NOLOGIN, "--comment", "DeepClaw agent sandbox", name],
                            capture_output=True, text=True)
    if result.returncode not in (0, 9):  # 9: created meanwhile by another runtime
        raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}")
    return pwd.getpwnam(name)


def _kill_processes_of(uid: int, wait_s: float = 5.0) -> None:
    """SIGKILL every process of `uid`, and wait until they are gone (the Unix user is reused next)."""
    killed = []
    for process in psutil.process_iter(["uids"]):
        try:
            if process.info["uids"] and process.info["uids"].real == uid:
                process.send_signal(signal.SIGKILL)
                killed.append(process)
        except psutil.Error:
            pass
    deadline = time.monotonic() + wait_s
    while (alive := [p for p in killed if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)  # a zombie (dead, its parent yet to reap it) counts as gone
    if alive:
        log.warning("processes of agent uid %s survived SIGKILL: %s", uid, [p.pid for p in alive])


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _chown_tree(folder: Path, uid: int, gid: int) -> None:
    folder.chmod(0o700)
    os.chown(folder, uid, gid)
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.lchown(os.path.join(parent, name), uid, gid)
