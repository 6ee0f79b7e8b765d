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
            "--hostname", "phi1-sandbox", "--ro-bind", "/", "/"]
    argv += _mask_args(root)
    if interp_fd is not None:
        argv += ["--perms", "0111", "--ro-bind-data", str(interp_fd), worker_interpreter()]
    argv += ["--dev", "/dev", "--proc", "/proc",
             "--perms", "1777", *tmp_size, "--tmpfs", "/tmp",
             "--perms", "1777", *tmp_size, "--tmpfs", "/dev/shm",
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


def hidden_paths(root: bool) -> list[str]:
    """Folders replaced by an empty tmpfs inside the sandbox.

    /run holds the host's unix sockets (D-Bus, the Docker and systemd sockets): a
    read-only mount does not stop connect(), hiding them does. Home folders hold
    the user's keys and tokens. As root, every folder an unprivileged uid could
    not enter on the way to Python (e.g. /root) is hidden too, or the programs'
    own uids could not reach the interpreter."""
    masks = ["/run", "/root", os.path.expanduser("~")]
    if root:
        for p in python_paths():
            masks += _untraversable_ancestors(p)[:1]
    out: list[str] = []
    for m in sorted({os.path.realpath(m) for m in masks}, key=lambda x: (x.count("/"), x)):
        if m == "/" or not os.path.isdir(m) or any(m == o or m.startswith(o + "/") for o in out):
            continue
        out.append(m)
    return out


def _mask_args(root: bool) -> list[str]:
    """bwrap arguments hiding `hidden_paths` behind empty tmpfs, with the Python
    installation under them bound back read-only."""
    masks = hidden_paths(root)
    if not masks:
        return []
    args: list[str] = []
    for m in masks:
        args += ["--perms", "0755", "--tmpfs", m]
    needed = python_paths()
    binds = [p for p in needed if any(p == m or p.startswith(m + "/") for m in masks)]
    made: set[str] = set()
    for p in sorted(set(binds)):
        if any(p.startswith(q + "/") for q in binds if q != p):
            continue  # inside another bound path already
        mask = next(m for m in masks if p == m or p.startswith(m + "/"))
        # bwrap would create the directories in between as 0700: make them traversable.
        cur = mask
        for part in Path(p).relative_to(mask).parts[:-1]:
            cur = os.path.join(cur, part)
            if cur not in made:
                made.add(cur)
                args += ["--perms", "0755", "--dir", cur]
        args += ["--ro-bind", p, p]
    return args


def fallback_uid_ok() -> bool:
    """Fallback as root: give programs their own uids only if Python stays readable for them."""
    if os.geteuid() != 0:
        return False
    return not any(_untraversable_ancestors(p) for p in python_paths())
