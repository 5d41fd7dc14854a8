#!/usr/bin/env bash
# Installs what NodeWarden needs on a fresh Debian/Ubuntu machine, as root, and only what is missing:
# apt packages (bcc and its Python module, kernel headers as a fallback for bcc, containerd/runc and
# busybox-static for the container tests), then the project into .venv/ (which sees Debian's bcc
# module through --system-site-packages; PyPI's "bcc" is an unrelated package).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root (BPF, containerd and apt need it)" >&2
    exit 2
fi

want=(python3 python3-venv python3-dev python3-bpfcc gcc make containerd runc busybox-static zstd)
# `setup.sh test` (make test): the real engines and receivers the collector's tests start on loopback
# (PostgreSQL, a NATS JetStream cluster, Alertmanager), the headless browser the console's test drives, promtool
# (Debian's prometheus) for the metrics check and systemd-analyze for the units' checks.
if [ "${1:-}" = test ]; then
    want+=(postgresql nats-server prometheus-alertmanager chromium chromium-driver prometheus systemd)
    # The agent's image (make image, tests/e2e/test_agent_image.py): a Debian root file system, an OCI layout.
    want+=(mmdebstrap umoci)
    # Image signatures and registry scans (tests/harness/registry.py): a registry on loopback, skopeo to push the
    # test images, htpasswd for the Basic-auth registry.
    want+=(docker-registry skopeo apache2-utils)
fi
# bcc compiles against kernel headers: the host's own when they exist, else the distribution's
# generic package (NodeWarden takes every struct offset from BTF, so a version mismatch is fine).
if [ ! -e "/lib/modules/$(uname -r)/build" ]; then
    if grep -qi ubuntu /etc/os-release; then want+=(linux-headers-generic); else want+=(linux-headers-amd64); fi
fi
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's python3 (the one bcc is built for), not whatever python3 comes first on PATH.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.nodewarden-installed
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
# Protobuf/gRPC code is generated from proto/ into nwwire/gen/ (gitignored), never committed.
.venv/bin/python -m nwwire.genproto
# The compiled decoders of the hot record kinds (agent/sensors/native.py) into build/native/ (gitignored);
# without them the agent runs the Python decoders, slower but the same events.
.venv/bin/python -m agent.sensors.native_build >/dev/null || echo "setup: native decoders not built: the Python ones are used"
# The rules' compiled pre-condition (agent/detect/native.py), also into build/native/; without it the
# Python pre-condition generated from the same spec runs (the same alerts, more CPU per event).
.venv/bin/python -m agent.detect.native_build >/dev/null || echo "setup: rules pre-condition not built: the Python one is used"
