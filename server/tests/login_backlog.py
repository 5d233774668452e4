"""The first login after many deliveries, driven by login_backlog.rs (issue 13's benchmark
row "first LOGIN + SELECT after N deliveries").

argv: IMAP port, LMTP port, login, password, N.

Delivers N messages over one LMTP session (each acknowledged 250), then logs in: LOGIN
and SELECT are answered without waiting for the import of the N pending deliveries (the
account's handle imports them in the background). Then the client waits for them as new
mail: NOOPs, then IDLE, reading untagged EXISTS until every delivery is there; last,
FETCH BODY.PEEK[] of every message, compared byte for byte with what was sent, in
delivery order (UIDs follow the delivery numbers).

Prints `key value` lines: the LOGIN time, the SELECT's EXISTS, the EXISTS counts seen,
the time until all N were there, and `ok 1` when every check passed.
"""

import imaplib
import smtplib
import sys
import time

port, lmtp_port, user, password, n = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                      sys.argv[4], int(sys.argv[5]))
HOST = "127.0.0.1"
TIMEOUT = 300


def message(i):
    body = "".join("line %d of delivery %d\r\n" % (k, i) for k in range(20))
    return ("From: sender@example.org\r\nTo: %s\r\nSubject: backlog %d\r\n"
            "Message-ID: <backlog-%d@example.org>\r\n\r\n%s" % (user, i, i, body)).encode()


def check(cond, what):
    if not cond:
        print("FAILED: %s" % what, file=sys.stderr)
        sys.exit(1)


sent = [message(i) for i in range(n)]
with smtplib.LMTP(HOST, lmtp_port, timeout=TIMEOUT) as lmtp:
    lmtp.ehlo("client.example.org")
    for m in sent:
        refused = lmtp.sendmail("sender@example.org", [user], m)
        check(not refused, "delivery acknowledged: %r" % (refused,))

t = time.monotonic()
imap = imaplib.IMAP4(HOST, port, timeout=TIMEOUT)
typ, _ = imap.login(user, password)
login = time.monotonic() - t
check(typ == "OK", "LOGIN OK")
typ, data = imap.select("INBOX")
selected = time.monotonic() - t
check(typ == "OK", "SELECT OK")
at_select = int(data[0])
print("login_secs %.3f" % login)
print("login_select_secs %.3f" % selected)
print("exists_at_select %d" % at_select)
check(at_select < n, "SELECT answered before the %d deliveries were imported (%d)" % (n, at_select))

# New mail, as a client sees it: EXISTS on NOOP, then in IDLE.
seen = [at_select]
deadline = time.monotonic() + TIMEOUT


def note_exists(responses):
    for r in responses:
        if r is not None:
            seen.append(int(r))


while seen[-1] < n // 4 and time.monotonic() < deadline:
    typ, _ = imap.noop()
    check(typ == "OK", "NOOP OK")
    note_exists(imap.untagged_responses.pop("EXISTS", []))
    time.sleep(0.05)
noops = len(seen)
# IDLE (RFC 2177) by hand: imaplib has no IDLE before Python 3.14.
tag = imap._new_tag()
imap.send(tag + b" IDLE\r\n")
imap.sock.settimeout(TIMEOUT)


def read_exists():
    """One line in IDLE: an untagged EXISTS noted (the server may send them before its
    continuation request too)."""
    line = imap.readline()
    check(line != b"", "connection open in IDLE")
    parts = line.split()
    if len(parts) == 3 and parts[0] == b"*" and parts[2].upper() == b"EXISTS":
        seen.append(int(parts[1]))
    return line


while not read_exists().startswith(b"+"):
    pass
while seen[-1] < n and time.monotonic() < deadline:
    read_exists()
imap.send(b"DONE\r\n")
while True:
    line = imap.readline()
    check(line != b"", "IDLE answered")
    if line.startswith(tag):
        check(b" OK" in line, "IDLE completed: %r" % line)
        break
all_in = time.monotonic() - t
print("exists_seen %s" % ",".join(str(x) for x in seen))
print("exists_by_noop %d" % (noops - 1))
print("exists_in_idle %d" % (len(seen) - noops))
print("all_imported_secs %.3f" % all_in)
check(seen[-1] == n, "EXISTS reached %d (seen %r)" % (n, seen[-20:]))
check(all(a <= b for a, b in zip(seen, seen[1:])), "EXISTS never went down")

typ, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
check(typ == "OK", "UID FETCH OK")
got = [part[1] for part in data if isinstance(part, tuple)]
check(len(got) == n, "FETCH returned %d messages" % len(got))
check(got == sent, "every delivery once, byte-exact, in delivery order")
imap.logout()
print("ok 1")
