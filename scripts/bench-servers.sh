#!/usr/bin/env bash
# mailvault's server beside Dovecot 2.3, in one run, on this machine, with the same clients
# and messages: LMTP deliveries per second (Postfix smtp-source, 10 sessions, 10 KB
# messages), IMAP FETCH of whole messages per second (Python imaplib, one
# `FETCH 1:N BODY.PEEK[]`), and an mbsync pull of all N messages into an empty Maildir
# (`FSync no`: the client's fsyncs are not the server's cost), for
#   mailvault      reference server, local-directory store (server/, release build)
#   dovecot-crypt  Dovecot + mail_crypt (global keys) on a Maildir  (scripts/peers.sh)
#   dovecot-plain  Dovecot on a Maildir, no encryption at all       (scripts/peers.sh)
# Rounds alternate between the servers; each round delivers N messages to an empty INBOX,
# logs in once (mailvault imports the pending deliveries at login: timed apart), fetches,
# pulls, then expunges everything. Prints the median and range of each figure and the
# ratios mailvault / Dovecot.
#
# Usage: scripts/bench-servers.sh
# Settings (environment):
#   BENCH_MESSAGES   messages per round (default 1000)
#   BENCH_ROUNDS     rounds per server (default 3)
#   BENCH_SIZE       smtp-source payload bytes (default 10240)
#   BENCH_STATE      scratch folder (default <repo>/target/bench-servers; wiped)
#   CARGO_TARGET_DIR where the release build goes (default <repo>/target)
#   ports: 1150-1152 (IMAP) and 2450-2452 (LMTP) on 127.0.0.1
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
STATE="${BENCH_STATE:-$REPO/target/bench-servers}"
MESSAGES="${BENCH_MESSAGES:-1000}"
ROUNDS="${BENCH_ROUNDS:-3}"
SIZE="${BENCH_SIZE:-10240}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="$TARGET/release/mailvault"
MV_PID=""

log() { printf 'bench-servers: %s\n' "$*" >&2; }

cleanup() {
    set +e
    if [[ -n "$MV_PID" ]]; then
        kill "$MV_PID" 2>/dev/null
        wait "$MV_PID" 2>/dev/null
    fi
    MAILVAULT_PEERS_STATE="$STATE/crypt" MAILVAULT_DOVECOT_IMAP_PORT=1150 bash scripts/peers.sh stop
    MAILVAULT_PEERS_STATE="$STATE/plain" MAILVAULT_DOVECOT_IMAP_PORT=1151 bash scripts/peers.sh stop
}
trap cleanup EXIT

log "building the server (release)"
cargo build --release -p mailvault-server >&2
bash scripts/peers.sh install
rm -rf -- "$STATE"
mkdir -p "$STATE"
chmod 755 "$STATE"

MAILVAULT_PEERS_STATE="$STATE/crypt" MAILVAULT_DOVECOT_IMAP_PORT=1150 MAILVAULT_DOVECOT_LMTP_PORT=2450 \
    bash scripts/peers.sh start
MAILVAULT_PEERS_STATE="$STATE/plain" MAILVAULT_DOVECOT_IMAP_PORT=1151 MAILVAULT_DOVECOT_LMTP_PORT=2451 \
    MAILVAULT_DOVECOT_CRYPT=0 bash scripts/peers.sh start
# shellcheck disable=SC1091
source "$STATE/crypt/env.sh"

# mailvault: a local directory, the library's default KDF (a login costs one Argon2id).
MV="$STATE/mailvault"
mkdir -p "$MV"
cat >"$MV/mailvault.toml" <<EOF
store = "store"
directory = "directory"
imap_listen = "127.0.0.1:1152"
lmtp_listen = "127.0.0.1:2452"
EOF
"$BIN" init --config "$MV/mailvault.toml" >/dev/null
printf 'alicepw\n' >"$MV/pw"
"$BIN" account create --config "$MV/mailvault.toml" --name alice@localhost --password-file "$MV/pw" >/dev/null
RUST_LOG=warn "$BIN" serve --config "$MV/mailvault.toml" </dev/null >"$MV/server.log" 2>&1 &
MV_PID=$!
for _ in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/1152) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/2452) 2>/dev/null && break
    sleep 0.1
done

log "$ROUNDS rounds of $MESSAGES messages of $SIZE bytes per server"
BENCH_STATE_DIR="$STATE" BENCH_MESSAGES="$MESSAGES" BENCH_ROUNDS="$ROUNDS" BENCH_SIZE="$SIZE" \
    "$MAILVAULT_PEER_PYTHON" - <<'PYEOF'
import imaplib, os, statistics, subprocess, sys, time

