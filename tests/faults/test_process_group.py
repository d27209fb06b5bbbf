"""`freeze_group` returns only when the whole group has stopped: a process with busy worker
threads and a child of its own has no thread left running when it returns, and runs again once
thawed. (Without the wait, SIGSTOP alone left threads running in 4 of 5 tries here.)"""

from __future__ import annotations

import subprocess
import sys
import time

from robot_compress.faults.process_group import freeze_group, group_pids, running_threads, thaw_group

# A parent and its child, each with three threads that never sleep: each process prints the sum
# of its counters when asked on stdin, so a thread left running while "frozen" would show.
BUSY = """
import subprocess, sys, threading
counts = [0, 0, 0]
def spin(i):
    while True:
        counts[i] += 1
for i in range(3):
    threading.Thread(target=spin, args=(i,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) if sys.argv[1] == "parent" else None
print("ready", child.pid if child else 0, flush=True)
for _ in sys.stdin:
    print(sum(counts), flush=True)
"""


def ask(proc: subprocess.Popen) -> int:
    proc.stdin.write("\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def test_freeze_returns_with_every_thread_of_the_group_stopped():
    proc = subprocess.Popen([sys.executable, "-c", BUSY, "parent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        ready, child_pid = proc.stdout.readline().split()
        assert ready == "ready"
        members = set(group_pids(proc.pid))
        assert members == {proc.pid, int(child_pid)}
        assert len(running_threads([proc.pid])) >= 3

        for _ in range(5):  # a race lost once in a while would show in one of these
            freeze_group(proc)
            assert running_threads(members) == []
            thaw_group(proc)
        before = ask(proc)
        time.sleep(0.05)
        assert ask(proc) > before  # thawed: the workers count again
    finally:
        thaw_group(proc)
        proc.kill()
        proc.wait(timeout=5)
        subprocess.run(["kill", "-9", child_pid], check=False)


def test_threads_of_a_process_that_is_gone_count_as_stopped():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    assert running_threads([proc.pid]) == []
    assert group_pids(proc.pid) == []
