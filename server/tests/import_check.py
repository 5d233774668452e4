"""Sources and checks for `mailvault import` (issue 15), written and read by Python's own
`mailbox` and `imaplib` modules (programs no one here wrote).

  import_check.py write DIR CORPUS_DIR
      DIR/Maildir: a Maildir++ tree by `mailbox.Maildir` (INBOX, Sent, Archive.2023;
      flags and delivery dates set through `MaildirMessage`), DIR/mail.mbox: an mbox by
      `mailbox.mbox` (flags through `mboxMessage.set_flags`, dates in the From lines),
      from the corpus's .eml files.
  import_check.py check PORT USER PASSWORD DIR MBOX_MAILBOX
      Reads both sources back with `mailbox`, and every mailbox over IMAP: each message
      byte-exact (line endings CRLF, the mbox's Status/X-Status fields left out, one `>`
      off each body line `>+From `: mboxrd), with its
      flags and internal date, once. Exit status 1 with the differences on stdout.
  import_check.py count PORT USER PASSWORD N
      INBOX holds exactly N messages, with N distinct Subjects.
"""

import calendar
import glob
import imaplib
import mailbox
import os
import re
import sys
import time

MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                 "S": "\\Seen", "T": "\\Deleted"}
MBOX_FLAGS = {"R": "\\Seen", "A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
FOLDERS = [("INBOX", None), ("Sent", "Sent"), ("Archive/2023", "Archive.2023")]
MAILDIR_LETTERS = ["", "S", "RS", "FS", "D", "PS", "T"]
MBOX_LETTERS = ["", "RO", "RA", "RF", "OD", "T"]


def crlf(b):
    """The message as BODY[] serves it: CRLF line endings (a file with LF endings has
    each LF made CRLF, a CR before it being the message's own byte; a file whose every LF
    follows a CR is taken as it is), a NUL byte as 0x80 (a literal carries none, RFC
    9051 4.3)."""
    if re.search(rb"(?<!\r)\n", b):
        b = b.replace(b"\n", b"\r\n")
    return b.replace(b"\x00", b"\x80")


def write(root, corpus):
    files = sorted(glob.glob(os.path.join(corpus, "*", "*.eml")))
    md = mailbox.Maildir(os.path.join(root, "Maildir"), create=True)
    folders = {name: (md if sub is None else md.add_folder(sub)) for name, sub in FOLDERS}
    mb = mailbox.mbox(os.path.join(root, "mail.mbox"), create=True)
    base = 1_700_000_000
    for i, path in enumerate(files):
        raw = open(path, "rb").read()
        name = FOLDERS[i % len(FOLDERS)][0]
        m = mailbox.MaildirMessage(raw)
        letters = MAILDIR_LETTERS[i % len(MAILDIR_LETTERS)]
        if letters:
            m.set_subdir("cur")
            m.set_flags(letters)
        m.set_date(base + 3600 * i)
        folders[name].add(m)
        if i % 2 == 0:
            mm = mailbox.mboxMessage(raw)
            mm.set_from("sender@example.org", time.gmtime(base + 7200 * i))
            mm.set_flags(MBOX_LETTERS[i % len(MBOX_LETTERS)])
            mb.add(mm)
    # Lines that look like mbox separators: Python quotes `From ` as `>From ` (mboxo);
    # the import reads mboxrd, one `>` off each `>+From ` line.
    mm = mailbox.mboxMessage(b"Subject: quoting\n\nFrom the start\n>From quoted\nFromage\n")
    mm.set_from("sender@example.org", time.gmtime(base))
    mb.add(mm)
    mb.flush()
    mb.close()
    print("written", len(files))


def expected(root, mbox_mailbox):
    """mailbox name -> list of (bytes, flags, internal date) as the sources hold them."""
    out = {}
    md = mailbox.Maildir(os.path.join(root, "Maildir"), create=False)
    for name, sub in FOLDERS:
        folder = md if sub is None else md.get_folder(sub)
        for key in folder.keys():
            m = folder.get_message(key)
            flags = sorted(MAILDIR_FLAGS[c] for c in m.get_flags())
            date = int(os.path.getmtime(os.path.join(folder._path, folder._lookup(key))))
            out.setdefault(name, []).append((crlf(folder.get_bytes(key)), flags, date))
    mb = mailbox.mbox(os.path.join(root, "mail.mbox"), create=False)
    for key in mb.keys():
        m = mb.get_message(key)
        flags = sorted({MBOX_FLAGS[c] for c in m.get_flags() if c in MBOX_FLAGS})
        header, sep, body = mb.get_bytes(key).partition(b"\n\n")
        kept = [l for l in header.split(b"\n")
                if not re.match(rb"(?i)(status|x-status):", l)]
        raw = b"\n".join(kept) + sep + re.sub(rb"(?m)^>(>*From )", rb"\1", body)
        date = calendar.timegm(time.strptime(m.get_from().split(" ", 1)[1].strip(),
                                             "%a %b %d %H:%M:%S %Y"))
        out.setdefault(mbox_mailbox, []).append((crlf(raw), flags, date))
    return out


def fetch_all(c, name):
    """Every message of mailbox `name` as (BODY[], flags without \\Recent, internal
    date), sorted; None when it cannot be selected."""
    typ, data = c.select('"%s"' % name, readonly=True)
    if typ != "OK":
        return None
    if int(data[0]) == 0:
        return []
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[] FLAGS INTERNALDATE)")
    # Each message: (text before the literal, literal), then the text after it (FLAGS and
    # INTERNALDATE may come on either side).
    pieces = []
    for item in data:
        if isinstance(item, tuple):
            pieces.append([item[0], item[1]])
        elif pieces and item is not None:
            pieces[-1][0] += b" " + item
    got = []
    for meta, body in pieces:
        flags = sorted(f.decode() for f in imaplib.ParseFlags(meta) if f != b"\\Recent")
        date = int(time.mktime(imaplib.Internaldate2tuple(meta)))
        got.append((body, flags, date))
    return sorted(got)


