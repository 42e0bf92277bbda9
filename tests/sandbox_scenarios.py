"""Hostile programs for the sandbox, each with a check of its effects from outside.

Used in-process by tests/test_sandbox.py (namespaces mode) and, for the process mode, by `host_main` in a
separate host process that may drop to an unprivileged uid; it prints {scenario: "ok" or what went wrong}.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from primejax.sandbox import SandboxLimits, filesystem, linux, run_program
from primejax.sandbox.api import DEFAULT_UID_BASE, python_paths

LIMITS = SandboxLimits(timeout_seconds=1.0, cpu_seconds=1.0, memory_mb=512, stdout_bytes=1 << 20, max_processes=32)
SCENARIOS = ("sockets", "write_outside", "read_secrets", "kill_parent", "fork_bomb", "daemon", "leave_group",
             "huge_memory", "print_gigabytes", "big_file", "infinite_loop", "sleep_forever", "fake_sandbox_error",
             "self_inspection", "honest_program")
SECRET = "primejax-test-secret-7f3a9c"
DAEMON_MARK = "987651"


class Context:
    """What the hostile programs aim at: listening TCP, UDP and UNIX-socket servers, a world-writable directory
    outside the sandbox, a secret file in it, and a secret in the caller's environment."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.05)
        self.udp_port = self.udp.getsockname()[1]
        self.outside = tempfile.mkdtemp(prefix="primejax-outside-")
        os.chmod(self.outside, 0o777)
        self.unix_path = os.path.join(self.outside, "service.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen()
        self.unix.settimeout(0.05)
        self.secret_file = os.path.join(self.outside, "secret.txt")
        with open(self.secret_file, "w") as f:
            f.write(SECRET)
        os.chmod(self.secret_file, 0o644)
        os.environ["PRIMEJAX_TEST_SECRET"] = SECRET

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for server in (self.server, self.udp, self.unix):
            server.close()
        shutil.rmtree(self.outside, ignore_errors=True)
        for marker in self.markers():
            if os.path.exists(marker):
                os.unlink(marker)

    def markers(self) -> list[str]:
        return [os.path.join(self.outside, "marker"), f"/tmp/primejax-marker-{self.port}",
                f"/var/tmp/primejax-marker-{self.port}", f"/dev/shm/primejax-marker-{self.port}"]

    def anything_received(self) -> bool:
        for receive in (self.server.accept, self.unix.accept, lambda: self.udp.recvfrom(16)):
            try:
                receive()
                return True
            except (TimeoutError, BlockingIOError):
                pass
        return False


def leftover_processes() -> list[str]:
    """Live processes a sandbox left behind: anything of a sandbox uid, of our own uid when we are not root (but
    us), or carrying the daemon's mark. Zombies are dead already (their new parent reaps them)."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            if status["State"].split()[0] == "Z":
                continue
            uid = int(status["Uid"].split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, KeyError):
            continue
        ours = uid == os.getuid() and os.getuid() != 0 and int(pid) != me and "sandbox_scenarios" not in cmdline
        if uid >= DEFAULT_UID_BASE or DAEMON_MARK in cmdline or ours:
            found.append(f"{pid} uid={uid} {cmdline[:80]}")
    return found


def _status(*allowed):
    def check(run, ctx):
        assert run.error is None, run.error
        assert run.tests[0].status in allowed, (run.tests[0].status, run.tests[0].stderr[-300:])
    return check


def _stdout_lacks(*needles, status=("ok",)):
    def check(run, ctx):
        _status(*status)(run, ctx)
        for needle in needles:
            assert needle not in run.tests[0].stdout, run.tests[0].stdout[-500:]
    return check


def scenarios(ctx: Context) -> dict:
    """name -> (program, check(run, ctx))."""
    markers = ctx.markers()

    def no_markers(run, ctx):
        _status("ok")(run, ctx)
        assert "WROTE local" in run.tests[0].stdout, run.tests[0].stdout
        for marker in markers:
            assert not os.path.exists(marker), f"{marker} was written"

    def fast_output_limit(run, ctx):
        _status("output_limit")(run, ctx)
        assert run.tests[0].wall_seconds < 0.9 * LIMITS.timeout_seconds, run.tests[0].wall_seconds

    def dies_with_supervisor(run, ctx):
        _status("ok")(run, ctx)
        assert run.tests[0].stdout == "9 0\n", run.tests[0].stdout        # SIGKILL on parent death; not dumpable

    def honest(run, ctx):
        _status("ok")(run, ctx)
        assert run.tests[0].stdout == "thread ran\n15\n", run.tests[0].stdout

    return {
        "sockets": (f"""
import socket
for family, kind, address in [(socket.AF_INET, socket.SOCK_STREAM, ('127.0.0.1', {ctx.port})),
                              (socket.AF_INET, socket.SOCK_DGRAM, ('127.0.0.1', {ctx.udp_port})),
                              (socket.AF_INET6, socket.SOCK_STREAM, ('::1', {ctx.port})),
                              (socket.AF_UNIX, socket.SOCK_STREAM, {ctx.unix_path!r})]:
    try:
        s = socket.socket(family, kind)
        s.settimeout(0.5)
        s.connect(address) if kind == socket.SOCK_STREAM else s.sendto(b'x', address)
        print('REACHED', address)
    except OSError as error:
        print('blocked', address, error)
""", _stdout_lacks("REACHED")),
        "write_outside": (f"""
for path in {markers!r} + ['/root/primejax-marker', '/etc/primejax-marker', 'local']:
    try:
        with open(path, 'w') as f:
            f.write('x')
        print('WROTE', path)
    except OSError as error:
        print('denied', path, error.strerror)
""", no_markers),
        "read_secrets": (f"""
import os
print(dict(os.environ))
for path in ['/proc/1/environ', f'/proc/{{os.getppid()}}/environ', '/proc/self/environ', {ctx.secret_file!r},
             '/etc/shadow']:
    try:
        print(path, open(path, 'rb').read()[:2000])
    except OSError as error:
        print('denied', path, error.strerror)
""", _stdout_lacks(SECRET)),
        "kill_parent": ("""
import os, signal
for target in [os.getppid(), 1, -1]:
    try:
        os.kill(target, signal.SIGKILL)
        print('signalled', target)
    except OSError as error:
        print('denied', target, error.strerror)
try:
    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
except OSError as error:
    print('denied group', error.strerror)
print('still here')
""", _status("ok", "killed")),
        "fork_bomb": ("""
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""", _status("timeout", "cpu_limit", "killed")),
        "daemon": (f"""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv('/bin/sleep', ['sleep', '{DAEMON_MARK}'])
    os._exit(0)
print('parent exits')
""", _status("ok")),
        "leave_group": (f"""
import os, time
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    os.write(ready_w, b'x')
    os.execv('/bin/sleep', ['sleep', '{DAEMON_MARK}'])
os.read(ready_r, 1)
os.setpgid(0, child)              # out of the group the supervisor would kill
time.sleep(3600)
""", _status("timeout")),
        "huge_memory": ("block = bytearray(10 ** 11)\nprint('allocated')", _status("memory_limit")),
        "print_gigabytes": ("import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))", fast_output_limit),
        "big_file": ("with open('big', 'wb') as f:\n    f.write(b'x' * (64 << 20))", _status("file_size_limit")),
        "infinite_loop": ("while True:\n    pass", _status("timeout", "cpu_limit")),
        "sleep_forever": ("import time\ntime.sleep(3600)", _status("timeout")),
        "fake_sandbox_error": ("import os\nos.write(2, b'sandbox setup failed: injected')\nos._exit(125)",
                               _status("runtime_error")),
        "self_inspection": ("""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
signal_on_parent_death = ctypes.c_int()
libc.prctl(2, ctypes.byref(signal_on_parent_death), 0, 0, 0)      # PR_GET_PDEATHSIG
print(signal_on_parent_death.value, libc.prctl(3, 0, 0, 0, 0))    # PR_GET_DUMPABLE
""", dies_with_supervisor),
        "honest_program": ("""
import asyncio, subprocess, threading
import numpy as np
async def two():
    return 2
worker = threading.Thread(target=print, args=('thread ran',))
worker.start()
worker.join()
three = int(subprocess.run(['/bin/echo', '3'], capture_output=True, text=True, check=True).stdout)
print(int(np.arange(5).sum()) + asyncio.run(two()) + three)
""", honest),
    }


def interrupted_run(isolation: str) -> str:
    """A caller interrupted in the middle of a run (Ctrl-C, its own timeout) takes the sandbox down with it:
    no process of the program is left, nor its working directory."""
    source = f"""
import os, time
if os.fork() == 0:
    os.execv('/bin/sleep', ['sleep', '{DAEMON_MARK}'])
time.sleep(60)
"""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        run_program(source, ["\n"], limits=SandboxLimits(timeout_seconds=5.0), isolation=isolation)
        return "the run was not interrupted"
    except KeyboardInterrupt:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.1)
    workdirs = [name for name in os.listdir(tempfile.gettempdir()) if name.startswith("primejax-sandbox-")]
    leftovers = leftover_processes()
    return "ok" if not workdirs and not leftovers else f"left behind: {leftovers} {workdirs}"


def run_scenarios(isolation: str, names: list[str] | None = None) -> dict[str, str]:
    results = {}
    with Context() as ctx:
        for name, (source, check) in scenarios(ctx).items():
            if names is not None and name not in names:
                continue
            run = run_program(source, ["\n"], limits=LIMITS, isolation=isolation)
            try:
                check(run, ctx)
                if run.isolation is not None and run.isolation.mode != isolation:
                    raise AssertionError(f"ran in {run.isolation}")
                time.sleep(0.05)
                leftovers = leftover_processes()
                assert not leftovers, f"processes survived: {leftovers}"
                results[name] = "ok"
            except AssertionError as error:
                results[name] = f"{error!r}"[:1500]
        if ctx.anything_received():
            results["network"] = "a sandboxed program reached the test's server"
    return results


def host_main(uid: str | None = None) -> None:
    """Runs every scenario in the process mode from a host process: in a private mount namespace that
    re-exposes the Python installation (the sandbox uid, or `uid`, could not reach a private one), as root or,
    with `uid`, as that unprivileged user. Prints the results as JSON."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    here = os.path.dirname(os.path.abspath(__file__))
    filesystem.expose(list(python_paths()), os.path.join(tempfile.mkdtemp(dir=here), "stage"))
    if uid is not None:
        os.setgroups([])
        os.setresgid(int(uid), int(uid), int(uid))
        os.setresuid(int(uid), int(uid), int(uid))
        os.environ.update(HOME="/tmp", TMPDIR="/tmp")
    results = run_scenarios("process")
    results["interrupted_run"] = interrupted_run("process")
    if uid is not None:
        refused = run_program("print(1)", ["\n"], limits=LIMITS, isolation="namespaces")
        results["namespaces_refused"] = "ok" if refused.error and "needs root" in refused.error else repr(refused)
    print(json.dumps(results))


if __name__ == "__main__":
    host_main(*sys.argv[1:])
