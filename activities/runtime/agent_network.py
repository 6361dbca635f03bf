"""What local agents may reach over the network: the model and the platform's MCP server on loopback,
and the internet; not the platform's other services (PostgreSQL, Temporal, the stand-ins) and not
private ranges. The local twin of the agents' NetworkPolicy on Kubernetes.

Every gateway runs with the supplementary group `deepclaw-agents` (agent_users.py); one iptables
chain, jumped to for packets of that group, rejects what is not allowed. Runtimes on one machine
share the chain: each adds the loopback ports it allows, tagged with its pid, and removes them on
close (a dead runtime's rules are pruned by the next). Needs root and iptables, like agent users.

The rules are stateless: only a connection's opening SYN is judged; every later packet of a
connection (and a server's SYN-ACK) passes. Agents run unprivileged, without raw sockets, so
they cannot forge packets outside a connection, and no rule needs connection tracking, which
would otherwise cost every loopback packet on the machine (the voice bridge's included) a
lookup in the kernel's conntrack table.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CHAIN = "DEEPCLAW-AGENTS"
PRIVATE_RANGES = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,100.64.0.0/10"
TAG = re.compile(r'--comment "?deepclaw:(\d+)"?')
OPEN_CONNECTIONS = ["-p", "tcp", "!", "--syn", "-j", "RETURN"]
TRACKED_CONNECTIONS = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]  # before 2026-12


class FirewallUnavailable(RuntimeError):
    pass


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise FirewallUnavailable(f"iptables {' '.join(args)}: {result.stderr.strip()}")
    return result


class AgentFirewall:
    def __init__(self, group_id: int, lock_path: Path) -> None:
        self.group_id = group_id
        self.lock_path = lock_path
        self.tag = f"deepclaw:{os.getpid()}"
        self._rules: list[list[str]] = []

    def start(self, loopback_ports: Iterable[int]) -> None:
        """Create the shared chain if need be, then allow this runtime's loopback ports."""
        if shutil.which("iptables") is None:
            raise FirewallUnavailable("iptables is not installed (apt-get install iptables)")
        with self._locked():
            if _iptables("-S", CHAIN, check=False).returncode != 0:
                _iptables("-N", CHAIN)
                _iptables("-A", CHAIN, *OPEN_CONNECTIONS)
                _iptables("-A", CHAIN, "-o", "lo", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
                _iptables("-A", CHAIN, "-o", "lo", "-j", "REJECT")
                _iptables("-A", CHAIN, "-d", PRIVATE_RANGES, "-j", "REJECT")
            elif _iptables("-D", CHAIN, *TRACKED_CONNECTIONS, check=False).returncode == 0:
                _iptables("-I", CHAIN, "1", *OPEN_CONNECTIONS)  # a chain made by an earlier version
            jump = ["OUTPUT", "-m", "owner", "--gid-owner", str(self.group_id), "--suppl-groups", "-j", CHAIN]
            if _iptables("-C", *jump, check=False).returncode != 0:
                _iptables("-I", *jump)
            self._prune_dead_runtimes()
            for port in sorted(set(loopback_ports)):
                rule = [CHAIN, "-d", "127.0.0.1", "-p", "tcp", "--dport", str(port),
                        "-m", "comment", "--comment", self.tag, "-j", "RETURN"]
                _iptables("-I", rule[0], "2", *rule[1:])  # after open connections, before the rejects
                self._rules.append(rule)
        log.info("agents may reach loopback ports %s, the internet, and nothing else", sorted(set(loopback_ports)))

    def close(self) -> None:
        with self._locked():
            for rule in self._rules:
                _iptables("-D", *rule, check=False)
        self._rules.clear()

    def _prune_dead_runtimes(self) -> None:
        for line in _iptables("-S", CHAIN).stdout.splitlines():
            found = TAG.search(line)
            if found and not _alive(int(found.group(1))):
                _iptables("-D", *shlex.split(line)[1:], check=False)

    def _locked(self) -> _FileLock:
        return _FileLock(self.lock_path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock
