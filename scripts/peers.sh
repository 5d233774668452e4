#!/usr/bin/env bash
# The peer mail server and the real mail clients of mailvault's tests, on 127.0.0.1 only:
# Dovecot 2.3 with the mail_crypt plugin (global keys, Maildir; the anchor the reference
# server is compared with), and the clients isync (mbsync), swaks, Postfix's smtp-source,
# curl, getmail6, fetchmail, and a Python venv with imapclient. Recipe: ../shared/reference/peer-servers.md.
#
# Usage: scripts/peers.sh install|start|stop|env|status
#   install  apt-get install dovecot-imapd dovecot-lmtpd isync swaks postfix curl getmail6 fetchmail (Postfix and
#            the system Dovecot are stopped and disabled: only their programs are used), the
#            system user vmail (Dovecot refuses to run mail processes as root), and the venv
#            (imapclient); quick when everything is there. Starts no server.
#   start    install if needed, (re)start the Dovecot instance with fresh mail, write
#            <state>/env.sh
#   stop     stop the instance (idempotent)
#   env      print the path of <state>/env.sh (source it to get the variables below)
#   status   say whether the instance runs
#
# env.sh exports:
#   MAILVAULT_PEERS=1                       the tools below are installed
#   MAILVAULT_PEER_PYTHON                   the venv's python (has imapclient)
#   MAILVAULT_PEER_MBSYNC / _SWAKS / _SMTP_SOURCE / _CURL / _GETMAIL / _FETCHMAIL   the clients' paths
#   MAILVAULT_DOVECOT_IMAP_PORT / _LMTP_PORT / _LMTP_SOCKET  the instance's listeners
#   MAILVAULT_DOVECOT_USERS                 "alice:alicepw bob:bobpw carol:carolpw"
#   MAILVAULT_DOVECOT_DIR                   the instance's folder (config, log, mail)
#
# Settings (environment):
#   MAILVAULT_CACHE          cache (the venv lives here)  (default: $HOME/.cache/mailvault)
#   MAILVAULT_PEERS_STATE    config, mail, logs           (default: <repo>/.peers)
#   MAILVAULT_DOVECOT_IMAP_PORT / MAILVAULT_DOVECOT_LMTP_PORT   (default: 1143 / 2424)
#   MAILVAULT_PEERS_START_TIMEOUT  seconds to wait for Dovecot (default: 30)
#   MAILVAULT_DOVECOT_CRYPT=0      a plain Maildir instance, without mail_crypt (benchmarks)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MAILVAULT_CACHE:-${HOME:-/root}/.cache/mailvault}"
STATE="${MAILVAULT_PEERS_STATE:-$REPO/.peers}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
IMAP_PORT="${MAILVAULT_DOVECOT_IMAP_PORT:-1143}"
LMTP_PORT="${MAILVAULT_DOVECOT_LMTP_PORT:-2424}"
TIMEOUT="${MAILVAULT_PEERS_START_TIMEOUT:-30}"
CRYPT="${MAILVAULT_DOVECOT_CRYPT:-1}"
IMAPCLIENT_VERSION=4.1.0
VENV="$CACHE/peers-venv-imapclient-$IMAPCLIENT_VERSION"
PACKAGES=(dovecot-imapd dovecot-lmtpd isync swaks postfix curl openssl getmail6 fetchmail tmux)
USERS=(alice:alicepw bob:bobpw carol:carolpw)
D="$STATE/dovecot"