state = os.environ["BENCH_STATE_DIR"]
n = int(os.environ["BENCH_MESSAGES"])
rounds = int(os.environ["BENCH_ROUNDS"])
size = os.environ["BENCH_SIZE"]
servers = [
    # name, imap port, lmtp port, login, password, recipient
    ("mailvault", 1152, 2452, "alice@localhost", "alicepw", "alice@localhost"),
    ("dovecot-crypt", 1150, 2450, "alice", "alicepw", "alice@localhost"),
    ("dovecot-plain", 1151, 2451, "alice", "alicepw", "alice@localhost"),
]
results = {s[0]: {"lmtp": [], "login": [], "fetch": [], "pull": []} for s in servers}

def run(cmd):
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

for r in range(rounds):
    for name, imap_port, lmtp_port, user, pw, rcpt in servers:
        t = time.monotonic()
        run(["smtp-source", "-L", "-s", "10", "-m", str(n), "-l", size,
             "-f", "sender@localhost", "-t", rcpt, "127.0.0.1:%d" % lmtp_port])
        results[name]["lmtp"].append(n / (time.monotonic() - t))
        t = time.monotonic()
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
        c.login(user, pw)
        typ, data = c.select("INBOX")
        results[name]["login"].append(time.monotonic() - t)
        assert int(data[0]) == n, (name, data)
        t = time.monotonic()
        typ, data = c.fetch("1:%d" % n, "(BODY.PEEK[])")
        got = [p for p in data if isinstance(p, tuple)]
        results[name]["fetch"].append(len(got) / (time.monotonic() - t))
        assert len(got) == n and typ == "OK", (name, typ, len(got))
        c.logout()
        local = os.path.join(state, "pull-%s-%d" % (name, r))
        os.makedirs(local)
        rc = os.path.join(state, "mbsyncrc-%s-%d" % (name, r))
        with open(rc, "w") as f:
            # FSync no: mbsync's own fsync of each message file (the same for every
            # server) took more than half of a pull here.
            f.write("FSync no\n\nIMAPAccount a\nHost 127.0.0.1\nPort %d\nUser %s\nPass %s\nSSLType None\n"
                    "AuthMechs LOGIN\n\nIMAPStore far\nAccount a\n\nMaildirStore near\n"
                    "Path %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\nChannel pull\n"
                    "Far :far:\nNear :near:\nPatterns INBOX\nCreate Near\nSync Pull\n"
                    "SyncState *\n" % (imap_port, user, pw, local, local))
        t = time.monotonic()
        subprocess.run(["mbsync", "-q", "-c", rc, "pull"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results[name]["pull"].append(time.monotonic() - t)
        pulled = sum(len(os.listdir(os.path.join(local, "INBOX", d))) for d in ("cur", "new"))
        assert pulled == n, (name, pulled)
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
        c.login(user, pw)
        c.select("INBOX")
        c.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        c.expunge()
        c.logout()
        print("round %d %-14s lmtp %6.0f/s  login %6.2f s  fetch %6.0f/s  pull %6.2f s"
              % (r + 1, name, results[name]["lmtp"][-1], results[name]["login"][-1],
                 results[name]["fetch"][-1], results[name]["pull"][-1]), file=sys.stderr)

def fmt(values, unit, digits):
    med = statistics.median(values)
    return "%.*f %s (%.*f-%.*f)" % (digits, med, unit, digits, min(values), digits, max(values))

rows = [("LMTP deliveries/s (smtp-source -s 10, %s B)" % size, "lmtp", "/s", 0, True),
        ("first login + SELECT after %d deliveries" % n, "login", "s", 2, False),
        ("IMAP FETCH BODY.PEEK[] messages/s", "fetch", "/s", 0, True),
        ("mbsync pull of %d messages" % n, "pull", "s", 2, False)]
print()
print("| %s | mailvault (local dir) | Dovecot + mail_crypt | Dovecot plain | mailvault vs crypt | mailvault vs plain |" % "figure (median, range)")
print("|---|---|---|---|---|---|")
for label, key, unit, digits, higher in rows:
    med = {s: statistics.median(results[s][key]) for s in results}
    def ratio(other):
        # > 1: mailvault better.
        x = med["mailvault"] / med[other] if higher else med[other] / med["mailvault"]
        if x >= 1:
            return "%.2fx better" % x
        return "%.2fx (%.1f times worse)" % (x, 1 / x)
    print("| %s | %s | %s | %s | %s | %s |" % (
        label, fmt(results["mailvault"][key], unit, digits),
        fmt(results["dovecot-crypt"][key], unit, digits),
        fmt(results["dovecot-plain"][key], unit, digits),
        ratio("dovecot-crypt"), ratio("dovecot-plain")))
PYEOF
