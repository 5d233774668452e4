"""Sources and checks of the migration round trips (issue 15), with Python's own
`smtplib`, `imaplib` and `mailbox` modules (programs no one here wrote).

  export_check.py dovecot-fill IMAP_PORT LMTP_PORT USER PASSWORD CORPUS_DIR
      Delivers every .eml of the corpus to USER over Dovecot's LMTP, then over Dovecot's
      IMAP moves them into folders (INBOX, Sent, Archive<sep>2023, Entwürfe) and sets
      flags and keywords (system flags, $Forwarded, Work, $Label1) on them.
  export_check.py compare-maildirs WANT GOT [over-imap]
      Both Maildir++ trees read by `mailbox.Maildir`: every folder of WANT is in GOT with
      the same messages, byte for byte, with the same flags (keywords through each
      folder's dovecot-keywords) and the same modification time (the internal date);
      a folder only GOT has is empty. With `over-imap`, GOT's mail came over IMAP, which
      carries no NUL byte (RFC 9051 4.3): WANT's NULs are compared as the 0x80 the
      source served in their place.
  export_check.py compare-mboxes WANT GOT
      Both mbox files read by `mailbox.mbox`: the same messages (their Status, X-Status
      and X-Keywords fields aside), with the same flags and From-line dates.
  export_check.py dovecot-append IMAP_PORT USER PASSWORD CORPUS_DIR [nul-as-0x80]
      Empties USER's mailboxes over IMAP, then APPENDs every .eml of the corpus into
      folders (INBOX, Sent, Archive<sep>2023, Entwürfe) with flags, keywords and
      internal dates. With `nul-as-0x80`, a NUL byte is sent as 0x80 (what Dovecot
      makes of it; a server that holds to RFC 9051 4.3 refuses a literal with a NUL).
  export_check.py compare-imap PORT USER PASSWORD PORT2 USER2 PASSWORD2
      Every mailbox of the first server (its separator made `/`) holds on the second
      the same messages (BODY[] byte for byte) with the same flags and internal dates;
      a mailbox only the second has is empty.
Exit status 1 with the differences on stdout.
"""

import calendar
import glob
import imaplib
import mailbox
import os
import re
import smtplib
import sys
import time

from import_check import fetch_all

MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                 "S": "\\Seen", "T": "\\Deleted"}
MBOX_FLAGS = {"R": "\\Seen", "A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
FLAG_SETS = ["", "\\Seen", "\\Seen \\Answered", "\\Flagged $Forwarded", "\\Draft Work",
             "\\Deleted \\Seen", "$Label1 Work \\Seen", "\\Answered \\Flagged \\Seen $Forwarded"]


def difference(what, want, got):
    """A failure line for two sorted lists of messages that differ."""
    missing = [m for m in want if m not in got]
    extra = [m for m in got if m not in want]
    return (f"{what}: {len(got)} messages, {len(want)} expected; {len(missing)} not found "
            f"(first: {missing[:1]!r:.700}); {len(extra)} unexpected (first: {extra[:1]!r:.700})")


def crlf(b):
    """What an LMTP client sends: CRLF line endings and a final CRLF."""
    b = re.sub(rb"(?<!\r)\n", b"\r\n", b)
    return b if b.endswith(b"\r\n") else b + b"\r\n"


def dovecot_fill(imap_port, lmtp_port, user, password, corpus):
    files = sorted(glob.glob(os.path.join(corpus, "*", "*.eml")))
    lmtp = smtplib.LMTP("127.0.0.1", lmtp_port)
    for path in files:
        refused = lmtp.sendmail("sender@example.org", [user], crlf(open(path, "rb").read()))
        assert not refused, refused
    lmtp.quit()
    c = imaplib.IMAP4("127.0.0.1", imap_port)
    c.login(user, password)
    typ, data = c.list('""', '""')
    sep = re.search(rb'\) "(.)"', data[0]).group(1).decode()
    folders = ["Sent", "Archive" + sep + "2023", "Entw&APw-rfe"]
    for f in folders:
        typ, _ = c.create('"%s"' % f)
        assert typ == "OK", (f, typ)
    c.select("INBOX")
    typ, data = c.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    assert len(uids) == len(files), (len(uids), len(files))
    for i, uid in enumerate(uids):
        if i % 4:
            typ, _ = c.uid("MOVE", uid, '"%s"' % folders[i % 4 - 1])
            assert typ == "OK", typ
    n = 0
    for name in ["INBOX"] + folders:
        c.select('"%s"' % name)
        typ, data = c.uid("SEARCH", None, "ALL")
        for uid in data[0].split():
            flags = FLAG_SETS[n % len(FLAG_SETS)]
            n += 1
            if flags:
                typ, _ = c.uid("STORE", uid, "+FLAGS", "(%s)" % flags)
                assert typ == "OK", typ
        c.unselect()  # not CLOSE: it would expunge the \Deleted ones
    c.logout()
    print("delivered and filed", len(files))


def maildir_messages(root):
    """folder directory name ('' for INBOX) -> sorted list of (bytes, flags, mtime)."""
    md = mailbox.Maildir(root, factory=None, create=False)
    out = {}
    for name in [""] + md.list_folders():
        folder = md if name == "" else md.get_folder(name)
        keywords = {}
        kw = os.path.join(folder._path, "dovecot-keywords")
        if os.path.exists(kw):
            for line in open(kw, encoding="utf-8"):
                n, _, word = line.strip().partition(" ")
                keywords[chr(ord("a") + int(n))] = word
        messages = []
        for key in folder.keys():
            m = folder.get_message(key)
            flags = sorted(MAILDIR_FLAGS.get(c) or keywords[c] for c in m.get_flags())
            mtime = int(os.path.getmtime(os.path.join(folder._path, folder._lookup(key))))
            messages.append((folder.get_bytes(key), flags, mtime))
        out[name] = sorted(messages)
    return out


def compare_maildirs(want_root, got_root, over_imap=False):
    failures = []
    want, got = maildir_messages(want_root), maildir_messages(got_root)
    if over_imap:
        want = {name: sorted((b.replace(b"\x00", b"\x80"), f, t) for b, f, t in messages)
                for name, messages in want.items()}
    total, flagged, keyworded = 0, 0, 0
    for name, messages in sorted(want.items()):
        total += len(messages)
        flagged += sum(1 for m in messages if m[1])
        keyworded += sum(1 for m in messages if any(not f.startswith("\\") for f in m[1]))
        theirs = got.get(name)
        if theirs is None:
            failures.append(f"folder {name!r} missing; the export has {sorted(got)}")
        elif theirs != messages:
            failures.append(difference(f"folder {name!r}", messages, theirs))
    for name in sorted(set(got) - set(want)):
        if got[name]:
            failures.append(f"folder {name!r} only in the export, with {len(got[name])} messages")
    # The comparison means something only if the source really has folders and flags.
    if len(want) < 4 or total < 100 or flagged < total // 2 or keyworded < 10:
        failures.append(f"the source is too thin: {len(want)} folders, {total} messages, "
                        f"{flagged} flagged, {keyworded} with keywords")
    print("folders", sorted(want), "messages", total, "flagged", flagged,
          "with keywords", keyworded)
    return failures


def mbox_messages(path):
    out = []
    mb = mailbox.mbox(path, create=False)
    for key in mb.keys():
        m = mb.get_message(key)
        flags = sorted({MBOX_FLAGS[c] for c in m.get_flags() if c in MBOX_FLAGS})
        header, sep, body = mb.get_bytes(key).partition(b"\n\n")
        kept = [l for l in header.split(b"\n")
                if not re.match(rb"(?i)(status|x-status|x-keywords):", l)]
        date = calendar.timegm(time.strptime(m.get_from().split(" ", 1)[1].strip(),
                                             "%a %b %d %H:%M:%S %Y"))
        out.append((b"\n".join(kept) + sep + body, flags, date))
    return sorted(out)


def compare_mboxes(want_path, got_path):
    want, got = mbox_messages(want_path), mbox_messages(got_path)
    print("messages", len(want), "exported", len(got))
    if want == got:
        return [] if len(want) >= 50 else [f"only {len(want)} messages"]
    return [difference("the mbox", want, got)]


def separator(c):
    typ, data = c.list('""', '""')
    return re.search(rb'\) "(.)"', data[0]).group(1).decode()


def mailbox_name(list_line):
    """The name of a LIST response line (quoted or an atom; no quotes inside here)."""
    return re.search(rb'("[^"]*"|[^ ]+)$', list_line).group(1).strip(b'"').decode()


def dovecot_append(port, user, password, corpus, nul_as_0x80=False):
    files = sorted(glob.glob(os.path.join(corpus, "*", "*.eml")))
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login(user, password)
    sep = separator(c)
    typ, data = c.list()
    # A \Noselect parent (Archive of Archive.2023) is no mailbox: nothing to delete.
    names = [mailbox_name(l) for l in data if l and b"\\Noselect" not in l
             and b"\\NonExistent" not in l]
    for name in sorted(names, key=len, reverse=True):
        if name.upper() != "INBOX":
            typ, _ = c.delete('"%s"' % name)
            assert typ == "OK", (name, typ)
    typ, data = c.select("INBOX")
    if int(data[0]):
        c.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        c.expunge()
    c.close()
    folders = ["INBOX", "Sent", "Archive" + sep + "2023", "Entw&APw-rfe"]
    for f in folders[1:]:
        typ, _ = c.create('"%s"' % f)
        assert typ == "OK", (f, typ)
    base = 1_650_000_000
    for i, path in enumerate(files):
        flags = FLAG_SETS[i % len(FLAG_SETS)]
        date = imaplib.Time2Internaldate(base + 5000 * i)
        raw = crlf(open(path, "rb").read())
        if nul_as_0x80:
            raw = raw.replace(b"\x00", b"\x80")
        typ, data = c.append('"%s"' % folders[i % 4], "(%s)" % flags, date, raw)
        assert typ == "OK", (path, typ, data)
    c.logout()
    print("appended", len(files))


def compare_imap(a, b):
    failures = []
    ca = imaplib.IMAP4("127.0.0.1", int(a[0]))
    ca.login(a[1], a[2])
    cb = imaplib.IMAP4("127.0.0.1", int(b[0]))
    cb.login(b[1], b[2])
    sep = separator(ca)
    typ, data = ca.list()
    total = 0
    names = []
    for line in data:
        name = mailbox_name(line)
        if b"\\Noselect" not in line:
            names.append(name)
    for name in sorted(names):
        want = fetch_all(ca, name)
        got = fetch_all(cb, name.replace(sep, "/"))
        total += len(want)
        if got is None:
            failures.append(f"{name}: no such mailbox on the second server")
        elif got != want:
            failures.append(difference(name, want, got))
    typ, data = cb.list()
    for line in data:
        name = mailbox_name(line)
        if b"\\Noselect" not in line and name not in [n.replace(sep, "/") for n in names]:
            theirs = fetch_all(cb, name)
            if theirs:
                failures.append(f"{name}: only on the second server, with {len(theirs)} messages")
    if len(names) < 4 or total < 100:
        failures.append(f"the source is too thin: {names}, {total} messages")
    print("mailboxes", sorted(names), "messages", total)
    ca.logout()
    cb.logout()
    return failures


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "dovecot-fill":
        dovecot_fill(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
        sys.exit(0)
    if mode == "dovecot-append":
        dovecot_append(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5],
                       sys.argv[6:] == ["nul-as-0x80"])
        sys.exit(0)
    if mode == "compare-imap":
        failures = compare_imap(sys.argv[2:5], sys.argv[5:8])
    elif mode == "compare-maildirs":
        failures = compare_maildirs(sys.argv[2], sys.argv[3], sys.argv[4:] == ["over-imap"])
    else:
        failures = compare_mboxes(sys.argv[2], sys.argv[3])
    for f in failures:
        print("FAILED", f)
    print("%d failed checks" % len(failures))
    sys.exit(1 if failures else 0)
