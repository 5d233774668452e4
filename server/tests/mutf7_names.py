"""Modified UTF-7 mailbox names (RFC 3501 5.1.3) on Dovecot and on mailvault, side by side.

Usage: mutf7_names.py DOVECOT_PORT USER PASSWORD MAILVAULT_PORT USER PASSWORD

On each server, imapclient (which encodes and decodes folder names with its own
imap_utf7) creates "Entwürfe", "日本語", "a&b" and one name outside the BMP, then
Python's imaplib sends raw commands naming them in modified UTF-7: LIST of each,
STATUS, SELECT, APPEND, COPY, MOVE, SUBSCRIBE/LSUB, RENAME, DELETE. The raw LIST and
LSUB lines must be equal byte for byte between the servers once the hierarchy delimiter
is set aside (Dovecot's Maildir uses ".", mailvault "/"; RFC 3501 6.3.8 lets each server
choose), and each name must be imapclient's encoding of it. Names that are not modified
UTF-7 must be refused (NO or BAD) by both, and the connection must go on. Exit status 1
with the differences on stdout.
"""

import imaplib
import sys

from imapclient import IMAPClient, imap_utf7

NAMES = ["Entwürfe", "日本語", "a&b", "x\U0001F600y"]
# Dovecot also refuses these ("Mailbox name is not valid mUTF-7").
INVALID = ["&Jjo", "&AGE-", "caf\u00e9", "&U/BTFw-"]
MESSAGE = b"From: a@example.org\r\nSubject: mutf7\r\n\r\nbody\r\n"

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def refused(call, *args):
    """The answer's type; imaplib raises on BAD."""
    try:
        typ, data = call(*args)
    except imaplib.IMAP4.error as e:
        return "BAD", [str(e)]
    return typ, data


def q(name_bytes):
    return b'"' + name_bytes + b'"'


def session(port, user, password):
    # imapclient: create through its own encoder, read back through its decoder.
    with IMAPClient("127.0.0.1", port=port, ssl=False) as c:
        c.login(user, password)
        for name in NAMES + ["renamed-" + NAMES[0]]:
            if c.folder_exists(name):
                c.delete_folder(name)
        for name in NAMES:
            c.create_folder(name)
        listed = {f[2] for f in c.list_folders()}
        for name in NAMES:
            check(name in listed, f"port {port}: imapclient does not list {name!r}: {listed}")

    out = []
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(user, password)
    for name in NAMES:
        enc = imap_utf7.encode(name)
        typ, data = m.list(b'""', q(enc))
        check(typ == "OK" and len(data) == 1 and data[0] is not None,
              f"port {port}: LIST {enc!r}: {typ} {data}")
        out.append((b"LIST", data))
        typ, data = m.status(q(enc), "(MESSAGES)")
        check(typ == "OK", f"port {port}: STATUS {enc!r}: {typ} {data}")
        typ, data = m.append(q(enc), None, None, MESSAGE)
        check(typ == "OK", f"port {port}: APPEND {enc!r}: {typ} {data}")
        typ, data = m.subscribe(q(enc))
        check(typ == "OK", f"port {port}: SUBSCRIBE {enc!r}: {typ} {data}")
        typ, data = m.lsub(b'""', q(enc))
        check(typ == "OK" and len(data) == 1 and data[0] is not None,
              f"port {port}: LSUB {enc!r}: {typ} {data}")
        out.append((b"LSUB", data))
        typ, data = m.unsubscribe(q(enc))
        check(typ == "OK", f"port {port}: UNSUBSCRIBE {enc!r}: {typ} {data}")
    # A pattern with a wildcard next to an encoded section.
    typ, data = m.list(b'""', b'"*&APw-*"')
    out.append((b"LIST *&APw-*", data))
    # SELECT, COPY, MOVE between the encoded names.
    e0, e1, e2 = (imap_utf7.encode(n) for n in NAMES[:3])
    typ, data = m.select(q(e0))
    check(typ == "OK" and data == [b"1"], f"port {port}: SELECT {e0!r}: {typ} {data}")
    typ, data = m.copy("1", q(e1))
    check(typ == "OK", f"port {port}: COPY to {e1!r}: {typ} {data}")
    typ, data = m._simple_command("MOVE", "1", q(e2))
    check(typ == "OK", f"port {port}: MOVE to {e2!r}: {typ} {data}")
    m.close()
    for enc, want in [(e0, b"0"), (e1, b"2"), (e2, b"2")]:
        typ, data = m.status(q(enc), "(MESSAGES)")
        got = data[0].rsplit(b"MESSAGES ", 1)[-1].rstrip(b")") if typ == "OK" else None
        check(got == want, f"port {port}: STATUS {enc!r} after COPY/MOVE: {data}")
        out.append((b"STATUS", data))
    # RENAME to an encoded name, then DELETE.
    renamed = imap_utf7.encode("renamed-" + NAMES[0])
    typ, data = m.rename(q(e0), q(renamed))
    check(typ == "OK", f"port {port}: RENAME {e0!r} {renamed!r}: {typ} {data}")
    typ, data = m.list(b'""', q(renamed))
    out.append((b"LIST renamed", data))
    for bad in INVALID:
        raw = bad.encode("utf-8")
        typ, data = refused(m._simple_command, "CREATE", q(raw))
        check(typ in ("NO", "BAD"), f"port {port}: CREATE {raw!r} accepted: {typ} {data}")
        typ, data = refused(m.select, q(raw))
        check(typ in ("NO", "BAD"), f"port {port}: SELECT {raw!r} accepted: {typ} {data}")
        typ, _ = m.noop()
        check(typ == "OK", f"port {port}: NOOP after {raw!r}: {typ}")
    for enc in [renamed] + [imap_utf7.encode(n) for n in NAMES[1:]]:
        typ, data = m.delete(q(enc))
        check(typ == "OK", f"port {port}: DELETE {enc!r}: {typ} {data}")
    typ, data = m.list(b'""', b'"*"')
    left = [d for d in data if d and (b"&" in d)]
    check(left == [], f"port {port}: names left after DELETE: {left}")
    m.logout()
    return out


def normalized(lines):
    # The hierarchy delimiter is the server's choice (RFC 3501 6.3.8); everything else
    # of the raw line is compared.
    return [(what, [d.replace(b' "." ', b' "/" ') for d in data if d is not None])
            for what, data in lines]


def main():
    dport, duser, dpass, mport, muser, mpass = sys.argv[1:7]
    dovecot = normalized(session(int(dport), duser, dpass))
    mailvault = normalized(session(int(mport), muser, mpass))
    for (what, d), (_, m) in zip(dovecot, mailvault):
        print(what.decode(), "dovecot:", d, "mailvault:", m)
        if d != m:
            failures.append(f"{what.decode()} differs: dovecot {d} mailvault {m}")
    for (what, data) in mailvault:
        if what in (b"LIST", b"LSUB"):
            for name in NAMES:
                enc = imap_utf7.encode(name)
                if any(line.endswith(b" " + enc) or line.endswith(b' "' + enc + b'"')
                       for line in data):
                    break
            else:
                failures.append(f"mailvault {what.decode()} {data}: no name imapclient encodes")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
