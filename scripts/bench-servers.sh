#!/usr/bin/env bash
# mailvault's server beside Dovecot 2.3, in one run, on this machine, with the same clients
# and messages: LMTP deliveries per second (Postfix smtp-source, 10 sessions, 10 KB
# messages), IMAP FETCH of whole messages per second (Python imaplib, one
# `FETCH 1:N BODY.PEEK[]`), FETCH of BODYSTRUCTURE per second (`FETCH 1:N BODYSTRUCTURE`),
# the stored size of the N messages (`du` of mailvault's store folder, of Dovecot's user
# folder: Maildir and its index files), an mbsync pull of all N messages into an empty
# Maildir (`FSync no`: the client's fsyncs are not the server's cost), and, once after
# the rounds, a header SEARCH over a mailbox of BENCH_SEARCH_MESSAGES messages (one of
# them the match: `SEARCH HEADER Subject needle`; the first search, then the median of
# BENCH_SEARCHES more) with the stored size of that mailbox, and then a SEARCH BODY phase
# (issue 14): BENCH_BODY_MESSAGES generated messages of realistic text (words of the
# test corpus and made-up ones drawn with a Zipf law, 2-4 KB of text/plain each) delivered
# over LMTP, a login, the first `SEARCH BODY word` (mailvault builds its text index then,
# if delivery and import have not), then BENCH_BODY_PASSES passes of `SEARCH BODY` over
# words chosen by how many messages hold them (rare: 1-20, medium: 100-1000, common: more
# than half, absent), every answer checked against the generator's count. Dovecot has no
# FTS plugin here (none is configured by scripts/peers.sh): it answers BODY by reading,
# decrypting (mail_crypt) and scanning every message, each time. For
#   mailvault      reference server, local-directory store (server/, release build)
#   dovecot-crypt  Dovecot + mail_crypt (global keys) on a Maildir  (scripts/peers.sh)
#   dovecot-plain  Dovecot on a Maildir, no encryption at all       (scripts/peers.sh)
# Rounds alternate between the servers; each round delivers N messages to an empty INBOX,
# logs in once (LOGIN + SELECT timed; mailvault then imports the pending deliveries in the
# background: the time until the mailbox shows all of them, by NOOP, timed too), fetches,
# pulls, then expunges everything. Prints the median and range of each figure and the
# ratios mailvault / Dovecot.
#
# Usage: scripts/bench-servers.sh
# Settings (environment):
#   BENCH_MESSAGES   messages per round (default 1000)
#   BENCH_ROUNDS     rounds per server (default 3)
#   BENCH_SIZE       smtp-source payload bytes (default 10240)
#   BENCH_SEARCH_MESSAGES  messages of the SEARCH mailbox (default 10000; 0: no SEARCH phase)
#   BENCH_SEARCHES   timed searches after the first (default 5)
#   BENCH_BODY_MESSAGES  messages of the SEARCH BODY mailbox (default 10000; 0: no such phase)
#   BENCH_BODY_PASSES    passes over the words of the SEARCH BODY phase (default 2)
#   BENCH_SERVERS    which servers, comma-separated (default mailvault,dovecot-crypt,dovecot-plain;
#                    e.g. BENCH_SERVERS=mailvault BENCH_ROUNDS=1 BENCH_MESSAGES=100 for the
#                    stored size of the search phase only: about 2 minutes)
#   BENCH_GC_SECS    mailvault's garbage collection interval and grace, seconds (default 5:
#                    `[gc]` in its config; the server's default is 60). After the search
#                    phase's size, the size once collected is measured too: a connection
#                    stays open (the account's handle collects while one does) until the
#                    size stops changing
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
SEARCH_MESSAGES="${BENCH_SEARCH_MESSAGES:-10000}"
SEARCHES="${BENCH_SEARCHES:-5}"
BODY_MESSAGES="${BENCH_BODY_MESSAGES:-10000}"
BODY_PASSES="${BENCH_BODY_PASSES:-2}"
SERVERS="${BENCH_SERVERS:-mailvault,dovecot-crypt,dovecot-plain}"
GC_SECS="${BENCH_GC_SECS:-5}"
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

if [[ ",$SERVERS," == *,dovecot-crypt,* ]]; then
    MAILVAULT_PEERS_STATE="$STATE/crypt" MAILVAULT_DOVECOT_IMAP_PORT=1150 MAILVAULT_DOVECOT_LMTP_PORT=2450 \
        bash scripts/peers.sh start
