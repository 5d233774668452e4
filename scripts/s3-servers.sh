#!/usr/bin/env bash
# Local S3 servers for mailvault's tests: a single-node Garage 2.5.0 and moto_server 5.2.1,
# both on 127.0.0.1 only.
#
# Usage: scripts/s3-servers.sh install|start|stop|env|status
#   install  build/install Garage 2.5.0 (cached) and moto_server 5.2.1 (pip), start nothing
#   start    install if needed, (re)start both servers with fresh data, create the bucket
#            and credentials, write <state>/env.sh
#   stop     stop both servers (idempotent)
#   env      print the path of <state>/env.sh (source it to get the variables below)
#   status   say which servers are running
#
# env.sh exports, for NAME in GARAGE and MOTO:
#   MAILVAULT_S3_<NAME>_ENDPOINT MAILVAULT_S3_<NAME>_REGION MAILVAULT_S3_<NAME>_BUCKET
#   MAILVAULT_S3_<NAME>_ACCESS_KEY_ID MAILVAULT_S3_<NAME>_SECRET_ACCESS_KEY
#
# Settings (environment):
#   MAILVAULT_CACHE        cache of built tools          (default: $HOME/.cache/mailvault)
#   MAILVAULT_S3_STATE     config, data, logs, pids      (default: <repo>/.s3-servers)
#   MAILVAULT_S3_BUCKET    bucket created in both        (default: mailvault-test)
#   MAILVAULT_GARAGE_S3_PORT / _RPC_PORT / _ADMIN_PORT   (default: 3900 / 3901 / 3903)
#   MAILVAULT_MOTO_PORT                                  (default: 5000)
#   MAILVAULT_S3_START_TIMEOUT  seconds to wait for each server (default: 60)
#   MAILVAULT_GARAGE_BUILD_TIMEOUT / MAILVAULT_PIP_TIMEOUT  install bounds (default: 3600 / 900 s)
#   PYTHON                 interpreter used for pip and boto3 (default: python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MAILVAULT_CACHE:-${HOME:-/root}/.cache/mailvault}"
STATE="${MAILVAULT_S3_STATE:-$REPO/.s3-servers}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
BUCKET="${MAILVAULT_S3_BUCKET:-mailvault-test}"
GARAGE_VERSION=2.5.0
GARAGE_ROOT="$CACHE/garage-$GARAGE_VERSION"
GARAGE_BIN="$GARAGE_ROOT/bin/garage"
GARAGE_S3_PORT="${MAILVAULT_GARAGE_S3_PORT:-3900}"
GARAGE_RPC_PORT="${MAILVAULT_GARAGE_RPC_PORT:-3901}"
GARAGE_ADMIN_PORT="${MAILVAULT_GARAGE_ADMIN_PORT:-3903}"
GARAGE_REGION=garage
MOTO_VERSION=5.2.1
MOTO_PORT="${MAILVAULT_MOTO_PORT:-5000}"
MOTO_REGION=us-east-1
MOTO_KEY=testing
MOTO_SECRET=testing
TIMEOUT="${MAILVAULT_S3_START_TIMEOUT:-60}"
PY="${PYTHON:-python3}"
# A cold Garage build takes ~12 min alone on 2 cores, more beside another build.
GARAGE_BUILD_TIMEOUT="${MAILVAULT_GARAGE_BUILD_TIMEOUT:-3600}"
PIP_TIMEOUT="${MAILVAULT_PIP_TIMEOUT:-900}"

