#!/usr/bin/env bash
# Install NodeWarden's systemd units and default configs (docs/systemd.md).
#   sudo systemd/install.sh                 units for this checkout, configs if absent, daemon-reload
#   systemd/install.sh --root DIR           into DIR instead of / (packaging, tests); no daemon-reload
#   systemd/install.sh --prefix /opt/nodewarden   the checkout the units run (default: this one)
# Rerun it after updating the checkout: it regenerates the gRPC code the read-only agent cannot write.
# An existing /etc/nodewarden/config.yaml or collector.yaml is never overwritten: edits survive a reinstall.
# The units name /opt/nodewarden; they are installed with the prefix put in its place.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=$(dirname "$here")
root=/
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $prefix in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, not $prefix" >&2; exit 2 ;;
esac
case $prefix in
    *[!A-Za-z0-9/._+-]*) echo "install.sh: --prefix $prefix has characters a unit's ExecStart would misread" >&2; exit 2 ;;
esac
case $prefix in
    /home/*|/root/*|/run/user/*)
        echo "install.sh: $prefix is under a home directory, which the agent's ProtectHome=yes hides:" \
             "install the checkout under /opt (e.g. --prefix /opt/nodewarden)" >&2; exit 2 ;;
esac
if [ ! -x "$prefix/.venv/bin/nodewarden" ]; then
    echo "install.sh: warning: $prefix/.venv/bin/nodewarden is missing: run \`make setup\` in $prefix" >&2
fi

# The generated gRPC code, now: under ProtectSystem=strict the agent cannot write it into the checkout at
# its first start (nwwire/genproto.py makes it when missing or older than proto/).
if [ -x "$prefix/.venv/bin/python" ] && [ -d "$prefix/nwwire" ]; then
    (cd "$prefix" && .venv/bin/python -m nwwire.genproto) || { echo "install.sh: generating the gRPC code in $prefix failed" >&2; exit 1; }
fi

units=$root/etc/systemd/system
conf=$root/etc/nodewarden
install -d -m 0755 "$units" "$conf"
for unit in nodewarden.service nodewarden-collector.service; do
    sed "s#/opt/nodewarden#$prefix#g" "$here/$unit" > "$units/$unit.tmp"
    chmod 0644 "$units/$unit.tmp"
    mv "$units/$unit.tmp" "$units/$unit"
    echo "installed $units/$unit"
done
# 0644: the collector runs as a dynamic user and must read its file; secrets go in credentials, not here.
for pair in nodewarden.yaml:config.yaml collector.yaml:collector.yaml; do
    src=${pair%%:*} dst=$conf/${pair#*:}
    if [ -e "$dst" ]; then
        echo "kept $dst (already there)"
    else
        install -m 0644 "$here/$src" "$dst"
        echo "installed $dst"
    fi
done
if [ "$root" = / ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "systemd reloaded: systemctl enable --now nodewarden (and nodewarden-collector for a local collector)"
fi
