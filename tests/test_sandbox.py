"""The code sandbox: programs run and report what they did, and cannot reach past their confinement.

The hostile programs of tests/sandbox_scenarios.py run in the namespaces mode in-process, and in the process
mode inside a host subprocess, as root and as an unprivileged user (uid 65534). Each check asserts on effects
seen from outside: marker files absent, the test's server reached by nothing, secrets absent from the output,
no process left behind.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import primejax
from primejax.sandbox import SandboxLimits, filesystem, linux, python_paths, run_program, seccomp
from tests import sandbox_scenarios

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces mode and the test hosts need root")
FAST = SandboxLimits(timeout_seconds=2.0, cpu_seconds=2.0, memory_mb=512)


def test_stdin_programs_run_once_per_test():
    run = run_program("import sys\nprint(sum(map(int, sys.stdin.read().split())))", ["1 2\n", "3 4 5", ""],
                      limits=FAST)
    assert run.error is None
    assert [t.stdout for t in run.tests] == ["3\n", "12\n", "0\n"]
    assert all(t.status == "ok" and t.exit_code == 0 for t in run.tests)


def test_call_based_programs_return_json_values():
    source = ("class Solution:\n    def pair(self, xs: List[int], k: int) -> Tuple[int, int]:\n"
              "        return (min(xs) + k, max(xs))\n")
    run = run_program(source, [[[3, 1, 2], 10], [[5], 0]], fn_name="pair", prelude="from typing import *\n",
                      limits=FAST)
    assert [json.loads(t.value) for t in run.tests] == [[11, 3], [5, 5]]
    top_level = run_program("def add(a, b):\n    return a + b", [[1, 2]], fn_name="add", limits=FAST)
    assert top_level.tests[0].value == "3"
    missing = run_program("x = 1", [[1]], fn_name="add", limits=FAST)
    assert missing.tests[0].status == "runtime_error" and "no function 'add'" in missing.tests[0].stderr


def test_the_interpreter_is_a_normal_one():
    """exit() and friends exist, site-packages import, and the program runs as __main__."""
    source = ("import numpy\nassert __name__ == '__main__' and callable(help) and callable(quit)\n"
              "print(numpy.int64(6) * 7)\nexit()\nprint('not reached')")
    run = run_program(source, [""], limits=FAST)
    assert (run.tests[0].status, run.tests[0].stdout) == ("ok", "42\n"), run.tests[0].stderr


def test_each_test_starts_in_an_empty_working_directory():
    source = "import os\nprint(sorted(os.listdir('.')))\nopen('left_over', 'w').write('x' * 1000)"
    run = run_program(source, ["", ""], limits=FAST)
    assert [t.stdout for t in run.tests] == ["[]\n", "[]\n"]


def test_threads_and_exit_handlers_finish_before_the_exit():
    source = ("import atexit, threading\natexit.register(print, 'atexit ran')\n"
              "def main():\n    print(sum(range(16)))\n"
              "threading.stack_size(1 << 26)\nthreading.Thread(target=main).start()")
    run = run_program(source, [""], limits=FAST)
    assert run.tests[0].stdout == "120\natexit ran\n", run.tests[0].stderr


def test_output_bytes_that_are_not_utf8_come_back_replaced():
    run = run_program("import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end')", [""], limits=FAST)
    assert run.tests[0].stdout == "ok \ufffd\ufffd end"
    call = run_program("def f():\n    print('noise ' * 100000)\n    return [1]", [[]], fn_name="f",
                       limits=SandboxLimits(stderr_bytes=1000))
    assert call.tests[0].value == "[1]" and len(call.tests[0].stdout) == 1000       # a tail only


def test_exit_codes_and_errors_are_reported():
    run = run_program("import sys\nprint('partial')\nsys.exit(3)", ["", ""], limits=FAST)
    assert [(t.status, t.exit_code, t.stdout) for t in run.tests] == [("runtime_error", 3, "partial\n")] * 2
    crash = run_program("raise ValueError('boom')", [""], limits=FAST).tests[0]
    assert crash.status == "runtime_error" and "ValueError: boom" in crash.stderr
    syntax = run_program("def (:", [""], limits=FAST).tests[0]
    assert syntax.status == "runtime_error" and "SyntaxError" in syntax.stderr


def test_total_budget_leaves_later_tests_unrun():
    run = run_program("import time\ntime.sleep(10)", ["", "", ""], limits=SandboxLimits(timeout_seconds=1.0),
                      total_timeout_seconds=1.5)
    assert [t.status for t in run.tests] == ["timeout", "timeout", "not_run"]
    assert run.tests[1].wall_seconds < 0.8


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="isolation must be one of auto, namespaces, process; got 'jail'"):
        run_program("print(1)", [""], isolation="jail")
    with pytest.raises(ValueError, match=r"uid_base must lie in \[1, 4290772990\]"):
        run_program("print(1)", [""], uid_base=2**32)
    with pytest.raises(TypeError, match="stdin tests must be strings"):
        run_program("print(1)", [b"1"])
    with pytest.raises(ValueError, match="SandboxLimits.memory_mb must be a positive number, got 0"):
        SandboxLimits(memory_mb=0)


@needs_root
def test_auto_isolation_uses_namespaces_as_root():
    run = run_program("print(1)", [""], limits=FAST)
    assert run.isolation.mode == "namespaces"
    layers = " ".join(run.isolation.layers)
    assert "network" in layers and "pid" in layers and "uid 2" in layers and "rlimits" in layers
    if linux.landlock_abi_version():
        assert "landlock" in layers
    if seccomp.supported():
        assert "seccomp" in layers


@needs_root
def test_process_mode_as_root_needs_a_reachable_python():
    run = run_program("print(1)", [""], limits=FAST, isolation="process")
    if any(filesystem.closed_ancestor(path) for path in python_paths()):
        assert run.error is not None and "cannot reach the Python installation" in run.error
    else:
        assert run.error is None and run.isolation.mode == "process"


@needs_root
@pytest.mark.parametrize("name", sandbox_scenarios.SCENARIOS)
def test_hostile_program_is_contained_in_namespaces(name):
    assert sandbox_scenarios.run_scenarios("namespaces", [name]) == {name: "ok"}


@pytest.fixture(scope="module")
def process_mode_results():
    """Scenario results of the process mode, run by host subprocesses as root and as uid 65534 (from a
    world-readable copy of the package, since the checkout may sit in a private directory)."""
    copy = tempfile.mkdtemp(prefix="primejax-host-")
    os.chmod(copy, 0o755)
    shutil.copytree(os.path.dirname(primejax.__file__), os.path.join(copy, "primejax"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(sandbox_scenarios.__file__, copy)
    boot = "import sys; sys.path.insert(0, sys.argv[1]); import sandbox_scenarios as s; s.host_main(*sys.argv[2:])"
    results = {}
    try:
        for user, uid in (("root", []), ("nobody", ["65534"])):
            done = subprocess.run([sys.executable, "-I", "-c", boot, copy, *uid], capture_output=True, text=True,
                                  timeout=300, check=False, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            assert done.returncode == 0, done.stderr[-3000:]
            results[user] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return results


@needs_root
@pytest.mark.parametrize("name", sandbox_scenarios.SCENARIOS)
@pytest.mark.parametrize("user", ["root", "nobody"])
def test_hostile_program_is_contained_in_process_mode(process_mode_results, user, name):
    assert process_mode_results[user][name] == "ok"
    assert "network" not in process_mode_results[user]


@needs_root
def test_an_interrupted_run_leaves_nothing_behind_in_namespaces():
    assert sandbox_scenarios.interrupted_run("namespaces") == "ok"


@needs_root
@pytest.mark.parametrize("user", ["root", "nobody"])
def test_an_interrupted_run_leaves_nothing_behind_in_process_mode(process_mode_results, user):
    assert process_mode_results[user]["interrupted_run"] == "ok"


@needs_root
def test_namespaces_mode_is_refused_without_root(process_mode_results):
    assert process_mode_results["nobody"]["namespaces_refused"] == "ok"


SECCOMP_PROBE = """
import errno, json, os, socket, sys
from primejax.sandbox import linux, seccomp
parent = os.getppid()
linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
linux.install_seccomp_filter(seccomp.build_filter(restrict_signals=True, own_pid=os.getpid()))
attempts = {"inet": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
            "inet6": lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
            "unix": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
            "socketpair": socket.socketpair,
            "unshare": lambda: linux.unshare(linux.CLONE_NEWNET),
            "signal_parent": lambda: os.kill(parent, 0),
            "signal_self": lambda: os.kill(os.getpid(), 0)}
outcome = {}
for name, attempt in attempts.items():
    try:
        attempt()
        outcome[name] = 0
    except OSError as error:
        outcome[name] = error.errno
print(json.dumps(outcome))
"""


@pytest.mark.skipif(not seccomp.supported(), reason="no seccomp filter for this architecture")
def test_seccomp_filter_blocks_sockets_namespaces_and_foreign_signals():
    """The filter alone (no namespaces, uid or Landlock), in a fresh process: no sockets but socketpairs, no new
    namespaces, and with `restrict_signals` no signal to any process but itself."""
    done = subprocess.run([sys.executable, "-c", SECCOMP_PROBE], capture_output=True, text=True, timeout=60,
                          check=True)
    assert json.loads(done.stdout) == {"inet": errno.EACCES, "inet6": errno.EACCES, "unix": errno.EACCES,
                                       "socketpair": 0, "unshare": errno.EPERM, "signal_parent": errno.EPERM,
                                       "signal_self": 0}
