#!/usr/bin/env bash
# Debian packages phi1 needs outside Python: bubblewrap (the execute sandbox).
set -u
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    if ! { apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null; }; }; then
        echo "warning: could not install ${missing[*]} with apt-get; phi1 execute will use its weaker fallback sandbox" >&2
    fi
else
    echo "warning: ${missing[*]} not installed and not root: run 'sudo apt-get install ${missing[*]}'" >&2
    echo "         (without bubblewrap, phi1 execute falls back to rlimits + namespaces, with a loud warning)" >&2
fi
exit 0
