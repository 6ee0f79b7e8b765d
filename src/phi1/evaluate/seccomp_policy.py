"""The execute sandbox's system-call allowlist: default deny, built with libseccomp.

Modelled on Docker's default seccomp profile (moby/profiles, ``seccomp/default.json``,
the filter most users already trust for untrusted containers), minus what a
HumanEval-style program never needs and what would let it reach past its
sandbox. Every call not listed fails with EPERM (Docker's default action);
``clone3`` fails with ENOSYS so the C library falls back to ``clone``, whose
flags the filter can inspect; a foreign system-call ABI (x32, 32-bit x86)
kills the process.

The filter is built outside the sandbox with libseccomp (PyPI ``pyseccomp``,
ctypes over Debian's ``libseccomp2``) and handed to bubblewrap as compiled BPF
(``bwrap --seccomp FD``), so the sandboxed interpreter never loads ctypes. One
filter covers the worker and its programs; what only the worker may do is
kept from programs by uids and the PID namespace, not by the filter.

`ALLOWED` and `DENIED` are the documentation too: docs/sandbox.md and the
README list them with these reasons.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from phi1.errors import Phi1Error


@dataclass(frozen=True)
class Family:
    name: str
    syscalls: tuple[str, ...]
    reason: str


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Allowed as in Docker's default profile, by family.
ALLOWED: tuple[Family, ...] = (
    Family("memory", _names("""
        brk mmap mmap2 munmap mremap mprotect madvise mincore mlock mlock2 mlockall munlock munlockall
        msync remap_file_pages pkey_alloc pkey_free pkey_mprotect membarrier map_shadow_stack mseal"""),
           "the interpreter's allocator; bounded by RLIMIT_AS per process and the worker's memory cgroup"),
    Family("files", _names("""
        access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat fchmodat2 chown chown32
        fchown fchown32 fchownat lchown lchown32 creat dup fcntl fcntl64 open openat
        openat2 read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2 lseek _llseek
        fstat fstat64 fstatat64 newfstatat stat stat64 lstat lstat64 statx statfs statfs64 fstatfs
        fstatfs64 getdents getdents64 mkdir mkdirat mknod mknodat rmdir unlink unlinkat rename renameat
        renameat2 link linkat symlink symlinkat readlink readlinkat truncate truncate64 ftruncate
        ftruncate64 fallocate fadvise64 fadvise64_64 readahead fsync fdatasync sync syncfs
        sync_file_range flock umask utime utimes utimensat utimensat_time64 futimesat copy_file_range
        sendfile sendfile64 splice tee vmsplice ioctl getxattr lgetxattr fgetxattr getxattrat listxattr
        llistxattr flistxattr listxattrat setxattr lsetxattr fsetxattr setxattrat removexattr
        lremovexattr fremovexattr removexattrat cachestat statmount listmount
        inotify_init inotify_init1 inotify_add_watch inotify_rm_watch"""),
           "file access is decided by the mount namespace, not here: the host is bound read-only, /tmp "
           "and /dev/shm are private size-capped tmpfs, and each program has its own uid"),
    Family("waiting and time", _names("""
        pipe pipe2 poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64 epoll_create epoll_create1
        epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2 eventfd eventfd2
        signalfd signalfd4 timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime
        timerfd_gettime64 timer_create timer_settime timer_settime64 timer_gettime timer_gettime64
        timer_getoverrun timer_delete alarm getitimer setitimer nanosleep clock_nanosleep
        clock_nanosleep_time64 pause clock_gettime clock_gettime64 clock_getres clock_getres_time64
        gettimeofday time times adjtimex clock_adjtime clock_adjtime64 io_setup io_destroy io_submit
        io_cancel io_getevents io_pgetevents io_pgetevents_time64"""),
           "pipes, selectors, threading, time.sleep; adjtimex/clock_adjtime only read the clock without "
           "CAP_SYS_TIME; Linux AIO (io_submit) reads and writes files only"),
    Family("signals", _names("""
        rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait
        rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack sigreturn sigprocmask
        kill tkill tgkill pidfd_open pidfd_send_signal restart_syscall"""),
           "a program signals its own processes; the worker is PID 1 of the sandbox's PID namespace, "
           "which the kernel shields from every signal sent from inside, and runs as another uid"),
    Family("processes and threads", _names("""
        fork vfork execve execveat exit exit_group wait4 waitid waitpid set_tid_address set_robust_list
        get_robust_list futex futex_time64 futex_waitv futex_wake futex_wait futex_requeue rseq
        arch_prctl set_thread_area get_thread_area getpid getppid gettid getpgid getpgrp
        getsid setsid setpgid sched_yield sched_getaffinity sched_getparam sched_getscheduler
        sched_getattr sched_get_priority_max sched_get_priority_min sched_rr_get_interval
        sched_rr_get_interval_time64 getpriority ioprio_get getrusage getrlimit ugetrlimit setrlimit
        capget capset process_mrelease getcpu uname sysinfo getrandom uretprobe riscv_hwprobe"""),
           "fork, threads and subprocess; bounded by the pids cgroup and RLIMIT_NPROC of the program's "
           "own uid; setrlimit only ever changes the caller"),
    Family("identity", _names("""
        getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid getresuid32
        getresgid getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32 setreuid setreuid32
        setregid setregid32 setresuid setresuid32 setresgid setresgid32 setgroups setgroups32 setfsuid
        setfsuid32 setfsgid setfsgid32"""),
           "the worker switches each program to a uid of its own; without capabilities a program can "
           "only give up ids, never gain one"),
    Family("socket I/O", _names("""
        send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64 getsockopt
        getsockname getpeername"""),
           "works only on sockets a process already holds: without socket()/socketpair() that is the "
           "program's end of the harness's verdict channel and nothing else; reading and sending change "
           "nothing about the socket"),
)

# In Docker's default profile (some only with a capability), kept from programs here.
DENIED: tuple[Family, ...] = (
    Family("io_uring", _names("io_uring_setup io_uring_enter io_uring_register"),
           "its operations (IORING_OP_SOCKET, OPENAT, ...) bypass the filter on the system calls "
           "themselves: a socket without socket(2)"),
    Family("socket creation", _names("socket socketpair socketcall"),
           "none by default ([execute] sockets = true allows socket() for inet/inet6 only): a unix "
           "socket reaches host sockets through the read-only file system (connect or sendto to a "
           "path), AF_VSOCK reaches a VM's host, and socketpair() gives unix sockets too"),
    Family("other processes' memory", _names("ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd"),
           "reading or writing another process (the worker, an earlier program's leftovers)"),
    Family("SysV IPC and POSIX message queues", _names("""
        shmget shmat shmdt shmctl msgget msgsnd msgrcv msgctl semget semop semtimedop
        semtimedop_time64 semctl ipc mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive
        mq_timedreceive_time64 mq_notify mq_getsetattr"""),
           "objects that outlive the program in the worker's IPC namespace (the next program on the "
           "same worker would read them) and sit outside RLIMIT_AS"),
    Family("anonymous memory files", _names("memfd_create memfd_secret"),
           "memory no rlimit sees until it is mapped; nothing a program needs"),
    Family("kernel keyrings", _names("keyctl add_key request_key"),
           "keys persist per uid in the kernel, across programs and runs"),
    Family("namespaces", _names("unshare setns"),
           "a new user namespace has every capability inside it; clone() with namespace flags is "
           "refused too, and clone3() answers ENOSYS because its flags cannot be inspected"),
    Family("kernel attack surface", _names("bpf perf_event_open userfaultfd seccomp landlock_create_ruleset "
                                           "landlock_add_rule landlock_restrict_self modify_ldt "
                                           "name_to_handle_at fanotify_mark"),
           "large kernel interfaces no Python program needs (Docker allows bpf/perf_event_open only "
           "with a capability; modify_ldt, 16-bit segments, had its own privilege escalations; Docker "
           "refuses name_to_handle_at; fanotify_mark is useless without fanotify_init)"),
    Family("mounts and system administration", _names("""
        mount umount umount2 pivot_root chroot move_mount open_tree fsopen fsconfig fsmount fspick
        mount_setattr sethostname setdomainname reboot kexec_load kexec_file_load init_module
        finit_module delete_module acct swapon swapoff quotactl quotactl_fd syslog vhangup
        settimeofday clock_settime stime iopl ioperm open_by_handle_at lookup_dcookie"""),
           "capability-only in Docker; programs have no capabilities, and the entry points stay closed"),
)

# Allowed only with the arguments shown (Docker restricts personality and clone the same way).
RESTRICTED = (
    ("clone", "no namespace flags (CLONE_NEWNS/NEWUTS/NEWIPC/NEWUSER/NEWPID/NEWNET/NEWCGROUP)"),
    ("clone3", "fails with ENOSYS: the C library falls back to clone, whose flags the filter sees"),
    ("personality", "only Docker's values: 0, PER_LINUX32, UNAME26 and the query 0xffffffff"),
    ("prctl", "anything but PR_SET_DUMPABLE: the worker and its programs stay non-dumpable, which "
              "keeps /proc/<pid>/mem, /proc/<pid>/fd and ptrace closed even to processes of the same uid"),
    ("prlimit64", "the caller only (pid 0): a program cannot lower its worker's limits for later programs"),
    ("setpriority", "the caller only (PRIO_PROCESS, 0)"),
    ("sched_setaffinity sched_setparam sched_setscheduler sched_setattr", "the caller only (pid 0)"),
    ("ioprio_set", "the caller only (IOPRIO_WHO_PROCESS, 0)"),
    ("close dup2 dup3 close_range", "never the verdict channel's descriptor: the harness's end stays "
                                    "the harness's"),
    ("setsockopt bind connect listen accept accept4 shutdown",
     "only with [execute] sockets = true, and then never on the verdict channel's descriptor: these change "
     "a socket for good, and the programs' end of the channel is one socket shared by every program a "
     "worker runs (a name bound to it, its buffer sizes or a shutdown would reach the next program); "
     "the worker also checks that end after every program"),
)

# Socket calls that change a socket's state (options, address, connection, shutdown).
SOCKET_STATE = ("setsockopt", "bind", "connect", "listen", "accept", "accept4", "shutdown")

CLONE_NAMESPACE_FLAGS = 0x7E020000
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
PR_SET_DUMPABLE = 4
PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
AF_INET, AF_INET6 = 2, 10


class SeccompUnavailable(Phi1Error):
    """libseccomp (PyPI pyseccomp + Debian libseccomp2) cannot be loaded or used."""


@dataclass(frozen=True)
class FilterOptions:
    verdict_fd: int  # the program's end of the verdict channel: never closed or replaced
    sockets: bool = False  # socket() for AF_INET/AF_INET6 (the sandbox has its own network namespace)


def _lib():
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as e:  # RuntimeError: "Unable to find libseccomp"
        raise SeccompUnavailable(f"libseccomp is not usable ({e}); install it: pip install pyseccomp "
                                 "and apt-get install libseccomp2") from None
    return pyseccomp


def build(opts: FilterOptions):
    """The filter as a `pyseccomp.SyscallFilter` for this machine's architecture."""
    sc = _lib()
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(eperm)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    arch = sc.Arch.NATIVE

    def known(name: str) -> bool:
        return sc.resolve_syscall(arch, name) >= 0

    def allow(name: str, *args) -> None:
        if known(name):
            f.add_rule(sc.ALLOW, name, *args)

    for fam in ALLOWED:
        for name in fam.syscalls:
            allow(name)
    allow("clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
    if known("clone3"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for value in PERSONALITIES:
        allow("personality", sc.Arg(0, sc.EQ, value))
    allow("prctl", sc.Arg(0, sc.NE, PR_SET_DUMPABLE))
    allow("prlimit64", sc.Arg(0, sc.EQ, 0))
    allow("setpriority", sc.Arg(0, sc.EQ, PRIO_PROCESS), sc.Arg(1, sc.EQ, 0))
    for name in ("sched_setaffinity", "sched_setparam", "sched_setscheduler", "sched_setattr"):
        allow(name, sc.Arg(0, sc.EQ, 0))
    allow("ioprio_set", sc.Arg(0, sc.EQ, IOPRIO_WHO_PROCESS), sc.Arg(1, sc.EQ, 0))
    fd = opts.verdict_fd
    allow("close", sc.Arg(0, sc.NE, fd))
    allow("dup2", sc.Arg(1, sc.NE, fd))
    allow("dup3", sc.Arg(1, sc.NE, fd))
    if known("close_range"):  # a range that leaves the verdict descriptor out
        f.add_rule(sc.ALLOW, "close_range", sc.Arg(0, sc.GT, fd))
        f.add_rule(sc.ALLOW, "close_range", sc.Arg(1, sc.LT, fd))
    if opts.sockets:
        for family in (AF_INET, AF_INET6):
            allow("socket", sc.Arg(0, sc.EQ, family))
        for name in SOCKET_STATE:  # a dup of the channel gets past this: the worker's check catches it
            allow(name, sc.Arg(0, sc.NE, fd))
    return f


def allowed_names() -> set[str]:
    """Every system call the filter allows without conditions (for tests and docs)."""
    out: set[str] = set()
    for fam in ALLOWED:
        out |= set(fam.syscalls)
    return out


def export_bpf(opts: FilterOptions) -> bytes:
    """The compiled classic-BPF program (``struct sock_filter[]``), as ``bwrap --seccomp`` reads it."""
    import tempfile

    f = build(opts)
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        return tmp.read()


def load(opts: FilterOptions) -> None:
    """Install the filter on the calling process (fallback mode, in the worker's
    pre-exec hook; sets no_new_privs first, as libseccomp does by default)."""
    build(opts).load()


def restricted_names() -> set[str]:
    return {n for names, _ in RESTRICTED for n in names.split()}


def check_overlap() -> list[str]:
    """Names an unconditional family lists although they are denied or restricted (kept empty by a test:
    an unconditional rule would make the restriction void)."""
    allowed = allowed_names()
    return sorted(n for n in {m for fam in DENIED for m in fam.syscalls} | restricted_names() if n in allowed)


def native_names(names: set[str]) -> set[str]:
    """The names this machine's architecture has (the lists include 32-bit variants)."""
    sc = _lib()
    return {n for n in names if sc.resolve_syscall(sc.Arch.NATIVE, n) >= 0}


def describe(opts: FilterOptions) -> str:
    n = len(native_names(allowed_names()))
    sockets = ("socket() for inet/inet6 only" if opts.sockets
               else "no socket creation, no socket option, address or shutdown changes")
    return (f"seccomp (libseccomp, default deny EPERM): {n} system calls in {len(ALLOWED)} families as in "
            f"Docker's default profile, minus io_uring, keyrings, namespaces, ptrace/process_vm, SysV IPC, "
            f"memfd, bpf/perf/userfaultfd; {sockets}; foreign ABIs killed")


def native_supported() -> str | None:
    """Why the filter cannot be built here, or None (libseccomp loads and knows this machine)."""
    try:
        sc = _lib()
        if sc.resolve_syscall(sc.Arch.NATIVE, "read") < 0:
            return "libseccomp does not know this machine's system calls"
    except SeccompUnavailable as e:
        return str(e)
    except OSError as e:
        return f"libseccomp failed: {e}"
    return None


__all__ = ["ALLOWED", "DENIED", "RESTRICTED", "Family", "FilterOptions", "SeccompUnavailable", "build",
           "export_bpf", "load", "describe", "allowed_names", "native_names", "restricted_names", "native_supported",
           "check_overlap", "SOCKET_STATE"]
