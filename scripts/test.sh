#!/usr/bin/env bash
# mailvault's whole test run, from a fresh machine: installs what it needs (Garage 2.5.0,
# moto_server 5.2.1, cargo-fuzz, and with scripts/peers.sh Dovecot 2.3 + mail_crypt and the
# real mail clients: mbsync, swaks, smtp-source, curl, imapclient), then formatting,
# clippy, the release build, the whole test suite of the workspace (the library and the
# server crate, server/) against real S3 servers (MAILVAULT_REQUIRE_S3=1: no S3 test may
# skip) and with the peer server and clients (MAILVAULT_REQUIRE_PEERS=1: no client test
# may skip), every fuzz target for a while, and a build of the benchmarks. CI runs exactly
# this (.ci/run).
#
# Usage: scripts/test.sh
# Settings (environment):
#   MAILVAULT_FUZZ_SECONDS  seconds per fuzz target (default: 30; 0 skips the fuzz runs)
#   MAILVAULT_KEEP_GOING=1  go on after a failed step (default: stop at the first failure)
#   and those of scripts/s3-servers.sh (MAILVAULT_CACHE, MAILVAULT_S3_STATE, ports...) and
#   scripts/peers.sh (MAILVAULT_PEERS_STATE, MAILVAULT_DOVECOT_*_PORT)
# Logs of the background installs and of the test run: target/test-logs/.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export MAILVAULT_S3_STATE="${MAILVAULT_S3_STATE:-$REPO/.s3-servers}"
export MAILVAULT_PEERS_STATE="${MAILVAULT_PEERS_STATE:-$REPO/.peers}"
# Free space the test run needs in TMPDIR: the LMTP load test alone stores 1.2 GB at its peak
# (measured: 100 000 deliveries of 4 KiB before their import), beside the other test
# binaries' temporary stores and the S3 servers' data.
MIN_TEST_DISK_GIB=4
FUZZ_SECONDS="${MAILVAULT_FUZZ_SECONDS:-30}"
KEEP_GOING="${MAILVAULT_KEEP_GOING:-0}"
CARGO_FUZZ_VERSION=0.13.2
LOGS="$REPO/target/test-logs"
mkdir -p "$LOGS"
rm -f "$LOGS/cargo-test.log"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
human() { awk -v s="$1" 'BEGIN { printf "%dm%02ds", int(s / 60), int(s) % 60 }'; }
say() { printf '\n==> %s\n' "$*" >&2; }

# disk_report WHEN: the space left where the build and the tests write. A full disk fails
# a test with ENOSPC far from its cause (a CI run once ran out in the LMTP load test, which
# stores 100 000 deliveries in a temporary directory), so every run says how much there was.
disk_report() {
    echo "test.sh: disk $1:" >&2
    df -h "$REPO" "${CARGO_TARGET_DIR:-$REPO/target}" "${TMPDIR:-/tmp}" 2>/dev/null \
        | awk '!seen[$0]++' >&2 || true
}

# disk_check: before the tests, warn when the temporary directory has less room than the
# heaviest test binaries use at once (measured: see MIN_TEST_DISK_GIB).
disk_check() {
    local free
    free="$(df -Pk "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR == 2 { print int($4 / 1048576) }')"
    if [[ -n "$free" ]] && ((free < MIN_TEST_DISK_GIB)); then
        echo "test.sh: WARNING: ${free} GiB free in ${TMPDIR:-/tmp}; the tests need about" \
            "${MIN_TEST_DISK_GIB} GiB (set TMPDIR to a larger disk)" >&2
    fi
}


T0="$(now)"
SUMMARY=()
FAILED=()
S3_INSTALL_PID=""
FUZZ_INSTALL_PID=""
PEERS_INSTALL_PID=""
STEP_PID=""
SERVERS_STARTED=0
PEERS_STARTED=0

# Every descendant of process $1.
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# Is any of these processes running (neither gone nor a zombie)?
any_alive() {
    local p st
    for p in "$@"; do
        st="$(ps -o stat= -p "$p" 2>/dev/null)" || continue
        [[ -n "$st" && "$st" != Z* ]] && return 0
    done
    return 1
}

# kill_tree PID: TERM the process and all its descendants, wait up to 10 s, then KILL.
kill_tree() {
    local pids i
    pids="$1 $(descendants "$1")"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        # shellcheck disable=SC2086
        any_alive $pids || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    wait "$1" 2>/dev/null
}

