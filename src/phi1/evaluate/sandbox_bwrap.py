"""The bubblewrap command line a sandbox worker runs under, and the paths it needs.

The worker is PID 1 of a new PID namespace (``--as-pid-1``): the kernel drops
every signal sent to a namespace's init from inside unless the init installed
a handler for it, so no program can stop or kill its worker, and every
orphaned process of a program is reaped by the worker itself. The
interpreter is re-bound execute-only (mode 0111) over its own path: a process
that executes a file it cannot read is not dumpable, so neither the worker
nor any program forked from it can be ptraced or have its /proc/<pid>/mem and
/proc/<pid>/fd opened, even by a process of the same uid, and no program can
read its own memory through /proc/self/mem.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

# Folders the sandbox replaces with its own empty tmpfs: nothing it runs may live there.
PRIVATE_DIRS = ("/tmp", "/dev/shm")


def worker_interpreter() -> str:
    """The real interpreter behind ``sys.executable`` (a venv's python is a link
    to it). The worker is standard-library only, so it needs neither the venv
    nor the phi1 checkout: both may sit under /tmp, which the sandbox hides."""
    return os.path.realpath(sys.executable)


def bubblewrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


@functools.lru_cache(maxsize=8)
def _version_of(path: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        return tuple(int(x) for x in out.split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def bubblewrap_version() -> tuple[int, ...] | None:
    path = bubblewrap_path()
    return None if path is None else _version_of(path)


def bubblewrap_problem() -> str | None:
    """Why bubblewrap cannot be used here, or None when it looks usable."""
    if bubblewrap_path() is None:
        return "bubblewrap (bwrap) is not installed"
    ver = bubblewrap_version()
    if ver is None:
        return "bwrap --version failed"
    if ver < (0, 5):
        return f"bubblewrap {'.'.join(map(str, ver))} is too old (need >= 0.5 for --perms and --as-pid-1)"
    for p in python_paths():
        if any(p == d or p.startswith(d + "/") for d in PRIVATE_DIRS):
            return (f"the Python installation is under {p}, which the sandbox replaces with a private "
                    f"tmpfs: use an interpreter installed outside {' and '.join(PRIVATE_DIRS)}")
    return None


def bubblewrap_argv(tmp_mb: int, root: bool, seccomp_fd: int | None = None, interp_fd: int | None = None) -> list[str]:
    """The bwrap command line of a worker (everything up to the interpreter).

    ``seccomp_fd``: a readable descriptor holding the compiled filter; ``interp_fd``:
    one open on the interpreter, re-bound execute-only over its own path."""
    ver = bubblewrap_version() or (0, 0)
    tmp_size = ["--size", str(tmp_mb << 20)] if ver >= (0, 7) else []
    argv = [bubblewrap_path() or "bwrap", "--die-with-parent", "--new-session", "--as-pid-1",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "phi1-sandbox"]
    argv += system_view()
    if interp_fd is not None:
        argv += ["--perms", "0111", "--ro-bind-data", str(interp_fd), worker_interpreter()]
    argv += ["--dev", "/dev", "--proc", "/proc",
             "--perms", "1777", *tmp_size, "--tmpfs", "/tmp",
             "--perms", "1777", *tmp_size, "--tmpfs", "/dev/shm",
             # bubblewrap's own root is a tmpfs (owned by the caller without root): read-only,
             # so nothing but /tmp and /dev/shm (emptied after each program) takes a write
             "--remount-ro", "/",
             "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--chdir", "/tmp"]
    if root:
        # The worker stays uid 0 with only these: switching each program to its own uid,
        # and killing what a program leaves behind. Programs get none of them.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_KILL"]
    else:
        argv += ["--unshare-user"] + (["--disable-userns"] if ver >= (0, 8) else [])
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + ["--"]


# What a program sees of the host, read-only: the system's programs and libraries, the
# few files of /etc the C library and the standard library read, and the Python
# installation. Nothing else: not the checkout, the samples or their results, /home,
# /root, /work, /var (logs), /opt, /mnt, /srv, /run (host sockets), /sys.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group",
             "nsswitch.conf", "hosts", "host.conf", "gai.conf", "services", "protocols", "mime.types",
             "os-release", "alternatives")


def visible_paths() -> list[str]:
    """Host paths bound read-only into the sandbox (symlinks among them are re-created as links)."""
    out = [p for p in SYSTEM_DIRS if os.path.lexists(p)]
    out += [os.path.join("/etc", n) for n in ETC_FILES if os.path.lexists(os.path.join("/etc", n))]
    for p in python_paths():
        if not any(p == q or p.startswith(q + "/") for q in out if not os.path.islink(q)):
            out.append(p)
    return out


def system_view() -> list[str]:
    """bwrap arguments building the sandbox's file system from `visible_paths` on
    bubblewrap's empty root: top-level links (merged /usr) stay links, the folders
    leading to a bound path are created traversable (0755), everything is read-only."""
    args: list[str] = []
    made: set[str] = {"/"}
    for p in visible_paths():
        parent = os.path.dirname(p)
        chain = []
        while parent not in made:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(chain):
            made.add(d)
            args += ["--perms", "0755", "--dir", d]
        if os.path.islink(p) and os.path.dirname(p) == "/":
            args += ["--symlink", os.readlink(p), p]
        else:
            args += ["--ro-bind", p, p]
        made.add(p)
    return args


def python_paths() -> list[str]:
    """What the sandboxed interpreter reads: its installation (the standard library)."""
    # The base installation only: the worker runs the real interpreter with -I -S
    # (no venv, no site-packages, no user site, no script folder on sys.path).
    interp = worker_interpreter()
    paths = {sys.base_prefix, sys.base_exec_prefix, os.path.dirname(interp)}
    return sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})


def _untraversable_ancestors(path: str) -> list[str]:
    """Directories above ``path`` that a uid other than the owner cannot enter."""
    out, cur = [], "/"
    for part in Path(path).parts[1:-1]:
        cur = os.path.join(cur, part)
        try:
            st = os.stat(cur)
        except OSError:
            break
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            out.append(cur)
    return out


def fallback_uid_ok() -> bool:
    """Fallback as root: give programs their own uids only if Python stays readable for them."""
    if os.geteuid() != 0:
        return False
    return not any(_untraversable_ancestors(p) for p in python_paths())
