"""Two network hosts on one machine: a robot and an edge namespace joined by a veth pair.

Link faults that the kernel can make are made here, where they are real: packets dropped or
answered with TCP resets by iptables in the robot namespace, the veth link set down and up (on
a schedule, for flapping), and the edge process killed, frozen (SIGSTOP: the black hole a Wi-Fi
drop looks like) or thawed. The test addresses exist only inside the namespaces made here.

Everything made is removed again: `NetTestbed` is a context manager, live testbeds are closed at
exit, and `cleanup_stale()` removes what a killed run left behind (names carry the owner's pid).
Needs root, `ip` (iproute2) and `iptables`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from robot_compress.faults.process_group import freeze_group, thaw_group
from robot_compress.runtime import processes
from robot_compress.runtime.processes import signal_group

ROBOT_IP = "10.200.0.1"
EDGE_IP = "10.200.0.2"
PREFIX_LEN = 30
NAME_PREFIX = "rcf"
_STALE = re.compile(rf"^{NAME_PREFIX}(\d+)x\d+[re]$")
_counter = itertools.count()
_live: set[NetTestbed] = set()


class HarnessError(RuntimeError):
    """The machine cannot host the harness (not root, a tool missing) or a command failed."""


def missing_requirements() -> list[str]:
    """What stops the harness here, in words; empty when it can run."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (network namespaces and iptables need root; CI runs as root)")
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` not found: apt-get install -y {package} (.ci/run does this)")
    return problems


def _run(argv: Sequence[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, input=stdin)
    if check and result.returncode != 0:
        raise HarnessError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass
class Event:
    """One fault action, stamped with wall-clock time (comparable with ROS header stamps)."""

    t: float
    action: str


@dataclass(eq=False)  # identity, not field equality: live testbeds are kept in a set
class NetTestbed:
    """A robot and an edge namespace joined by veth, with the faults to inject between them."""

    edge_ip: str = EDGE_IP  # where the robot reaches the edge host
    robot_ns: str = ""
    edge_ns: str = ""
    robot_if: str = ""
    edge_if: str = ""
    events: list[Event] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _flappers: list[Flapper] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = f"{NAME_PREFIX}{os.getpid()}x{next(_counter)}"
        self.robot_ns = self.robot_ns or f"{base}r"
        self.edge_ns = self.edge_ns or f"{base}e"
        self.robot_if = self.robot_if or self.robot_ns  # veth names share the 15-character limit
        self.edge_if = self.edge_if or self.edge_ns

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> NetTestbed:
        problems = missing_requirements()
        if problems:
            raise HarnessError("the network fault harness cannot run: " + "; ".join(problems))
        _live.add(self)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        r, e = self.robot_ns, self.edge_ns
        _run(["ip", "netns", "add", r])
        _run(["ip", "netns", "add", e])
        _run(["ip", "link", "add", self.robot_if, "netns", r, "type", "veth", "peer", "name", self.edge_if,
              "netns", e])
        for ns, ifname, ip in ((r, self.robot_if, ROBOT_IP), (e, self.edge_if, EDGE_IP)):
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", ifname])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", ifname, "up"])
        self._mark("created")

    def close(self) -> None:
        """Stop flapping, end every process started here or still inside the namespaces, delete
        the namespaces (which deletes the veth pair and every iptables rule with them)."""
        for flapper in self._flappers:
            flapper.stop()
        processes.stop(self._procs, grace_s=3.0, signals=(signal.SIGTERM, signal.SIGKILL))
        for ns in (self.robot_ns, self.edge_ns):
            _delete_namespace(ns)
        _live.discard(self)

    # ---- processes -------------------------------------------------------------------------
    def namespace(self, side: str) -> str:
        return {"robot": self.robot_ns, "edge": self.edge_ns}[side]

    def popen(self, side: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start `argv` inside the robot or edge namespace, in its own process group, tracked so
        `close()` ends it. `ip netns exec` execs in place, so `pid` is the program's own pid."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace(side), *argv],
                                start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, side: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.namespace(side), *argv], check=check)

    def kill(self, proc: subprocess.Popen) -> None:
        signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=5)
        self._mark("kill")

    def freeze(self, proc: subprocess.Popen) -> None:
        """Returns once every thread of the group has stopped (see `process_group`)."""
        freeze_group(proc)
        self._mark("freeze")

    def thaw(self, proc: subprocess.Popen) -> None:
        thaw_group(proc)
        self._mark("thaw")

    # ---- link faults (all in the robot namespace) ------------------------------------------
    def _iptables(self, *args: str) -> None:
        _run(["ip", "netns", "exec", self.robot_ns, "iptables", "-w", *args])

    def drop(self) -> None:
        """Silently drop everything to and from the edge: no answer, no error, only timeouts."""
        self._iptables("-I", "OUTPUT", "-d", EDGE_IP, "-j", "DROP")
        self._iptables("-I", "INPUT", "-s", EDGE_IP, "-j", "DROP")
        self._mark("drop")

    def reject(self) -> None:
        """Answer every TCP segment to or from the edge with a reset: refused/reset at once.

        Both rules land in one iptables-restore transaction, so the fault has one start: the
        moment this returns. A request already sent when they land is not reset: its answer is
        rejected toward the edge, and the robot's socket learns only when it next sends (in
        practice, at its deadline)."""
        tcp_reset = "-j REJECT --reject-with tcp-reset"
        # The resets made for our own segments come back "from" the edge: let them in.
        rules = ("*filter\n"
                 f"-I OUTPUT -d {EDGE_IP} -p tcp {tcp_reset}\n"
                 f"-I INPUT -s {EDGE_IP} -p tcp ! --tcp-flags RST RST {tcp_reset}\n"
                 "COMMIT\n")
        _run(["ip", "netns", "exec", self.robot_ns, "iptables-restore", "--noflush"], stdin=rules)
        self._mark("reject")

    def clear(self) -> None:
        """Remove every rule added by drop()/reject()."""
        self._iptables("-F", "INPUT")
        self._iptables("-F", "OUTPUT")
        self._mark("clear")

    def rules(self) -> str:
        return self.run("robot", ["iptables", "-w", "-S"]).stdout

    def set_link(self, up: bool) -> None:
        """Set the robot's end of the veth pair up or down (the edge end sees carrier loss)."""
        _run(["ip", "-n", self.robot_ns, "link", "set", self.robot_if, "up" if up else "down"])
        self._mark("link_up" if up else "link_down")

    def link_is_up(self) -> bool:
        out = _run(["ip", "-n", self.robot_ns, "-o", "link", "show", self.robot_if]).stdout
        return ",UP" in out or "<UP" in out

    def flap(self, periods_s: Sequence[float]) -> Flapper:
        """Start toggling the link in the background: down for periods_s[0], up for periods_s[1],
        down ... The link is left up when the schedule ends or the flapper is stopped."""
        flapper = Flapper(self, tuple(periods_s))
        self._flappers.append(flapper)
        flapper.start()
        return flapper

    def _mark(self, action: str) -> None:
        self.events.append(Event(time.time(), action))


class Flapper(threading.Thread):
    """Toggles a testbed's link on a schedule; `stop()` ends it early with the link up."""

    def __init__(self, bed: NetTestbed, periods_s: tuple[float, ...]):
        super().__init__(name="link-flapper", daemon=True)
        self.bed = bed
        self.periods_s = periods_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            for up, period in zip(itertools.cycle((False, True)), self.periods_s):
                self.bed.set_link(up)
                if self._stop_event.wait(period):
                    break
        finally:
            self.bed.set_link(True)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)


def _delete_namespace(ns: str) -> None:
    """Kill what still runs inside `ns` (only processes in a namespace made here), then delete it."""
    if ns not in list_namespaces():
        return
    pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _run(["ip", "netns", "del", ns], check=False)


def list_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_stale() -> list[str]:
    """Delete harness namespaces whose owning process is gone (a run killed with SIGKILL)."""
    removed = []
    for ns in list_namespaces():
        match = _STALE.match(ns)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(ns)
            removed.append(ns)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def net_testbed() -> Iterator[NetTestbed]:
    """`with net_testbed() as bed:` after removing what earlier killed runs left behind."""
    cleanup_stale()
    with NetTestbed() as bed:
        yield bed


@atexit.register
def _close_live() -> None:
    for bed in list(_live):
        bed.close()
