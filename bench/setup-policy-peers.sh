#!/usr/bin/env bash
# Installs the peer policy servers that bench/policy.ts measures mailwarden
# against (Debian 12 / apt, as root):
#   postfix-policyd-spf-python  policyd-spf (python3-spf, python3-spf-engine)
#   postfix-policyd-spf-perl    postfix-policyd-spf-perl (Mail::SPF)
#   postgrey                    greylisting (BerkeleyDB)
#   postfwd                     postfwd2/postfwd3 rule engine with RBL lookups
#
# - Idempotent and fast when everything is present: only dpkg-query and file
#   checks, no apt-get update, no network.
# - Never leaves a distro service running: the benchmark starts its own
#   copies on 127.0.0.1 high ports with temp state. During the install a
#   policy-rc.d (exit 101) keeps maintainer scripts from starting postgrey (the
#   only one of the four with an init script/unit; the SPF servers are
#   spawn(8) commands and postfwd's service is disabled by default); a
#   pre-existing policy-rc.d is left alone. If a postgrey service is running
#   afterwards and was not before, it is stopped, and it is disabled so a
#   reboot does not start it on the default port 10023.
# - /etc is not otherwise touched: the benchmark passes every setting on the
#   command line or in temp files.
set -euo pipefail

PACKAGES=(postfix-policyd-spf-python postfix-policyd-spf-perl postgrey postfwd)
COMMANDS=(/usr/bin/policyd-spf /usr/sbin/postfix-policyd-spf-perl /usr/sbin/postgrey)
me="setup-policy-peers"
source "$(dirname "$0")/../test/setup/apt-lib.sh"

have_postfwd() { [ -x /usr/sbin/postfwd2 ] || [ -x /usr/sbin/postfwd3 ] || [ -x /usr/sbin/postfwd ]; }

missing_packages "${PACKAGES[@]}"
mapfile -t absent < <(absent_paths "${COMMANDS[@]}")
have_postfwd || absent+=(postfwd)
if [ ${#missing[@]} -eq 0 ] && [ ${#absent[@]} -gt 0 ]; then
  missing=("${PACKAGES[@]}") # installed but a command is gone: reinstall
fi

postgrey_pids() { pgrep -x postgrey 2>/dev/null || pgrep -f '^postgrey ' 2>/dev/null || true; }

# Stops a postgrey that the system started (not one started by the benchmark,
# which always runs with --dbdir under /tmp).
stop_system_postgrey() {
  local stopped=no
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    if systemctl is-active --quiet postgrey 2>/dev/null; then
      systemctl stop postgrey && stopped=yes
    fi
    systemctl disable --quiet postgrey 2>/dev/null || true
  elif [ -x /etc/init.d/postgrey ] && [ -s /run/postgrey.pid ] && kill -0 "$(tr -dc '0-9' < /run/postgrey.pid)" 2>/dev/null; then
    /etc/init.d/postgrey stop >/dev/null 2>&1 && stopped=yes
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [ -x /etc/init.d/postgrey ]; then
    update-rc.d postgrey disable >/dev/null 2>&1 || true
  fi
  # Whatever is left listening on the default port with the system database.
  for pid in $(postgrey_pids); do
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--dbdir=/tmp/'; then continue; fi
    kill "$pid" 2>/dev/null && stopped=yes
  done
  [ "$stopped" = no ] || echo "$me: stopped the system postgrey service started by the install"
}

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
require_root_and_apt "bash bench/setup-policy-peers.sh"

start=$(date +%s)
echo "$me: installing ${missing[*]}"
postgrey_before=no
[ -n "$(postgrey_pids)" ] && postgrey_before=yes

apt_install_missing "benchmark peers"

[ "$postgrey_before" = yes ] || stop_system_postgrey

mapfile -t absent < <(absent_paths "${COMMANDS[@]}")
if [ ${#absent[@]} -gt 0 ]; then
  echo "$me: ${absent[*]} still missing after installing ${missing[*]}" >&2
  exit 1
fi
if ! have_postfwd; then
  echo "$me: no postfwd2/postfwd3 binary after installing postfwd" >&2
  exit 1
fi
echo "$me: installed ${missing[*]} in $(( $(date +%s) - start ))s"