log() { printf 's3-servers: %s\n' "$*" >&2; }
die() { printf 's3-servers: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- install

install_garage() {
    if [[ -x "$GARAGE_BIN" ]] && "$GARAGE_BIN" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
        return 0
    fi
    mkdir -p "$CACHE"
    # One build at a time, even if `install` runs in the background and `start` is called.
    exec 8>"$CACHE/garage-$GARAGE_VERSION.lock"
    flock -w "$GARAGE_BUILD_TIMEOUT" 8 || die "timed out waiting for another Garage build (lock $CACHE/garage-$GARAGE_VERSION.lock)"
    if [[ -x "$GARAGE_BIN" ]] && "$GARAGE_BIN" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
        exec 8>&-
        return 0
    fi
    local t0 buildlog="$CACHE/garage-build.log"
    t0="$(now)"
    log "Garage $GARAGE_VERSION not in $GARAGE_ROOT: building it with cargo install (about 12 min; log: $buildlog)"
    if ! timeout "$GARAGE_BUILD_TIMEOUT" cargo install garage --version "$GARAGE_VERSION" --locked \
        --no-default-features --features bundled-libs,sqlite --root "$GARAGE_ROOT" >"$buildlog" 2>&1; then
        tail -n 40 "$buildlog" >&2 || true
        die "building Garage $GARAGE_VERSION failed or took over ${GARAGE_BUILD_TIMEOUT}s (log: $buildlog)"
    fi
    "$GARAGE_BIN" --version >/dev/null 2>&1 || die "Garage was built but $GARAGE_BIN does not run"
    log "Garage $GARAGE_VERSION built in $(since "$t0") s"
    exec 8>&-
}

moto_cmd() {
    if command -v moto_server >/dev/null 2>&1; then
        echo moto_server
    else
        echo "$PY -m moto.server"
    fi
}

install_moto() {
    command -v "$PY" >/dev/null 2>&1 || die "$PY not found (set PYTHON to a Python 3 interpreter with pip)"
    if command -v moto_server >/dev/null 2>&1 && "$PY" -c 'import boto3, moto.server' >/dev/null 2>&1; then
        return 0
    fi
    local t0
    t0="$(now)"
    log "installing moto[server]==$MOTO_VERSION with pip"
    timeout "$PIP_TIMEOUT" "$PY" -m pip install --disable-pip-version-check --no-input \
        --root-user-action=ignore --progress-bar off "moto[server]==$MOTO_VERSION" >&2 \
        || die "pip install moto[server]==$MOTO_VERSION failed"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
    hash -r
    "$PY" -c 'import boto3, moto.server' || die "moto was installed but '$PY' cannot import boto3 and moto.server"
    log "moto $MOTO_VERSION installed in $(since "$t0") s"
}

# ---------------------------------------------------------------- processes

# Is anything listening on 127.0.0.1:$1?
port_busy() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

check_port_free() { # name port
    if port_busy "$2"; then
        local who
        who="$(ss -ltnpH "sport = :$2" 2>/dev/null | head -n 3 || true)"
        die "port $2 (for $1) on 127.0.0.1 is already in use${who:+: $who}; stop that process or choose another port (see the MAILVAULT_*_PORT variables at the top of $0)"
    fi
}

# pid from a pid file if that process is alive and still ours: its command line mentions $2,
# or this script (a server's pid is that of a forked copy of this script until it has
# exec'd the server). A zombie has an empty command line, so it counts as exited.
live_pid() { # pidfile pattern
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE -- "$2|s3-servers\.sh" || return 1
    echo "$pid"
}

# Is process $1 running (neither gone nor a zombie)?
alive() {
    local st
    st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ -n "$st" && "$st" != Z* ]]
}

# Stop the servers whose pid files are given as "name:pidfile:pattern", all at once: TERM,
# wait up to 10 s, then KILL what is left. The servers stay in the caller's process group
# (no setsid), so that whatever kills a whole test run's group kills them too.
stop_all() {
    local spec name pidfile pattern pid i left
    local -a names=() pids=() files=()
    for spec in "$@"; do
        IFS=: read -r name pidfile pattern <<<"$spec"
        if pid="$(live_pid "$pidfile" "$pattern")"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name")
            pids+=("$pid")
        fi
        files+=("$pidfile")
    done
    for ((i = 0; i < 100; i++)); do
        left=0
        for pid in "${pids[@]}"; do alive "$pid" && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        pid="${pids[$i]}"
        if alive "$pid"; then
            log "${names[$i]} did not stop within 10 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for i in "${!pids[@]}"; do
        pid="${pids[$i]}"
        for ((left = 0; left < 50; left++)); do
            alive "$pid" || break
            sleep 0.1
        done
        alive "$pid" && die "could not stop ${names[$i]} (pid $pid)"
    done
    rm -f "${files[@]}"
}

cmd_stop() {
    stop_all "moto_server:$STATE/moto.pid:moto" "Garage:$STATE/garage.pid:garage"
    rm -f "$STATE/env.sh"
}

# ---------------------------------------------------------------- garage

randhex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

G() { "$GARAGE_BIN" -c "$STATE/garage/garage.toml" "$@"; }

