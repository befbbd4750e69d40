#!/bin/sh
# Install the EdgeFleet agent @VERSION@ (@ARCH@, Python @PYTHON@) from this bundle, with no network.
# Usage: sudo ./install.sh [--prefix DIR] [--no-systemd]
#   --prefix DIR   where the venv goes (default /opt/edgefleet)
#   --no-systemd   only the venv: no user, /etc/edgefleet, unit or /usr/local/bin link
# EDGEFLEET_PYTHON names the target's python3 (default python3); EDGEFLEET_RUN prefixes each target
# program, to install into another architecture's root, e.g. EDGEFLEET_RUN="qemu-aarch64-static -L /mnt/pi".
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=/opt/edgefleet
SYSTEMD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --no-systemd) SYSTEMD=0; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PYTHON=${EDGEFLEET_PYTHON:-python3}
RUN=${EDGEFLEET_RUN:-}
VENV=$PREFIX/venv

# a bundle damaged in the copy must not half-install
if command -v sha256sum >/dev/null 2>&1; then
  (cd "$HERE" && sha256sum -c --quiet --strict SHA256SUMS) || { echo "install.sh: SHA256SUMS do not match" >&2; exit 1; }
fi
# the wheels are for one CPython version and one architecture
$RUN "$PYTHON" -c 'import platform, sys; v = "%d.%d" % sys.version_info[:2]
sys.exit(0 if (v, platform.machine()) == ("@PYTHON@", "@ARCH@") else "install.sh: this bundle is for Python @PYTHON@ on @ARCH@, not Python %s on %s" % (v, platform.machine()))'

# --without-pip: Debian's python3 may lack ensurepip (python3-venv); the bundle brings its own pip wheel
$RUN "$PYTHON" -m venv --without-pip --clear "$VENV"
PIP_WHEEL=$(ls "$HERE"/wheels/pip-*.whl | head -n 1)
# PIP_CONFIG_FILE=/dev/null: no index, no find-links or constraints from the machine's pip config
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  $RUN "$VENV/bin/python" "$PIP_WHEEL/pip" install --quiet --no-index --no-cache-dir \
  --find-links "$HERE/wheels" pip "edgefleet[@EXTRAS@]==@VERSION@"
echo "installed edgefleet-agent @VERSION@ in $VENV"

[ "$SYSTEMD" = 1 ] || exit 0
getent group edgefleet >/dev/null || groupadd --system edgefleet
getent passwd edgefleet >/dev/null || useradd --system --gid edgefleet --home-dir /var/lib/edgefleet \
  --no-create-home --shell /usr/sbin/nologin edgefleet
# /etc/edgefleet belongs to the agent's user so that `sudo -u edgefleet edgefleet-agent provision` can write
# the config there; the running service cannot (ProtectSystem=strict makes /etc read-only for it)
install -d -m 0750 -o edgefleet -g edgefleet /etc/edgefleet /var/lib/edgefleet
install -m 0644 "$HERE/agent.toml.example" /etc/edgefleet/agent.toml.example
sed "s#/opt/edgefleet#$PREFIX#g" "$HERE/edgefleet-agent.service" > /etc/systemd/system/edgefleet-agent.service
chmod 0644 /etc/systemd/system/edgefleet-agent.service
ln -sf "$VENV/bin/edgefleet-agent" /usr/local/bin/edgefleet-agent
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
cat <<NEXT
next:
  sudo -u edgefleet edgefleet-agent provision --token TOKEN --cloud-url URL --device-id ID \\
      --state-dir /var/lib/edgefleet --out /etc/edgefleet/agent.toml
  sudo systemctl enable --now edgefleet-agent
NEXT
