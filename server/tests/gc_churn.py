"""Garbage collection on a running server, driven by gc.rs.

argv: writer port (server A: collects garbage), reader port (server B: same store and
directory, never collects), login, password, the account's store folder (a/<account>).

The writer appends MESSAGES messages one command at a time on A, then expunges all but
every third one, one UID EXPUNGE at a time (hundreds of commits: superseded manifests,
segments replaced by compactions, released bodies). Meanwhile the reader, on B, logs in
afresh again and again (each login loads the account from the store, the segments a
collection may delete), sets \\Seen on a kept message (a commit of another process while
A collects) and fetches every kept message it sees, byte-exact. After the churn the
writer logs out and only short sessions follow (login, 1.5 s, logout: a handle each),
until the store shrinks or a deadline passes.

Prints `key value` lines: the object counts during and after, the reader's rounds and
errors, and the final check of the kept messages from a fresh login on B.
"""

import imaplib
import os
import re
import sys
import threading
import time

writer_port, reader_port = int(sys.argv[1]), int(sys.argv[2])
user, password, account_dir = sys.argv[3], sys.argv[4], sys.argv[5]
MESSAGES = 90
settle_deadline = float(os.environ.get("GC_SETTLE_SECS", "40"))


def message(i):
    body = "".join("line %d of message %d, some text to make it a body\r\n" % (n, i)
                   for n in range(40))
    return ("From: churn@example.org\r\nTo: alice@example.org\r\n"
            "Subject: churn %d\r\nMessage-ID: <churn-%d@example.org>\r\n\r\n%s" % (i, i, body)
            ).encode()


def kept(i):
    return i % 3 == 0


def count(sub):
    total = 0
    for _root, _dirs, files in os.walk(os.path.join(account_dir, sub)):
        total += len(files)
    return total


def counts():
    return {"index": count("i"), "bodies": count("b")}


def connect(port):
    c = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    c.login(user, password)
    return c


errors = []
rounds = [0]
verified = [0]
done = threading.Event()


def reader():
    while not done.is_set():
        try:
            c = connect(reader_port)
            typ, data = c.select("INBOX")
            assert typ == "OK", (typ, data)
            typ, data = c.uid("SEARCH", None, "ALL")
            assert typ == "OK", (typ, data)
            uids = data[0].split()
            if uids:
                # ENVELOPE comes from the index: no body read, so a message the other
                # server expunged meanwhile (its body deleted) still answers from this
                # handle's snapshot.
                typ, data = c.uid("FETCH", b",".join(uids).decode(), "(ENVELOPE)")
                assert typ == "OK", (typ, data)
                keep = []
                for line in data:
                    if isinstance(line, tuple):
                        line = b"".join(line)
                    m = re.search(rb'UID (\d+) .*?"churn (\d+)"', line or b"")
                    if m and kept(int(m.group(2))):
                        keep.append((m.group(1), int(m.group(2))))
                if keep:
                    # A commit of this process while the other one collects.
                    typ, data = c.uid("STORE", keep[rounds[0] % len(keep)][0].decode(),
                                      "+FLAGS.SILENT", "(\\Seen)")
                    assert typ == "OK", (typ, data)
                    typ, data = c.uid("FETCH", b",".join(u for u, _ in keep).decode(),
                                      "(BODY.PEEK[])")
                    assert typ == "OK", (typ, data)
                    got = {}
                    for part in data:
                        if isinstance(part, tuple):
                            uid = part[0].split(b"UID ")[1].split()[0]
                            got[uid] = part[1]
                    for uid, n in keep:
                        assert got.get(uid) == message(n), ("kept message", n, uid)
                        verified[0] += 1
            c.logout()
            rounds[0] += 1
        except Exception as e:  # noqa: BLE001: every failure is reported
            errors.append(repr(e))
            time.sleep(0.2)


thread = threading.Thread(target=reader)
thread.start()
w = connect(writer_port)
typ, data = w.select("INBOX")
assert typ == "OK", (typ, data)
for i in range(MESSAGES):
    typ, data = w.append("INBOX", None, None, message(i))
    assert typ == "OK", ("append", i, typ, data)
typ, data = w.uid("SEARCH", None, "ALL")
uids = data[0].split()
assert len(uids) == MESSAGES, uids
for n, uid in enumerate(uids):
    if not kept(n):
        typ, data = w.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Deleted)")
        assert typ == "OK", (typ, data)
        typ, data = w.uid("EXPUNGE", uid.decode())
        assert typ == "OK", (typ, data)
churned = counts()
# Let the reader go on a little while the collector runs, then stop it.
time.sleep(3)
done.set()
thread.join()
w.logout()
# Short sessions only from now on (each opens the account's handle, which lives as long
# as a connection does): the collection still happens, at the first poll of a handle
# when the account was last collected longer than an interval ago.
start = time.monotonic()
after = counts()
sessions = 0
while time.monotonic() - start < settle_deadline:
    s = connect(writer_port)
    typ, _ = s.select("INBOX")
    assert typ == "OK"
    time.sleep(1.5)
    typ, _ = s.noop()
    assert typ == "OK"
    s.logout()
    sessions += 1
    after = counts()
    if after["bodies"] == MESSAGES // 3 and after["index"] <= 12:
        break
settled = time.monotonic() - start

# A fresh login on B: every kept message, byte-exact, flags as set.
c = connect(reader_port)
c.select("INBOX")
typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
assert typ == "OK", (typ, data)
final = sorted(int(p[1].split(b"Subject: churn ")[1].split(b"\r\n")[0])
               for p in data if isinstance(p, tuple))
bodies_ok = all(p[1] == message(int(p[1].split(b"Subject: churn ")[1].split(b"\r\n")[0]))
                for p in data if isinstance(p, tuple))
c.logout()
report = {
    "churned_index": churned["index"], "churned_bodies": churned["bodies"],
    "after_index": after["index"], "after_bodies": after["bodies"],
    "settled_secs": round(settled, 1), "settle_sessions": sessions, "reader_rounds": rounds[0],
    "reader_verified": verified[0], "reader_errors": len(errors),
    "final_ok": int(final == [i for i in range(MESSAGES) if kept(i)] and bodies_ok),
}
for e in errors:
    print("reader error:", e, file=sys.stderr)
print("final messages:", final, file=sys.stderr)
# One "key value" line each, for gc.rs.
for key, value in report.items():
    print(key, value)
