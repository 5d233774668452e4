"""IMAP4rev2 (RFC 9051) on a running `mailvault serve`, and IMAP4rev1 beside it.

Usage: rev2.py IMAP_PORT USER PASSWORD

Dovecot 2.3, the peer of the differential test, speaks IMAP4rev1 only: each check here
cites the RFC 9051 text it holds the server to. Raw sockets (every byte of the answers
is seen; imaplib knows no ESEARCH), and imapclient's `imap_utf7` (nobody here wrote it)
for the modified UTF-7 an IMAP4rev1 session must keep seeing. Exit status 1 with the
failed checks on stdout.

What RFC 9051 Appendix E changes, and what is checked here:
- 6.3.1: ENABLE IMAP4rev2 switches the session; CAPABILITY lists IMAP4rev1 and
  IMAP4rev2 (both are supported), and SEARCHRES.                        checked
- 5.1: mailbox names are UTF-8 (no modified UTF-7) in commands and responses; UTF-8
  in quoted strings (9: `quoted`).                                      checked
- 6.4.4: SEARCH answered with ESEARCH (with the TAG correlator) even without RETURN,
  as RETURN (ALL); no SEARCH response.                                  checked
- Appendix E: no RECENT response, no \\Recent flag; 9 (`status-att`, `search-key`):
  STATUS RECENT and SEARCH NEW/OLD/RECENT are no syntax (BAD).          checked
- 6.3.2: SELECT/EXAMINE return a LIST response of the mailbox; the UNSEEN code is
  gone.                                                                 checked
- 6.3.11: STATUS DELETED and SIZE.                                      checked
- 7.3.1 / 6.3.9: \\HasChildren / \\HasNoChildren; a level of hierarchy that is no
  mailbox is \\NonExistent for a `%` pattern, and with CHILDINFO under
  RECURSIVEMATCH (6.3.9, RFC 5258 3.1).                                checked
- 6.4.4.1 and 9 `seq-last-command` (SEARCHRES, RFC 5182): SAVE alone returns no
  ESEARCH; `$` in FETCH, STORE, COPY, MOVE, UID EXPUNGE (and their UID forms) and as
  a search key (`$`, `UID $`, inside NOT) names the saved messages; SAVE with MIN
  and/or MAX saves only those; a NO to a SAVE search empties it, a SEARCH without
  SAVE (and a BAD) keeps it; expunged messages leave it; SELECT, EXAMINE, UNSELECT,
  CLOSE reset it; `$` combined with other members or in a range is BAD.  checked
- RFC 4731 3.2 (with CONDSTORE, RFC 7162 3.1.5): which message's mod-sequence the
  ESEARCH MODSEQ return data reports for MIN, MAX, MIN MAX, COUNT, ALL.   checked
An IMAP4rev1 session (no ENABLE) keeps RECENT, the UNSEEN code, SEARCH responses and
modified UTF-7, and sees the rev2 session's UTF-8 names in modified UTF-7.
"""

import re
import socket
import sys

from imapclient import imap_utf7

HOST = "127.0.0.1"
TIMEOUT = 60
MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nsecond message\r\n",
]

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