log() { printf 'peers: %s\n' "$*" >&2; }
die() { printf 'peers: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- install

tools_present() {
    command -v dovecot >/dev/null 2>&1 && command -v doveconf >/dev/null 2>&1 \
        && [[ -x /usr/lib/dovecot/lmtp && -x /usr/lib/dovecot/imap ]] \
        && command -v mbsync >/dev/null 2>&1 && command -v swaks >/dev/null 2>&1 \
        && [[ -x /usr/sbin/smtp-source ]] && command -v curl >/dev/null 2>&1 \
        && command -v openssl >/dev/null 2>&1 && command -v getmail >/dev/null 2>&1 \
        && command -v fetchmail >/dev/null 2>&1 && command -v tmux >/dev/null 2>&1
}

# Postfix and the system Dovecot come with init scripts; nothing of them may run.
quiet_system_services() {
    if command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then
        log "stopping the system Postfix (only smtp-source is used)"
        postfix stop >/dev/null 2>&1 || true
    fi
    if [[ -f /run/dovecot/master.pid ]] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
        log "stopping the system Dovecot (only a private instance is used)"
        doveadm stop >/dev/null 2>&1 || kill "$(cat /run/dovecot/master.pid)" 2>/dev/null || true
    fi
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now postfix.service dovecot.service >/dev/null 2>&1 || true
    fi
}

install_packages() {
    if tools_present; then
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "installing ${PACKAGES[*]} needs root (apt-get)"
    local t0
    t0="$(now)"
    mkdir -p "$CACHE"
    # One apt-get at a time (test.sh installs others, e.g. strace, meanwhile).
    exec 7>"$CACHE/apt.lock"
    flock -w 900 7 || die "timed out waiting for $CACHE/apt.lock"
    log "apt-get install ${PACKAGES[*]}"
    # Postfix's postinst asks for a configuration type: answer "No configuration" ahead.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
    # Lock::Timeout: wait for another apt-get/dpkg instead of failing at once.
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${PACKAGES[@]}" >&2 \
        || die "apt-get install ${PACKAGES[*]} failed"
    exec 7>&-
    quiet_system_services
    tools_present || die "installed ${PACKAGES[*]}, but dovecot, mbsync, swaks, smtp-source, curl, getmail or fetchmail is still missing"
    log "packages installed in $(since "$t0") s"
}

install_user() {
    id vmail >/dev/null 2>&1 && return 0
    [[ "$(id -u)" == 0 ]] || die "creating the system user vmail needs root"
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin vmail || id vmail >/dev/null 2>&1 || die "useradd vmail failed"
    log "created the system user vmail (uid $(id -u vmail))"
}

install_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import imapclient' >/dev/null 2>&1; then
        return 0
    fi
    local t0
    t0="$(now)"
    mkdir -p "$CACHE"
    exec 6>"$VENV.lock"
    flock -w 600 6 || die "timed out waiting for $VENV.lock"
    if ! { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import imapclient' >/dev/null 2>&1; }; then
        log "creating a venv with imapclient==$IMAPCLIENT_VERSION in $VENV"
        rm -rf -- "$VENV"
        # Debian's python3 is "externally managed" (PEP 668): a venv of the system python.
        /usr/bin/python3 -m venv "$VENV" >&2 || {
            # python3-venv missing on a minimal system.
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
                --no-install-recommends python3-venv >&2
            /usr/bin/python3 -m venv "$VENV" >&2
        } || die "cannot create a venv with /usr/bin/python3"
        timeout 600 "$VENV/bin/pip" install --disable-pip-version-check --no-input -q \
            "imapclient==$IMAPCLIENT_VERSION" >&2 || die "pip install imapclient==$IMAPCLIENT_VERSION failed"
        "$VENV/bin/python" -c 'import imapclient' || die "the venv cannot import imapclient"
        log "venv ready in $(since "$t0") s"
    fi
    exec 6>&-
}

versions() {
    local p
    for p in dovecot-core dovecot-imapd dovecot-lmtpd isync swaks postfix curl getmail6 fetchmail; do
        printf '%s=%s ' "$p" "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"
    done
    printf 'imapclient=%s\n' "$("$VENV/bin/python" -c 'import imapclient; print(imapclient.__version__)' 2>/dev/null || echo '?')"
}

cmd_install() {
    install_packages
    quiet_system_services
    install_user
    install_venv
    log "installed: $(versions)"
}

# ---------------------------------------------------------------- instance

port_busy() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

# The master's pid, if it runs (it writes <base_dir>/master.pid).
master_pid() {
    local pid
    [[ -f "$D/run/master.pid" ]] || return 1
    pid="$(cat "$D/run/master.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q dovecot || return 1
    echo "$pid"
}

cmd_stop() {
    local pid i
    if pid="$(master_pid)"; then
        log "stopping Dovecot (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "Dovecot did not stop within 10 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$STATE/env.sh"
}

write_config() {
    local u
    rm -rf -- "$D"
    mkdir -p "$D/run" "$D/state" "$D/mail"
    chmod 755 "$STATE" "$D"
    # dovecot, dovenull and vmail must traverse every folder above the instance.
    runuser -u vmail -- test -x "$D/mail" \
        || die "the user vmail cannot reach $D/mail: give every folder above it o+x, or set MAILVAULT_PEERS_STATE"
    chown vmail:vmail "$D/mail"
    : >"$D/users"
    for u in "${USERS[@]}"; do
        printf '%s:{PLAIN}%s::::::\n' "${u%%:*}" "${u#*:}" >>"$D/users"
    done
    chgrp dovecot "$D/users" && chmod 640 "$D/users"
    # mail_crypt wants PKCS#8 (BEGIN PRIVATE KEY), not SEC1 from ecparam alone.
    openssl ecparam -name prime256v1 -genkey 2>/dev/null | openssl pkey -out "$D/ecprivkey.pem"
    openssl pkey -in "$D/ecprivkey.pem" -pubout -out "$D/ecpubkey.pem"
    cat >"$D/dovecot.conf" <<EOF
instance_name = mailvault-peer-$IMAP_PORT
base_dir = $D/run
state_dir = $D/state
log_path = $D/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_username_format = %Ln

passdb {
  driver = passwd-file
  args = $D/users
}
userdb {
  driver = passwd-file
  args = $D/users
  default_fields = home=$D/mail/%u
}

mail_uid = vmail
mail_gid = vmail
mail_location = maildir:$D/mail/%u/Maildir

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
  unix_listener lmtp {
    mode = 0666
  }
}

EOF
    if [[ "$CRYPT" == 1 ]]; then
        cat >>"$D/dovecot.conf" <<EOF

mail_plugins = \$mail_plugins mail_crypt
plugin {
  mail_crypt_global_private_key = <$D/ecprivkey.pem
  mail_crypt_global_public_key = <$D/ecpubkey.pem
  mail_crypt_save_version = 2
}
EOF
    fi
    doveconf -c "$D/dovecot.conf" -n >/dev/null || die "doveconf rejects $D/dovecot.conf"
}