def check(port, user, password, root, mbox_mailbox):
    failures = []
    want = expected(root, mbox_mailbox)
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login(user, password)
    total = 0
    for name, messages in sorted(want.items()):
        got = fetch_all(c, name)
        if got is None:
            failures.append(f"{name}: no such mailbox")
            continue
        total += len(messages)
        if sorted(got) != sorted(messages):
            missing = [m for m in messages if m not in got]
            extra = [m for m in got if m not in messages]
            failures.append(f"{name}: {len(got)} messages, {len(messages)} expected; "
                            f"{len(missing)} expected not found (first: {missing[:1]!r:.600}); "
                            f"{len(extra)} unexpected (first: {extra[:1]!r:.600})")
    typ, data = c.list()
    print("mailboxes", b" | ".join(data).decode(errors="replace"))
    sent = [l for l in data if l.endswith(b' "Sent"') or l.endswith(b" Sent")]
    if not sent or b"\\Sent" not in sent[0]:
        failures.append(f"Sent has no \\Sent role: {data!r}")
    c.logout()
    print("checked", total)
    return failures


def count(port, user, password, n):
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login(user, password)
    typ, data = c.select("INBOX", readonly=True)
    exists = int(data[0])
    typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [item[1].strip() for item in data if isinstance(item, tuple)]
    c.logout()
    failures = []
    if exists != n:
        failures.append(f"INBOX holds {exists} messages, {n} imported")
    if len(set(subjects)) != n:
        failures.append(f"{len(set(subjects))} distinct subjects of {len(subjects)}, {n} imported")
    print("exists", exists)
    return failures


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "write":
        write(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if mode == "check":
        failures = check(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        failures = count(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    for f in failures:
        print("FAILED", f)
    print("%d failed checks" % len(failures))
    sys.exit(1 if failures else 0)
