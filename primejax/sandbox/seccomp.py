"""The sandbox's seccomp filter: a short classic-BPF program, assembled here, that the kernel runs on every
system call of the sandboxed program and its children.

What it refuses:
- socket(2) of every family (EACCES): no TCP, UDP, raw, packet or netlink sockets, and no UNIX sockets
  either, so no local service (a Docker or D-Bus socket, the trainer's own) can be reached; socketpair(2),
  which multiprocessing and asyncio use between their own processes, stays allowed;
- io_uring (which could open sockets without socket(2)), ptrace and cross-process memory access;
- new namespaces, mounts, chroot, module loading, kexec, reboot, swap, keyrings, BPF, perf events,
  userfaultfd, file-handle opens and pidfd tricks (EPERM); clone3 answers ENOSYS so that libc falls back to
  clone, whose flags the filter can read;
- optionally (`restrict_signals`), signals to any process but the program itself and its process group,
  for hosts where neither a PID namespace, another uid nor Landlock's signal scope stands between the
  program and the trainer;
- system calls of another ABI (x32, or 32-bit calls on a 64-bit kernel) kill the process.
"""

from __future__ import annotations

import errno
import platform

from primejax.sandbox.linux import NAMESPACE_FLAGS

_LD_W_ABS = 0x20            # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15               # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35               # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45              # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06               # BPF_RET | BPF_K

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16       # args[0], low 32 bits on little-endian machines

_X32_SYSCALL_BIT = 0x40000000

# Per architecture: the audit arch token and the numbers of the calls the filter names.
_ARCHES = {
    "x86_64": (0xC000003E, {
        "socket": 41, "clone": 56, "kill": 62, "ptrace": 101, "syslog": 103, "pivot_root": 155, "chroot": 161,
        "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172,
        "ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179, "tkill": 200, "tgkill": 234,
        "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
        "perf_event_open": 298, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
        "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
    }),
    "aarch64": (0xC00000B7, {
        "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "quotactl": 60, "acct": 89, "unshare": 97,
        "kexec_load": 104, "init_module": 105, "delete_module": 106, "syslog": 116, "ptrace": 117, "kill": 129,
        "tkill": 130, "tgkill": 131, "reboot": 142, "socket": 198, "add_key": 217, "request_key": 218,
        "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225, "perf_event_open": 241,
        "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
        "finit_module": 273, "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294, "pidfd_send_signal": 424,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
        "pidfd_getfd": 438, "mount_setattr": 442,
    }),
}
_ARCHES["amd64"] = _ARCHES["x86_64"]
_ARCHES["arm64"] = _ARCHES["aarch64"]

_DENIED = ("ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter",
           "io_uring_register", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
           "move_mount", "fsopen", "fsmount", "fspick", "mount_setattr", "init_module", "finit_module",
           "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl",
           "syslog", "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd",
           "open_by_handle_at", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "iopl", "ioperm")


def supported() -> bool:
    """Whether this machine's architecture has a filter (x86-64 and AArch64 Linux)."""
    return platform.system() == "Linux" and platform.machine() in _ARCHES


class _Assembler:
    """Collects BPF instructions whose jump targets are labels, resolved when the program is done."""

    def __init__(self):
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def load(self, offset: int):
        self.code.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, if_true: str | None, if_false: str | None = None):
        """Jump to `if_true` when the test holds, else to `if_false` (None: the next instruction)."""
        self.code.append((op, if_true, if_false, k & 0xFFFFFFFF))

    def ret(self, value: int, label: str | None = None):
        if label is not None:
            self.label(label)
        self.code.append((_RET_K, 0, 0, value))

    def label(self, name: str):
        self.labels[name] = len(self.code)

    def program(self) -> list[tuple[int, int, int, int]]:
        out = []
        for index, (op, jt, jf, k) in enumerate(self.code):
            if op in (_JEQ_K, _JGE_K, _JSET_K):
                jt = 0 if jt is None else self.labels[jt] - index - 1
                jf = 0 if jf is None else self.labels[jf] - index - 1
                if not (0 <= jt < 256 and 0 <= jf < 256):
                    raise ValueError("seccomp program: jumps go forward, at most 255 instructions")
            out.append((op, jt, jf, k))
        return out


def build_filter(restrict_signals: bool = False, own_pid: int = 0) -> list[tuple[int, int, int, int]]:
    """The filter for this machine's architecture as (code, jt, jf, k) tuples.

    With `restrict_signals`, kill(2) may only target `own_pid`, its process group (-own_pid) or 0, and
    tgkill(2) only `own_pid`'s threads; tkill(2) is refused.
    """
    machine = platform.machine()
    if machine not in _ARCHES:
        raise OSError(f"no seccomp filter for architecture {machine!r}")
    audit_arch, numbers = _ARCHES[machine]
    asm = _Assembler()
    asm.load(_OFFSET_ARCH)
    asm.jump(_JEQ_K, audit_arch, None, "kill_process")
    asm.load(_OFFSET_NR)
    if machine in ("x86_64", "amd64"):
        asm.jump(_JGE_K, _X32_SYSCALL_BIT, "kill_process")
    for name in _DENIED:
        asm.jump(_JEQ_K, numbers[name], "eperm")
    asm.jump(_JEQ_K, numbers["clone3"], "enosys")
    asm.jump(_JEQ_K, numbers["socket"], "eacces")
    asm.jump(_JEQ_K, numbers["clone"], "clone")
    if restrict_signals:
        asm.jump(_JEQ_K, numbers["kill"], "kill")
        asm.jump(_JEQ_K, numbers["tgkill"], "tgkill")
        asm.jump(_JEQ_K, numbers["tkill"], "eperm")
    asm.ret(_RET_ALLOW)
    asm.label("clone")
    asm.load(_OFFSET_ARG0_LOW)
    asm.jump(_JSET_K, NAMESPACE_FLAGS, "eperm", "allow")
    if restrict_signals:
        asm.label("kill")
        asm.load(_OFFSET_ARG0_LOW)
        asm.jump(_JEQ_K, own_pid, "allow")
        asm.jump(_JEQ_K, 0, "allow")
        asm.jump(_JEQ_K, -own_pid, "allow", "eperm")
        asm.label("tgkill")
        asm.load(_OFFSET_ARG0_LOW)
        asm.jump(_JEQ_K, own_pid, "allow", "eperm")
    asm.ret(_RET_ALLOW, "allow")
    asm.ret(_RET_ERRNO | errno.EPERM, "eperm")
    asm.ret(_RET_ERRNO | errno.EACCES, "eacces")
    asm.ret(_RET_ERRNO | errno.ENOSYS, "enosys")
    asm.ret(_RET_KILL_PROCESS, "kill_process")
    return asm.program()
