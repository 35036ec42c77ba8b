# Shared by test/setup/ensure-deps.sh and bench/setup-*-peers.sh (sourced, not
# run): find which Debian packages are missing, install them with apt as root
# without letting maintainer scripts start their services, and stop a system
# service an install started anyway. Every function reports as "$me: ...".

# missing_packages PKG... -> the global array `missing` holds those not installed.
missing_packages() {
  missing=()
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
  done
}

# absent_paths PATH_OR_GLOB... -> prints those that do not exist (commands must
# be executable; globs must match something). dpkg can say "installed" for a
# package whose files were deleted.
absent_paths() {
  local p
  for p in "$@"; do
    case $p in
      *'*'*) compgen -G "$p" >/dev/null || echo "$p" ;;
      *) [ -x "$p" ] || [ -f "$p" ] || echo "$p" ;;
    esac
  done
}

# require_root_and_apt HOW_TO_RUN: exits 1 with a one-line reason when we
# cannot install `missing` here.
require_root_and_apt() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$me: missing system packages (${missing[*]}); run as root: sudo $1" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$me: missing system packages (${missing[*]}) and no apt-get to install them (Debian 12 expected)" >&2
    exit 1
  fi
}

# apt_install_missing WHY: apt-get update + install of `missing`, with a
# temporary policy-rc.d (exit 101) so maintainer scripts start no service; a
# policy-rc.d that was there before is left alone. Logs in /tmp.
apt_install_missing() {
  local policy=/usr/sbin/policy-rc.d mark="# mailwarden $me: temporary" created=no
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n%s policy-rc.d (do not start services while installing %s)\nexit 101\n' "$mark" "$1" > "$policy"
    chmod 755 "$policy"
    created=yes
    # Removed below; the trap covers an interrupted install.
    trap "grep -qF '$mark' '$policy' 2>/dev/null && rm -f '$policy'" EXIT
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  local apt_opts=(-q -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! apt-get "${apt_opts[@]}" update >/tmp/mailwarden-apt-update.log 2>&1; then
    cat /tmp/mailwarden-apt-update.log >&2
    echo "$me: apt-get update failed" >&2
    rc=1
  elif ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/tmp/mailwarden-apt-install.log 2>&1; then
    tail -n 40 /tmp/mailwarden-apt-install.log >&2
    echo "$me: apt-get install failed (full log: /tmp/mailwarden-apt-install.log)" >&2
    rc=1
  fi
  if [ "$created" = yes ]; then
    if grep -qF "$mark" "$policy" 2>/dev/null; then rm -f "$policy"; fi
    trap - EXIT
  fi
  [ "$rc" -eq 0 ] || exit 1
}

# system_pids NAME [PRIVATE_ARG]: pids of processes named NAME, except ours
# (those whose command line contains PRIVATE_ARG, e.g. " -x /tmp/").
system_pids() {
  local name=$1 private=${2:-} pid
  for pid in $(pgrep -x "$name" 2>/dev/null || true); do
    if [ -n "$private" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$private"; then continue; fi
    echo "$pid"
  done
}

# stop_system_service SERVICE [PRIVATE_ARG]: stops and disables a distro
# service (systemd or init.d) and kills what is left of it, sparing our own
# private instances (see system_pids).
stop_system_service() {
  local svc=$1 private=${2:-} stopped=no pid
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
  for pid in $(system_pids "$svc" "$private"); do
    kill "$pid" 2>/dev/null && stopped=yes
  done
  [ "$stopped" = no ] || echo "$me: stopped the system $svc service started by the install"
}
