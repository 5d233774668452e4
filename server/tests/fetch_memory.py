"""The memory a FETCH of whole messages makes `mailvault serve` hold (issue 13, review:
"FETCH must not hold a whole command's responses in memory").

Usage: fetch_memory.py HOST IMAP_PORT USER PASSWORD SERVER_PID MESSAGES SIZE_KIB BOUND_MIB [CA_FILE]

With CA_FILE, IMAP_PORT is the IMAPS port and every connection is TLS (the certificate
checked against CA_FILE).

APPENDs MESSAGES messages of SIZE_KIB KiB each (Python imaplib, a client nobody here
wrote), each different (pseudo-random base64 lines, seeded by its number), then sends
`UID FETCH 1:* BODY.PEEK[]` on a raw socket and reads the answer as a slow client would:
after the first FETCH response it stops reading for a while (the server cannot write
ahead of the client), then reads the rest. Checked:
- every FETCH response arrives, in sequence order, each with its UID and the message's
  bytes exactly as appended, then the tagged OK;
- while the client stalls, another connection changes the same messages (STORE) and
  appends one: a FETCH must not hold up the account's writers while it waits for its
  client;
- the server process's peak resident memory (VmHWM of /proc/SERVER_PID/status, reset
  through /proc/SERVER_PID/clear_refs just before the FETCH) grows by less than
  BOUND_MIB MiB over its resident memory before the FETCH, while the answer carries
  MESSAGES x SIZE_KIB KiB: the server holds a few messages at a time, not the command's
  responses.

Prints the growth (peak and while the client stalls) on stdout. Exit status 1 with the
failed checks on stdout.
"""

import base64
import imaplib
import random
import socket
import ssl
import sys
import time

TIMEOUT = 300
# How long the client stops reading after the first FETCH response.
STALL = 2.0

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def message(n, size):
    """Message `n`: a header, then CRLF lines of base64 text up to about `size` bytes."""
    header = (
        b"From: sender%d@example.org\r\nTo: fetch@example.org\r\n"
        b"Subject: message %d\r\nMessage-ID: <m%d@example.org>\r\n\r\n" % (n, n, n)
    )
    raw = random.Random(n).randbytes(size * 3 // 4)
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return header + body


def memory_kib(pid, field):
    """`field` (VmRSS, VmHWM) of process `pid`, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid):
    """Resets the process's VmHWM to its VmRSS (Linux 4.0+, proc(5) clear_refs "5");
    False when the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Reader:
    """The server's bytes, read on demand in pieces of at most 64 KiB."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        piece = self.sock.recv(65536)
        if not piece:
            raise EOFError("the server closed the connection")
        self.buf += piece

    def line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                out = bytes(self.buf[: end + 2])
                del self.buf[: end + 2]
                return out
            self.fill()

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def connect(host, port, tls, timeout):
    """An imaplib session: IMAP4, or IMAP4_SSL with the `tls` context."""
    if tls is None:
        return imaplib.IMAP4(host, port, timeout=timeout)
    return imaplib.IMAP4_SSL(host, port, ssl_context=tls, timeout=timeout)


def writer_meanwhile(host, port, tls, user, password, count):
    """Another session STOREs a flag on every message of `big` and APPENDs to INBOX;
    checked to finish within 30 s."""
    started = time.monotonic()
    other = connect(host, port, tls, 30)
    other.login(user, password)
    other.select("big")
    typ, data = other.store("1:*", "+FLAGS.SILENT", r"(\Flagged)")
    check(typ == "OK", f"STORE during the FETCH: {typ} {data!r}")
    typ, data = other.append("INBOX", None, None, message(count, 1024))
    check(typ == "OK", f"APPEND during the FETCH: {typ} {data!r}")
    other.logout()
    elapsed = time.monotonic() - started
    check(elapsed < 30, f"STORE and APPEND during the FETCH took {elapsed:.1f} s")
    print(f"STORE and APPEND of another session while the FETCH waits: {elapsed:.2f} s")


def main():
    host, port, user, password, pid, count, size_kib, bound_mib = sys.argv[1:9]
    port, pid, count = int(port), int(pid), int(count)
    size, bound = int(size_kib) * 1024, int(bound_mib) * 1024
    tls = None
    if len(sys.argv) > 9:
        tls = ssl.create_default_context(cafile=sys.argv[9])

    imap = connect(host, port, tls, TIMEOUT)
    imap.login(user, password)
    imap.create("big")
    started = time.monotonic()
    for n in range(count):
        typ, data = imap.append("big", None, None, message(n, size))
        if typ != "OK":
            print(f"APPEND {n}: {typ} {data!r}")
            sys.exit(1)
    print(f"{count} APPENDs of {size_kib} KiB: {time.monotonic() - started:.1f} s")
    imap.logout()

    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    reader = Reader(sock)
    check(reader.line().startswith(b"* OK"), "greeting")
    sock.sendall(b'a LOGIN "%s" "%s"\r\n' % (user.encode(), password.encode()))
    sock.sendall(b"b SELECT big\r\n")
    for tag in (b"a ", b"b "):
        while True:
            line = reader.line()
            if line.startswith(tag):
                check(line.split()[1] == b"OK", f"{line!r}")
                break

    before = memory_kib(pid, "VmRSS")
    if not reset_peak(pid):
        print("clear_refs refused: the peak is measured from the process's start")
    started = time.monotonic()
    sock.sendall(b"c UID FETCH 1:* BODY.PEEK[]\r\n")
    stalled = None
    seen = 0
    while True:
        line = reader.line()
        if line.startswith(b"c "):
            check(line.startswith(b"c OK"), f"tagged answer: {line!r}")
            break
        expected = b"* %d FETCH (UID %d BODY[] {" % (seen + 1, seen + 1)
        if not line.startswith(expected) or not line.endswith(b"}\r\n"):
            check(False, f"FETCH response {seen + 1}: {line[:200]!r}")
            break
        length = int(line[len(expected) : -3])
        body = reader.exactly(length)
        check(reader.line() == b")\r\n", f"FETCH response {seen + 1} ends with ')'")
        if body != message(seen, size):
            check(False, f"message {seen + 1}: {length} bytes differ from those appended")
        seen += 1
        if seen == 1:
            # A slow client: the server must wait for it, not read ahead of it.
            time.sleep(STALL)
            stalled = memory_kib(pid, "VmRSS") - before
            writer_meanwhile(host, port, tls, user, password, count)
    elapsed = time.monotonic() - started
    peak = memory_kib(pid, "VmHWM") - before
    sock.sendall(b"d LOGOUT\r\n")
    sock.close()

    check(seen == count, f"{seen} FETCH responses of {count}")
    print(
        f"UID FETCH 1:* BODY.PEEK[] of {count} x {size_kib} KiB"
        f"{' over TLS' if tls else ''}: {elapsed:.1f} s; "
        f"server memory growth: peak {peak // 1024} MiB, "
        f"while the client stalled {(stalled or 0) // 1024} MiB (bound {bound // 1024} MiB)"
    )
    check(
        peak < bound,
        f"peak memory growth {peak // 1024} MiB during the FETCH, bound {bound // 1024} MiB",
    )
    if failures:
        print("\n".join(failures))
        sys.exit(1)


main()
