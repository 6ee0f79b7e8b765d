#!/usr/bin/env bash
# Debian packages phi1 needs outside Python: bubblewrap (the execute sandbox),
# libseccomp2 (its system-call allowlist, loaded through PyPI pyseccomp) and
# chromium (the report's browser test). Slurm is installed by scripts/slurm-up.
set -u
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# bubblewrap installed is not bubblewrap usable: unprivileged containers and Ubuntu's
# kernel.apparmor_restrict_unprivileged_userns=1 forbid the namespaces it needs.
probe_bwrap() {
    command -v bwrap >/dev/null 2>&1 || return 0
    if ! bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --unshare-net true >/dev/null 2>&1; then
        echo "warning: bubblewrap is installed but cannot create namespaces here; phi1 execute will use its" >&2
        echo "         weaker fallback sandbox (with a warning), and configs with sandbox = \"bubblewrap\" refuse to run." >&2
        echo "         On Ubuntu >= 23.10: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0, or run as root." >&2
    fi
}
[ ${#missing[@]} -eq 0 ] && { probe_bwrap; exit 0; }
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    if ! { apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null; }; }; then
        echo "warning: could not install ${missing[*]} with apt-get (without bubblewrap/libseccomp2 phi1 execute" >&2
        echo "         uses its weaker fallback sandbox; without chromium the report's browser test is skipped)" >&2
    fi
else
    echo "warning: ${missing[*]} not installed and not root: run 'sudo apt-get install ${missing[*]}'" >&2
    echo "         (without bubblewrap, phi1 execute falls back to rlimits + namespaces, with a loud warning)" >&2
fi
probe_bwrap
exit 0