# One plain line with the totals of every test binary of `cargo test` (ignored = skipped).
test_counts() {
    [[ -f "$LOGS/cargo-test.log" ]] || return 0
    awk '/^test result:/ {
            for (i = 2; i <= NF; i++) {
                if ($(i) ~ /^passed/) p += $(i - 1)
                if ($(i) ~ /^failed/) f += $(i - 1)
                if ($(i) ~ /^ignored/) s += $(i - 1)
            }
            n++
        }
        END { if (n) printf "cargo-test: %d passed, %d failed, %d skipped\n", p, f, s }' "$LOGS/cargo-test.log"
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM HUP
    set +e
    for pid in $STEP_PID $S3_INSTALL_PID $FUZZ_INSTALL_PID $PEERS_INSTALL_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "test.sh: stopping unfinished work (pid $pid and its children)" >&2
            kill_tree "$pid"
        fi
    done
    if ((SERVERS_STARTED)); then
        bash scripts/s3-servers.sh stop
    fi
    if ((PEERS_STARTED)); then
        bash scripts/peers.sh stop
    fi
    if ((rc == 0 && ${#FAILED[@]} > 0)); then rc=1; fi
    echo >&2
    disk_report "at the end"
    echo "==> summary (wall time per step)" >&2
    printf '  %s\n' "${SUMMARY[@]}" >&2
    test_counts
    local total
    total="$(elapsed "$T0")"
    if ((rc == 0)); then
        echo "test.sh: all steps passed; total $total s ($(human "$total"))"
    else
        echo "test.sh: FAILED (exit $rc${FAILED[*]:+; failed: ${FAILED[*]}}); total $total s ($(human "$total"))"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# record NAME START RC: note a step's result; stop the run on a failure unless KEEP_GOING=1.
record() {
    local name="$1" secs rc="$3"
    secs="$(elapsed "$2")"
    if ((rc == 0)); then
        SUMMARY+=("$(printf '%-30s %8s s  ok' "$name" "$secs")")
        echo "<== $name: ok in $secs s" >&2
    else
        SUMMARY+=("$(printf '%-30s %8s s  FAILED (exit %d)' "$name" "$secs" "$rc")")
        FAILED+=("$name")
        echo "<== $name: FAILED (exit $rc) after $secs s" >&2
        if [[ "$KEEP_GOING" != 1 ]]; then exit "$rc"; fi
    fi
}

# step NAME COMMAND...: run COMMAND in a subshell with errexit on, timed.
step() {
    local name="$1" t rc
    shift
    say "$name"
    t="$(now)"
    # In the background and waited for, so that a signal to this script is handled at once
    # (cleanup then stops the step's processes).
    (set -e; "$@") &
    STEP_PID=$!
    rc=0
    wait "$STEP_PID" || rc=$?
    STEP_PID=""
    record "$name" "$t" "$rc"
}

# step_here NAME COMMAND...: the same in this shell (for `wait` on a background job and for
# variables that must outlive the step); COMMAND handles its own errors.
step_here() {
    local name="$1" t rc
    shift
    say "$name"
    t="$(now)"
    set +e
    "$@"
    rc=$?
    set -e
    record "$name" "$t" "$rc"
}

have_fuzz() { [[ -f fuzz/Cargo.toml ]]; }

disk_report "at the start"

# ------------------------------------------------------------ background installs
# Started first so that the Garage build (~12 min when not cached) and the cargo-fuzz build
# overlap the crate's own builds.
say "background installs (logs in $LOGS)"
bash scripts/s3-servers.sh install </dev/null >"$LOGS/s3-install.log" 2>&1 &
S3_INSTALL_PID=$!
echo "test.sh: installing Garage and moto_server in the background (pid $S3_INSTALL_PID)" >&2
if have_fuzz && ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked \
        </dev/null >"$LOGS/cargo-fuzz-install.log" 2>&1 &
    FUZZ_INSTALL_PID=$!
    echo "test.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION in the background (pid $FUZZ_INSTALL_PID)" >&2
fi

# strace: the durability test traces the fsyncs of a local write (a small Debian package).
if ! command -v strace >/dev/null 2>&1; then
    say "installing strace (apt)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace; } \
        </dev/null >"$LOGS/strace-install.log" 2>&1; then
        echo "test.sh: installing strace failed; end of $LOGS/strace-install.log:" >&2
        tail -n 20 "$LOGS/strace-install.log" >&2
        exit 1
    fi
fi

# /usr/bin/time (GNU time): the bounded-read test measures a child's peak RSS with `time -v`.
if [[ ! -x /usr/bin/time ]]; then
    say "installing time (apt)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; } \
        </dev/null >"$LOGS/time-install.log" 2>&1; then
        echo "test.sh: installing time failed; end of $LOGS/time-install.log:" >&2
        tail -n 20 "$LOGS/time-install.log" >&2
        exit 1
    fi
fi

# Dovecot + mail_crypt and the real mail clients (apt-get, a venv): after the apt-get calls
# above, in the background during the builds.
bash scripts/peers.sh install </dev/null >"$LOGS/peers-install.log" 2>&1 &
PEERS_INSTALL_PID=$!
echo "test.sh: installing Dovecot and the mail clients in the background (pid $PEERS_INSTALL_PID)" >&2

# wait_bg PID LOG WHAT: wait for a background install; on failure show its log's end.
wait_bg() {
    local rc=0
    wait "$1" || rc=$?
    if ((rc != 0)); then
        echo "test.sh: $3 failed (exit $rc); end of $2:" >&2
        tail -n 40 "$2" >&2 || true
        return "$rc"
    fi
    tail -n 3 "$2" >&2
}

# ------------------------------------------------------------ steps

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
step "cargo build --release" cargo build --workspace --release --all-features --tests

step_here "wait: Garage + moto install" wait_bg "$S3_INSTALL_PID" "$LOGS/s3-install.log" "installing Garage and moto_server"

step_here "wait: Dovecot + clients install" wait_bg "$PEERS_INSTALL_PID" "$LOGS/peers-install.log" "installing Dovecot and the mail clients"
PEERS_INSTALL_PID=""

SERVERS_STARTED=1
step "start S3 servers" bash scripts/s3-servers.sh start
PEERS_STARTED=1
step "start Dovecot (peers)" bash scripts/peers.sh start

run_tests() {
    local env_file
    env_file="$(bash scripts/s3-servers.sh env)"
    # shellcheck disable=SC1090
    source "$env_file"
    env_file="$(bash scripts/peers.sh env)"
    # shellcheck disable=SC1090
    source "$env_file"
    export MAILVAULT_REQUIRE_S3=1 MAILVAULT_REQUIRE_PEERS=1
    cargo test --workspace --release --all-features --no-fail-fast 2>&1 | tee "$LOGS/cargo-test.log"
}
disk_report "before the tests"
disk_check
step "cargo test --release" run_tests
step "stop S3 servers" bash scripts/s3-servers.sh stop
SERVERS_STARTED=0
step "stop Dovecot (peers)" bash scripts/peers.sh stop
PEERS_STARTED=0

run_fuzz() {
    export RUSTC_BOOTSTRAP=1
    local targets t corpus
    targets="$(cd fuzz && cargo fuzz list)"
    if [[ -z "$targets" ]]; then
        echo "test.sh: fuzz/ lists no fuzz target" >&2
        return 1
    fi
    echo "fuzz targets: ${targets//$'\n'/ }" >&2
    cargo fuzz build
    if ((FUZZ_SECONDS <= 0)); then
        echo "test.sh: MAILVAULT_FUZZ_SECONDS=$FUZZ_SECONDS: fuzz targets built, not run" >&2
        return 0
    fi
    for t in $targets; do
        # New inputs go to fuzz/target/ (ignored by git); a committed fuzz/corpus/<t> seeds
        # the run without being written to.
        corpus=("fuzz/target/test-corpus/$t")
        mkdir -p "${corpus[0]}"
        [[ -d "fuzz/corpus/$t" ]] && corpus+=("fuzz/corpus/$t")
        # The IMAP session also starts from the malformed-command corpus of the server's
        # tests (server/tests/malformed.rs).
        [[ "$t" == imap_session ]] && corpus+=("server/tests/imap_malformed")
        echo "test.sh: fuzzing $t for $FUZZ_SECONDS s" >&2
        cargo fuzz run "$t" "${corpus[@]}" -- -max_total_time="$FUZZ_SECONDS"
    done
}
if have_fuzz; then
    if [[ -n "$FUZZ_INSTALL_PID" ]]; then
        step_here "wait: cargo-fuzz install" wait_bg "$FUZZ_INSTALL_PID" "$LOGS/cargo-fuzz-install.log" "installing cargo-fuzz"
        FUZZ_INSTALL_PID=""
    fi
    step "cargo fuzz (${FUZZ_SECONDS} s/target)" run_fuzz
else
    echo >&2
    echo "==> cargo fuzz: skipped: there is no fuzz/Cargo.toml yet" >&2
    SUMMARY+=("$(printf '%-30s %8s    skipped (no fuzz/Cargo.toml)' "cargo fuzz" "-")")
fi

step "cargo bench --no-run" cargo bench --no-run --all-features
