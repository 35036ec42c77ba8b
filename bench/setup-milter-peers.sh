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
me="setup-milter-peers"
source "$(dirname "$0")/../test/setup/apt-lib.sh"

missing_packages "${PACKAGES[@]}"
mapfile -t absent < <(absent_paths "${COMMANDS[@]}")
if [ ${#missing[@]} -eq 0 ] && [ ${#absent[@]} -gt 0 ]; then
  missing=("${PACKAGES[@]}") # installed but a command is gone: reinstall
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
require_root_and_apt "bash bench/setup-milter-peers.sh"

start=$(date +%s)
echo "$me: installing ${missing[*]}"
declare -A before=()
for svc in "${SERVICES[@]}"; do
  before[$svc]=no
  [ -n "$(system_pids "$svc" ' -x /tmp/')" ] && before[$svc]=yes
done

apt_install_missing "benchmark peers"

for svc in "${SERVICES[@]}"; do
  [ "${before[$svc]}" = yes ] || stop_system_service "$svc" ' -x /tmp/'
done

mapfile -t absent < <(absent_paths "${COMMANDS[@]}")
if [ ${#absent[@]} -gt 0 ]; then
  echo "$me: ${absent[*]} still missing after installing ${missing[*]}" >&2
  exit 1
fi
echo "$me: installed ${missing[*]} in $(( $(date +%s) - start ))s"
