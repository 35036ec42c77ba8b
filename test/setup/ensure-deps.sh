#!/usr/bin/env bash
# Makes sure the system packages the integration tests need are installed
# (Debian 12 / apt, as root). Run by `npm test` through package.json "pretest".
#
# - Idempotent and fast when everything is present: only dpkg-query, no
#   apt-get update, no network.
# - Never starts the distro services: the tests run private Postfix, MariaDB
#   and Dovecot instances in temp dirs on 127.0.0.1 high ports. During the
#   install a policy-rc.d (exit 101) keeps maintainer scripts from starting
#   postfix, mariadb or dovecot; a pre-existing policy-rc.d is left alone.
# - Dovecot: imapd/pop3d/lmtpd for the protocols the tests speak, auth-lua +
#   lua-cjson + lua-socket for dovecot-conf/mailwarden.lua. /etc/dovecot is
#   never edited (the private instances use `dovecot -c <temp dir>/dovecot.conf`).
# - OpenDKIM (the milter, in sign mode) and Mail::DKIM (libmail-dkim-perl, DKIM
#   and ARC verifiers) are independent implementations the milter tests check
#   mailwarden's signatures and ARC seals against; the opendkim service is not
#   left enabled (the tests run their own opendkim -x <temp conf>).
# - Never changes an existing /etc/postfix/main.cf. Postfix is preseeded with
#   "No configuration", which installs no main.cf at all; the private test
#   instances (postfix/postmap/postconf -c DIR) don't need one, but a bare
#   `postconf` or `postmap -q KEY TYPE:TABLE` without -c dies with "open
#   /etc/postfix/main.cf: No such file or directory", so if it is missing we
#   create a minimal one (compatibility_level only; the system Postfix stays
#   unconfigured and stopped).
set -euo pipefail

PACKAGES=(postfix postfix-mysql postfix-lmdb mariadb-server mariadb-client swaks
  dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-auth-lua lua-cjson lua-socket opendkim-tools opendkim libmail-dkim-perl)
# A command each package must provide (checked too, in case dpkg lies or is absent).
COMMANDS=(/usr/sbin/postfix /usr/sbin/postmap /usr/sbin/mariadbd /usr/bin/mariadb-install-db /usr/bin/mariadb /usr/bin/swaks
  /usr/sbin/dovecot /usr/bin/doveadm /usr/lib/dovecot/imap /usr/lib/dovecot/pop3 /usr/lib/dovecot/lmtp /usr/sbin/opendkim)
# Non-executable files a package must provide (plugins, Lua modules). Globs are
# allowed; Dovecot 2.3 on bookworm embeds Lua 5.4, so it loads cjson and
# LuaSocket (the Lua script's fast transport) for 5.4.
FILES=(/usr/lib/dovecot/modules/auth/libauthdb_lua.so "/usr/lib/*/lua/5.4/cjson.so" "/usr/lib/*/lua/5.4/socket/unix.so" /usr/share/perl5/Mail/DKIM/ARC/Verifier.pm)
me="ensure-deps"
source "$(dirname "$0")/apt-lib.sh"
bash "$(dirname "$0")/ensure-dovecot24.sh" # Dovecot 2.4 chroot for dovecot24-e2e (here, not at the end: the checks below exit early)

missing_packages "${PACKAGES[@]}"
mapfile -t absent < <(absent_paths "${COMMANDS[@]}" "${FILES[@]}")
if [ ${#missing[@]} -eq 0 ] && [ ${#absent[@]} -gt 0 ]; then
  # Installed but a command or file is gone: reinstall everything we check.
  missing=("${PACKAGES[@]}")
fi

is_root() { [ "$(id -u)" -eq 0 ]; }

ensure_main_cf() {
  if [ ! -e /etc/postfix/main.cf ] && [ -d /etc/postfix ] && is_root; then
    cat > /etc/postfix/main.cf <<'EOF'
# Created by mailwarden's test/setup/ensure-deps.sh because the postfix package
# was installed with "No configuration" and bare postconf/postmap commands need
# this file to exist. The mailwarden tests run private instances with their own
# config directories; the system Postfix is not configured or started.
compatibility_level = 3.6
EOF
    echo "$me: created a minimal /etc/postfix/main.cf"
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  ensure_main_cf
  exit 0
fi

require_root_and_apt "bash test/setup/ensure-deps.sh"

start=$(date +%s)
echo "$me: installing ${missing[*]}"

# Remember whether the system instances were running, to stop only what the
# install itself may have started.
pid_alive() { [ -s "$1" ] && kill -0 "$(tr -dc '0-9' < "$1")" 2>/dev/null; }
pf_before=no; pid_alive /var/spool/postfix/pid/master.pid && pf_before=yes
db_before=no; pid_alive /run/mysqld/mysqld.pid && db_before=yes
dc_before=no; pid_alive /run/dovecot/master.pid && dc_before=yes

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt_install_missing "test dependencies"

# Belt and braces for hosts where something started them anyway.
if [ "$pf_before" = no ] && pid_alive /var/spool/postfix/pid/master.pid; then
  echo "$me: stopping the system Postfix started by the install"
  postfix stop >/dev/null 2>&1 || true
fi
if [ "$db_before" = no ] && pid_alive /run/mysqld/mysqld.pid; then
  echo "$me: stopping the system MariaDB started by the install"
  { command -v systemctl >/dev/null 2>&1 && systemctl stop mariadb; } >/dev/null 2>&1 \
    || service mariadb stop >/dev/null 2>&1 \
    || kill "$(tr -dc '0-9' < /run/mysqld/mysqld.pid)" 2>/dev/null || true
fi

if [ "$dc_before" = no ] && pid_alive /run/dovecot/master.pid; then
  echo "$me: stopping the system Dovecot started by the install"
  { command -v systemctl >/dev/null 2>&1 && systemctl stop dovecot; } >/dev/null 2>&1 \
    || kill "$(tr -dc '0-9' < /run/dovecot/master.pid)" 2>/dev/null || true
fi

if [[ " ${missing[*]} " == *" opendkim "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now opendkim >/dev/null 2>&1 || true
fi

ensure_main_cf

mapfile -t absent < <(absent_paths "${COMMANDS[@]}" "${FILES[@]}")
if [ ${#absent[@]} -gt 0 ]; then
  echo "$me: ${absent[*]} still missing after installing ${missing[*]}" >&2
  exit 1
fi
echo "$me: installed ${missing[*]} in $(( $(date +%s) - start ))s"
