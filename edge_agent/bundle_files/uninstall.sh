#!/bin/sh
# Remove the EdgeFleet agent installed by install.sh. Keeps /etc/edgefleet, /var/lib/edgefleet and the
# edgefleet user (its identity and state) unless --purge is given.
# Usage: sudo ./uninstall.sh [--prefix DIR] [--no-systemd] [--purge]
set -eu
PREFIX=/opt/edgefleet
SYSTEMD=1
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$SYSTEMD" = 1 ]; then
  if [ -d /run/systemd/system ]; then systemctl disable --now edgefleet-agent 2>/dev/null || true; fi
  rm -f /etc/systemd/system/edgefleet-agent.service
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  if [ "$(readlink /usr/local/bin/edgefleet-agent 2>/dev/null)" = "$PREFIX/venv/bin/edgefleet-agent" ]; then
    rm -f /usr/local/bin/edgefleet-agent
  fi
fi
rm -rf "$PREFIX/venv"
rmdir "$PREFIX" 2>/dev/null || true
if [ "$PURGE" = 1 ] && [ "$SYSTEMD" = 1 ]; then
  rm -rf /etc/edgefleet /var/lib/edgefleet
  getent passwd edgefleet >/dev/null && userdel edgefleet
  getent group edgefleet >/dev/null && groupdel edgefleet 2>/dev/null || true
fi
echo "removed the EdgeFleet agent from $PREFIX"
