"""Session rules that hold across commands and sessions, on a running `mailvault serve`
(each found by a review of the server against the RFCs; Dovecot's answers are in the
differential test, these are the RFC's).

Usage: sessions.py IMAP_PORT USER PASSWORD QUOTA_USER (QUOTA_USER: the same password,
a storage quota of 64 KiB)

- RFC 7162 3.2.4: "Once a CONDSTORE enabling command is issued by the client, the server
  MUST automatically include both UID and mod-sequence data in all subsequent untagged
  FETCH responses (until the connection is closed), whether they were caused by a regular
  STORE/UID STORE, a STORE/UID STORE with an UNCHANGEDSINCE modifier, a FETCH/UID FETCH
  that implicitly set the \\Seen flag, or an external agent."
- The selected mailbox deleted by another session: the session keeps running (a tagged
  answer to every command), reports the messages gone (VANISHED once QRESYNC is on, RFC
  7162 3.2.10: "the server MUST NOT send EXPUNGE responses ... it MUST send VANISHED
  responses instead"), says no mailbox is selected any more (CLOSED), and answers the
  selected state's commands with BAD afterwards.

- RFC 9051 6.4.5: "The HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, and TEXT part
  specifiers can be the sole part specifier or can be prefixed by one or more numeric
  part specifiers, provided that the numeric part specifier refers to a part of type
  MESSAGE/RFC822 or MESSAGE/GLOBAL": BODY[2.HEADER] and the like of a forwarded message,
  compared with the bytes of the message it carries as Python's `email` splits it.
- RFC 9208 (QUOTA, resource STORAGE in units of 1 024 octets), through imaplib's
  `getquotaroot` and `getquota` (a client nobody here wrote): an account without a
  quota has no quota root; one with a quota has the root "" with its usage and limit,
  usage grows with APPEND, STATUS DELETED-STORAGE counts the \\Deleted messages, an APPEND
  beyond the limit is NO [OVERQUOTA], SETQUOTA is refused (no QUOTASET).

- RFC 9051 4.3: a literal is `*CHAR8` (%x01-ff), no NUL: a message holding a NUL
  (appended as a literal8, RFC 3516 4.4) is sent by BODY[] and RFC822 with the NUL
  replaced (by 0x80, the size unchanged: what Dovecot does for delivered mail; such an
  appended part it re-encodes in base64), and by BINARY[] as it is in a literal8 (RFC
  3516 4.2).

Raw sockets through `rev2.Session`. Exit status 1 with the failed checks on stdout.
"""

import imaplib
import sys

from rev2 import Session, check, failures, untagged

MESSAGE = b"From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n"


def fetches(lines):
    return [l for l in lines if l.startswith(b"* ") and b" FETCH (" in l]


def check_uid_and_modseq(lines, what, uid):
    got = fetches(lines)
    check(len(got) == 1, f"{what}: one FETCH response: {lines!r}")
    for line in got:
        check(b"UID %d " % uid in line or b"UID %d)" % uid in line, f"{what}: UID {uid} in {line!r}")
        check(b"MODSEQ (" in line, f"{what}: MODSEQ in {line!r}")


def condstore_fetches(a, b):
    a.command(b"ENABLE CONDSTORE")
    a.command(b"CREATE cs")
    for n in (1, 2):
        lines = a.command(b"APPEND cs", literal=MESSAGE % (n, n))
        check(a.status_of(lines) == b"OK", f"APPEND: {lines!r}")
    lines = a.command(b"SELECT cs")
    check(a.status_of(lines) == b"OK", f"SELECT cs: {lines!r}")
    # A regular STORE, by sequence number.
    check_uid_and_modseq(a.command(b"STORE 1 +FLAGS (\\Flagged)"), "STORE", 1)
    # A FETCH that sets \Seen, asking for neither UID nor MODSEQ.
    check_uid_and_modseq(a.command(b"FETCH 2 (BODY[TEXT])"), "FETCH setting \\Seen", 2)
    # A change by an external agent, seen at NOOP.
    b.command(b"SELECT cs")
    lines = b.command(b"STORE 1 -FLAGS.SILENT (\\Flagged)")
    check(b.status_of(lines) == b"OK", f"the other session's STORE: {lines!r}")
    b.command(b"UNSELECT")
    check_uid_and_modseq(a.command(b"NOOP"), "a change by another session", 1)
    a.command(b"UNSELECT")


