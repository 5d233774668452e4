#!/usr/bin/env bash
# Maildir import speed (issue 15), in one run on this machine: the real-mail corpus
# (tests/corpus/mail-parser, 107 messages) scaled to BENCH_IMPORT_MESSAGES messages (each
# copy made distinct by an `X-Bench-Copy` header field; a third each in INBOX, .Sent and
# .Archive.2023, flags \Seen), imported by
#   mailvault  `mailvault import maildir --password-file` into a new account on a local
#              directory store: each message sealed to the account and stored (the
#              delivery phase, the `seconds` of its --json summary), then filed into its
#              folder by the account's key holder (the wall time covers both)
#   dovecot    `doveadm import maildir:<src> "" all` into a Dovecot 2.3 user with
#              mail_crypt (global keys; scripts/peers.sh), the same Maildir
# Rounds alternate; each starts empty (a new mailvault deployment, a Dovecot user whose
# mail folder was removed, reading its own copy of the source: doveadm writes its
# uidlist and index into the source Maildir). Prints messages/s and MiB/s (of the source's bytes) per round
# and the medians, and checks the message counts.
#
# Usage: scripts/bench-import.sh
# Settings (environment):
#   BENCH_IMPORT_MESSAGES  messages (default 20000)
#   BENCH_ROUNDS           rounds per importer (default 3)
#   BENCH_STATE            scratch folder (default <repo>/target/bench-import; wiped)
#   CARGO_TARGET_DIR       where the release build goes (default <repo>/target)
#   ports: 1160 (IMAP) and 2460 (LMTP) on 127.0.0.1 (the Dovecot instance)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
STATE="${BENCH_STATE:-$REPO/target/bench-import}"
N="${BENCH_IMPORT_MESSAGES:-20000}"
ROUNDS="${BENCH_ROUNDS:-3}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="$TARGET/release/mailvault"
USERS=(alice bob carol)

log() { printf 'bench-import: %s\n' "$*" >&2; }
now() { date +%s.%N; }

cleanup() {
    set +e
    MAILVAULT_PEERS_STATE="$STATE/crypt" MAILVAULT_DOVECOT_IMAP_PORT=1160 bash scripts/peers.sh stop
}
trap cleanup EXIT

log "building the server (release)"
cargo build --release -p mailvault-server >&2
bash scripts/peers.sh install
rm -rf -- "$STATE"
mkdir -p "$STATE"
chmod 755 "$STATE"
MAILVAULT_PEERS_STATE="$STATE/crypt" MAILVAULT_DOVECOT_IMAP_PORT=1160 MAILVAULT_DOVECOT_LMTP_PORT=2460 \
    bash scripts/peers.sh start
# shellcheck disable=SC1091
source "$STATE/crypt/env.sh"
D="$STATE/crypt/dovecot"

SRC="$STATE/source/Maildir"
log "writing $N messages into $SRC"
"$MAILVAULT_PEER_PYTHON" - "$REPO/tests/corpus/mail-parser" "$SRC" "$N" <<'PYEOF'
import glob, os, sys
corpus, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = [open(p, "rb").read().replace(b"\r\n", b"\n")
         for p in sorted(glob.glob(os.path.join(corpus, "*", "*.eml")))]
folders = [root, os.path.join(root, ".Sent"), os.path.join(root, ".Archive.2023")]
for f in folders:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(f, sub), exist_ok=True)
    if f != root:
        open(os.path.join(f, "maildirfolder"), "wb").close()
for i in range(n):
    path = os.path.join(folders[i % 3], "cur", "%d.M%dP1.bench:2,S" % (1_600_000_000 + i, i))
    with open(path, "wb") as out:
        out.write(b"X-Bench-Copy: %d\n" % i + files[i % len(files)])
    os.utime(path, (1_600_000_000 + 60 * i, 1_600_000_000 + 60 * i))
PYEOF
# Dovecot's doveadm reads the source as the mail user (vmail).
chmod -R o+rX "$STATE/source"
BYTES="$(find "$SRC" -type f -path '*/cur/*' -printf '%s\n' | awk '{ s += $1 } END { print s }')"
log "$N messages, $BYTES bytes; $ROUNDS rounds per importer; load: $(uptime)"