start_garage() {
    local t0 dir="$STATE/garage" i node out key_id secret
    t0="$(now)"
    check_port_free "Garage S3 API" "$GARAGE_S3_PORT"
    check_port_free "Garage RPC" "$GARAGE_RPC_PORT"
    check_port_free "Garage admin API" "$GARAGE_ADMIN_PORT"
    rm -rf -- "$dir"
    mkdir -p "$dir/meta" "$dir/data"
    : >"$STATE/garage-setup.log"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_public_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_secret = "$(randhex 32)"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$GARAGE_ADMIN_PORT"
admin_token = "$(randhex 32)"
EOF
    chmod 600 "$dir/garage.toml"
    log "starting Garage $GARAGE_VERSION on 127.0.0.1:$GARAGE_S3_PORT (rpc $GARAGE_RPC_PORT, admin $GARAGE_ADMIN_PORT; log: $STATE/garage.log)"
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-garage=info}" "$GARAGE_BIN" -c "$dir/garage.toml" server \
        </dev/null >"$STATE/garage.log" 2>&1 &
    echo $! >"$STATE/garage.pid"

    for ((i = 0; ; i++)); do
        live_pid "$STATE/garage.pid" garage >/dev/null || {
            tail -n 30 "$STATE/garage.log" >&2 || true
            die "Garage exited during startup (log: $STATE/garage.log)"
        }
        if node="$(G node id -q 2>/dev/null)" && [[ -n "$node" ]] && G status >/dev/null 2>&1; then
            break
        fi
        ((i < TIMEOUT * 4)) || die "Garage did not answer within ${TIMEOUT}s (log: $STATE/garage.log)"
        sleep 0.25
    done
    node="${node%%@*}"
    G layout assign -z dc1 -c 1G "$node" >>"$STATE/garage-setup.log" 2>&1 || die "garage layout assign failed (see $STATE/garage-setup.log)"
    G layout apply --version 1 >>"$STATE/garage-setup.log" 2>&1 || die "garage layout apply failed (see $STATE/garage-setup.log)"
    # The new layout takes a moment to be effective: retry the bucket creation.
    for ((i = 0; ; i++)); do
        G bucket create "$BUCKET" >>"$STATE/garage-setup.log" 2>&1 && break
        ((i < TIMEOUT * 4)) || die "garage bucket create $BUCKET kept failing for ${TIMEOUT}s (see $STATE/garage-setup.log)"
        sleep 0.25
    done
    out="$(G key create mailvault-test-key 2>&1)" || { echo "$out" >&2; die "garage key create failed"; }
    key_id="$(awk -F': *' '/^Key ID:/ { print $2; exit }' <<<"$out" | tr -d '[:space:]')"
    secret="$(awk -F': *' '/^Secret key:/ { print $2; exit }' <<<"$out" | tr -d '[:space:]')"
    [[ -n "$key_id" && -n "$secret" ]] || { echo "$out" >&2; die "could not read the key id and secret from 'garage key create'"; }
    G bucket allow --read --write --owner "$BUCKET" --key mailvault-test-key >>"$STATE/garage-setup.log" 2>&1 \
        || die "garage bucket allow failed (see $STATE/garage-setup.log)"
    GARAGE_KEY_ID="$key_id"
    GARAGE_SECRET="$secret"
    wait_s3 Garage "http://127.0.0.1:$GARAGE_S3_PORT" "$GARAGE_REGION" "$key_id" "$secret" no
    log "Garage ready in $(since "$t0") s"
}

# ---------------------------------------------------------------- moto

start_moto() {
    local t0 i
    t0="$(now)"
    check_port_free moto_server "$MOTO_PORT"
    log "starting moto_server $MOTO_VERSION on 127.0.0.1:$MOTO_PORT (log: $STATE/moto.log)"
    # moto_server's own entry point serves requests on threads, and moto 5.2.1 checks
    # If-None-Match and then writes without a lock: two concurrent conditional creates
    # can both succeed, so a commit acknowledged under compare-and-swap could be
    # overwritten (seen in the mail concurrency test). Real S3 makes the check atomic.
    # Serving one request at a time makes moto's check-then-write atomic too.
    # Started at most twice: a start that exits at once (seen once on a loaded machine,
    # with an empty log) is retried before giving up.
    local attempt
    for attempt in 1 2; do
        MOTO_PORT="$MOTO_PORT" "$PY" -c 'import sys
from werkzeug.serving import run_simple
from moto.server import DomainDispatcherApplication, create_backend_app
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False)' \
            127.0.0.1 "$MOTO_PORT" </dev/null >"$STATE/moto.log" 2>&1 &
        echo $! >"$STATE/moto.pid"
        for ((i = 0; ; i++)); do
            live_pid "$STATE/moto.pid" moto >/dev/null || {
                tail -n 30 "$STATE/moto.log" >&2 || true
                if ((attempt < 2)); then
                    log "moto_server exited during startup; starting it once more"
                    continue 2
                fi
                die "moto_server exited during startup (log: $STATE/moto.log)"
            }
            port_busy "$MOTO_PORT" && break
            ((i < TIMEOUT * 4)) || die "moto_server did not listen on port $MOTO_PORT within ${TIMEOUT}s (log: $STATE/moto.log)"
            sleep 0.25
        done
        break
    done
    wait_s3 moto_server "http://127.0.0.1:$MOTO_PORT" "$MOTO_REGION" "$MOTO_KEY" "$MOTO_SECRET" yes
    log "moto_server ready in $(since "$t0") s"
}

