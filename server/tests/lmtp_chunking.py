#!/usr/bin/env python3
"""LMTP CHUNKING (RFC 3030 BDAT) and streamed DATA against a running `mailvault serve`.

Usage: lmtp_chunking.py ENDPOINT IMAP_PORT USER PASSWORD USER2 PASSWORD2

ENDPOINT is `unix:/path/to/socket` or `tcp:PORT`. On a raw socket (no standard client
speaks BDAT): LHLO announces CHUNKING; a message in BDAT chunks cut inside lines and
inside a CRLF, with lines that start with a dot (BDAT carries no dot-stuffing), to two
accounts: one 250 per chunk, then one reply per recipient, and the bytes read back by
IMAP equal to what was sent; the same message sent again is stored once; BDAT without a
recipient is refused (503) and its chunk skipped; a chunk above the size limit is refused
(552 per recipient after the last chunk) with the connection going on; DATA after BDAT is
refused; RSET in the
middle of a chunked message and a connection closed inside a BDAT chunk or inside DATA
store nothing. Standard library only. Exit status 0 when every check holds.
"""

import imaplib
import socket
import struct
import sys
import time

TIMEOUT = 60


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


class Lmtp:
    def __init__(self, endpoint):
        kind, _, where = endpoint.partition(":")
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(where)
        else:
            self.sock = socket.create_connection(("127.0.0.1", int(where)), timeout=TIMEOUT)
        self.reader = self.sock.makefile("rb")
        check(self.reply()[0].startswith(b"220"), "LMTP greeting 220")

    def reply(self):
        lines = []
        while True:
            line = self.reader.readline()
            if not line:
                raise AssertionError(f"LMTP connection closed; got {lines!r}")
            lines.append(line)
            if line[3:4] == b" ":
                return lines

    def send(self, data):
        self.sock.sendall(data)

    def command(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def envelope(lmtp, recipients):
    check(lmtp.command(b"MAIL FROM:<sender@example.net>")[-1].startswith(b"250"), "MAIL 250")
    for r in recipients:
        check(lmtp.command(b"RCPT TO:<" + r.encode() + b">")[-1].startswith(b"250"), f"RCPT {r} 250")


def bdat(lmtp, message, cuts, recipients):
    """Sends `message` in BDAT chunks cut at `cuts`; returns the final replies."""
    bounds = [0] + cuts + [len(message)]
    pieces = [message[a:b] for a, b in zip(bounds, bounds[1:])]
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        head = b"BDAT %d%s\r\n" % (len(piece), b" LAST" if last else b"")
        lmtp.send(head + piece)
        if not last:
            r = lmtp.reply()[-1]
            check(r.startswith(b"250"), f"chunk {i} answered 250: {r!r}")
    return [lmtp.reply()[-1] for _ in recipients]


def message_with(subject, body_lines):
    return (
        b"From: sender@example.net\r\nTo: user@example.org\r\nSubject: " + subject + b"\r\n"
        b"Message-ID: <" + subject.replace(b" ", b"-") + b"@example.net>\r\n\r\n"
        + b"".join(line + b"\r\n" for line in body_lines)
    )


def search_subject(port, user, password, subject):
    """The messages of INBOX with this subject, as (uid, bytes), once imported."""
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    imap.login(user, password)
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", "SUBJECT", '"' + subject + '"')
    check(typ == "OK", "UID SEARCH SUBJECT OK")
    out = []
    for uid in data[0].split():
        typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        out.append((uid, fetched[0][1]))
    imap.logout()
    return out


def wait_for(port, user, password, subject, count, within=20.0):
    deadline = time.monotonic() + within
    while True:
        found = search_subject(port, user, password, subject)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def main():
    endpoint, imap_port, user, password, user2, password2 = sys.argv[1:7]
    imap_port = int(imap_port)
    tag = endpoint.split(":")[0]

    lmtp = Lmtp(endpoint)
    caps = lmtp.command(b"LHLO client.example.org")
    check(any(b"CHUNKING" in line for line in caps), f"LHLO announces CHUNKING: {caps!r}")

    # Chunks cut inside a line and between CR and LF; dot lines travel as they are.
    subject = b"chunked " + tag.encode()
    message = message_with(
        subject,
        [b"first line", b".a line that starts with a dot", b".", b"..two dots", b"x" * 3000, b"end"],
    )
    cut_crlf = message.index(b"\r\n.a line") + 1
    envelope(lmtp, [user, user2])
    replies = bdat(lmtp, message, [7, cut_crlf, cut_crlf + 40, 3100], [user, user2])
    check(
        replies[0].startswith(b"250") and user.encode() in replies[0]
        and replies[1].startswith(b"250") and user2.encode() in replies[1],
        f"one reply per recipient after BDAT LAST, in RCPT order: {replies!r}",
    )
    for who, pw in [(user, password), (user2, password2)]:
        found = wait_for(imap_port, who, pw, subject.decode(), 1)
        check(len(found) == 1, f"{who}: the chunked message arrived once")
        check(found[0][1] == message, f"{who}: read back byte for byte, dot lines unchanged")

    # The same message again (a client that lost the replies): stored once.
    envelope(lmtp, [user])
    replies = bdat(lmtp, message, [100], [user])
    check(replies[0].startswith(b"250"), f"a resend is acknowledged: {replies!r}")
    # A message sent after it, seen once imported: the resend was imported (or dropped) before.
    barrier = b"barrier " + tag.encode()
    envelope(lmtp, [user])
    bdat(lmtp, message_with(barrier, [b"after the resend"]), [], [user])
    check(len(wait_for(imap_port, user, password, barrier.decode(), 1)) == 1, "the barrier arrived")
    found = search_subject(imap_port, user, password, subject.decode())
    check(len(found) == 1, f"the resent message is stored once ({len(found)})")

    # DATA whose final ".\r\n" arrives split between the CR and the LF: nothing of the
    # terminator is stored.
    split = b"split dot " + tag.encode()
    split_message = message_with(split, [b"the end is near"])
    envelope(lmtp, [user])
    check(lmtp.command(b"DATA")[-1].startswith(b"354"), "DATA 354")
    lmtp.send(split_message + b".\r")
    time.sleep(0.3)
    lmtp.send(b"\n")
    r = lmtp.reply()[-1]
    check(r.startswith(b"250"), f"DATA with a split terminator 250: {r!r}")
    found = wait_for(imap_port, user, password, split.decode(), 1)
    check(len(found) == 1 and found[0][1] == split_message,
          f"a terminator split between CR and LF adds nothing: {found[0][1][-20:] if found else None!r}")

    # The same account named twice in one transaction: a reply each, stored once, and no
    # delivery number is burnt (the import would report it missing).
    twice = b"twice " + tag.encode()
    envelope(lmtp, [user, user])
    replies = bdat(lmtp, message_with(twice, [b"once"]), [], [user, user])
    check(all(r.startswith(b"250") for r in replies), f"two replies 250 for one account named twice: {replies!r}")
    check(len(wait_for(imap_port, user, password, twice.decode(), 1)) == 1, "stored once")

    # At most 100 recipients a transaction (RFC 5321 4.5.3.1.8 asks for at least 100):
    # the next is refused with 452, the transaction goes on.
    check(lmtp.command(b"MAIL FROM:<sender@example.net>")[-1].startswith(b"250"), "MAIL 250")
    for _ in range(100):
        r = lmtp.command(b"RCPT TO:<" + user.encode() + b">")[-1]
        if not r.startswith(b"250"):
            raise AssertionError(f"a recipient within the limit refused: {r!r}")
    r = lmtp.command(b"RCPT TO:<" + user.encode() + b">")[-1]
    check(r.startswith(b"452"), f"the 101st recipient answered 452: {r!r}")
    check(lmtp.command(b"RSET")[-1].startswith(b"250"), "RSET 250")

    # BDAT without a recipient: refused, its chunk skipped, the connection goes on.
    lmtp.send(b"BDAT 5 LAST\r\nhello")
    r = lmtp.reply()[-1]
    check(r.startswith(b"503"), f"BDAT without a transaction answered 503: {r!r}")
    check(lmtp.command(b"NOOP")[-1].startswith(b"250"), "NOOP after a refused chunk: 250")

    # DATA in the middle of a chunked message is refused.
    envelope(lmtp, [user])
    lmtp.send(b"BDAT 10\r\n0123456789")
    check(lmtp.reply()[-1].startswith(b"250"), "first chunk 250")
    check(lmtp.command(b"DATA")[-1].startswith(b"503"), "DATA after BDAT answered 503")
    # RSET drops the chunked message.
    check(lmtp.command(b"RSET")[-1].startswith(b"250"), "RSET inside a chunked message 250")
    reset = b"reset " + tag.encode()
    envelope(lmtp, [user])
    lmtp.send(b"BDAT 40\r\n" + message_with(reset, [b"never stored"])[:40])
    check(lmtp.reply()[-1].startswith(b"250"), "a chunk of the message to reset 250")
    check(lmtp.command(b"RSET")[-1].startswith(b"250"), "RSET 250")
    check(lmtp.command(b"QUIT")[-1].startswith(b"221"), "QUIT 221")
    lmtp.close()

    # A BDAT chunk too large for any integer (which smtp-proto 0.2.5 reads as a small
    # number) and one whose size is not a number: the chunk's end cannot be found, so
    # the server answers 421 and closes (RFC 5321 3.8) rather than read its bytes as
    # commands.
    for command in [b"BDAT 99999999999999999999999 LAST", b"BDAT x LAST"]:
        lmtp = Lmtp(endpoint)
        lmtp.command(b"LHLO client.example.org")
        envelope(lmtp, [user])
        lmtp.send(command + b"\r\nRSET\r\n")
        r = lmtp.reply()[-1]
        check(r.startswith(b"421"), f"{command!r} answered 421: {r!r}")
        check(lmtp.reader.readline() == b"", "and the connection closed")
        lmtp.close()

    # A chunk above the size limit (the server's default, 64 MiB): refused, its bytes
    # read and dropped, and the connection goes on (RFC 5321 3.8 closes only with 421).
    # As the last chunk, one 552 per recipient (RFC 2033 4.2); before the last, one
    # 552, and the next chunk is refused too. Nothing is stored.
    over = 64 * 1024 * 1024 + 1
    big = b"Subject: " + b"over " + tag.encode() + b"\r\n\r\n"
    big += b"x" * (over - len(big))
    lmtp = Lmtp(endpoint)
    lmtp.command(b"LHLO client.example.org")
    envelope(lmtp, [user, user2])
    lmtp.send(b"BDAT %d LAST\r\n" % over + big)
    replies = [lmtp.reply()[-1] for _ in (user, user2)]
    check(all(r.startswith(b"552") for r in replies), f"a last chunk above the limit: 552 per recipient: {replies!r}")
    check(lmtp.command(b"NOOP")[-1].startswith(b"250"), "the connection goes on after it (NOOP 250)")
    envelope(lmtp, [user])
    lmtp.send(b"BDAT %d\r\n" % over + big)
    r = lmtp.reply()[-1]
    check(r.startswith(b"552"), f"a chunk above the limit before the last: one 552: {r!r}")
    lmtp.send(b"BDAT 5 LAST\r\nxxxxx")
    r = lmtp.reply()[-1]
    check(r.startswith(b"503"), f"and the chunk after it is refused: {r!r}")
    check(lmtp.command(b"QUIT")[-1].startswith(b"221"), "QUIT 221")
    lmtp.close()
    over_subject = b"over " + tag.encode()

    # A connection that ends inside a BDAT chunk, one inside DATA, and one reset (RST)
    # inside DATA (the read fails instead of ending): nothing stored.
    def abandon(subject, how):
        lmtp = Lmtp(endpoint)
        lmtp.command(b"LHLO client.example.org")
        envelope(lmtp, [user])
        whole = message_with(subject, [b"line"] * 50)
        if how == "bdat":
            lmtp.send(b"BDAT %d LAST\r\n" % len(whole) + whole[: len(whole) // 2])
        else:
            check(lmtp.command(b"DATA")[-1].startswith(b"354"), "DATA 354")
            lmtp.send(whole)
        time.sleep(0.2)
        if how == "reset" and endpoint.startswith("tcp:"):
            lmtp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        lmtp.close()

    cut, cut_data, cut_rst = (b"cut %s %s" % (how, tag.encode()) for how in (b"chunk", b"data", b"reset"))
    abandon(cut, "bdat")
    abandon(cut_data, "data")
    abandon(cut_rst, "reset")
    time.sleep(1.0)
    barrier = b"second barrier " + tag.encode()
    lmtp = Lmtp(endpoint)
    lmtp.command(b"LHLO client.example.org")
    envelope(lmtp, [user])
    bdat(lmtp, message_with(barrier, [b"after the cuts"]), [], [user])
    lmtp.close()
    check(len(wait_for(imap_port, user, password, barrier.decode(), 1)) == 1, "the second barrier arrived")
    for subject in (reset, cut, cut_data, cut_rst, over_subject):
        found = search_subject(imap_port, user, password, subject.decode())
        check(not found, f"nothing stored of {subject.decode()!r}")
    print("all LMTP chunking checks passed on", endpoint)


if __name__ == "__main__":
    main()
