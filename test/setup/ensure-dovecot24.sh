#!/usr/bin/env bash
# Makes sure a Debian 13 "trixie" chroot with Dovecot 2.4 exists, for
# test/integration/dovecot24-e2e.test.ts (this host is Debian 12: Dovecot 2.3).
# Run by test/setup/ensure-deps.sh (npm test's pretest); safe to run by hand.
#
# - Where: $MAILWARDEN_TRIXIE_ROOT, default /var/cache/mailwarden-test/trixie.
# - Idempotent: when the stamp file <root>/.mailwarden-trixie names the same
#   recipe (SPEC below) and the key files are there, it exits at once (no
#   network). A changed SPEC or a broken chroot is rebuilt from scratch.
# - The chroot is built next to its final place and renamed into it only when
#   complete, so an interrupted run never leaves a half chroot that looks done.
# - Only Debian packages: debootstrap (installed on the host if missing) from
#   the host's own Debian mirror (first .../debian URI in
#   /etc/apt/sources.list*, or $MAILWARDEN_DEBIAN_MIRROR), checked against the
#   trixie keys in bookworm's debian-archive-keyring. An apt proxy
#   (Acquire::http::Proxy) is passed on to debootstrap.
# - Small: --variant=minbase plus only dovecot-core, -imapd, -lmtpd,
#   -auth-lua, lua-cjson and lua-socket (the Lua script's fast transport):
#   ~35-45 s and ~250 MB on the test VM (the downloaded .debs are deleted
#   afterwards).
# - Never starts a service: debootstrap configures packages behind its own
#   policy-rc.d (exit 101) and a fake start-stop-daemon. No mounts are left
#   behind: the static /dev nodes debootstrap creates (null, urandom, ...) are
#   all Dovecot needs; the tests run `chroot <root> dovecot -F -c <conf>`.
# - Not root: prints why and exits 0 (the test then skips: it needs root).
set -euo pipefail

me="ensure-dovecot24"
ROOT=${MAILWARDEN_TRIXIE_ROOT:-/var/cache/mailwarden-test/trixie}
SUITE=trixie
PACKAGES=dovecot-core,dovecot-imapd,dovecot-lmtpd,dovecot-auth-lua,lua-cjson,lua-socket
# Bump the trailing number to force a rebuild when the recipe changes.
SPEC="suite=$SUITE variant=minbase include=$PACKAGES recipe=2"
STAMP="$ROOT/.mailwarden-trixie"
# Files that prove the packages are unpacked (cjson, LuaSocket: any Lua version).
FILES=(usr/sbin/dovecot usr/bin/doveadm usr/lib/dovecot/imap usr/lib/dovecot/lmtp
  usr/lib/dovecot/modules/auth/libauthdb_lua.so)

complete() {
  [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$SPEC" ] || return 1
  local f
  for f in "${FILES[@]}"; do [ -e "$ROOT/$f" ] || return 1; done
  compgen -G "$ROOT/usr/lib/*/lua/5.*/cjson.so" >/dev/null || return 1
  compgen -G "$ROOT/usr/lib/*/lua/5.*/socket/unix.so" >/dev/null
}

if complete; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  echo "$me: no Dovecot 2.4 chroot at $ROOT and not root: skipped (the Dovecot 2.4 test needs root and skips too)" >&2
  exit 0
fi

start=$(date +%s)
mkdir -p "$(dirname "$ROOT")"
# One builder at a time (two test runs starting together).
exec 9>"$ROOT.lock"
flock 9
if complete; then exit 0; fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "$me: installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-q -o DPkg::Lock::Timeout=120)
  if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends debootstrap >/tmp/mailwarden-apt-debootstrap.log 2>&1; then
    apt-get "${apt_opts[@]}" update >/tmp/mailwarden-apt-update.log 2>&1 || { cat /tmp/mailwarden-apt-update.log >&2; exit 1; }
    apt-get "${apt_opts[@]}" install -y --no-install-recommends debootstrap >/tmp/mailwarden-apt-debootstrap.log 2>&1 \
      || { tail -n 20 /tmp/mailwarden-apt-debootstrap.log >&2; echo "$me: cannot install debootstrap" >&2; exit 1; }
  fi
fi
if [ ! -e "/usr/share/debootstrap/scripts/$SUITE" ]; then
  echo "$me: this debootstrap does not know $SUITE (upgrade debootstrap)" >&2
  exit 1
fi

mirror=${MAILWARDEN_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # deb822 "URIs: http://host/debian" or one-line "deb [opts] http://host/debian bookworm main".
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^[:space:]]*/debian/?([[:space:]]|$)' | head -n1 | tr -d '[:space:]' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
proxy=$(apt-config shell p Acquire::http::Proxy 2>/dev/null | sed -n "s/^p='\(.*\)'$/\1/p" || true)
if [ -n "$proxy" ] && [ "$proxy" != DIRECT ]; then export http_proxy="$proxy"; fi

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
build="$ROOT.build"
rm -rf "$build"
echo "$me: building a Debian $SUITE chroot with Dovecot 2.4 in $ROOT (mirror $mirror)"
log=/tmp/mailwarden-debootstrap.log
if ! debootstrap --variant=minbase --include="$PACKAGES" --keyring="$keyring" \
    "$SUITE" "$build" "$mirror" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  [ -f "$build/debootstrap/debootstrap.log" ] && tail -n 30 "$build/debootstrap/debootstrap.log" >&2
  echo "$me: debootstrap failed (full log: $log); removing $build" >&2
  # debootstrap unmounts what it mounted; never rm -rf through a live mount.
  if ! grep -qF " $build/" /proc/mounts; then rm -rf "$build"; fi
  exit 1
fi
rm -f "$build"/var/cache/apt/archives/*.deb

version=$(chroot "$build" /usr/sbin/dovecot --version 2>&1 || true)
case "$version" in
  2.4.*) ;;
  *) echo "$me: the chroot's dovecot --version says '$version', not 2.4.x" >&2; exit 1 ;;
esac
printf '%s\ndovecot %s\nbuilt %s from %s\n' "$SPEC" "$version" "$(date -u +%FT%TZ)" "$mirror" >"$build/.mailwarden-trixie"

if [ -e "$ROOT" ]; then
  if grep -qF " $ROOT/" /proc/mounts; then
    echo "$me: $ROOT is stale but something is mounted inside it; unmount it first" >&2
    exit 1
  fi
  rm -rf "$ROOT"
fi
mv "$build" "$ROOT"
complete || { echo "$me: $ROOT incomplete after the build" >&2; exit 1; }
echo "$me: Dovecot $version ready in $ROOT in $(( $(date +%s) - start ))s"