# ---------------------------------------------------------------- S3 check

# Wait (bounded) until the bucket answers with these credentials, creating it first if
# asked; then put, get and delete one object.
wait_s3() { # name endpoint region key secret create(yes|no)
    S3_NAME="$1" S3_ENDPOINT="$2" S3_REGION="$3" S3_KEY="$4" S3_SECRET="$5" S3_CREATE="$6" \
        S3_BUCKET="$BUCKET" S3_TIMEOUT="$TIMEOUT" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        timeout $((TIMEOUT + 30)) "$PY" - <<'EOF' || die "$1 did not serve bucket $BUCKET at $2 in time"
import os, sys, time
import boto3
from botocore.config import Config

e = os.environ
s3 = boto3.client(
    "s3",
    endpoint_url=e["S3_ENDPOINT"],
    region_name=e["S3_REGION"],
    aws_access_key_id=e["S3_KEY"],
    aws_secret_access_key=e["S3_SECRET"],
    config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                  retries={"max_attempts": 1}),
)
bucket = e["S3_BUCKET"]
deadline = time.monotonic() + float(e["S3_TIMEOUT"])
last = None
created = e["S3_CREATE"] != "yes"
while True:
    try:
        if not created:
            try:
                s3.create_bucket(Bucket=bucket)
            except s3.exceptions.BucketAlreadyOwnedByYou:
                pass
            created = True
        s3.put_object(Bucket=bucket, Key=".s3-servers-probe", Body=b"ok")
        assert s3.get_object(Bucket=bucket, Key=".s3-servers-probe")["Body"].read() == b"ok"
        s3.delete_object(Bucket=bucket, Key=".s3-servers-probe")
        break
    except Exception as ex:  # not up yet, or the layout / key not yet effective
        last = ex
        if time.monotonic() > deadline:
            print(f"s3-servers: {e['S3_NAME']}: last error: {last!r}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.25)
EOF
}

# ---------------------------------------------------------------- env.sh

write_env() {
    local f="$STATE/env.sh.tmp"
    {
        echo "# Written by scripts/s3-servers.sh start on $(date -u +%Y-%m-%dT%H:%M:%SZ); removed by stop."
        printf 'export %s=%q\n' \
            MAILVAULT_S3_GARAGE_ENDPOINT "http://127.0.0.1:$GARAGE_S3_PORT" \
            MAILVAULT_S3_GARAGE_REGION "$GARAGE_REGION" \
            MAILVAULT_S3_GARAGE_BUCKET "$BUCKET" \
            MAILVAULT_S3_GARAGE_ACCESS_KEY_ID "$GARAGE_KEY_ID" \
            MAILVAULT_S3_GARAGE_SECRET_ACCESS_KEY "$GARAGE_SECRET" \
            MAILVAULT_S3_MOTO_ENDPOINT "http://127.0.0.1:$MOTO_PORT" \
            MAILVAULT_S3_MOTO_REGION "$MOTO_REGION" \
            MAILVAULT_S3_MOTO_BUCKET "$BUCKET" \
            MAILVAULT_S3_MOTO_ACCESS_KEY_ID "$MOTO_KEY" \
            MAILVAULT_S3_MOTO_SECRET_ACCESS_KEY "$MOTO_SECRET"
    } >"$f"
    chmod 600 "$f"
    mv -f "$f" "$STATE/env.sh"
}

# ---------------------------------------------------------------- commands

cmd_install() {
    install_moto
    install_garage
    log "installed: $("$GARAGE_BIN" --version 2>/dev/null | head -n 1), moto $MOTO_VERSION ($(moto_cmd))"
}

cmd_start() {
    local t0
    t0="$(now)"
    mkdir -p "$STATE"
    cmd_stop
    install_moto
    install_garage
    # Leave nothing half-started behind if a step fails.
    trap 'rc=$?; if ((rc != 0)); then log "start failed: stopping what was started"; cmd_stop || true; fi' EXIT
    start_garage
    start_moto
    write_env
    trap - EXIT
    log "both servers up in $(since "$t0") s; variables in: $STATE/env.sh"
}

cmd_env() {
    [[ -f "$STATE/env.sh" ]] || die "$STATE/env.sh does not exist: run '$0 start' first"
    echo "$STATE/env.sh"
}

cmd_status() {
    local pid rc=0
    if pid="$(live_pid "$STATE/garage.pid" garage)"; then echo "Garage: running (pid $pid)"; else echo "Garage: stopped"; rc=1; fi
    if pid="$(live_pid "$STATE/moto.pid" moto)"; then echo "moto_server: running (pid $pid)"; else echo "moto_server: stopped"; rc=1; fi
    return "$rc"
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
