"""Landlock rules for the sandboxed program: what it may read, where it may write, whom it may reach.

Landlock (Linux 5.13+) lets an unprivileged process give up rights for itself and its descendants; it binds
root too. The program may:
- read and execute the system and the Python installation (`read_paths`);
- read, write, create and remove files only inside its working directory (`write_paths`);
- read the few device files a program needs, and write /dev/null.
With ABI 4 (Linux 6.7) it may neither bind nor connect TCP sockets; with ABI 6 (Linux 6.12) it may not signal
processes outside its own domain nor reach abstract UNIX sockets outside it. Any right the kernel does not
know is simply not restricted: `apply` returns the ABI it used so the caller can report it.
"""

from __future__ import annotations

import os

from primejax.sandbox import linux

_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_TRUNCATE = 1 << 14
_IOCTL_DEV = 1 << 15
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ = _EXECUTE | _READ_FILE | _READ_DIR

_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1

_DEVICE_READ = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_DEVICE_WRITE = ("/dev/null",)


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1          # ABI 1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13           # refer
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def apply(read_paths: list[str], write_paths: list[str]) -> int:
    """Restricts this process (and its future children) as described above; returns the ABI used, 0 if none.

    Needs no_new_privs to be set first (or CAP_SYS_ADMIN). Paths that do not exist are skipped.
    """
    abi = linux.landlock_abi_version()
    if abi <= 0:
        return 0
    handled = _handled_fs(abi)
    ruleset = linux.landlock_create_ruleset(handled, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                                            _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0, abi)
    try:
        rules = [(path, _READ) for path in read_paths]
        rules += [(path, _READ_FILE) for path in _DEVICE_READ]
        rules += [(path, _READ_FILE | _WRITE_FILE | _TRUNCATE) for path in _DEVICE_WRITE]
        rules += [(path, handled) for path in write_paths]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not os.path.isdir(path):
                    rights &= _FILE_ONLY
                linux.landlock_allow_path(ruleset, fd, rights & handled)
            finally:
                os.close(fd)
        linux.landlock_restrict_self(ruleset)
    finally:
        os.close(ruleset)
    return abi