write_env() {
    local f="$STATE/env.sh.tmp"
    {
        echo "# Written by scripts/peers.sh start on $(date -u +%Y-%m-%dT%H:%M:%SZ); removed by stop."
        printf 'export %s=%q\n' \
            MAILVAULT_PEERS 1 \
            MAILVAULT_PEER_PYTHON "$VENV/bin/python" \
            MAILVAULT_PEER_MBSYNC "$(command -v mbsync)" \
            MAILVAULT_PEER_SWAKS "$(command -v swaks)" \
            MAILVAULT_PEER_SMTP_SOURCE /usr/sbin/smtp-source \
            MAILVAULT_PEER_CURL "$(command -v curl)" \
            MAILVAULT_PEER_GETMAIL "$(command -v getmail)" \
            MAILVAULT_PEER_FETCHMAIL "$(command -v fetchmail)" \
            MAILVAULT_DOVECOT_IMAP_PORT "$IMAP_PORT" \
            MAILVAULT_DOVECOT_LMTP_PORT "$LMTP_PORT" \
            MAILVAULT_DOVECOT_LMTP_SOCKET "$D/run/lmtp" \
            MAILVAULT_DOVECOT_USERS "${USERS[*]}" \
            MAILVAULT_DOVECOT_DIR "$D"
    } >"$f"
    mv -f "$f" "$STATE/env.sh"
}

cmd_start() {
    local t0 i pid
    t0="$(now)"
    cmd_stop
    cmd_install
    for i in "$IMAP_PORT" "$LMTP_PORT"; do
        port_busy "$i" && die "port $i on 127.0.0.1 is in use: $(ss -ltnpH "sport = :$i" 2>/dev/null | head -n 2) (set MAILVAULT_DOVECOT_IMAP_PORT / _LMTP_PORT)"
    done
    write_config
    log "starting Dovecot $(dovecot --version | cut -d' ' -f1) $( ((CRYPT)) && echo with || echo without) mail_crypt on 127.0.0.1:$IMAP_PORT (IMAP), :$LMTP_PORT (LMTP); log: $D/dovecot.log"
    # -F: in the foreground, so $! is the master; it stays in the caller's process group.
    dovecot -c "$D/dovecot.conf" -F </dev/null >"$D/stdout" 2>&1 &
    pid=$!
    for ((i = 0; ; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$D/stdout" "$D/dovecot.log" >&2 2>/dev/null || true
            die "Dovecot exited during startup"
        fi
        port_busy "$IMAP_PORT" && port_busy "$LMTP_PORT" && break
        ((i < TIMEOUT * 10)) || { cmd_stop; die "Dovecot did not listen within ${TIMEOUT}s (log: $D/dovecot.log)"; }
        sleep 0.1
    done
    write_env
    log "Dovecot up in $(since "$t0") s; variables in: $STATE/env.sh"
}

cmd_env() {
    [[ -f "$STATE/env.sh" ]] || die "$STATE/env.sh does not exist: run '$0 start' first"
    echo "$STATE/env.sh"
}

cmd_status() {
    local pid
    if pid="$(master_pid)"; then
        echo "Dovecot: running (pid $pid) on 127.0.0.1:$IMAP_PORT / :$LMTP_PORT"
    else
        echo "Dovecot: stopped"
        return 1
    fi
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
*)
    echo "usage: $0 install|start|stop|env|status" >&2
    exit 2
    ;;
esac