fi
if [[ ",$SERVERS," == *,dovecot-plain,* ]]; then
    MAILVAULT_PEERS_STATE="$STATE/plain" MAILVAULT_DOVECOT_IMAP_PORT=1151 MAILVAULT_DOVECOT_LMTP_PORT=2451 \
        MAILVAULT_DOVECOT_CRYPT=0 bash scripts/peers.sh start
fi
# The peers' tools (smtp-source, mbsync, Python), from the env file of a Dovecot started
# above; without one (BENCH_SERVERS=mailvault), from the caller's environment (source the
# file `bash scripts/peers.sh env` prints).
for env in "$STATE/crypt/env.sh" "$STATE/plain/env.sh"; do
    # shellcheck disable=SC1090
    [[ -f "$env" ]] && { source "$env"; break; }
done
: "${MAILVAULT_PEER_PYTHON:?source the env file of scripts/peers.sh first}"

# mailvault: a local directory, the library's default KDF (a login costs one Argon2id).
MV="$STATE/mailvault"
mkdir -p "$MV"
cat >"$MV/mailvault.toml" <<EOF
store = "store"
directory = "directory"
imap_listen = "127.0.0.1:1152"
lmtp_listen = "127.0.0.1:2452"
# A login after more waiting deliveries than this is answered at once, the rest arriving
# as new mail (the default, no bound, imports them all before answering).
import_at_open = 64
[gc]
interval_secs = $GC_SECS
grace_secs = $GC_SECS
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
log "load before: $(uptime)"
BENCH_SERVERS="$SERVERS" BENCH_GC_SECS="$GC_SECS" \
    BENCH_STATE_DIR="$STATE" BENCH_MESSAGES="$MESSAGES" BENCH_ROUNDS="$ROUNDS" BENCH_SIZE="$SIZE" \
    BENCH_SEARCH_MESSAGES="$SEARCH_MESSAGES" BENCH_SEARCHES="$SEARCHES" \
    BENCH_BODY_MESSAGES="$BODY_MESSAGES" BENCH_BODY_PASSES="$BODY_PASSES" BENCH_REPO="$REPO" \
    "$MAILVAULT_PEER_PYTHON" - <<'PYEOF'
import concurrent.futures, glob, imaplib, os, random, re, smtplib, statistics, subprocess, sys, time

state = os.environ["BENCH_STATE_DIR"]
n = int(os.environ["BENCH_MESSAGES"])
rounds = int(os.environ["BENCH_ROUNDS"])
size = os.environ["BENCH_SIZE"]
search_n = int(os.environ["BENCH_SEARCH_MESSAGES"])
searches = int(os.environ["BENCH_SEARCHES"])
servers = [
    # name, imap port, lmtp port, login, password, recipient, folder of the stored mail
    ("mailvault", 1152, 2452, "alice@localhost", "alicepw", "alice@localhost",
     os.path.join(state, "mailvault", "store")),
    ("dovecot-crypt", 1150, 2450, "alice", "alicepw", "alice@localhost",
     os.path.join(state, "crypt", "dovecot", "mail", "alice")),
    ("dovecot-plain", 1151, 2451, "alice", "alicepw", "alice@localhost",
     os.path.join(state, "plain", "dovecot", "mail", "alice")),
]
servers = [s for s in servers if s[0] in os.environ["BENCH_SERVERS"].split(",")]
gc_secs = int(os.environ["BENCH_GC_SECS"])
results = {s[0]: {"lmtp": [], "login": [], "fetch": [], "bodystructure": [], "size": [],
                  "pull": [], "search_lmtp": [], "search_login": [], "login_all": [], "search_login_all": [], "search_first": [],
                  "search": [], "search_size": [], "search_settled": [],
                  "search_expunge": [], "body_lmtp": [], "body_all": [], "body_first": [],
                  "body_rare": [], "body_medium": [], "body_common": [], "body_absent": [],
                  "body_warm": [], "body_size_before": [], "body_size_after": []}
           for s in servers}
body_n = int(os.environ["BENCH_BODY_MESSAGES"])
body_passes = int(os.environ["BENCH_BODY_PASSES"])

def run(cmd):
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

def stored_kib(folder):
    # Disk usage (blocks allocated, as `du -sk`) of everything under the folder.
    out = subprocess.run(["du", "-sk", folder], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])