def selected_mailbox_deleted(port, user, password, b):
    for qresync in (True, False):
        c = Session(port, user, password)
        name = b"gone-q" if qresync else b"gone"
        c.command(b"CREATE " + name)
        for n in (1, 2, 3):
            c.command(b"APPEND " + name, literal=MESSAGE % (n, n))
        if qresync:
            c.command(b"ENABLE QRESYNC")
        lines = c.command(b"EXAMINE " + name)
        check(c.status_of(lines) == b"OK", f"EXAMINE: {lines!r}")
        lines = b.command(b"DELETE " + name)
        check(b.status_of(lines) == b"OK", f"the other session's DELETE: {lines!r}")
        what = "QRESYNC" if qresync else "no QRESYNC"
        try:
            lines = c.command(b"EXPUNGE")
        except AssertionError as e:
            check(False, f"{what}: EXPUNGE after the mailbox was deleted: {e}")
            continue
        check(c.status_of(lines) in (b"OK", b"NO"), f"{what}: EXPUNGE answered: {lines!r}")
        expunges = [l for l in lines if l.startswith(b"* ") and l.rstrip().endswith(b" EXPUNGE")]
        vanished = untagged(lines, b"VANISHED")
        if qresync:
            check(expunges == [], f"{what}: no EXPUNGE responses: {lines!r}")
            check(vanished == [b"* VANISHED 1:3\r\n"], f"{what}: VANISHED 1:3: {lines!r}")
        else:
            check(len(expunges) == 3, f"{what}: three EXPUNGE responses: {lines!r}")
            check(vanished == [], f"{what}: no VANISHED: {lines!r}")
        check(any(b"[CLOSED]" in l for l in lines), f"{what}: CLOSED: {lines!r}")
        lines = c.command(b"FETCH 1 (FLAGS)")
        check(c.status_of(lines) == b"BAD", f"{what}: FETCH with no mailbox selected: {lines!r}")
        lines = c.command(b"NOOP")
        check(c.status_of(lines) == b"OK", f"{what}: NOOP after: {lines!r}")
        c.close()


INNER = (
    b"From: Carol <carol@example.net>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: the original\r\n"
    b"Message-ID: <inner@example.net>\r\n"
    b"\r\n"
    b"The forwarded text.\r\n"
)
FORWARD = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: Fwd: the original\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"See below.\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER + b"--b1--\r\n"
)


def nested_sections(port, user, password):
    import email
    import email.policy

    inner = email.message_from_bytes(FORWARD, policy=email.policy.compat32).get_payload(1).get_payload(0)
    header = INNER.partition(b"\r\n\r\n")[0]
    header += b"\r\n\r\n"
    check(inner["Subject"] == "the original", f"Python's email sees the carried message: {inner['Subject']!r}")
    check(inner.get_payload() == "The forwarded text.", f"and its text: {inner.get_payload()!r}")
    c = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    c.login(user, password)
    c.create("nested")
    typ, data = c.append("nested", None, None, FORWARD)
    check(typ == "OK", f"APPEND the forward: {typ} {data!r}")
    c.select("nested")
    for item, want in [
        ("BODY.PEEK[2.HEADER]", header),
        # RFC 2046 5.1.1: the CRLF before a boundary belongs to the boundary, so the part
        # (and the message it carries) ends before it, as Python's email has it too.
        ("BODY.PEEK[2.TEXT]", inner.get_payload().encode()),
        ("BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]", b"Subject: the original\r\n\r\n"),
        ("BODY.PEEK[2.HEADER.FIELDS.NOT (SUBJECT MESSAGE-ID)]",
         b"From: Carol <carol@example.net>\r\nTo: bob@example.org\r\n\r\n"),
        # A part that carries no message: nothing.
        ("BODY.PEEK[1.HEADER]", b""),
    ]:
        typ, data = c.fetch("1", "(" + item + ")")
        got = data[0][1] if data and isinstance(data[0], tuple) else b""
        check(typ == "OK" and got == want, f"FETCH {item}: {typ} {got!r}, want {want!r}")
    c.logout()


