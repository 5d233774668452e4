"""LMTP deliveries whose every reply is recorded, then a check of the mailboxes against
those replies (issue 13, "LMTP under load and faults"; driven by tests/lmtp_load.rs, which
SIGKILLs and restarts the server while `send` runs). Python standard library only.

    lmtp_faults.py send LMTP_PORT COUNT RECORDS RCPT...
        Sends COUNT messages (message i to RCPT[i % len]) with smtplib.LMTP over one
        connection at a time, reconnecting when the server is gone (up to 60 s). Appends
        one line per message to RECORDS as soon as its outcome is known: "i code", code
        being the reply to DATA (250, 451, ...) or "none" when the connection broke before
        a reply. A message without a reply is never sent again.
    lmtp_faults.py check IMAP_PORT COUNT RECORDS PASSWORD RCPT...
        Fetches every message of each RCPT's INBOX (imaplib) and checks: each message of
        this run that got 250 is there exactly once, byte for byte; one without a reply is
        there at most once, byte for byte; nothing else is there (no message of a failed
        reply, no foreign or altered message). Prints a summary; exit 1 on a violation.
"""

import imaplib
import re
import smtplib
import sys
import time

SENDER = "loader@example.net"


def message(i):
    """Message i, CRLF line ends, 300 B to ~24 KB, with a line starting with a dot."""
    lines = [
        "From: Loader <%s>" % SENDER,
        "To: whoever@example.org",
        "Subject: fault test message %d" % i,
        "Message-ID: <fault-%d@mailvault.test>" % i,
        "X-Fault-Seq: %d" % i,
        "",
        "Message %d." % i,
        ".a line that starts with a dot (%d)" % i,
    ]
    lines += ["%06d %s" % (i, "x" * 70)] * ((i * 37) % 300)
    return ("\r\n".join(lines) + "\r\n").encode()


def connect(port, deadline):
    while True:
        try:
            client = smtplib.LMTP("127.0.0.1", port, timeout=30)
            client.ehlo_or_helo_if_needed()
            return client
        except (OSError, smtplib.SMTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send(port, count, records, rcpts):
    out = open(records, "a", buffering=1)
    client = None
    for i in range(count):
        rcpt = rcpts[i % len(rcpts)]
        if client is None:
            client = connect(port, time.monotonic() + 60)
        code = "none"
        try:
            # Step by step, to tell a reply to DATA from a connection that broke before.
            c, _ = client.mail(SENDER)
            if c != 250:
                raise smtplib.SMTPResponseException(c, b"MAIL")
            c, _ = client.rcpt(rcpt)
            if c != 250:
                raise smtplib.SMTPResponseException(c, b"RCPT")
            c, _ = client.data(message(i))
            code = str(c)
        except smtplib.SMTPResponseException as e:
            code = "none" if e.smtp_code == -1 else str(e.smtp_code)
            client = close(client)
        except (OSError, smtplib.SMTPException):
            client = close(client)
        out.write("%d %s\n" % (i, code))
    close(client)
    out.close()


def close(client):
    if client is not None:
        try:
            client.close()
        except Exception:
            pass
    return None


def check(port, count, records, password, rcpts):
    replies = {}
    for line in open(records):
        i, code = line.split()
        replies[int(i)] = code
    if sorted(replies) != list(range(count)):
        print("the records do not cover messages 0..%d" % (count - 1))
        return 1
    seen = {}
    errors = []
    for rcpt in rcpts:
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=120)
        imap.login(rcpt, password)
        typ, data = imap.select("INBOX")
        exists = int(data[0])
        if exists:
            typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
            assert typ == "OK", (typ, data)
            bodies = [part[1] for part in data if isinstance(part, tuple)]
        else:
            bodies = []
        if len(bodies) != exists:
            errors.append("%s: %d EXISTS but %d bodies fetched" % (rcpt, exists, len(bodies)))
        for body in bodies:
            m = re.search(rb"\r\nX-Fault-Seq: (\d+)\r\n", body)
            i = int(m.group(1)) if m else None
            if i is None or i >= count or message(i) != body:
                errors.append("%s: a message that was not sent (or was altered): %r" % (rcpt, body[:120]))
                continue
            if rcpts[i % len(rcpts)] != rcpt:
                errors.append("%s: message %d was for %s" % (rcpt, i, rcpts[i % len(rcpts)]))
            seen[i] = seen.get(i, 0) + 1
        imap.logout()
    counts = {}
    for i in range(count):
        code, n = replies[i], seen.get(i, 0)
        counts[code] = counts.get(code, 0) + 1
        if code == "250" and n != 1:
            errors.append("message %d got 250 but is stored %d times" % (i, n))
        elif code == "none" and n > 1:
            errors.append("message %d (no reply) is stored %d times" % (i, n))
        elif code not in ("250", "none") and n != 0:
            errors.append("message %d got %s but is stored %d times" % (i, code, n))
    unanswered_stored = sum(1 for i in range(count) if replies[i] == "none" and seen.get(i))
    print("replies: %s; stored: %d; unanswered but stored: %d"
          % (", ".join("%s x%d" % kv for kv in sorted(counts.items())), sum(seen.values()),
             unanswered_stored))
    for e in errors[:50]:
        print("VIOLATION:", e)
    return 1 if errors else 0


def main():
    mode = sys.argv[1]
    if mode == "send":
        send(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:])
        return 0
    if mode == "check":
        return check(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:])
    raise SystemExit("usage: lmtp_faults.py send|check ...")


if __name__ == "__main__":
    sys.exit(main())