def tree(folder):
    # Files, their bytes, and folders under `folder`.
    files = size = dirs = 0
    for _root, ds, fs in os.walk(folder):
        dirs += len(ds)
        files += len(fs)
        size += sum(os.path.getsize(os.path.join(_root, f)) for f in fs)
    return files, size, dirs

def breakdown(name, folder, when):
    # Where mailvault's bytes are: bodies (b), index manifests (i/*/m) and segments
    # (i/*/s), pending deliveries (d), keys (k) of each account folder a/<account>:
    # files, their bytes, folders, and du (4 KiB blocks, folders included).
    for account in os.listdir(os.path.join(folder, "a")):
        top = os.path.join(folder, "a", account)
        parts = []
        for sub in sorted(os.listdir(top)):
            f, b, d = tree(os.path.join(top, sub))
            parts.append("%s: %d files %d KiB in %d folders, du %d KiB"
                         % (sub, f, b // 1024, d, stored_kib(os.path.join(top, sub))))
            if sub == "i":
                for coll in os.listdir(os.path.join(top, sub)):
                    for kind in ("m", "s"):
                        f, b, _ = tree(os.path.join(top, sub, coll, kind))
                        parts.append("  i/%s: %d files %d KiB" % (kind, f, b // 1024))
        print("%s %-9s store a/%s (%s):\n    %s" % (when, name, account[:8], stored_kib(folder),
                                                  "\n    ".join(parts)), file=sys.stderr)

def expunge_all(imap_port, user, pw):
    c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
    c.login(user, pw)
    c.select("INBOX")
    c.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
    c.expunge()
    c.logout()

def wait_all(c, n, data, t):
    """After a SELECT that answered `data`: NOOPs until the mailbox shows `n` messages
    (mailvault imports many pending deliveries in the background after LOGIN; they arrive
    as EXISTS); the time since `t`."""
    exists = int(data[0])
    while exists < n:
        time.sleep(0.01)
        typ, _ = c.noop()
        assert typ == "OK", typ
        for r in c.untagged_responses.pop("EXISTS", []):
            exists = int(r)
    assert exists == n, (exists, n)
    return time.monotonic() - t

for r in range(rounds):
    for name, imap_port, lmtp_port, user, pw, rcpt, folder in servers:
        t = time.monotonic()
        run(["smtp-source", "-L", "-s", "10", "-m", str(n), "-l", size, "-S", "bench message",
             "-f", "sender@localhost", "-t", rcpt, "127.0.0.1:%d" % lmtp_port])
        results[name]["lmtp"].append(n / (time.monotonic() - t))
        t = time.monotonic()
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
        c.login(user, pw)
        typ, data = c.select("INBOX")
        results[name]["login"].append(time.monotonic() - t)
        results[name]["login_all"].append(wait_all(c, n, data, t))
        t = time.monotonic()
        typ, data = c.fetch("1:%d" % n, "(BODY.PEEK[])")
        got = [p for p in data if isinstance(p, tuple)]
        results[name]["fetch"].append(len(got) / (time.monotonic() - t))
        assert len(got) == n and typ == "OK", (name, typ, len(got))
        t = time.monotonic()
        typ, data = c.fetch("1:%d" % n, "(BODYSTRUCTURE)")
        results[name]["bodystructure"].append(n / (time.monotonic() - t))
        assert typ == "OK" and sum(b"BODYSTRUCTURE" in (p if isinstance(p, bytes) else p[0])
                                   for p in data) == n, (name, typ, data[:2])
        c.logout()
        results[name]["size"].append(stored_kib(folder))
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
        expunge_all(imap_port, user, pw)
        print("round %d %-14s lmtp %6.0f/s  login %6.2f s (all in %6.2f s)  fetch %6.0f/s  bodystructure %6.0f/s"
              "  stored %7d KiB  pull %6.2f s"
              % (r + 1, name, results[name]["lmtp"][-1], results[name]["login"][-1],
                 results[name]["login_all"][-1],
                 results[name]["fetch"][-1], results[name]["bodystructure"][-1],
                 results[name]["size"][-1], results[name]["pull"][-1]), file=sys.stderr)

# The SEARCH phase: search_n messages (smtp-source's, and one needle delivered last), a
# header search that matches the needle only.
needle = ("From: sender@localhost\r\nTo: alice@localhost\r\nSubject: needle 42\r\n"
          "Message-ID: <needle@bench>\r\n\r\nthe one message the search finds\r\n")
for name, imap_port, lmtp_port, user, pw, rcpt, folder in (servers if search_n else []):
    t = time.monotonic()
    run(["smtp-source", "-L", "-s", "10", "-m", str(search_n - 1), "-l", size,
         "-S", "bench message", "-f", "sender@localhost", "-t", rcpt,
         "127.0.0.1:%d" % lmtp_port])
    with smtplib.LMTP("127.0.0.1", lmtp_port) as lmtp:
        lmtp.sendmail("sender@localhost", [rcpt], needle)
    results[name]["search_lmtp"].append(search_n / (time.monotonic() - t))
    t = time.monotonic()
    c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
    c.login(user, pw)
    typ, data = c.select("INBOX")
    results[name]["search_login"].append(time.monotonic() - t)
    results[name]["search_login_all"].append(wait_all(c, search_n, data, t))
    for i in range(searches + 1):
        t = time.monotonic()
        typ, data = c.search(None, "HEADER", "Subject", "needle")
        took = time.monotonic() - t
        # One match. Not necessarily the last number: Dovecot numbers the files of a
        # Maildir's new/ in the order it reads them at the first SELECT.
        assert typ == "OK" and len(data[0].split()) == 1, (name, typ, data)
        results[name]["search_first" if i == 0 else "search"].append(took)
    typ, got = c.fetch(data[0].split()[0].decode(), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK" and b"<needle@bench>" in got[0][1], (name, got)
    c.logout()
    results[name]["search_size"].append(stored_kib(folder))
    if name == "mailvault":
        breakdown(name, folder, "search")
        # Once collected: a connection keeps the account's handle open (its poller
        # collects every gc_secs, with a grace of gc_secs) until the size stayed the same
        # for three intervals (at most 5 minutes).
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
        c.login(user, pw)
        c.select("INBOX")
        sizes = [stored_kib(folder)]
        t = time.monotonic()
        while time.monotonic() - t < 300:
            time.sleep(1)
            c.noop()
            sizes.append(stored_kib(folder))
            window = sizes[-(3 * gc_secs + 1):]
            if len(sizes) > 3 * gc_secs and min(window) == max(window):
                break
        c.logout()
        results[name]["search_settled"].append(sizes[-1])
        breakdown(name, folder, "settled after %.0f s" % (time.monotonic() - t))
    else:
        results[name]["search_settled"].append(results[name]["search_size"][-1])
    t = time.monotonic()
    expunge_all(imap_port, user, pw)
    results[name]["search_expunge"].append(time.monotonic() - t)
    print("search %-14s lmtp %6.0f/s  login %6.2f s (all in %6.2f s)  first search %6.3f s  then %s s  stored %d KiB"
          "  expunge %.2f s"
          % (name, results[name]["search_lmtp"][-1], results[name]["search_login"][-1],
             results[name]["search_login_all"][-1],
             results[name]["search_first"][-1],
             " ".join("%.3f" % x for x in results[name]["search"]),
             results[name]["search_size"][-1], results[name]["search_expunge"][-1]), file=sys.stderr)

# The SEARCH BODY phase: body_n generated messages of realistic text, the same for every
# server (seeded), then SEARCH BODY of words whose counts the generator knows.
def vocabulary():
    """The words in the order of their rank in the Zipf law: those of the test corpus
    (lowercase or capitalized words of 2-12 letters, so that base64 and hex are left out)
    most frequent first, then made-up ones to 20 000."""
    counts = {}
    for path in sorted(glob.glob(os.path.join(os.environ["BENCH_REPO"],
                                              "tests/corpus/mail-parser/*/*.eml"))):
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        for w in re.findall(r"\b[A-Za-z][a-z]{1,11}\b", text):
            counts[w.lower()] = counts.get(w.lower(), 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    known = set(words)
    rng = random.Random(14)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    while len(words) < 20000:
        w = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4)))
        if w not in known:
            known.add(w)
            words.append(w)
    return words

def generate(n):
    """n messages (bytes, CRLF) and their bodies lowercased (what BODY is matched on)."""
    words = vocabulary()
    cum, total = [], 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1)
        cum.append(total)
    rng = random.Random(1414)
    names = words[:200]
    messages, bodies = [], []
    for i in range(n):
        first, last = rng.choice(names), rng.choice(names)
        subject = " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(3, 8)))
        lines, line = [], []
        for _ in range(rng.randint(300, 600)):
            w = rng.choices(words, cum_weights=cum)[0]
            if not line or rng.random() < 0.1:
                w = w.capitalize()
            line.append(w)
            if sum(len(x) + 1 for x in line) > 68:
                lines.append(" ".join(line) + ("." if rng.random() < 0.3 else ""))
                line = []
            if rng.random() < 0.02:
                lines.append("")
        lines.append(" ".join(line))
        body = "\r\n".join(lines)
        messages.append(("From: %s %s <%s.%s@example.org>\r\nTo: alice@localhost\r\n"
                         "Subject: %s\r\nDate: Mon, 7 Dec 2026 %02d:%02d:00 +0100\r\n"
                         "Message-ID: <body-%d@bench>\r\nMIME-Version: 1.0\r\n"
                         "Content-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n"
                         % (first.capitalize(), last.capitalize(), first, last, subject,
                            i // 60 % 24, i % 60, i, body)).encode())
        bodies.append(body.lower())
    return words, messages, bodies

def search_words(words, bodies):
    """Words by class, each with the number of bodies that hold it (as a substring, as
    SEARCH BODY matches): 3 rare ones (1-20 messages), 2 medium (100-1000), 2 common
    (more than half), one absent; and one more rare one for the first search."""
    rng = random.Random(7)
    def count(w):
        return sum(w in b for b in bodies)
    n = len(bodies)
    classes = {"rare": (range(len(words) - 3000, len(words)), 1, 20, 4),
               "medium": (range(100, 1000), n // 100, n // 10, 2),
               "common": (range(0, 40), n // 2 + 1, n, 2)}
    out = {}
    for name, (ranks, low, high, want) in classes.items():
        found = []
        for rank in rng.sample(list(ranks), len(ranks)):
            if len(found) == want:
                break
            c = count(words[rank])
            if max(1, low) <= c <= high:
                found.append((words[rank], c))
        out[name] = found
    out["absent"] = [("zqxvjwbody", 0)]
    return out

body_notes = []
if body_n and servers:
    t = time.monotonic()
    vocab, body_messages, body_texts = generate(body_n)
    body_words = search_words(vocab, body_texts)
    first_word = body_words["rare"].pop()
    print("body phase: %d messages generated (%.0f KiB) in %.1f s; words %s, first %s"
          % (body_n, sum(map(len, body_messages)) / 1024, time.monotonic() - t,
             body_words, first_word), file=sys.stderr)
    del body_texts
for name, imap_port, lmtp_port, user, pw, rcpt, folder in (servers if body_n else []):
    def deliver(chunk):
        with smtplib.LMTP("127.0.0.1", lmtp_port) as lmtp:
            for raw in chunk:
                lmtp.sendmail("sender@localhost", [rcpt], raw)
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(deliver, [body_messages[k::10] for k in range(10)]))
    results[name]["body_lmtp"].append(body_n / (time.monotonic() - t))
    t = time.monotonic()
    c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=3600)
    c.login(user, pw)
    typ, data = c.select("INBOX")
    results[name]["body_all"].append(wait_all(c, body_n, data, t))
    results[name]["body_size_before"].append(stored_kib(folder))
    def body_search(word, expected, key):
        t = time.monotonic()
        typ, data = c.search(None, "BODY", word)
        results[name][key].append(time.monotonic() - t)
        got = len(data[0].split()) if typ == "OK" else -1
        if got != expected:
            body_notes.append("%s: SEARCH BODY %s found %d, the generator says %d"
                              % (name, word, got, expected))
    body_search(first_word[0], first_word[1], "body_first")
    for _ in range(body_passes):
        for cls in ("rare", "medium", "common", "absent"):
            for word, expected in body_words[cls]:
                body_search(word, expected, "body_" + cls)
                results[name]["body_warm"].append(results[name]["body_" + cls][-1])
    c.logout()
    results[name]["body_size_after"].append(stored_kib(folder))
    expunge_all(imap_port, user, pw)
    print("body %-14s lmtp %6.0f/s  all in %6.2f s  first SEARCH BODY %7.4f s  rare %s  medium %s"
          "  common %s  absent %s  stored %d KiB, after the searches %d KiB"
          % (name, results[name]["body_lmtp"][-1], results[name]["body_all"][-1],
             results[name]["body_first"][-1],
             *(" ".join("%.4f" % x for x in results[name]["body_" + cls])
               for cls in ("rare", "medium", "common", "absent")),
             results[name]["body_size_before"][-1], results[name]["body_size_after"][-1]),
          file=sys.stderr)
for note in body_notes:
    print("body phase: WRONG ANSWER: " + note, file=sys.stderr)

def fmt(values, unit, digits):
    med = statistics.median(values)
    return "%.*f %s (%.*f-%.*f)" % (digits, med, unit, digits, min(values), digits, max(values))

rows = [("LMTP deliveries/s (smtp-source -s 10, %s B)" % size, "lmtp", "/s", 0, True),
        ("first login + SELECT after %d deliveries" % n, "login", "s", 2, False),
        ("... until all %d are in the mailbox (NOOP)" % n, "login_all", "s", 2, False),
        ("IMAP FETCH BODY.PEEK[] messages/s", "fetch", "/s", 0, True),
        ("IMAP FETCH BODYSTRUCTURE messages/s", "bodystructure", "/s", 0, True),
        ("stored size of %d messages (du)" % n, "size", "KiB", 0, False),
        ("mbsync pull of %d messages" % n, "pull", "s", 2, False)]
if search_n:
    rows += [("LMTP deliveries/s, %d messages" % search_n, "search_lmtp", "/s", 0, True),
             ("first login + SELECT after %d deliveries" % search_n, "search_login", "s", 2, False),
             ("... until all %d are in the mailbox (NOOP)" % search_n, "search_login_all", "s", 2, False),
             ("first SEARCH HEADER Subject over %d" % search_n, "search_first", "s", 3, False),
             ("SEARCH HEADER Subject over %d (median of %d)" % (search_n, searches), "search", "s", 3, False),
             ("stored size of %d messages (du)" % search_n, "search_size", "KiB", 0, False),
             ("stored size of %d messages once collected (du)" % search_n, "search_settled", "KiB", 0, False),
             ("STORE \\Deleted + EXPUNGE of %d (login included)" % search_n, "search_expunge", "s", 2, False)]
if body_n:
    rows += [("LMTP deliveries/s, %d generated messages (10 sessions)" % body_n, "body_lmtp", "/s", 0, True),
             ("login until all %d are in the mailbox (NOOP)" % body_n, "body_all", "s", 2, False),
             ("stored size of %d messages (du)" % body_n, "body_size_before", "KiB", 0, False),
             ("**first SEARCH BODY (rare word) over %d**" % body_n, "body_first", "s", 4, False),
             ("**SEARCH BODY over %d, warm (median of %d searches)**" % (body_n, len(results[servers[0][0]]["body_warm"]) if servers else 0), "body_warm", "s", 4, False),
             ("... rare words (1-20 matches)", "body_rare", "s", 4, False),
             ("... medium words (1-10 %)", "body_medium", "s", 4, False),
             ("... common words (more than half)", "body_common", "s", 4, False),
             ("... absent word", "body_absent", "s", 4, False),
             ("stored size after the searches (du; mailvault: with its text index)", "body_size_after", "KiB", 0, False)]
print()
print("| %s | mailvault (local dir) | Dovecot + mail_crypt | Dovecot plain | mailvault vs crypt | mailvault vs plain |" % "figure (median, range)")
print("|---|---|---|---|---|---|")
for label, key, unit, digits, higher in rows:
    if not all(results[s][key] for s in results):
        continue
    med = {s: statistics.median(results[s][key]) for s in results}
    def ratio(other):
        # > 1: mailvault better.
        if "mailvault" not in med or other not in med:
            return "-"
        x = med["mailvault"] / med[other] if higher else med[other] / med["mailvault"]
        if x >= 1:
            return "%.2fx better" % x
        return "%.2fx (%.1f times worse)" % (x, 1 / x)
    def cell(server):
        return fmt(results[server][key], unit, digits) if server in results else "-"
    print("| %s | %s | %s | %s | %s | %s |" % (
        label, cell("mailvault"), cell("dovecot-crypt"), cell("dovecot-plain"),
        ratio("dovecot-crypt"), ratio("dovecot-plain")))
PYEOF
log "load after: $(uptime)"