class Session:
    """One IMAP connection on a raw socket; `command` returns every line up to the
    tagged one (literals included in the line they end)."""

    def __init__(self, port, user, password):
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.reader = self.sock.makefile("rb")
        self.n = 0
        check(self.reader.readline().startswith(b"* OK"), "greeting")
        lines = self.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        check(lines[-1].split()[1] == b"OK", f"LOGIN: {lines!r}")

    def command(self, line, literal=None):
        self.n += 1
        tag = b"t%d" % self.n
        self.tag = tag
        if literal is None:
            self.sock.sendall(tag + b" " + line + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + line + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines = []
        while True:
            got = self.reader.readline()
            if not got:
                raise AssertionError(f"connection closed after {line!r}; got {lines!r}")
            m = re.search(rb"\{(\d+)\}\r\n$", got)
            if m:
                got += self.reader.read(int(m.group(1))) + self.reader.readline()
            lines.append(got)
            if got.startswith(tag + b" "):
                return lines

    def status_of(self, lines):
        return lines[-1].split()[1]

    def close(self):
        self.command(b"LOGOUT")
        self.sock.close()


def untagged(lines, name):
    return [l for l in lines if l.startswith(b"* " + name)]


def check_esearch_modseq(s):
    """RFC 4731 3.2 (restated by RFC 7162 3.1.5): with a MODSEQ search key, the MODSEQ
    return data is the mod-sequence of the message MIN (or MAX) returns when only one of
    them is asked, the higher of those two messages' when MIN and MAX are asked without
    ALL or COUNT, and the highest over all the messages found otherwise. Message 2 is
    changed after message 1 so that the two differ."""
    for n in (1, 2):
        lines = s.command(b"STORE %d +FLAGS (\\Flagged)" % n)
        check(s.status_of(lines) == b"OK", f"STORE {n} \\Flagged: {lines!r}")
    lines = s.command(b"FETCH 1:2 (MODSEQ)")
    modseq = {int(n): int(m) for n, m in re.findall(rb"\* (\d+) FETCH \(.*MODSEQ \((\d+)\)", b"".join(lines))}
    check(len(modseq) == 2 and modseq[1] < modseq[2], f"two mod-sequences, message 2's higher: {lines!r}")
    if len(modseq) != 2:
        return
    for options, want in [
        (b"MIN", b"MIN 1 MODSEQ %d" % modseq[1]),
        (b"MAX", b"MAX 2 MODSEQ %d" % modseq[2]),
        (b"MIN MAX", b"MIN 1 MAX 2 MODSEQ %d" % modseq[2]),
        (b"MIN COUNT", b"MIN 1 COUNT 2 MODSEQ %d" % modseq[2]),
        (b"ALL", b"ALL 1:2 MODSEQ %d" % modseq[2]),
    ]:
        lines = s.command(b"SEARCH RETURN (%s) MODSEQ 1" % options)
        check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s") %s\r\n' % (s.tag, want)],
              f"SEARCH RETURN ({options.decode()}) MODSEQ: {lines!r}")
    # Only message 2 found: MIN and MAX are the same message.
    lines = s.command(b"SEARCH RETURN (MIN) MODSEQ %d" % modseq[2])
    check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s") MIN 2 MODSEQ %d\r\n' % (s.tag, modseq[2])],
          f"SEARCH RETURN (MIN) MODSEQ of message 2 only: {lines!r}")


def fetched(lines):
    """{sequence number: UID} of the FETCH responses in `lines`."""
    return {int(n): int(u) for n, u in re.findall(rb"\* (\d+) FETCH \([^\r\n]*?\bUID (\d+)", b"".join(lines))}


