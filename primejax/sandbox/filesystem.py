"""The sandbox's filesystem: its private view in the namespaces mode, and its working directories."""

from __future__ import annotations

import os
import shutil
import stat

from primejax.sandbox import linux

TMPFS_INODES = 16384                 # files a program may create in its private tmpfs mounts


def workdir_prefix(supervisor_pid: int) -> str:
    """The name a process-mode working directory starts with, so that whoever kills a supervisor can remove it."""
    return f"primejax-sandbox-{supervisor_pid}-"


def remove_tree(path: str) -> None:
    shutil.rmtree(path, onerror=_unlock_and_remove)


def _unlock_and_remove(function, path, _error) -> None:
    """rmtree's error handler: a program may have taken the permissions off its own files and directories."""
    for target in (os.path.dirname(path), path):
        try:
            os.chmod(target, 0o700, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def empty(directory: str) -> None:
    """Removes everything inside `directory` (symbolic links as links, never their targets)."""
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            os.unlink(entry.path)


def closed_ancestor(path: str) -> str | None:
    """The outermost ancestor of `path` that other users cannot search, if any."""
    current = "/"
    for part in path.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _outermost(paths: list[str]) -> list[str]:
    kept = []
    for path in sorted(set(paths), key=len):
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in kept):
            kept.append(path)
    return kept


def expose(paths: list[str], stage_root: str) -> None:
    """Makes `paths` reachable by other users: each private ancestor is covered by an empty tmpfs into which
    only the needed paths are bind-mounted back, read-only."""
    hidden: dict[str, list[str]] = {}
    for path in _outermost(paths):
        ancestor = closed_ancestor(path)
        if ancestor is not None:
            hidden.setdefault(ancestor, []).append(path)
    os.mkdir(stage_root, 0o700)
    for ancestor in _outermost(list(hidden)):
        inside = [p for a, ps in hidden.items() if a == ancestor or a.startswith(ancestor + "/") for p in ps]
        staged = []
        for path in inside:
            stage = os.path.join(stage_root, str(len(os.listdir(stage_root))))
            os.mkdir(stage)
            linux.mount(path, stage, None, linux.MS_BIND | linux.MS_REC)
            staged.append((stage, path))
        linux.mount("tmpfs", ancestor, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=1m")
        for stage, path in staged:
            os.makedirs(path, 0o755, exist_ok=True)
            linux.mount(stage, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
            linux.umount(stage)


def build_filesystem(request: dict, uid: int) -> str:
    """In the new mount namespace: the sandbox's view of the filesystem; returns the working directory."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    size = request["limits"]["disk_mb"]
    tmpfs_flags = linux.MS_NOSUID | linux.MS_NODEV
    linux.mount("tmpfs", "/tmp", "tmpfs", tmpfs_flags, f"mode=1777,size={size}m,nr_inodes={TMPFS_INODES}")
    expose(request["python_paths"], "/tmp/.expose")
    for path, path_size in (("/var/tmp", 1), ("/dev/shm", size)):
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", tmpfs_flags, f"mode=1777,size={path_size}m,nr_inodes={TMPFS_INODES}")
    workdir = "/tmp/sandbox"
    os.mkdir(workdir, 0o700)
    os.chown(workdir, uid, uid)
    return workdir
