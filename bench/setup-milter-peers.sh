#!/usr/bin/env bash
# Installs the peer milters that bench/milter.ts measures mailwarden against
# (Debian 12 / apt, as root):
#   opendkim        the OpenDKIM milter (/usr/sbin/opendkim)
#   opendkim-tools  opendkim-genkey (not needed by the benchmark; the tests use it)
#   opendmarc       the OpenDMARC milter (/usr/sbin/opendmarc)
#
# - Idempotent and fast when everything is present: only dpkg-query and file
#   checks, no apt-get update, no network.
# - Never leaves a distro service running: the benchmark starts its own
#   copies in the foreground on 127.0.0.1 high ports with temp configs. During
#   the install a policy-rc.d (exit 101) keeps the maintainer scripts from
#   starting opendkim/opendmarc; a pre-existing policy-rc.d is left alone. If
#   either service runs afterwards and did not before, it is stopped, and both
#   are disabled so a reboot does not start them.
# - /etc is not otherwise touched (the packages ship /etc/opendkim.conf and
#   /etc/opendmarc.conf; the benchmark never reads them: it passes -x CONFIG).
set -euo pipefail

PACKAGES=(opendkim opendkim-tools opendmarc)
COMMANDS=(/usr/sbin/opendkim /usr/sbin/opendmarc)
SERVICES=(opendkim opendmarc)
POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="# mailwarden setup-milter-peers: temporary"
me="setup-milter-peers"

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
missing_cmds=()
for cmd in "${COMMANDS[@]}"; do
  [ -x "$cmd" ] || missing_cmds+=("$cmd")
done
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_cmds[@]} -gt 0 ]; then
  missing=("${PACKAGES[@]}") # installed but a command is gone: reinstall
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$me: missing packages (${missing[*]}); run as root: sudo bash bench/setup-milter-peers.sh" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$me: missing packages (${missing[*]}) and no apt-get to install them (Debian 12 expected)" >&2
  exit 1
fi

# pids of a system-started daemon (the benchmark's run with -x /tmp/...).
system_pids() {
  local name=$1 pid
  for pid in $(pgrep -x "$name" 2>/dev/null || true); do
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- ' -x /tmp/'; then continue; fi
    echo "$pid"
  done
}

stop_system_service() {
  local svc=$1 stopped=no pid
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    if systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" && stopped=yes
    fi
    systemctl disable --quiet "$svc" 2>/dev/null || true
  elif [ -x "/etc/init.d/$svc" ]; then
    "/etc/init.d/$svc" stop >/dev/null 2>&1 && stopped=yes || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [ -x "/etc/init.d/$svc" ]; then
    update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
  for pid in $(system_pids "$svc"); do
    kill "$pid" 2>/dev/null && stopped=yes
  done
  [ "$stopped" = no ] || echo "$me: stopped the system $svc service started by the install"
}

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

declare -A before=()
for svc in "${SERVICES[@]}"; do
  before[$svc]=no
  [ -n "$(system_pids "$svc")" ] && before[$svc]=yes
done

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

for svc in "${SERVICES[@]}"; do
  [ "${before[$svc]}" = yes ] || stop_system_service "$svc"
done

for cmd in "${COMMANDS[@]}"; do
  if [ ! -x "$cmd" ]; then
    echo "$me: $cmd still missing after installing ${missing[*]}" >&2
    exit 1
  fi
done
echo "$me: installed ${missing[*]} in $(( $(date +%s) - start ))s"