def check_searchres(s):
    """SEARCHRES (RFC 5182; RFC 9051 6.4.4.1 and `seq-last-command` in 9) on the mailbox
    `sres`: four messages, 2 and 4 with "keep" in the subject."""
    subjects = [b"drop one", b"keep two", b"drop three", b"keep four"]
    lines = s.command(b"CREATE sres")
    check(s.status_of(lines) == b"OK", f"CREATE sres: {lines!r}")
    s.command(b"CREATE sres-copy")
    for subject in subjects:
        lines = s.command(b"APPEND sres ()", b"From: a@example.org\r\nSubject: " + subject + b"\r\n\r\nbody\r\n")
        check(s.status_of(lines) == b"OK", f"APPEND to sres: {lines!r}")
    s.command(b"SELECT sres")
    uid = fetched(s.command(b"FETCH 1:* (UID)"))
    check(len(uid) == 4, f"four messages in sres: {uid!r}")
    if len(uid) != 4:
        return

    def saved(what, want):
        """`FETCH $` and `UID FETCH $` name the messages `want` (sequence numbers)."""
        for cmd in (b"FETCH $ (UID)", b"UID FETCH $ (UID)"):
            lines = s.command(cmd)
            check(s.status_of(lines) == b"OK" and fetched(lines) == {n: uid[n] for n in want},
                  f"{what}: {cmd.decode()} names {want}: {lines!r}")

    def esearch(lines):
        return untagged(lines, b"ESEARCH")

    # 2.1: "even if the "$" marker contains the empty list of messages, it must be treated
    # [...] as a valid, but non-matching list of messages. For example, the "FETCH $"
    # command would return a tagged OK response and no FETCH responses."
    saved("nothing saved yet", [])
    # 1 / 9051 6.4.4: "In absence of any other SEARCH result option, the SAVE result option
    # also suppresses any SEARCH response that would have been otherwise returned".
    lines = s.command(b'SEARCH RETURN (SAVE) SUBJECT "keep"')
    check(s.status_of(lines) == b"OK" and not esearch(lines) and not untagged(lines, b"SEARCH"),
          f"SAVE alone: OK and no ESEARCH: {lines!r}")
    saved("SAVE", [2, 4])
    # `$` as a search key, as a sequence set and after UID (9: search-key = sequence-set /
    # "UID" SP sequence-set), in a SEARCH and a UID SEARCH.
    lines = s.command(b"SEARCH $")
    check(esearch(lines) == [b'* ESEARCH (TAG "%s") ALL 2,4\r\n' % s.tag], f"SEARCH $: {lines!r}")
    lines = s.command(b"UID SEARCH UID $")
    check(esearch(lines) == [b'* ESEARCH (TAG "%s") UID ALL %d,%d\r\n' % (s.tag, uid[2], uid[4])],
          f"UID SEARCH UID $: {lines!r}")
    lines = s.command(b"SEARCH NOT $")
    check(esearch(lines) == [b'* ESEARCH (TAG "%s") ALL 1,3\r\n' % s.tag], f"SEARCH NOT $: {lines!r}")
    # 2.1: a SEARCH without SAVE does not change the variable.
    saved("SEARCH without SAVE", [2, 4])
    # STORE $ and UID STORE $ change the saved messages only.
    lines = s.command(b"STORE $ +FLAGS.SILENT (\\Flagged)")
    check(s.status_of(lines) == b"OK", f"STORE $: {lines!r}")
    lines = s.command(b"SEARCH FLAGGED")
    check(esearch(lines) == [b'* ESEARCH (TAG "%s") ALL 2,4\r\n' % s.tag], f"STORE $ flagged 2 and 4: {lines!r}")
    lines = s.command(b"UID STORE $ -FLAGS.SILENT (\\Flagged)")
    lines = s.command(b"SEARCH FLAGGED")
    check(esearch(lines) == [b'* ESEARCH (TAG "%s")\r\n' % s.tag], f"UID STORE $ unflagged them: {lines!r}")
    # COPY $ copies the saved messages.
    lines = s.command(b"COPY $ sres-copy")
    check(s.status_of(lines) == b"OK" and b"[COPYUID " in lines[-1], f"COPY $: {lines!r}")
    lines = s.command(b"STATUS sres-copy (MESSAGES)")
    check(untagged(lines, b"STATUS") == [b"* STATUS sres-copy (MESSAGES 2)\r\n"], f"COPY $ copied two: {lines!r}")
    # `$` in the SEARCH that saves is the value before it (2.1, the example "SEARCH
    # RETURN (SAVE) ... $" of 2.2): NOT $ saves 1 and 3.
    lines = s.command(b"SEARCH RETURN (SAVE) NOT $")
    check(s.status_of(lines) == b"OK", f"SEARCH RETURN (SAVE) NOT $: {lines!r}")
    saved("SAVE of NOT $", [1, 3])
    # 2.4: "If the SAVE result option is combined with both MIN and MAX result options,
    # and none of the other ESEARCH result options are present, both MIN and MAX are
    # saved"; with MIN (or MAX) alone only it; with ALL or COUNT the whole result.
    for options, want_items, want in [
        (b"SAVE MIN", b"MIN 2", [2]),
        (b"MAX SAVE", b"MAX 4", [4]),
        (b"SAVE MIN MAX", b"MIN 2 MAX 4", [2, 4]),
        (b"SAVE MIN COUNT", b"MIN 2 COUNT 2", [2, 4]),
        (b"SAVE ALL", b"ALL 2,4", [2, 4]),
    ]:
        lines = s.command(b'SEARCH RETURN (%s) SUBJECT "keep"' % options)
        check(esearch(lines) == [b'* ESEARCH (TAG "%s") %s\r\n' % (s.tag, want_items)],
              f"SEARCH RETURN ({options.decode()}) answers the other options: {lines!r}")
        saved(f"SAVE with {options.decode()}", want)
    lines = s.command(b'UID SEARCH RETURN (SAVE MIN MAX) SUBJECT "drop"')
    check(esearch(lines) == [b'* ESEARCH (TAG "%s") UID MIN %d MAX %d\r\n' % (s.tag, uid[1], uid[3])],
          f"UID SEARCH RETURN (SAVE MIN MAX): {lines!r}")
    saved("UID SEARCH SAVE MIN MAX", [1, 3])
    # 2.1: "A SEARCH command with the SAVE result option that caused the server to return
    # the NO tagged response sets the value of the search result variable to the empty
    # sequence." (here a charset the server does not support, RFC 9051 6.4.4: NO)
    lines = s.command(b"SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
    check(s.status_of(lines) == b"NO", f"SEARCH RETURN (SAVE) CHARSET KOI8-R is NO: {lines!r}")
    saved("after a NO to a SAVE search", [])
    # A BAD is a command not carried out (RFC 9051 7.1.3): the variable is kept (RFC 5182
    # names NO only). RECENT is no IMAP4rev2 search key.
    s.command(b'SEARCH RETURN (SAVE) SUBJECT "keep"')
    lines = s.command(b"SEARCH RETURN (SAVE) RECENT")
    check(s.status_of(lines) == b"BAD", f"SEARCH RETURN (SAVE) RECENT is BAD: {lines!r}")
    saved("after a BAD", [2, 4])
    # 9: `sequence-set =/ seq-last-command`: "$" is a whole sequence set, never a member
    # of a list or the end of a range; anything else is a syntax error (BAD).
    for cmd in (b"FETCH $,1 (UID)", b"FETCH 1,$ (UID)", b"FETCH 1:$ (UID)", b"UID FETCH $:* (UID)",
                b"SEARCH RETURN (SAVED) ALL"):
        lines = s.command(cmd)
        check(s.status_of(lines) == b"BAD", f"{cmd!r} is BAD: {lines!r}")
    saved("after the BADs", [2, 4])
    # 2.1: "When a message listed in the search result variable is EXPUNGEd, it is
    # automatically removed from the list." Message 2 goes; 4 becomes message 3.
    lines = s.command(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines = s.command(b"EXPUNGE")
    check(b"* 2 EXPUNGE\r\n" in lines, f"EXPUNGE of message 2: {lines!r}")
    lines = s.command(b"FETCH $ (UID)")
    check(fetched(lines) == {3: uid[4]}, f"$ lost the expunged message: {lines!r}")
    lines = s.command(b"UID SEARCH UID $")
    check(esearch(lines) == [b'* ESEARCH (TAG "%s") UID ALL %d\r\n' % (s.tag, uid[4])],
          f"UID SEARCH UID $ after EXPUNGE: {lines!r}")
    # UID EXPUNGE $ and MOVE $: the saved messages only.
    lines = s.command(b'SEARCH RETURN (SAVE) SUBJECT "three"')
    s.command(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
    lines = s.command(b"UID EXPUNGE $")
    check(untagged(lines, b"2 EXPUNGE") and len([l for l in lines if l.endswith(b" EXPUNGE\r\n")]) == 1,
          f"UID EXPUNGE $ expunged message 2 (\"drop three\") only: {lines!r}")
    s.command(b"STORE 1:* -FLAGS.SILENT (\\Deleted)")
    lines = s.command(b'SEARCH RETURN (SAVE) SUBJECT "four"')
    lines = s.command(b"MOVE $ sres-copy")
    check(s.status_of(lines) == b"OK" and b"* 2 EXPUNGE\r\n" in lines, f"MOVE $: {lines!r}")
    lines = s.command(b"FETCH 1:* (UID)")
    check(fetched(lines) == {1: uid[1]}, f"only message 1 is left: {lines!r}")
    saved("after MOVE $ (the moved message is expunged here)", [])
    # 2.1: "Upon successful completion of a SELECT or an EXAMINE command (after the
    # tagged OK response), the current search result variable is reset to the empty
    # sequence"; after UNSELECT or CLOSE no mailbox is selected, and the next SELECT
    # starts empty.
    for reset in (b"SELECT sres", b"EXAMINE sres", b"UNSELECT", b"CLOSE"):
        s.command(b"SELECT sres")
        s.command(b"SEARCH RETURN (SAVE) ALL")
        lines = s.command(b"FETCH $ (UID)")
        check(fetched(lines) == {1: uid[1]}, f"saved before {reset!r}: {lines!r}")
        lines = s.command(reset)
        check(s.status_of(lines) == b"OK", f"{reset!r}: {lines!r}")
        if reset in (b"UNSELECT", b"CLOSE"):
            lines = s.command(b"FETCH $ (UID)")
            check(s.status_of(lines) == b"BAD", f"no mailbox, no $ after {reset!r}: {lines!r}")
            s.command(b"SELECT sres")
        lines = s.command(b"FETCH $ (UID)")
        check(s.status_of(lines) == b"OK" and not fetched(lines), f"$ is empty after {reset!r}: {lines!r}")
    s.command(b"UNSELECT")
    for name in (b"sres", b"sres-copy"):
        lines = s.command(b"DELETE " + name)
        check(s.status_of(lines) == b"OK", f"DELETE {name!r}: {lines!r}")


def main(port, user, password):
    rev1 = Session(port, user, password)
    rev2 = Session(port, user, password)

    # 6.3.1: both versions advertised; ENABLE IMAP4rev2 answers ENABLED.
    caps = b" ".join(untagged(rev1.command(b"CAPABILITY"), b"CAPABILITY")).upper().split()
    check(b"IMAP4REV1" in caps and b"IMAP4REV2" in caps, f"CAPABILITY lists both versions: {caps!r}")
    # RFC 9051 6.4.4.1 is SEARCHRES (RFC 5182), advertised for IMAP4rev1 sessions.
    check(b"SEARCHRES" in caps and b"ESEARCH" in caps, f"CAPABILITY lists SEARCHRES and ESEARCH: {caps!r}")
    check(b"STATUS=SIZE" in caps, f"CAPABILITY lists STATUS=SIZE: {caps!r}")
    lines = rev2.command(b"ENABLE IMAP4rev2")
    check(untagged(lines, b"ENABLED") == [b"* ENABLED IMAP4rev2\r\n"], f"ENABLE IMAP4rev2: {lines!r}")
    lines = rev2.command(b"ENABLE IMAP4rev2")
    check(untagged(lines, b"ENABLED") == [b"* ENABLED\r\n"], f"a second ENABLE enables nothing new: {lines!r}")

    for m in MESSAGES:
        lines = rev1.command(b"APPEND INBOX ()", m)
        check(rev1.status_of(lines) == b"OK", f"APPEND: {lines!r}")

    # 5.1: UTF-8 names in commands (a UTF-8 quoted string, 9 `quoted`) and responses.
    names = ["Entwürfe", "日本語", "Brouillons/Été"]
    for name in names:
        lines = rev2.command(b'CREATE "%s"' % name.encode())
        check(rev2.status_of(lines) == b"OK", f"rev2 CREATE {name!r}: {lines!r}")
    lines = rev2.command(b'LIST "" "*"')
    listed = untagged(lines, b"LIST")
    for name in names:
        want = b'"/" "%s"\r\n' % name.encode()
        check(any(l.endswith(want) for l in listed), f"rev2 LIST shows {name!r} in UTF-8: {listed!r}")
    check(not any(b"&" in l for l in listed), f"rev2 LIST has no modified UTF-7: {listed!r}")
    # The same names through an IMAP4rev1 session: modified UTF-7 both ways.
    lines = rev1.command(b'LIST "" "*"')
    listed = untagged(lines, b"LIST")
    for name in names:
        enc = imap_utf7.encode(name)
        check(any(l.rstrip(b"\r\n").endswith(b" " + enc) or l.rstrip(b"\r\n").endswith(b' "' + enc + b'"') for l in listed),
              f"rev1 LIST shows {name!r} as {enc!r}: {listed!r}")
        check(not any(name.encode() in l for l in listed), f"rev1 LIST has no UTF-8 {name!r}: {listed!r}")
    enc = imap_utf7.encode("Entwürfe")
    lines = rev1.command(b'STATUS "%s" (MESSAGES)' % enc)
    check(untagged(lines, b"STATUS") == [b"* STATUS %s (MESSAGES 0)\r\n" % enc], f"rev1 STATUS in mUTF-7: {lines!r}")
    # RFC 3501 5.1.3 for rev1: a UTF-8 name is not modified UTF-7, so it names no
    # mailbox (NO [NONEXISTENT], as mutf7_names.py for other invalid names) and cannot
    # be created (BAD).
    lines = rev1.command('STATUS "Entwürfe" (MESSAGES)'.encode())
    check(rev1.status_of(lines) == b"NO", f"rev1 finds no UTF-8 name: {lines!r}")
    lines = rev1.command('CREATE "Entwürfe"'.encode())
    check(rev1.status_of(lines) == b"BAD", f"rev1 refuses to create a UTF-8 name: {lines!r}")
    # 5.1 for rev2: the name is what it says; "&" is a character, not modified UTF-7.
    lines = rev2.command(b'STATUS "%s" (MESSAGES)' % enc)
    check(rev2.status_of(lines) == b"NO" and b"[NONEXISTENT]" in lines[-1],
          f"rev2 does not decode modified UTF-7: {lines!r}")
    lines = rev2.command(b'CREATE "a&b"')
    check(rev2.status_of(lines) == b"OK", f"rev2 CREATE a&b: {lines!r}")
    lines = rev1.command(b'LIST "" "a&-b"')
    check(untagged(lines, b"LIST") == [b'* LIST (\\HasNoChildren) "/" a&-b\r\n'], f"rev1 sees a&b as a&-b: {lines!r}")
    lines = rev2.command('STATUS "Entwürfe" (MESSAGES)'.encode())
    check(untagged(lines, b"STATUS") == ['* STATUS "Entwürfe" (MESSAGES 0)\r\n'.encode()],
          f"rev2 STATUS echoes the UTF-8 name: {lines!r}")
    # A literal name that is not UTF-8: BAD (5.1), and the session goes on.
    lines = rev2.command(b"CREATE", b"bad\xff")
    check(rev2.status_of(lines) == b"BAD", f"rev2 refuses a name that is not UTF-8: {lines!r}")
    # 5.1: no control characters in names (a literal can carry them).
    lines = rev2.command(b"CREATE", b"tab\there")
    check(rev2.status_of(lines) == b"BAD", f"rev2 refuses a control character: {lines!r}")
    lines = rev2.command('RENAME "日本語" "日本語2"'.encode())
    check(rev2.status_of(lines) == b"OK", f"rev2 RENAME in UTF-8: {lines!r}")
    lines = rev2.command('LIST "" "日本*"'.encode())
    check(untagged(lines, b"LIST") == ['* LIST (\\HasNoChildren) "/" "日本語2"\r\n'.encode()],
          f"rev2 LIST of a UTF-8 pattern: {lines!r}")

    # 7.3.1 / 6.3.9: "Brouillons" holds "Brouillons/Été" but was never created: with a
    # "%" pattern it is listed \NonExistent (which implies \Noselect); children
    # attributes on every LIST response.
    lines = rev2.command(b'LIST "" "%"')
    listed = untagged(lines, b"LIST")
    check(b'* LIST (\\NonExistent \\HasChildren) "/" Brouillons\r\n' in listed, f"rev2 LIST % shows the hole: {listed!r}")
    check(all(b"HasChildren" in l or b"HasNoChildren" in l for l in listed), f"children attributes: {listed!r}")
    lines = rev2.command(b'LIST "" "Brouillons/%"')
    check(untagged(lines, b"LIST") == ['* LIST (\\HasNoChildren) "/" "Brouillons/Été"\r\n'.encode()],
          f"rev2 LIST Brouillons/%: {lines!r}")
    lines = rev2.command(b'LIST () "" "%" RETURN ()')
    check(b'* LIST (\\NonExistent \\HasChildren) "/" Brouillons\r\n' in untagged(lines, b"LIST"),
          f"extended LIST % shows the hole with children: {lines!r}")
    # RFC 5258 3.1 / RFC 9051 6.3.9, RECURSIVEMATCH: the hole above a subscribed
    # mailbox that the pattern does not reach is returned \NonExistent with CHILDINFO.
    lines = rev2.command('SUBSCRIBE "Brouillons/Été"'.encode())
    check(rev2.status_of(lines) == b"OK", f"SUBSCRIBE: {lines!r}")
    lines = rev2.command(b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    want = b'* LIST (\\NonExistent \\HasChildren) "/" Brouillons (CHILDINFO (SUBSCRIBED))\r\n'
    got = [l.replace(b'"CHILDINFO"', b"CHILDINFO").replace(b'"SUBSCRIBED"', b"SUBSCRIBED") for l in untagged(lines, b"LIST")]
    check(want in got, f"RECURSIVEMATCH returns the hole with CHILDINFO: {lines!r}")
    lines = rev2.command('UNSUBSCRIBE "Brouillons/Été"'.encode())
    check(rev2.status_of(lines) == b"OK", f"UNSUBSCRIBE: {lines!r}")
    lines = rev2.command(b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    check(not any(b"Brouillons" in l for l in untagged(lines, b"LIST")), f"no CHILDINFO once unsubscribed: {lines!r}")
    lines = rev1.command(b'LIST "" "%"')
    check(not any(l.endswith(b" Brouillons\r\n") for l in untagged(lines, b"LIST")),
          f"rev1 LIST % as before (no holes): {lines!r}")

    # 6.3.2: SELECT in rev2: FLAGS, EXISTS, LIST; no RECENT, no UNSEEN code.
    lines = rev2.command(b"SELECT INBOX")
    check(rev2.status_of(lines) == b"OK", f"rev2 SELECT: {lines!r}")
    check(untagged(lines, b"LIST") == [b'* LIST (\\HasNoChildren) "/" INBOX\r\n'], f"rev2 SELECT returns LIST: {lines!r}")
    check(not any(b"RECENT" in l for l in lines), f"rev2 SELECT without RECENT: {lines!r}")
    check(not any(b"[UNSEEN" in l for l in lines), f"rev2 SELECT without UNSEEN: {lines!r}")
    check(b"* 2 EXISTS\r\n" in lines, f"rev2 SELECT EXISTS: {lines!r}")
    lines = rev2.command('EXAMINE "Brouillons/Été"'.encode())
    check(untagged(lines, b"LIST") == ['* LIST (\\HasNoChildren) "/" "Brouillons/Été"\r\n'.encode()],
          f"rev2 EXAMINE returns LIST in UTF-8: {lines!r}")
    rev2.command(b"SELECT INBOX")
    # rev1 keeps what RFC 3501 6.3.1 asks for.
    lines = rev1.command(b"SELECT INBOX")
    check(b"* 0 RECENT\r\n" in lines, f"rev1 SELECT has RECENT: {lines!r}")
    check(any(b"[UNSEEN 1]" in l for l in lines), f"rev1 SELECT has UNSEEN: {lines!r}")
    check(not untagged(lines, b"LIST"), f"rev1 SELECT has no LIST: {lines!r}")

    # 6.4.4: ESEARCH with the TAG correlator, as RETURN (ALL).
    lines = rev2.command(b"SEARCH ALL")
    check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s") ALL 1:2\r\n' % rev2.tag], f"rev2 SEARCH: {lines!r}")
    check(not untagged(lines, b"SEARCH"), f"rev2 sends no SEARCH response: {lines!r}")
    lines = rev2.command(b"UID FETCH 1:* (UID)")
    uids = [int(u) for u in re.findall(rb"UID (\d+)", b"".join(untagged(lines, b"")))]
    lines = rev2.command(b"UID SEARCH ALL")
    want = b"%d:%d" % (uids[0], uids[1]) if uids[1] == uids[0] + 1 else b"%d,%d" % (uids[0], uids[1])
    check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s") UID ALL %s\r\n' % (rev2.tag, want)],
          f"rev2 UID SEARCH: {lines!r}")
    lines = rev2.command(b'SEARCH SUBJECT "two"')
    check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s") ALL 2\r\n' % rev2.tag], f"rev2 SEARCH SUBJECT: {lines!r}")
    lines = rev2.command(b"SEARCH DELETED")
    check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s")\r\n' % rev2.tag], f"rev2 SEARCH of nothing: {lines!r}")
    lines = rev2.command(b"SEARCH RETURN (COUNT) ALL")
    check(untagged(lines, b"ESEARCH") == [b'* ESEARCH (TAG "%s") COUNT 2\r\n' % rev2.tag], f"rev2 SEARCH RETURN: {lines!r}")
    # 9: no NEW, OLD, RECENT search keys; no STATUS RECENT.
    for key in (b"RECENT", b"NEW", b"NOT OLD"):
        lines = rev2.command(b"SEARCH " + key)
        check(rev2.status_of(lines) == b"BAD", f"rev2 SEARCH {key!r} is BAD: {lines!r}")
    lines = rev2.command(b"STATUS INBOX (MESSAGES RECENT)")
    check(rev2.status_of(lines) == b"BAD", f"rev2 STATUS RECENT is BAD: {lines!r}")
    check_esearch_modseq(rev2)
    # rev1 keeps RFC 3501's SEARCH response and its keys.
    lines = rev1.command(b"SEARCH ALL")
    check(untagged(lines, b"SEARCH") == [b"* SEARCH 1 2\r\n"], f"rev1 SEARCH: {lines!r}")
    lines = rev1.command(b"SEARCH RECENT")
    check(untagged(lines, b"SEARCH") == [b"* SEARCH\r\n"], f"rev1 SEARCH RECENT: {lines!r}")

    # 6.3.11: STATUS DELETED and SIZE (for both versions); no \Recent anywhere.
    lines = rev2.command(b"STORE 1 +FLAGS (\\Deleted)")
    check(not any(b"\\Recent" in l for l in lines), f"no \\Recent in FETCH FLAGS: {lines!r}")
    size = sum(len(m) for m in MESSAGES)
    for s in (rev1, rev2):
        lines = s.command(b"STATUS INBOX (MESSAGES DELETED SIZE)")
        check(untagged(lines, b"STATUS") == [b"* STATUS INBOX (MESSAGES 2 DELETED 1 SIZE %d)\r\n" % size],
              f"STATUS DELETED SIZE: {lines!r}")
    lines = rev1.command(b"STATUS INBOX (RECENT)")
    check(untagged(lines, b"STATUS") == [b"* STATUS INBOX (RECENT 0)\r\n"], f"rev1 STATUS RECENT: {lines!r}")
    lines = rev2.command(b"FETCH 1:* (FLAGS)")
    check(not any(b"\\Recent" in l for l in lines), f"no \\Recent flag: {lines!r}")

    check_searchres(rev2)
    # A rev1 session has SEARCHRES too (it is advertised for both).
    rev1.command(b"SELECT INBOX")
    lines = rev1.command(b"SEARCH RETURN (SAVE) 2")
    check(rev1.status_of(lines) == b"OK" and not untagged(lines, b"ESEARCH"), f"rev1 SAVE: {lines!r}")
    lines = rev1.command(b"FETCH $ (UID)")
    check(list(fetched(lines)) == [2], f"rev1 FETCH $: {lines!r}")

    for name in ["Entwürfe", "日本語2", "Brouillons/Été", "a&b"]:
        lines = rev2.command(b'DELETE "%s"' % name.encode())
        check(rev2.status_of(lines) == b"OK", f"rev2 DELETE {name!r}: {lines!r}")
    rev1.close()
    rev2.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    for f in failures:
        print("FAILED", f)
    print("%d failed checks" % len(failures))
    sys.exit(1 if failures else 0)