def quota(port, user, password, quota_user):
    caps = b" ".join(untagged(Session(port, user, password).command(b"CAPABILITY"), b"CAPABILITY")).upper().split()
    check(b"QUOTA" in caps and b"QUOTA=RES-STORAGE" in caps, f"CAPABILITY lists QUOTA, QUOTA=RES-STORAGE: {caps!r}")
    check(b"QUOTASET" not in caps, f"no QUOTASET: {caps!r}")
    # No quota: no quota root, GETQUOTA of "" refused.
    c = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    c.login(user, password)
    typ, data = c.getquotaroot("INBOX")
    check(typ == "OK" and data[0] == [b"INBOX"] and data[1] in ([], [None]), f"no quota: GETQUOTAROOT INBOX {typ} {data!r}")
    typ, data = c._simple_command("GETQUOTA", '""')
    check(typ == "NO", f"no quota: GETQUOTA \"\" is NO: {typ} {data!r}")
    c.logout()
    # A quota of 64 KiB.
    c = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    c.login(quota_user, password)
    typ, data = c.getquotaroot("INBOX")
    check(typ == "OK" and data[0] == [b'INBOX ""'], f"GETQUOTAROOT INBOX names the root \"\": {typ} {data!r}")
    check(data[1] == [b'"" (STORAGE 0 64)'], f"and its QUOTA: nothing used of 64: {data!r}")
    body = b"Subject: quota\r\n\r\n" + b"q" * (10 * 1024 - 20)
    typ, data = c.append("INBOX", None, None, body)
    check(typ == "OK", f"APPEND of 10 KiB: {typ} {data!r}")
    typ, data = c.getquota('""')
    check(typ == "OK" and data == [b'"" (STORAGE 10 64)'], f"GETQUOTA \"\" after 10 KiB: {typ} {data!r}")
    typ, data = c.getquotaroot("nosuchbox")
    check(typ == "NO", f"GETQUOTAROOT of no mailbox is NO: {typ} {data!r}")
    typ, data = c._simple_command("SETQUOTA", '""', "(STORAGE 1000)")
    check(typ == "NO", f"SETQUOTA refused: {typ} {data!r}")
    c.select("INBOX")
    typ, data = c.status("INBOX", "(DELETED-STORAGE)")
    check(typ == "OK" and b"DELETED-STORAGE 0" in data[0], f"STATUS DELETED-STORAGE 0: {typ} {data!r}")
    c.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = c.status("INBOX", "(DELETED-STORAGE)")
    check(typ == "OK" and b"DELETED-STORAGE 10" in data[0], f"STATUS DELETED-STORAGE 10 after \\Deleted: {typ} {data!r}")
    big = b"Subject: too much\r\n\r\n" + b"q" * (60 * 1024)
    try:
        typ, data = c.append("INBOX", None, None, big)
    except imaplib.IMAP4.error as e:
        typ, data = "NO", [str(e).encode()]
    check(typ == "NO" and b"OVERQUOTA" in b" ".join(data).upper(), f"APPEND beyond the quota: NO [OVERQUOTA]: {typ} {data!r}")
    typ, data = c.getquota('""')
    check(data == [b'"" (STORAGE 10 64)'], f"the refused APPEND counts nothing: {data!r}")
    c.logout()


def nul_bytes(port, user, password):
    s = Session(port, user, password)
    s.command(b"CREATE nul")
    message = (b"From: a@example.org\r\nSubject: nul\r\nContent-Transfer-Encoding: binary\r\n"
               b"\r\nbefore\x00after\r\n")
    s.n += 1
    tag = b"t%d" % s.n
    s.tag = tag
    s.sock.sendall(tag + b" APPEND nul ~{%d}\r\n" % len(message))
    go = s.reader.readline()
    check(go.startswith(b"+"), f"APPEND literal8: continuation: {go!r}")
    s.sock.sendall(message + b"\r\n")
    done = s.reader.readline()
    while not done.startswith(tag + b" "):
        done = s.reader.readline()
    check(done.split()[1] == b"OK", f"APPEND literal8 with a NUL: {done!r}")
    s.command(b"SELECT nul")
    sent = message.replace(b"\x00", b"\x80")
    for item in (b"BODY.PEEK[]", b"RFC822"):
        lines = s.command(b"FETCH 1 " + item)
        joined = b"".join(lines)
        check(b"\x00" not in joined, f"FETCH {item!r}: a NUL in a literal: {lines!r}")
        check(sent in joined and b"{%d}\r\n" % len(message) in joined,
              f"FETCH {item!r}: the message with its NUL as 0x80, same size: {lines!r}")
    lines = s.command(b"FETCH 1 BINARY.PEEK[]")
    joined = b"".join(lines)
    check(b"~{%d}\r\n" % len(message) in joined and message in joined,
          f"FETCH BINARY[]: the bytes as they are in a literal8: {lines!r}")
    s.close()


def main(port, user, password, quota_user):
    a = Session(port, user, password)
    b = Session(port, user, password)
    condstore_fetches(a, b)
    selected_mailbox_deleted(port, user, password, b)
    quota(port, user, password, quota_user)
    nested_sections(port, user, password)
    nul_bytes(port, user, password)
    a.close()
    b.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
    for f in failures:
        print("FAILED", f)
    print("%d failed checks" % len(failures))
    sys.exit(1 if failures else 0)
