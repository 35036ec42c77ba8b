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
POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="# mailwarden setup-policy-peers: temporary"
me="setup-policy-peers"

have_postfwd() { [ -x /usr/sbin/postfwd2 ] || [ -x /usr/sbin/postfwd3 ] || [ -x /usr/sbin/postfwd ]; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
missing_cmds=()
for cmd in "${COMMANDS[@]}"; do
  [ -x "$cmd" ] || missing_cmds+=("$cmd")
done
have_postfwd || missing_cmds+=(postfwd)
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_cmds[@]} -gt 0 ]; then
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
if [ "$(id -u)" -ne 0 ]; then
  echo "$me: missing packages (${missing[*]}); run as root: sudo bash bench/setup-policy-peers.sh" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$me: missing packages (${missing[*]}) and no apt-get to install them (Debian 12 expected)" >&2
  exit 1
fi

start=$(date +%s)
echo "$me: installing ${missing[*]}"
created_policy=no
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n%s policy-rc.d (do not start services while installing benchmark peers)\nexit 101\n' "$POLICY_MARK" > "$POLICY"
  chmod 755 "$POLICY"
  created_policy=yes
fi
cleanup() {
  if [ "$created_policy" = yes ] && grep -qF "$POLICY_MARK" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi
}
trap cleanup EXIT

postgrey_before=no
[ -n "$(postgrey_pids)" ] && postgrey_before=yes

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
if ! apt-get "${apt_opts[@]}" update >/tmp/mailwarden-apt-update.log 2>&1; then
  cat /tmp/mailwarden-apt-update.log >&2
  echo "$me: apt-get update failed" >&2
  exit 1
fi
if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/tmp/mailwarden-apt-install.log 2>&1; then
  tail -n 40 /tmp/mailwarden-apt-install.log >&2
  echo "$me: apt-get install failed (full log: /tmp/mailwarden-apt-install.log)" >&2
  exit 1
fi

[ "$postgrey_before" = yes ] || stop_system_postgrey

for cmd in "${COMMANDS[@]}"; do
  if [ ! -x "$cmd" ]; then
    echo "$me: $cmd still missing after installing ${missing[*]}" >&2
    exit 1
  fi
done
if ! have_postfwd; then
  echo "$me: no postfwd2/postfwd3 binary after installing postfwd" >&2
  exit 1
fi
echo "$me: installed ${missing[*]} in $(( $(date +%s) - start ))s"