RESULTS="$STATE/results"
: >"$RESULTS"
for ((r = 1; r <= ROUNDS; r++)); do
    # mailvault: a new deployment (default KDF: the account's creation and the filing's
    # unlock cost one Argon2id each, the same in every round).
    MV="$STATE/mailvault-$r"
    mkdir -p "$MV"
    printf 'store = "store"\ndirectory = "directory"\n' >"$MV/mailvault.toml"
    "$BIN" init --config "$MV/mailvault.toml" >/dev/null
    printf 'benchpw\n' >"$MV/pw"
    "$BIN" account create --config "$MV/mailvault.toml" --name alice@localhost --password-file "$MV/pw" >/dev/null
    t0="$(now)"
    summary="$("$BIN" import maildir "$SRC" --config "$MV/mailvault.toml" --name alice@localhost \
        --password-file "$MV/pw" --json --quiet)"
    t1="$(now)"
    printf 'mailvault %s %s %s\n' "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$summary" >>"$RESULTS"
    du -sb "$MV/store" | awk -v r="$r" '{ printf "mailvault-store %s %s\n", r, $1 }' >>"$RESULTS"

    # Dovecot + mail_crypt: a user whose mail folder is gone, reading a fresh copy of the
    # source owned by the mail user (doveadm writes its dovecot-uidlist and index into
    # the source Maildir: a copy per round, so that no round reuses them).
    u="${USERS[$(((r - 1) % 3))]}"
    rm -rf -- "$D/mail/$u" "$STATE/dovecot-source"
    cp -a "$STATE/source" "$STATE/dovecot-source"
    chown -R vmail:vmail "$STATE/dovecot-source"
    t0="$(now)"
    doveadm -c "$D/dovecot.conf" import -u "$u" "maildir:$STATE/dovecot-source/Maildir" "" all
    t1="$(now)"
    count="$(doveadm -c "$D/dovecot.conf" mailbox status -u "$u" -t messages '*' | sed 's/.*=//')"
    printf 'dovecot %s %s %s\n' "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$count" >>"$RESULTS"
    du -sb "$D/mail/$u" | awk -v r="$r" '{ printf "dovecot-store %s %s\n", r, $1 }' >>"$RESULTS"
    log "round $r done"
done

"$MAILVAULT_PEER_PYTHON" - "$RESULTS" "$N" "$BYTES" <<'PYEOF'
import json, statistics, sys
results, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mib = size / (1 << 20)
rows = {"mailvault": [], "mailvault-deliver": [], "dovecot": []}
stores = {"mailvault-store": [], "dovecot-store": []}
failures = []
for line in open(results):
    kind, rnd, value, rest = (line.rstrip("\n").split(" ", 3) + [""])[:4]
    if kind in stores:
        stores[kind].append(int(value))
        continue
    secs = float(value)
    rows[kind].append(secs)
    if kind == "mailvault":
        s = json.loads(rest)
        if s["delivered"] != n or s["failed"]:
            failures.append(f"mailvault round {rnd}: {s}")
        rows["mailvault-deliver"].append(s["seconds"])
    elif int(rest) != n:
        failures.append(f"dovecot round {rnd}: {rest} messages")
print(f"{n} messages, {mib:.1f} MiB")
print(f"{'importer':<34} {'rounds (s)':<26} {'median s':>9} {'msg/s':>8} {'MiB/s':>7}")
names = {"mailvault": "mailvault import (deliver + file)",
         "mailvault-deliver": "  of which the delivery phase",
         "dovecot": "doveadm import (mail_crypt)"}
for kind, secs in rows.items():
    med = statistics.median(secs)
    print(f"{names[kind]:<34} {' '.join('%.1f' % s for s in secs):<26} {med:>9.1f} "
          f"{n / med:>8.0f} {mib / med:>7.1f}")
for kind, sizes in stores.items():
    print(f"{kind}: {statistics.median(sizes) / (1 << 20):.1f} MiB stored (median)")
ratio = statistics.median(rows["dovecot"]) / statistics.median(rows["mailvault"])
print(f"mailvault's speed / Dovecot's: {ratio:.2f}")
for f in failures:
    print("FAILED", f)
sys.exit(1 if failures else 0)
PYEOF
