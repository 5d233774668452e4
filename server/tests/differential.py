#!/usr/bin/env python3
"""Differential test: one set of scripted IMAP sessions against Dovecot and mailvault.

Usage: differential.py DOVECOT_PORT DOVECOT_USER DOVECOT_PASSWORD DOVECOT_HOME
                       MAILVAULT_PORT MAILVAULT_USER MAILVAULT_PASSWORD
                       OUT_DIR CORPUS_DIR

CORPUS_DIR holds the messages (`*/*.eml`; those with a NUL byte are left out: a NUL
needs BINARY's literal8 in APPEND). DOVECOT_HOME is the Dovecot
user's mail folder (removed first, so that the user starts
with an empty INBOX whose UIDs start at 1; `-` to keep it). The same sessions (APPEND of
every corpus message, FETCH of every item, SEARCH with every key, STORE, COPY, MOVE,
EXPUNGE, their UID forms, LIST, LSUB, STATUS, SELECT, EXAMINE...) run against both
servers with imaplib's connection (LOGIN through imaplib, then every command written and
every response read raw, so that each byte of each answer is compared). The responses
are parsed into values (a quoted string and a literal of the same bytes are one value)
and normalized by the rules of NORMALIZATIONS; then compared command by command (FETCH
message by message and item by item, ENVELOPE field by field). Every difference fails
the run unless KNOWN lists it, each entry with the RFC text that allows it or a pointer
to a library finding; an entry of KNOWN that no longer occurs fails it too (the list is
kept tight). Transcripts and the report are written to OUT_DIR. Standard library only.
Exit status 0 when the servers agree up to KNOWN.
"""

import imaplib
import json
import os
import re
import shutil
import sys
import time

HOST = "127.0.0.1"
TIMEOUT = 60


# ---------------------------------------------------------------- wire


class Lit:
    """A literal argument of a command."""

    def __init__(self, data: bytes):
        self.data = data


class Session:
    """One IMAP connection: imaplib connects and logs in, then commands are written and
    their responses read raw (literals kept apart)."""

    def __init__(self, port, user, password):
        self.imap = imaplib.IMAP4(HOST, port, timeout=TIMEOUT)
        self.imap.login(user, password)
        self.n = 0

    def _line(self):
        line = self.imap.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        return line

    def _response(self, first):
        """One response starting with line `first`: a list of chunks, bytes of text and
        `Lit` for each literal."""
        chunks = []
        line = first
        while True:
            m = re.search(rb"~?\{(\d+)\+?\}\r\n$", line)
            if not m:
                chunks.append(line.rstrip(b"\r\n"))
                return chunks
            chunks.append(line[: m.start()])
            chunks.append(Lit(self.imap.read(int(m.group(1)))))
            line = self._line()

    def command(self, *parts):
        """Sends a command (bytes/str parts joined by spaces, `Lit` parts as synchronizing
        literals) and returns its responses, each a list of chunks, the tagged one last."""
        self.n += 1
        tag = b"T%d" % self.n
        responses = []
        items = [p.encode() if isinstance(p, str) else p for p in parts]
        buf = tag
        for p in items:
            if isinstance(p, Lit):
                buf += b" {%d}\r\n" % len(p.data)
                self.imap.send(buf)
                # Wait for the continuation request (untagged data may come first).
                while True:
                    line = self._line()
                    if line.startswith(b"+"):
                        break
                    resp = self._response(line)
                    responses.append(resp)
                    if line.startswith(tag + b" "):
                        return responses  # refused before the literal
                buf = p.data
            else:
                buf += b" " + p
        self.imap.send(buf + b"\r\n")
        while True:
            line = self._line()
            if line.startswith(b"+"):
                continue
            resp = self._response(line)
            responses.append(resp)
            if line.startswith(tag + b" "):
                return responses

    def close(self):
        try:
            self.command("LOGOUT")
        except Exception:
            pass
        try:
            self.imap.shutdown()
        except Exception:
            pass


# ---------------------------------------------------------------- parsing


class Str(bytes):
    """An IMAP string (quoted or literal: RFC 9051 4.3, the same value either way)."""

    def __repr__(self):
        return "Str(%s)" % bytes.__repr__(self)


class Parser:
    def __init__(self, chunks):
        self.chunks = chunks
        self.ci = 0
        self.pos = 0

    def _text(self):
        while self.ci < len(self.chunks):
            c = self.chunks[self.ci]
            if isinstance(c, Lit):
                return None
            if self.pos < len(c):
                return c
            self.ci += 1
            self.pos = 0
        return b""

    def peek(self):
        t = self._text()
        if t is None:
            return "LIT"
        if self.pos >= len(t):
            return ""
        return chr(t[self.pos])

    def at_end(self):
        return self.peek() == ""

    def skip_space(self):
        while self.peek() == " ":
            self.pos += 1

    def rest(self):
        """The remaining text (literals as their bytes)."""
        out = b""
        while self.ci < len(self.chunks):
            c = self.chunks[self.ci]
            out += c.data if isinstance(c, Lit) else c[self.pos:]
            self.ci += 1
            self.pos = 0
        return out

    def value(self):
        self.skip_space()
        ch = self.peek()
        if ch == "LIT":
            lit = self.chunks[self.ci]
            self.ci += 1
            self.pos = 0
            return Str(lit.data)
        t = self._text()
        if ch == "(":
            self.pos += 1
            out = []
            while True:
                self.skip_space()
                if self.peek() == ")":
                    self.pos += 1
                    return out
                if self.peek() == "":
                    return out
                out.append(self.value())
        if ch == '"':
            self.pos += 1
            s = b""
            while self.pos < len(t) and t[self.pos : self.pos + 1] != b'"':
                if t[self.pos : self.pos + 1] == b"\\":
                    self.pos += 1
                s += t[self.pos : self.pos + 1]
                self.pos += 1
            self.pos += 1
            return Str(s)
        # An atom; brackets (BODY[HEADER.FIELDS (A B)], codes) belong to it.
        start = self.pos
        depth = 0
        while self.pos < len(t):
            c = t[self.pos : self.pos + 1]
            if c == b"[":
                depth += 1
            elif c == b"]":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and c in b" ()":
                break
            self.pos += 1
        atom = t[start : self.pos].decode("latin-1")
        if atom.upper() == "NIL":
            return None
        return atom


STATUS = {"OK", "NO", "BAD", "BYE", "PREAUTH"}


def parse_response(chunks):
    """A response as a dict: kind ('tagged', 'status', 'data'), and its fields."""
    p = Parser(chunks)
    first = p.value()
    if first == "+":
        return {"kind": "continue"}
    word = p.value()
    if isinstance(word, str) and word.upper() in STATUS:
        p.skip_space()
        code = None
        if p.peek() == "[":
            p.pos += 1
            code_words = []
            while True:
                p.skip_space()
                if p.peek() in ("]", ""):
                    p.pos += 1
                    break
                code_words.append(p.value())
            code = code_words
        text = p.rest()
        return {
            "kind": "tagged" if first != "*" else "status",
            "status": word.upper(),
            "code": code,
            "text": text.decode("utf-8", "replace"),
        }
    values = [word]
    while not p.at_end():
        values.append(p.value())
    return {"kind": "data", "values": values}


# ---------------------------------------------------------------- normalization


def upper(v):
    return v.upper() if isinstance(v, str) else v


def fold(v):
    """Case-folds the strings RFC 2045 5.1 makes case-insensitive."""
    if isinstance(v, Str):
        return Str(bytes(v).lower())
    if isinstance(v, str):
        return v.lower()
    return v


def flag_set(flags):
    out = []
    for f in flags or []:
        f = str(f)
        out.append(f.capitalize() if f.startswith("\\") else f)
    return sorted(set(out))


def uid_set(s):
    """A uid-set (RFC 4315 4: `uid-set = (uniqueid / uid-range) *("," uid-set)`) as the
    list of its UIDs in order: "1:3" and "1,2,3" are one set."""
    out = []
    for part in str(s).split(","):
        a, _, b = part.partition(":")
        if b:
            lo, hi = int(a), int(b)
            step = 1 if hi >= lo else -1
            out.extend(range(lo, hi + step, step))
        else:
            out.append(int(a))
    return out


def norm_params(params):
    """Parameter names case-folded, and the charset's value (RFC 2046 4.1.2: "the values
    of the charset parameter are NOT case sensitive")."""
    if not isinstance(params, list):
        return params
    out = []
    for i in range(0, len(params) - 1, 2):
        name = fold(params[i])
        value = params[i + 1]
        if name in ("charset", Str(b"charset")):
            value = fold(value)
        out.append([name, value])
    return out


def norm_disposition(d):
    if not isinstance(d, list) or not d:
        return d
    return [fold(d[0]), norm_params(d[1]) if len(d) > 1 else None]


def norm_body(b):
    """BODY/BODYSTRUCTURE with type, subtype, parameter names, encoding and disposition
    type case-folded (RFC 2045 5.1: "The type, subtype, and parameter names are not case
    sensitive"; 6.1: the encoding "Content-Transfer-Encoding values are not case
    sensitive")."""
    if not isinstance(b, list) or not b:
        return b
    if isinstance(b[0], list):  # multipart
        i = 0
        parts = []
        while i < len(b) and isinstance(b[i], list):
            parts.append(norm_body(b[i]))
            i += 1
        out = {"parts": parts, "subtype": fold(b[i]) if i < len(b) else None}
        ext = b[i + 1 :]
        out["params"] = norm_params(ext[0]) if ext else None
        out["disposition"] = norm_disposition(ext[1]) if len(ext) > 1 else None
        out["language"] = ext[2] if len(ext) > 2 else None
        out["location"] = ext[3] if len(ext) > 3 else None
        return out
    out = {
        "type": fold(b[0]),
        "subtype": fold(b[1]) if len(b) > 1 else None,
        "params": norm_params(b[2]) if len(b) > 2 else None,
        "id": b[3] if len(b) > 3 else None,
        "description": b[4] if len(b) > 4 else None,
        "encoding": fold(b[5]) if len(b) > 5 else None,
        "size": b[6] if len(b) > 6 else None,
    }
    rest = b[7:]
    t = out["type"]
    if t in (b"message", "message") and out["subtype"] in (b"rfc822", "rfc822") and len(rest) >= 3:
        out["envelope"] = norm_envelope(rest[0])
        out["body"] = norm_body(rest[1])
        out["lines"] = rest[2]
        rest = rest[3:]
    elif t in (b"text", "text") and rest:
        out["lines"] = rest[0]
        rest = rest[1:]
    # Extension data a server leaves out is NIL (RFC 9051 7.5.2: "Extension data, if
    # present, MUST be in the defined order"; none of it is required).
    out["md5"] = rest[0] if rest else None
    out["disposition"] = norm_disposition(rest[1]) if len(rest) > 1 else None
    out["language"] = rest[2] if len(rest) > 2 else None
    out["location"] = rest[3] if len(rest) > 3 else None
    return out


ENVELOPE_FIELDS = ["date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id"]


def norm_envelope(e):
    if not isinstance(e, list):
        return e
    return dict(zip(ENVELOPE_FIELDS, e))


class Norm:
    """Per-server normalization state: UIDVALIDITY values → V1, V2... in order of first
    appearance; the hierarchy delimiter → '/'."""

    def __init__(self):
        self.validity = {}
        self.delimiter = "/"

    def uidvalidity(self, v):
        v = str(v)
        if v not in self.validity:
            self.validity[v] = "V%d" % (len(self.validity) + 1)
        return self.validity[v]

    def mailbox(self, name):
        if isinstance(name, (Str, str)):
            s = bytes(name).decode("utf-8", "replace") if isinstance(name, Str) else name
            if self.delimiter != "/":
                s = s.replace(self.delimiter, "/")
            return s
        return name

    def code(self, code):
        if not code:
            return None
        name = upper(code[0])
        args = code[1:]
        if name == "UIDVALIDITY":
            args = [self.uidvalidity(args[0])]
        elif name in ("APPENDUID", "COPYUID"):
            args = [self.uidvalidity(args[0])] + [uid_set(a) for a in args[1:]]
        elif name == "PERMANENTFLAGS":
            args = [flag_set(args[0])]
        elif name == "CAPABILITY":
            args = sorted(upper(a) for a in args)
        elif name == "HIGHESTMODSEQ":
            args = ["M"]
        elif name == "MODIFIED":
            args = [uid_set(args[0])]
        return [name] + args

    def fetch_items(self, values):
        items = {}
        for i in range(0, len(values) - 1, 2):
            key = re.sub(r"\s+", " ", str(values[i]).upper())
            key = key.replace("BODY.PEEK[", "BODY[")
            v = values[i + 1]
            if key == "FLAGS":
                v = flag_set(v)
            elif key in ("BODYSTRUCTURE", "BODY"):
                v = norm_body(v)
            elif key == "ENVELOPE":
                v = norm_envelope(v)
            elif key == "MODSEQ":
                v = "M"
            items[key] = v
        return items

    def response(self, r):
        kind = r["kind"]
        if kind in ("tagged", "status"):
            out = {"kind": kind, "status": r["status"], "code": self.code(r["code"])}
            return out
        if kind != "data":
            return r
        values = r["values"]
        head = upper(values[0])
        if len(values) > 1 and isinstance(values[0], str) and values[0].isdigit():
            what = upper(values[1])
            if what == "FETCH":
                return {"kind": "fetch", "seq": int(values[0]), "items": self.fetch_items(values[2] if len(values) > 2 else [])}
            return {"kind": what.lower(), "n": int(values[0])}
        if head in ("LIST", "LSUB"):
            attrs = sorted(a.capitalize() if a.startswith("\\") else a for a in map(str, values[1]))
            out = {"kind": head.lower(), "attributes": attrs, "mailbox": self.mailbox(values[3])}
            if len(values) > 4:
                # RFC 5258 3.5: extended data items (CHILDINFO ("SUBSCRIBED")).
                ext = values[4]
                out["extended"] = {upper(ext[i]): [upper(v) for v in ext[i + 1]] if isinstance(ext[i + 1], list) else upper(ext[i + 1])
                                   for i in range(0, len(ext) - 1, 2)}
            return out
        if head == "ESEARCH":
            # RFC 4731 3.1: `ESEARCH [(TAG "t")] [UID] *(name value)`; the order of the
            # return data is free, ALL is a sequence set ("1:3" and "1,2,3" are one).
            out = {"kind": "esearch", "uid": False, "items": {}}
            rest = values[1:]
            if rest and isinstance(rest[0], list):
                out["tag"] = [upper(v) for v in rest[0]]
                rest = rest[1:]
            if rest and upper(rest[0]) == "UID":
                out["uid"] = True
                rest = rest[1:]
            for i in range(0, len(rest) - 1, 2):
                k, v = upper(rest[i]), rest[i + 1]
                out["items"][k] = uid_set(v) if k == "ALL" else ("M" if k == "MODSEQ" else int(str(v)))
            return out
        if head == "STATUS":
            items = {}
            lst = values[2]
            for i in range(0, len(lst) - 1, 2):
                k = upper(lst[i])
                v = lst[i + 1]
                if k == "UIDVALIDITY":
                    v = self.uidvalidity(v)
                if k == "HIGHESTMODSEQ":
                    v = "M"
                items[k] = v
            return {"kind": "status-data", "mailbox": self.mailbox(values[1]), "items": items}
        if head == "FLAGS":
            return {"kind": "flags", "flags": flag_set(values[1])}
        if head == "SEARCH":
            out = {"kind": "search", "numbers": sorted(int(v) for v in values[1:] if isinstance(v, str))}
            if any(isinstance(v, list) for v in values[1:]):
                out["modseq"] = "M"
            return out
        if head == "VANISHED":
            earlier = isinstance(values[1], list)
            return {"kind": "vanished", "earlier": earlier, "uids": uid_set(values[2] if earlier else values[1])}
        if head == "CAPABILITY":
            return {"kind": "capability", "names": sorted(upper(v) for v in values[1:])}
        return {"kind": "data", "values": values}


# ---------------------------------------------------------------- the sessions


def crlf(data: bytes) -> bytes:
    """Every lone LF made CRLF, a final CRLF (what the other tests send too)."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def code_value(responses, name):
    """The argument of response code `name` in `responses` (raw, as the server sent it)."""
    for r in responses:
        if r["kind"] in ("status", "tagged") and r["code"] and upper(r["code"][0]) == name:
            return r["code"][1]
    raise AssertionError("no %s code in %r" % (name, responses))


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# BINARY (RFC 3516): content with its transfer encoding removed, and its size; fetched
# from the first messages only (legacy/000..016): Dovecot ends a FETCH of every message
# with NO [PARSE] at legacy/017.eml, whose part Dovecot cannot convert.
BINARY_ITEMS = [
    "BINARY.PEEK[1]",
    "BINARY.PEEK[2]",
    "BINARY.PEEK[1]<0.20>",
    "BINARY.SIZE[1]",
    "BINARY.SIZE[2]",
]
BINARY_RANGE = "1:17"

FETCH_ITEMS = [
    "FLAGS",
    "UID",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2]",
    "BODY.PEEK[2.MIME]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[1.2]",
    "BODY.PEEK[2.1]",
    "BODY.PEEK[HEADER.FIELDS (From Subject Message-ID)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (From Subject Received)]",
    "BODY.PEEK[]<0.100>",
    "BODY.PEEK[TEXT]<10.50>",
    "BODY.PEEK[1]<0.20>",
    "BODY.PEEK[HEADER]<5.1000000>",
    "RFC822.HEADER",
    "(UID RFC822.SIZE FLAGS)",
    "FAST",
    "ALL",
    "FULL",
]


class Script:
    """The sessions, run against one server; `log` collects (label, responses)."""

    def __init__(self, name, port, user, password, corpus):
        self.name = name
        self.port = port
        self.user = user
        self.password = password
        self.corpus = corpus
        self.log = []
        self.norm = Norm()
        self.session = None

    def connect(self):
        if self.session:
            self.session.close()
        self.session = Session(self.port, self.user, self.password)

    def run(self, label, *parts, context=None):
        responses = [parse_response(r) for r in self.session.command(*parts)]
        self.log.append({"label": label, "responses": responses, "context": context})
        return responses

    def setup(self, *parts):
        """A command whose answer is not compared."""
        return self.session.command(*parts)

    def box(self, name):
        return quote(name.replace("/", self.norm.delimiter))

    def sessions(self):
        c = self.corpus
        # Session 1: mailboxes, APPEND, the first SELECT.
        self.connect()
        self.run("CAPABILITY", "CAPABILITY")
        r = self.run("LIST \"\" \"\"", "LIST", '""', '""')
        for x in r:
            if x["kind"] == "data" and upper(x["values"][0]) == "LIST" and isinstance(x["values"][2], Str):
                self.norm.delimiter = bytes(x["values"][2]).decode()
        self.run("LIST \"\" *", "LIST", '""', '"*"')
        self.run("LSUB \"\" *", "LSUB", '""', '"*"')
        for name in ["Corpus", "Archive", "Work/Projects", "Work/Projects", "INBOX"]:
            self.run("CREATE " + name, "CREATE", self.box(name))
        self.run("CREATE Work", "CREATE", self.box("Work"))
        self.run("LIST \"\" *", "LIST", '""', '"*"')
        self.run("LIST \"\" %", "LIST", '""', '"%"')
        self.run("LIST \"\" Work/%", "LIST", '""', self.box("Work/%"))
        self.run("LIST Work/ %", "LIST", self.box("Work/"), '"%"')
        self.run("LIST \"\" nomatch*", "LIST", '""', '"nomatch*"')
        self.run("LIST \"\" inbox", "LIST", '""', '"inbox"')
        self.run("SUBSCRIBE Corpus", "SUBSCRIBE", self.box("Corpus"))
        self.run("SUBSCRIBE Work/Projects", "SUBSCRIBE", self.box("Work/Projects"))
        self.run("LSUB \"\" *", "LSUB", '""', '"*"')
        self.run("UNSUBSCRIBE Work/Projects", "UNSUBSCRIBE", self.box("Work/Projects"))
        self.run("LSUB \"\" * again", "LSUB", '""', '"*"')
        self.run("STATUS Corpus empty", "STATUS", self.box("Corpus"), "(MESSAGES RECENT UIDNEXT UNSEEN)")
        self.run("APPEND to a missing mailbox", "APPEND", self.box("Nowhere"), Lit(crlf(c[0][1])))
        for i, (name, message) in enumerate(c):
            flags = ["()", "(\\Seen)", "(\\Flagged \\Seen)", "(\\Answered $Label1)", "(\\Draft)"][i % 5]
            date = '"%02d-%s-2024 %02d:%02d:00 +0000"' % (1 + i % 28, ["Jan", "Feb", "Mar", "Jun"][i % 4], i % 24, i % 60)
            self.run("APPEND " + name, "APPEND", self.box("Corpus"), flags, date, Lit(message), context=name)
        self.run("APPEND INBOX", "APPEND", "INBOX", "(\\Seen)", '"05-Dec-2026 10:00:00 +0100"', Lit(crlf(c[0][1])))
        self.run("STATUS Corpus", "STATUS", self.box("Corpus"), "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        self.run("STATUS INBOX", "STATUS", "INBOX", "(MESSAGES UIDNEXT UNSEEN)")
        self.run("SELECT Corpus (first)", "SELECT", self.box("Corpus"))
        self.session.close()
        self.session = None

        # Session 2: reading and changing.
        self.connect()
        self.run("EXAMINE INBOX", "EXAMINE", "INBOX")
        self.run("FETCH INBOX 1 (FLAGS INTERNALDATE RFC822.SIZE)", "FETCH", "1", "(FLAGS INTERNALDATE RFC822.SIZE)")
        self.run("SELECT Corpus", "SELECT", self.box("Corpus"))
        n = len(c)
        for item in FETCH_ITEMS:
            self.run("FETCH 1:* " + item, "FETCH", "1:*", item)
        for item in BINARY_ITEMS:
            self.run("FETCH %s %s" % (BINARY_RANGE, item), "FETCH", BINARY_RANGE, item)
        self.run("UID FETCH 1:* (FLAGS)", "UID", "FETCH", "1:*", "(FLAGS)")
        self.run("UID FETCH 3,5:7 (RFC822.SIZE)", "UID", "FETCH", "3,5:7", "(RFC822.SIZE)")
        self.run("UID FETCH 9999 (FLAGS)", "UID", "FETCH", "9999", "(FLAGS)")
        self.run("FETCH beyond the last", "FETCH", str(n + 5), "(FLAGS)")
        self.run("FETCH *:1 UID", "FETCH", "*:%d" % (n - 3), "(UID)")
        # Searches: every key of RFC 9051 6.4.4 (and RFC 3501's NEW, OLD, RECENT).
        searches = [
            "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "NEW", "OLD", "RECENT",
            "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
            "KEYWORD $Label1", "UNKEYWORD $Label1",
            "BEFORE 1-Feb-2024", "ON 2-Feb-2024", "SINCE 10-Mar-2024",
            "SENTBEFORE 1-Jan-2000", "SENTON 21-Nov-1997", "SENTSINCE 1-Jan-2010",
            "LARGER 10000", "SMALLER 1000",
            "FROM example", "FROM \"John\"", "TO example.com", "CC example", "BCC example",
            "SUBJECT test", "SUBJECT \"\"",
            "HEADER Message-ID \"<\"", "HEADER X-Mailer \"\"", "HEADER Content-Type multipart",
            "BODY the", "BODY \"Hello\"", "TEXT Content-Type", "TEXT \"unique-boundary\"",
            # Text search (issue 14): decoded text, infixes, phrases, nested messages,
            # attachment names, HTML, header fields, the empty string, NOT and OR.
            "BODY opinion", "BODY pinio", "BODY \"this is the\"", "BODY \"is my opinion\"",
            "TEXT \"funny hat\"", "BODY \"funny hat\"", "TEXT test.txt", "BODY Foobar",
            "TEXT moderator", "BODY \"\"", "TEXT \"\"", "BODY \"@\"", "BODY \", \"",
            "BODY \"<\"", "BODY href", "BODY nbsp", "BODY quoted-printable", "BODY base64",
            "HEADER X-Weird-Header-2 Hello", "HEADER Received \"\"", "HEADER Received from",
            "NOT BODY the", "OR BODY opinion TEXT moderator", "BODY the NOT TEXT attachment",
            "1:10", "2,4,6:8", "*", "UID 1:5", "UID 3,7:*",
            "NOT SEEN", "OR SEEN FLAGGED", "OR (FROM a) (TO b)", "(SEEN FLAGGED)", "NOT (OR DRAFT ANSWERED)",
            "LARGER 2000 SMALLER 5000 UNSEEN",
            "CHARSET UTF-8 SUBJECT test", "CHARSET US-ASCII BODY the",
        ]
        for key in searches:
            self.run("SEARCH " + key, "SEARCH", key)
        # Non-ASCII needles (as literals): both servers compare with i;unicode-casemap
        # (RFC 5051): `fro` finds "Frösche" (the umlaut is a combining mark after the o),
        # full-width letters find ASCII ones, and a case change finds the subject.
        for needle in ["FRÖSCHE", "frösche", "fro", "ｆｒöｓｃｈｅ", "frosche", "こんにちは", "コンニチハ"]:
            self.run("SEARCH CHARSET UTF-8 SUBJECT " + needle, "SEARCH", "CHARSET", "UTF-8", "SUBJECT", Lit(needle.encode()))
        for needle in ["Grüße", "GRÜSSE", "été", "Ελληνικά", "日本語", "réunion", "straße"]:
            self.run("SEARCH CHARSET UTF-8 BODY " + needle, "SEARCH", "CHARSET", "UTF-8", "BODY", Lit(needle.encode()))
            self.run("SEARCH CHARSET UTF-8 TEXT " + needle, "SEARCH", "CHARSET", "UTF-8", "TEXT", Lit(needle.encode()))
        self.run("UID SEARCH ALL", "UID", "SEARCH", "ALL")
        self.run("UID SEARCH FLAGGED UID 1:20", "UID", "SEARCH", "FLAGGED UID 1:20")
        self.run("SEARCH CHARSET unknown", "SEARCH", "CHARSET X-UNKNOWN ALL")
        # ESEARCH (RFC 4731): each return option, several, none (= ALL), an empty result
        # (MIN, MAX and ALL left out, COUNT 0), the UID forms, malformed options.
        for ret, key in [
            ("MIN", "ALL"), ("MAX", "SEEN"), ("ALL", "FLAGGED"), ("COUNT", "UNSEEN"),
            ("MIN MAX COUNT ALL", "OR DRAFT ANSWERED"), ("", "DRAFT"),
            ("MIN MAX COUNT ALL", "LARGER 100000000"), ("ALL", "LARGER 100000000"),
            ("COUNT", "LARGER 2000 SMALLER 5000"), ("ALL", "2,4,6:8"), ("MAX MIN", "1:5"),
        ]:
            self.run("SEARCH RETURN (%s) %s" % (ret, key), "SEARCH", "RETURN (%s) %s" % (ret, key))
        for ret, key in [("MIN MAX ALL COUNT", "SEEN"), ("ALL", "UID 3:12"), ("COUNT", "DELETED"), ("MIN", "LARGER 100000000")]:
            self.run("UID SEARCH RETURN (%s) %s" % (ret, key), "UID", "SEARCH", "RETURN (%s) %s" % (ret, key))
        self.run("SEARCH RETURN (BOGUS)", "SEARCH", "RETURN (BOGUS) ALL")
        self.run("SEARCH RETURN without criteria", "SEARCH", "RETURN (MIN)")
        # SEARCHRES (RFC 5182, which Dovecot implements): `$` before any SAVE (empty, OK),
        # SAVE alone (no ESEARCH), `$` in FETCH, UID FETCH and as a search key, SAVE with
        # MIN/MAX/COUNT, `$` in the search that saves, a NO that empties it, `$` misused.
        for label, parts in [
            ("FETCH $ before a SAVE", ("FETCH", "$", "(UID)")),
            ("SEARCH RETURN (SAVE) FLAGGED", ("SEARCH", "RETURN (SAVE) FLAGGED")),
            ("FETCH $ after SAVE", ("FETCH", "$", "(UID FLAGS)")),
            ("UID FETCH $ after SAVE", ("UID", "FETCH", "$", "(UID)")),
            ("SEARCH $", ("SEARCH", "$")),
            ("UID SEARCH UID $", ("UID", "SEARCH", "UID $")),
            ("SEARCH NOT $ SEEN", ("SEARCH", "NOT $ SEEN")),
            ("SEARCH RETURN (COUNT) $", ("SEARCH", "RETURN (COUNT) $")),
            ("SEARCH RETURN (SAVE MIN MAX) SEEN", ("SEARCH", "RETURN (SAVE MIN MAX) SEEN")),
            ("FETCH $ after SAVE MIN MAX", ("FETCH", "$", "(UID)")),
            ("SEARCH RETURN (SAVE MAX) SEEN", ("SEARCH", "RETURN (SAVE MAX) SEEN")),
            ("FETCH $ after SAVE MAX", ("FETCH", "$", "(UID)")),
            ("SEARCH RETURN (SAVE COUNT MIN) SEEN", ("SEARCH", "RETURN (SAVE COUNT MIN) SEEN")),
            ("FETCH $ after SAVE COUNT MIN", ("FETCH", "$", "(UID)")),
            ("UID SEARCH RETURN (SAVE) NOT $", ("UID", "SEARCH", "RETURN (SAVE) NOT $")),
            ("FETCH $ after SAVE of NOT $", ("FETCH", "$", "(UID)")),
            ("SEARCH without SAVE keeps $", ("SEARCH", "RETURN (MIN) ALL")),
            ("FETCH $ after a SEARCH without SAVE", ("FETCH", "$", "(UID)")),
            ("SEARCH RETURN (SAVE) with an unknown charset", ("SEARCH", "RETURN (SAVE) CHARSET X-UNKNOWN ALL")),
            ("FETCH $ after a NO to SAVE", ("FETCH", "$", "(UID)")),
            ("FETCH $,1", ("FETCH", "$,1", "(UID)")),
            ("FETCH 1:$", ("FETCH", "1:$", "(UID)")),
        ]:
            self.run(label, *parts)
        # Reading without PEEK sets \Seen.
        self.run("FETCH 1 BODY[TEXT]", "FETCH", "1", "BODY[TEXT]")
        self.run("FETCH 6 RFC822.TEXT", "FETCH", "6", "RFC822.TEXT")
        self.run("FETCH 11 RFC822", "FETCH", "11", "RFC822")
        self.run("FETCH 1,6,11 FLAGS", "FETCH", "1,6,11", "FLAGS")
        # STORE.
        self.run("STORE 1:4 +FLAGS (\\Flagged)", "STORE", "1:4", "+FLAGS", "(\\Flagged)")
        self.run("STORE 2:3 -FLAGS (\\Seen \\Flagged)", "STORE", "2:3", "-FLAGS", "(\\Seen \\Flagged)")
        self.run("STORE 5 FLAGS (\\Answered $Work)", "STORE", "5", "FLAGS", "(\\Answered $Work)")
        self.run("STORE 6:8 +FLAGS.SILENT (\\Deleted)", "STORE", "6:8", "+FLAGS.SILENT", "(\\Deleted)")
        self.run("STORE 8 -FLAGS.SILENT (\\Deleted)", "STORE", "8", "-FLAGS.SILENT", "(\\Deleted)")
        self.run("STORE 9 FLAGS.SILENT ()", "STORE", "9", "FLAGS.SILENT", "()")
        self.run("UID STORE 10:12 +FLAGS ($Label2)", "UID", "STORE", "10:12", "+FLAGS", "($Label2)")
        self.run("UID STORE 13 FLAGS.SILENT (\\Seen)", "UID", "STORE", "13", "FLAGS.SILENT", "(\\Seen)")
        self.run("STORE \\Recent", "STORE", "14", "+FLAGS", "(\\Recent)")
        self.run("FETCH 1:15 FLAGS after STORE", "FETCH", "1:15", "FLAGS")
        self.run("SEARCH DELETED after STORE", "SEARCH", "DELETED")
        self.run("SEARCH KEYWORD $Label2", "SEARCH", "KEYWORD $Label2")
        # COPY, MOVE, EXPUNGE.
        self.run("COPY 1:3 Archive", "COPY", "1:3", self.box("Archive"))
        self.run("UID COPY 4,5 Archive", "UID", "COPY", "4,5", self.box("Archive"))
        self.run("COPY to a missing mailbox", "COPY", "1", self.box("Nowhere"))
        self.run("MOVE 20 Archive", "MOVE", "20", self.box("Archive"))
        self.run("UID MOVE 30:32 Archive", "UID", "MOVE", "30:32", self.box("Archive"))
        self.run("NOOP", "NOOP")
        self.run("EXPUNGE", "EXPUNGE")
        self.run("STORE 1,2 +FLAGS.SILENT (\\Deleted)", "STORE", "1,2", "+FLAGS.SILENT", "(\\Deleted)")
        self.run("UID EXPUNGE 1", "UID", "EXPUNGE", "1")
        self.run("FETCH 1:3 (UID FLAGS)", "FETCH", "1:3", "(UID FLAGS)")
        self.run("SEARCH ALL after EXPUNGE", "SEARCH", "ALL")
        self.run("STATUS Archive", "STATUS", self.box("Archive"), "(MESSAGES UIDNEXT UNSEEN)")
        self.run("SEARCH KEYWORD $Nothing", "SEARCH", "KEYWORD $Nothing")
        self.run("CHECK", "CHECK")
        self.run("CLOSE", "CLOSE")
        self.run("FETCH after CLOSE", "FETCH", "1", "FLAGS")
        self.run("STATUS Corpus after CLOSE", "STATUS", self.box("Corpus"), "(MESSAGES UIDNEXT UNSEEN)")
        self.run("EXAMINE Archive", "EXAMINE", self.box("Archive"))
        self.run(
            "FETCH Archive 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY[HEADER.FIELDS (MESSAGE-ID)])",
            "FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
        )
        self.run("STORE in EXAMINE", "STORE", "1", "+FLAGS", "(\\Flagged)")
        self.run("FETCH Archive 1 BODY[] in EXAMINE", "FETCH", "1", "BODY[]<0.10>")
        self.run("FETCH Archive 1 FLAGS in EXAMINE", "FETCH", "1", "FLAGS")
        self.run("UNSELECT", "UNSELECT")
        self.run("RENAME Work/Projects Work/Done", "RENAME", self.box("Work/Projects"), self.box("Work/Done"))
        self.run("RENAME a missing mailbox", "RENAME", self.box("Nowhere"), self.box("Elsewhere"))
        self.run("LIST \"\" * after RENAME", "LIST", '""', '"*"')
        self.run("DELETE Work/Done", "DELETE", self.box("Work/Done"))
        self.run("DELETE a missing mailbox", "DELETE", self.box("Nowhere"))
        self.run("LIST \"\" * after DELETE", "LIST", '""', '"*"')
        for box in ["INBOX", "Corpus", "Archive"]:
            self.run("STATUS " + box + " all", "STATUS", self.box(box) if box != "INBOX" else "INBOX", "(MESSAGES RECENT UIDNEXT UNSEEN)")
        self.session.close()
        self.session = None

        # Session 3: CONDSTORE (RFC 7162 3.1). Modseqs are each server's own: the
        # commands use the values the same server gave, the comparison their effect.
        self.connect()
        self.run("ENABLE CONDSTORE", "ENABLE", "CONDSTORE")
        r = self.run("SELECT Corpus (CONDSTORE)", "SELECT", self.box("Corpus"), "(CONDSTORE)")
        h0 = code_value(r, "HIGHESTMODSEQ")
        validity = code_value(r, "UIDVALIDITY")
        self.run("FETCH 1:5 (UID MODSEQ)", "FETCH", "1:5", "(UID MODSEQ)")
        self.run("STORE 1:3 +FLAGS (\\Answered)", "STORE", "1:3", "+FLAGS", "(\\Answered)")
        self.run("FETCH 1:* (UID FLAGS) (CHANGEDSINCE h0)", "FETCH", "1:*", "(UID FLAGS)", "(CHANGEDSINCE %s)" % h0)
        self.run("STORE 4 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)", "STORE", "4", "(UNCHANGEDSINCE 1)", "+FLAGS", "(\\Seen)")
        # The modseq of a change made in this session: every earlier change is below it
        # on both servers (Dovecot numbers the messages it had from the first CONDSTORE
        # command on).
        r = self.run("FETCH 1 (MODSEQ)", "FETCH", "1", "(MODSEQ)")
        m1 = [x for x in r if x["kind"] == "data"][0]["values"][2][1][0]
        self.run("STORE 5 (UNCHANGEDSINCE m1) +FLAGS.SILENT ($Resync)", "STORE", "5", "(UNCHANGEDSINCE %s)" % m1, "+FLAGS.SILENT", "($Resync)")
        self.run("UID STORE 1:* (UNCHANGEDSINCE m1) -FLAGS.SILENT (\\Answered)", "UID", "STORE", "1:*", "(UNCHANGEDSINCE %s)" % m1, "-FLAGS.SILENT", "(\\Answered)")
        # MODSEQ n matches modseqs >= n; h0 + 1 is "changed since SELECT" on both (Dovecot
        # gives every message the mailbox's modseq when modseqs are first asked for).
        self.run("SEARCH MODSEQ h0+1", "SEARCH", "MODSEQ %d" % (int(h0) + 1))
        self.run("UID SEARCH MODSEQ h0+1 FLAGGED", "UID", "SEARCH", "MODSEQ %d FLAGGED" % (int(h0) + 1))
        self.run("SEARCH MODSEQ h0+1 after nothing matches", "SEARCH", "MODSEQ %d UNFLAGGED SEEN DRAFT" % (int(h0) + 1))
        self.run("STATUS Archive (MESSAGES HIGHESTMODSEQ)", "STATUS", self.box("Archive"), "(MESSAGES HIGHESTMODSEQ)")
        self.run("STORE 6 +FLAGS.SILENT (\\Deleted)", "STORE", "6", "+FLAGS.SILENT", "(\\Deleted)")
        self.run("EXPUNGE (CONDSTORE)", "EXPUNGE")
        self.session.close()
        self.session = None

        # Session 4: QRESYNC (RFC 7162 3.2): resynchronization from h0.
        self.connect()
        self.run("SELECT (QRESYNC) before ENABLE", "SELECT", self.box("Corpus"), "(QRESYNC (%s %s))" % (validity, h0))
        self.run("ENABLE QRESYNC", "ENABLE", "QRESYNC")
        self.run("SELECT Corpus (QRESYNC (V h0))", "SELECT", self.box("Corpus"), "(QRESYNC (%s %s))" % (validity, h0))
        self.run("UID FETCH 1:* (FLAGS) (CHANGEDSINCE h0 VANISHED)", "UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %s VANISHED)" % h0)
        self.run("FETCH VANISHED without UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %s VANISHED)" % h0)
        self.run("STORE 1 +FLAGS (\\Deleted) (QRESYNC)", "STORE", "1", "+FLAGS", "(\\Deleted)")
        self.run("EXPUNGE (QRESYNC)", "EXPUNGE")
        self.run("SELECT Corpus (QRESYNC (V h0 known))", "SELECT", self.box("Corpus"), "(QRESYNC (%s %s 1:20))" % (validity, h0))
        self.run("SELECT Corpus (QRESYNC (other UIDVALIDITY))", "SELECT", self.box("Corpus"), "(QRESYNC (1 %s))" % h0)
        self.session.close()
        self.session = None

        # Session 5: ESEARCH (RFC 4731), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819).
        self.connect()
        # mailvault subscribes a new account's INBOX, Dovecot does not (see KNOWN): the
        # same subscriptions on both from here on.
        self.setup("UNSUBSCRIBE", "INBOX")
        self.run("CREATE Work/Sub", "CREATE", self.box("Work/Sub"))
        self.run("SUBSCRIBE Work/Sub", "SUBSCRIBE", self.box("Work/Sub"))
        self.run("LIST \"\" * RETURN (CHILDREN)", "LIST", '""', '"*"', "RETURN (CHILDREN)")
        self.run("LIST \"\" * RETURN (CHILDREN STATUS (MESSAGES UNSEEN))", "LIST", '""', '"*"', "RETURN (CHILDREN STATUS (MESSAGES UNSEEN))")
        self.run("LIST \"\" % RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY))", "LIST", '""', '"%"', "RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY))")
        self.run("LIST \"\" (Corpus Archive) RETURN (STATUS (MESSAGES))", "LIST", '""', "(%s %s)" % (self.box("Corpus"), self.box("Archive")), "RETURN (STATUS (MESSAGES))")
        self.run("LIST \"\" * RETURN (SUBSCRIBED)", "LIST", '""', '"*"', "RETURN (SUBSCRIBED)")
        self.run("LIST (SUBSCRIBED) \"\" *", "LIST", "(SUBSCRIBED)", '""', '"*"')
        self.run("LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN STATUS (MESSAGES))", "LIST", "(SUBSCRIBED)", '""', '"*"', "RETURN (CHILDREN STATUS (MESSAGES))")
        self.run("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %", "LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', '"%"')
        self.run("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *", "LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', '"*"')
        self.run("LIST () \"\" %", "LIST", "()", '""', '"%"')
        self.run("LIST (SPECIAL-USE) \"\" *", "LIST", "(SPECIAL-USE)", '""', '"*"')
        self.run("LIST (SPECIAL-USE RECURSIVEMATCH) \"\" %", "LIST", "(SPECIAL-USE RECURSIVEMATCH)", '""', '"%"')
        self.run("LIST (RECURSIVEMATCH) alone", "LIST", "(RECURSIVEMATCH)", '""', '"*"')
        self.run("LIST (REMOTE RECURSIVEMATCH)", "LIST", "(REMOTE RECURSIVEMATCH)", '""', '"*"')
        self.run("LIST (BOGUS)", "LIST", "(BOGUS)", '""', '"*"')
        self.run("LIST RETURN (BOGUS)", "LIST", '""', '"*"', "RETURN (BOGUS)")
        self.run("LIST RETURN (STATUS (BOGUS))", "LIST", '""', '"*"', "RETURN (STATUS (BOGUS))")
        self.session.close()
        self.session = None


# ---------------------------------------------------------------- comparison


def jsonable(v):
    if isinstance(v, Str):
        return {"str": bytes(v).decode("latin-1")}
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def show(v, limit=400):
    s = json.dumps(jsonable(v), ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + "..."


class Difference:
    def __init__(self, label, what, dovecot, mailvault, message=None, item=None):
        self.label = label
        self.what = what
        self.dovecot = dovecot
        self.mailvault = mailvault
        self.message = message
        self.item = item

    def paths(self):
        """Where the two values differ (paths into them), at most a few."""
        out = []

        def walk(a, b, path):
            if len(out) >= 6 or a == b:
                return
            if isinstance(a, dict) and isinstance(b, dict):
                for k in list(a) + [k for k in b if k not in a]:
                    walk(a.get(k), b.get(k), path + [str(k)])
            elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
                for i, (x, y) in enumerate(zip(a, b)):
                    walk(x, y, path + [str(i)])
            else:
                out.append("/".join(path) + ": %s vs %s" % (show(a, 120), show(b, 120)))

        walk(self.dovecot, self.mailvault, [])
        return out

    def __str__(self):
        where = self.label
        if self.message:
            where += " [%s]" % self.message
        if self.item:
            where += " " + self.item
        text = "%s: %s\n    dovecot:   %s\n    mailvault: %s" % (where, self.what, show(self.dovecot), show(self.mailvault))
        if isinstance(self.dovecot, (dict, list)) and isinstance(self.mailvault, (dict, list)):
            text += "".join("\n    at " + p for p in self.paths())
        return text


def normalized(script):
    """Each command's responses, normalized."""
    out = []
    for entry in script.log:
        rs = [script.norm.response(r) for r in entry["responses"]]
        out.append({"label": entry["label"], "responses": rs, "context": entry["context"]})
    return out


def sort_key(r):
    return json.dumps(jsonable(r), sort_keys=True)


def compare(dov, mv, names, apply_rules):
    """Differences between the two normalized logs."""
    diffs = []
    assert [e["label"] for e in dov] == [e["label"] for e in mv]
    for d, m in zip(dov, mv):
        label = d["label"]
        dr, mr = apply_rules(label, d["responses"], m["responses"])
        # The tagged completion.
        dt = [r for r in dr if r["kind"] == "tagged"]
        mt = [r for r in mr if r["kind"] == "tagged"]
        if dt != mt:
            diffs.append(Difference(label, "completion", dt, mt, d["context"]))
        # FETCH responses: message by message, item by item.
        df = {}
        mf = {}
        for rs, into in ((dr, df), (mr, mf)):
            for r in rs:
                if r["kind"] == "fetch":
                    into.setdefault(r["seq"], {}).update(r["items"])
        for seq in sorted(set(df) | set(mf)):
            a, b = df.get(seq), mf.get(seq)
            msg = names.get(label, {}).get(seq) if isinstance(names.get(label), dict) else None
            if a is None or b is None:
                diffs.append(Difference(label, "FETCH response of message %d" % seq, a, b, msg))
                continue
            for key in sorted(set(a) | set(b)):
                x, y = a.get(key), b.get(key)
                if x == y:
                    continue
                if key == "ENVELOPE" and isinstance(x, dict) and isinstance(y, dict):
                    for field in ENVELOPE_FIELDS:
                        if x.get(field) != y.get(field):
                            diffs.append(Difference(label, "", x.get(field), y.get(field), msg, "ENVELOPE." + field))
                    continue
                diffs.append(Difference(label, "", x, y, msg, key))
        # EXPUNGE responses in order; everything else as a multiset.
        de = [r for r in dr if r["kind"] == "expunge"]
        me = [r for r in mr if r["kind"] == "expunge"]
        if de != me:
            diffs.append(Difference(label, "EXPUNGE responses", de, me, d["context"]))
        # Other untagged responses: by kind (a status response by its code), as multisets.
        def groups(rs):
            out = {}
            for r in rs:
                if r["kind"] in ("tagged", "fetch", "expunge", "continue"):
                    continue
                key = r["kind"]
                if key == "status":
                    key = "OK [%s]" % (r["code"][0] if r["code"] else "")
                out.setdefault(key, []).append(r)
            return {k: sorted(v, key=sort_key) for k, v in out.items()}

        dg, mg = groups(dr), groups(mr)
        for key in sorted(set(dg) | set(mg)):
            if dg.get(key) != mg.get(key):
                diffs.append(Difference(label, "", dg.get(key), mg.get(key), d["context"], key))
    return diffs


# ---------------------------------------------------------------- what may differ
#
# NORMALIZATIONS are applied to both sides before comparing; each is a difference the
# RFCs allow, quoted. KNOWN lists the differences that remain, each with its reason.

NORMALIZATIONS = [
    (
        "tags and response text",
        'RFC 9051 7.1: "The human-readable text ... is not intended to be parsed" '
        "(resp-text: the text after a status response and its code is the server's own)",
    ),
    (
        "UIDVALIDITY values (mapped to V1, V2... in order of appearance)",
        'RFC 9051 2.3.1.1: "the unique identifier validity value ... MUST be a 32-bit value" '
        "chosen by the server; only its equality over time is meaningful",
    ),
    (
        "a string sent quoted or as a literal",
        'RFC 9051 4.3: "A string is in one of two forms: synchronizing literal ... or quoted string"',
    ),
    (
        "order of FETCH data items, of flags in a list, of the untagged responses of a command "
        "(EXPUNGE responses keep their order)",
        'RFC 9051 7.5.2: "The data are pairs of data item names and their values"; '
        "msg-att = \"(\" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic / msg-att-static)) \")\"; "
        'flags are a set (2.3.2: "A message has a list of zero or more named tokens, known as flags")',
    ),
    (
        "case of MIME type, subtype, parameter names, charset values, transfer encoding, "
        "disposition type in BODYSTRUCTURE",
        'RFC 2045 5.1: "The type, subtype, and parameter names are not case sensitive"; '
        '6.1: "Content-Transfer-Encoding values are not case sensitive"; RFC 2046 4.1.2: '
        '"the values of the charset parameter are NOT case sensitive"',
    ),
    (
        "uid-set representation in APPENDUID and COPYUID (1:3 or 1,2,3)",
        'RFC 4315 4: uid-set = (uniqueid / uid-range) *("," uid-set); uid-range = (uniqueid ":" uniqueid)',
    ),
    (
        "modseq values (HIGHESTMODSEQ, MODSEQ, SEARCH's (MODSEQ n)): each server's own",
        'RFC 7162 3.1.1: "mod-sequence ... is a 63-bit unsigned integer ... assigned by the server"; '
        "only their order within one server means something: the sessions use each server's "
        "own values (CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ, QRESYNC) and compare what they select",
    ),
    (
        "\\Recent flags and RECENT counts (Dovecot keeps them; mailvault, an IMAP4rev2 design, "
        "reports none)",
        'RFC 9051 Appendix E: "The \\Recent flag ... RECENT response, and RECENT STATUS item were '
        'deprecated" (IMAP4rev2 has no recent messages; RFC 3501 2.3.2 defines \\Recent for rev1); '
        "SEARCH RECENT and NEW are compared (nothing is recent in Dovecot's second session either)",
    ),
    (
        "the hierarchy delimiter (Dovecot's Maildir++ uses '.', mailvault '/')",
        'RFC 9051 6.3.9: "The returned mailbox names MUST match the supplied pattern ... '
        'hierarchy delimiter ... chosen by the server"; mailbox names are built with each '
        "server's own delimiter (LIST \"\" \"\")",
    ),
    (
        "the MAILBOXID response code on SELECT, EXAMINE and CREATE (mailvault's alone: "
        "Dovecot 2.3.19 has no OBJECTID; objectid_properties checks it)",
        'RFC 8474 4.1: "The server MUST return a MAILBOXID response code in the OK response to '
        'CREATE ... and in the untagged OK response to SELECT / EXAMINE" only for a server '
        "that advertises OBJECTID",
    ),
    (
        "the \\Marked / \\Unmarked LIST attributes (Dovecot's, not mailvault's)",
        'RFC 3501 7.2.2: "\\Unmarked The mailbox does not contain any additional messages '
        'since the last time the mailbox was selected" (RFC 9051 7.3.1 drops the attribute '
        "from IMAP4rev2's list): a hint a server may give or not",
    ),
]


def apply_rules(label, dr, mr):
    dr = [dict(r) for r in dr]
    mr = [dict(r) for r in mr]
    for rs in (dr, mr):
        for r in rs:
            if r["kind"] == "capability":
                # Checked apart (see check_capabilities).
                r["names"] = ["..."]
            if r["kind"] in ("tagged", "status") and r["code"] and r["code"][0] == "CAPABILITY":
                r["code"] = ["CAPABILITY", "..."]
            # \Recent: see NORMALIZATIONS.
            if r["kind"] == "recent":
                r["n"] = "-"
            if r["kind"] == "fetch" and "FLAGS" in r["items"]:
                r["items"] = dict(r["items"])
                r["items"]["FLAGS"] = [f for f in r["items"]["FLAGS"] if f != "\\recent"]
            if r["kind"] == "status-data" and "RECENT" in r["items"]:
                r["items"] = dict(r["items"], RECENT="-")
            # MAILBOXID and \Unmarked: see NORMALIZATIONS.
            if r["kind"] == "tagged" and r["code"] and upper(r["code"][0]) == "MAILBOXID":
                r["code"] = None
            if r["kind"] in ("list", "lsub"):
                r["attributes"] = [a for a in r["attributes"] if a not in ("\\marked", "\\unmarked")]
    mr = [r for r in mr if not (r["kind"] == "status" and r["code"] and upper(r["code"][0]) == "MAILBOXID")]
    return dr, mr


class Known:
    """A difference that remains, and why it may: matches the differences whose command
    label and item (regular expressions, matched whole) and message (one of `messages`,
    any when None) fit. An entry that matches nothing, or names a message it matches
    nothing of, fails the run: fixed differences leave the list."""

    def __init__(self, why, label=".*", item=None, messages=None, check=None):
        self.why = why
        self.check = check
        self.label = re.compile(label)
        self.item = re.compile(item) if item is not None else None
        self.messages = set(messages) if messages is not None else None
        self.hits = 0
        self.messages_hit = set()

    def stale_messages(self):
        """The listed messages no difference matched."""
        return sorted(self.messages - self.messages_hit) if self.messages is not None else []

    def matches(self, d):
        if not self.label.fullmatch(d.label):
            return False
        if self.item is not None and not self.item.fullmatch(d.item or ""):
            return False
        if self.messages is not None and d.message not in self.messages:
            return False
        if self.check is not None and not self.check(d, DOVECOT_ITEMS):
            return False
        return True


# Dovecot's FETCH items of each corpus message (by name), for the checks of KNOWN.
DOVECOT_ITEMS = {}


def lenient_subpart(d, dovecot):
    """Dovecot answers BODY[n.1] of a part n that is neither multipart nor a message with
    part n itself; mailvault with an empty string."""
    m = re.fullmatch(r"BODY\[(\d+)\.1\]", d.item or "")
    return bool(m) and d.mailvault == Str(b"") and d.dovecot == dovecot.get(d.message, {}).get("BODY[%s]" % m.group(1))


def same_binary_partial(d, dovecot):
    """A partial BINARY: Dovecot names the item `BINARY[1]<0>`, mailvault `BINARY[1]`
    (RFC 3516's response grammar has no origin); the bytes must be equal."""
    if d.item == "BINARY[1]<0>":
        return d.mailvault is None
    return d.item == "BINARY[1]" and d.dovecot is None and d.mailvault == dovecot.get(d.message, {}).get("BINARY[1]<0>")


def messages(*names):
    return set(names)


# Messages whose MIME structure mail-parser (the library's analysis, src/mail/mime.rs)
# reads otherwise than Dovecot: malformed boundaries, headers without a blank line,
# nested messages without a body.
MIME_STRUCTURE = messages(
    "malformed/000.eml", "malformed/001.eml", "malformed/002.eml", "malformed/004.eml",
    "malformed/007.eml", "malformed/008.eml", "malformed/009.eml", "malformed/011.eml",
    "malformed/012.eml", "malformed/013.eml", "malformed/014.eml", "malformed/017.eml",
    "malformed/020.eml", "malformed/021.eml", "malformed/022.eml", "rfc/008.eml",
    "thirdparty/011.eml", "thirdparty/015.eml",
)

KNOWN = [
    Known(
        "a partial BINARY: Dovecot answers BINARY[1]<0>, mailvault BINARY[1], the same bytes "
        "(RFC 3516 4.2's response is `\"BINARY\" section-binary SP (nstring / literal8)`, "
        "no origin: unlike BODY[]<origin> in RFC 9051 7.5.2)",
        label=r"FETCH 1:17 BINARY\.PEEK\[1\]<0\.20>", item=r"BINARY\[1\](<0>)?",
        check=same_binary_partial,
    ),
    Known(
        "BINARY of a multipart part (legacy/015.eml part 1): Dovecot re-encodes the parts "
        "inside it to binary, rewriting their Content-Transfer-Encoding fields; mailvault "
        "gives the multipart's bytes (RFC 3516 4.2 removes a part's own transfer encoding, "
        "and RFC 2045 6.4: a multipart's is always 7bit, 8bit or binary, nothing to remove)",
        label=r"FETCH 1:17 BINARY\.(PEEK|SIZE)\[1\]", item=r"BINARY(\.SIZE)?\[1\]",
        messages=["legacy/015.eml"],
    ),
    Known(
        "legacy/049.eml holds CR CR LF line ends: Dovecot (Maildir stores LF ends) drops the "
        "lone CR, mailvault keeps the bytes it was given (RFC 5322 2.3: \"CR and LF MUST only "
        "occur together as CRLF; they MUST NOT appear independently in the body\": the "
        "message is invalid and servers differ on it)",
        label="FETCH .*", messages=["legacy/049.eml"],
    ),
    Known(
        "BODY[n.1] of a part n that is neither multipart nor message/rfc822: Dovecot returns "
        "part n, mailvault an empty string (RFC 9051 6.4.5: \"Every message has at least one "
        "part number. Messages that do not use MIME, and MIME messages that are not multipart "
        "and have no encapsulated message within them, only have a part 1\": a text part "
        "inside a multipart has no part 1 below it)",
        label="FETCH 1:\\* .*", item=r"BODY\[\d+\.1\]", check=lenient_subpart,
    ),
    Known(
        "library: see findings (F1, MIME structure of malformed messages)",
        label="FETCH 1:\\* .*", item=r"BODY|BODYSTRUCTURE|BODY\[.*", messages=MIME_STRUCTURE,
    ),
    Known(
        "library: see findings (F3, ENVELOPE display names decoded, and subjects of "
        "messages whose header mail-parser reads otherwise; RFC 9051 7.5.2 wants them as "
        "written, encoded words and all; date, subject, ids and groups are given as written "
        "since the analysis keeps them)",
        label="FETCH 1:\\* (ENVELOPE|ALL|FULL)", item="ENVELOPE.(subject|to|from|sender|reply-to|cc|bcc)",
        messages=[
        "legacy/001.eml", "legacy/002.eml", "legacy/003.eml", "legacy/005.eml",
        "legacy/007.eml", "legacy/008.eml", "legacy/009.eml", "legacy/010.eml",
        "legacy/011.eml", "legacy/012.eml", "legacy/013.eml", "legacy/015.eml",
        "legacy/016.eml", "legacy/017.eml", "legacy/018.eml", "legacy/020.eml",
        "legacy/022.eml", "legacy/023.eml", "legacy/024.eml", "legacy/025.eml",
        "legacy/026.eml", "legacy/027.eml", "legacy/035.eml", "legacy/036.eml",
        "legacy/039.eml", "legacy/040.eml", "legacy/041.eml", "legacy/043.eml",
        "legacy/045.eml", "legacy/046.eml", "legacy/050.eml", "legacy/051.eml",
        "legacy/052.eml", "legacy/053.eml",
        ],
    ),
    Known(
        "library: see findings (F4, BODYSTRUCTURE fields the analysis keeps decoded rather "
        "than as written: parameters of the type and the disposition (RFC 2231 `name*`, "
        "encoded words, raw 8-bit bytes made U+FFFD: legacy/016, 023, 026, 045, 047, "
        "thirdparty/010), mail-parser's reading of rfc/001's external-body parameters, "
        "thirdparty/004's `8 bit` encoding, thirdparty/007's part size; nested envelopes: a "
        "display name with a comment (rfc/002), an address without a domain (rfc/009, F5). "
        "Description, language, location, MD5, disposition parameters and nested "
        "envelopes are given from the analysis: legacy/031, 041, rfc/004, thirdparty/008, "
        "012, 016..019 now equal Dovecot's)",
        label="FETCH 1:\\* (BODY|BODYSTRUCTURE|FULL)", item="BODY|BODYSTRUCTURE",
        messages=[
            "legacy/016.eml", "legacy/023.eml", "legacy/026.eml", "legacy/045.eml",
            "legacy/047.eml", "rfc/001.eml", "rfc/002.eml", "rfc/009.eml", "thirdparty/004.eml",
            "thirdparty/007.eml", "thirdparty/010.eml",
        ],
    ),
    Known(
        "a new account's INBOX is subscribed in mailvault (the library creates it so), not in "
        "Dovecot: RFC 9051 6.3.7 (SUBSCRIBE) leaves the initial subscriptions to the server",
        label="LSUB .*", item="lsub",
    ),
    Known(
        "SENTBEFORE / SENTSINCE of a message without a Date header Dovecot can read: Dovecot "
        "compares 1 Jan 1970, mailvault matches nothing (RFC 9051 6.4.4 defines these keys "
        "only by \"the message's [RFC5322] Date: header\"); and malformed/019.eml, whose Date "
        "Dovecot does not use for SENTSINCE",
        label="SEARCH SENT(BEFORE 1-Jan-2000|SINCE 1-Jan-2010)", item="search",
    ),
    Known(
        "library: see findings (F5, addresses without a domain or in group syntax are dropped "
        "by the analysis: rfc/001.eml, rfc/004.eml; FROM/TO do not match them)",
        label=r"SEARCH OR \(FROM a\) \(TO b\)", item="search",
    ),
    Known(
        "text/html: Dovecot searches the markup (`<`, `&nbsp;`, addresses in `mailto:` "
        "links), mailvault the text the HTML shows (issue 14: \"HTML reduced to text\"; "
        "RFC 9051 6.4.4 BODY: \"Messages that contain the specified string in the body of "
        "the message\", which it does not define for markup)",
        label=r'SEARCH BODY ("@"|"<"|nbsp)', item="search",
    ),
    Known(
        "malformed/022.eml: a message/rfc822 part that holds no header, only a line of text: "
        "mail-parser reads the line as the nested message's body (BODY finds its \", \"), "
        "Dovecot as a broken header line (skipped by BODY); RFC 5322 2.2 makes it neither",
        label=r'SEARCH BODY ", "', item="search",
    ),
    Known(
        "BADCHARSET: mailvault lists the charsets it supports, Dovecot none (RFC 9051 7.1: "
        "\"Optionally followed by a parenthesized list of charsets\")",
        label="SEARCH (CHARSET unknown|RETURN \\(SAVE\\) with an unknown charset)", item=None,
    ),
    Known(
        "STORE +FLAGS of a message that had the flag already: mailvault sends its FETCH FLAGS "
        "as for the others, Dovecot none (RFC 9051 6.4.6: \"the server SHOULD send an "
        "untagged FETCH response\" for the messages of the set)",
        label=r"STORE 1:(4 \+FLAGS \(\\Flagged|3 \+FLAGS \(\\Answered)\)",
    ),
    Known(
        "STORE .SILENT once CONDSTORE is on: Dovecot's FETCH response carries MODSEQ without "
        "the UID, mailvault both (RFC 7162 3.2.4: \"Once a CONDSTORE enabling command is "
        "issued by the client, the server MUST automatically include both UID and "
        "mod-sequence data in all subsequent untagged FETCH responses\")",
        label=r"STORE (5 \(UNCHANGEDSINCE m1\) \+FLAGS\.SILENT \(\$Resync\)|6 \+FLAGS\.SILENT \(\\Deleted\))",
        item="UID",
    ),
    Known(
        "Dovecot defines a keyword named in SEARCH KEYWORD and announces it (FLAGS, "
        "PERMANENTFLAGS); mailvault announces the keywords messages carry (RFC 9051 7.3.5: "
        "\"Flags other than the system flags can also exist, depending on server "
        "implementation\")",
        label=r"SEARCH KEYWORD \$Nothing", item="flags|OK \\[PERMANENTFLAGS\\]",
    ),
    Known(
        "STORE in a mailbox selected with EXAMINE: Dovecot answers OK and changes nothing, "
        "mailvault NO (RFC 9051 6.3.3: \"no changes to the permanent state of the mailbox, "
        "including per-user state, are permitted\"; the answer is not specified)",
        label="STORE in EXAMINE",
    ),
]


OBJECTID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")

THREAD_PARENT = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: parent\r\n"
                 b"Message-ID: <objectid-parent@example.org>\r\n\r\nparent\r\n")
THREAD_REPLY = (b"From: b@example.org\r\nTo: a@example.org\r\nSubject: Re: parent\r\n"
                b"Message-ID: <objectid-reply@example.org>\r\n"
                b"In-Reply-To: <objectid-parent@example.org>\r\n"
                b"References: <objectid-parent@example.org>\r\n\r\nreply\r\n")
THREAD_OTHER = (b"From: c@example.org\r\nTo: a@example.org\r\nSubject: unrelated\r\n"
                b"Message-ID: <objectid-other@example.org>\r\n\r\nother\r\n")


def copyuid_destination(responses):
    """The destination uid-set of the COPYUID code (RFC 4315) in `responses`."""
    for r in responses:
        if r["kind"] in ("status", "tagged") and r["code"] and upper(r["code"][0]) == "COPYUID":
            return r["code"][3]
    raise AssertionError("no COPYUID code in %r" % (responses,))


def objectid_properties(port, user, password, dovecot):
    """OBJECTID (RFC 8474) and STATUS APPENDLIMIT (RFC 7889) on mailvault alone: Dovecot
    2.3.19 implements neither (what it answers is printed, not compared). The ids are
    each server's own, so their values are not compared but their shape
    (`objectid = 1*255(ALPHA / DIGIT / "_" / "-")`) and the properties RFC 8474 gives
    them: a MAILBOXID is the same in SELECT, CREATE and STATUS and survives RENAME (4.1:
    "the server MUST keep the same MAILBOXID for the source and destination"); an
    EMAILID is the same for a message and its copies, by COPY or MOVE (5.1: "the server
    MUST return the same EMAILID for both the source and destination messages") and
    differs between messages; a THREADID is the same within a thread (5.2) and differs
    from an unrelated message's. Returns the failures."""
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    def parsed(session, *parts):
        return [parse_response(r) for r in session.command(*parts)]

    def datas(responses, head):
        return [r["values"] for r in responses if r["kind"] == "data" and upper(r["values"][0]) == head]

    def fetch_items(responses):
        out = {}
        for r in responses:
            v = r.get("values", [])
            if r["kind"] == "data" and len(v) > 2 and upper(v[1]) == "FETCH":
                items = v[2]
                out[int(v[0])] = {upper(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
        return out

    def one_id(v):
        # `"(" objectid ")"` parses as a one-element list.
        return str(v[0]) if isinstance(v, list) and len(v) == 1 else None

    d = Session(*dovecot)
    for parts in (("STATUS", "INBOX", "(MAILBOXID)"), ("STATUS", "INBOX", "(APPENDLIMIT)")):
        r = parsed(d, *parts)
        print("Dovecot: %s: %s %s" % (" ".join(parts), r[-1]["status"], r[-1]["text"][:60]))
    d.close()

    s = Session(port, user, password)
    caps = [upper(str(v)) for v in datas(parsed(s, "CAPABILITY"), "CAPABILITY")[0][1:]]
    check("OBJECTID" in caps, "CAPABILITY lists OBJECTID")
    limit = [c.split("=", 1)[1] for c in caps if c.startswith("APPENDLIMIT=")]
    r = parsed(s, "STATUS", "INBOX", "(APPENDLIMIT MESSAGES)")
    st = datas(r, "STATUS")
    items = st[0][2] if st else []
    got = {upper(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
    check(limit and str(got.get("APPENDLIMIT")) == limit[0],
          "STATUS APPENDLIMIT %s is the APPENDLIMIT= of CAPABILITY %s" % (got.get("APPENDLIMIT"), limit))

    # MAILBOXID: CREATE, SELECT, STATUS, RENAME.
    r = parsed(s, "CREATE", "ObjectIds")
    created = one_id(code_value(r, "MAILBOXID")) if r[-1]["status"] == "OK" else None
    check(created is not None and OBJECTID_SHAPE.match(created) is not None,
          "CREATE answers [MAILBOXID (id)] of the objectid shape: %r" % created)
    r = parsed(s, "STATUS", "ObjectIds", "(MAILBOXID)")
    st = datas(r, "STATUS")
    status_id = one_id(st[0][2][1]) if st and len(st[0][2]) > 1 else None
    check(status_id == created, "STATUS MAILBOXID %r = CREATE's %r" % (status_id, created))
    parsed(s, "RENAME", "ObjectIds", "ObjectIds2")
    r = parsed(s, "STATUS", "ObjectIds2", "(MAILBOXID)")
    st = datas(r, "STATUS")
    renamed = one_id(st[0][2][1]) if st and len(st[0][2]) > 1 else None
    check(renamed == created, "MAILBOXID survives RENAME: %r = %r" % (renamed, created))
    r = parsed(s, "STATUS", "INBOX", "(MAILBOXID)")
    inbox = one_id(datas(r, "STATUS")[0][2][1])
    check(inbox != created, "mailboxes have different MAILBOXIDs")

    # EMAILID and THREADID.
    for message in (THREAD_PARENT, THREAD_REPLY, THREAD_OTHER):
        s.command("APPEND", "ObjectIds2", Lit(message))
    r = parsed(s, "SELECT", "ObjectIds2")
    selected = one_id(code_value(r, "MAILBOXID"))
    check(selected == created, "SELECT answers [MAILBOXID (id)] = CREATE's: %r" % selected)
    ids = fetch_items(parsed(s, "FETCH", "1:3", "(EMAILID THREADID)"))
    email = {n: one_id(ids.get(n, {}).get("EMAILID")) for n in (1, 2, 3)}
    thread = {n: one_id(ids.get(n, {}).get("THREADID")) for n in (1, 2, 3)}
    check(all(v and OBJECTID_SHAPE.match(v) for v in list(email.values()) + list(thread.values())),
          "FETCH EMAILID / THREADID have the objectid shape: %r %r" % (email, thread))
    check(len(set(email.values())) == 3, "three messages, three EMAILIDs")
    check(thread[1] == thread[2], "a reply is in its parent's THREADID: %r = %r" % (thread[1], thread[2]))
    check(thread[3] != thread[1], "an unrelated message is in another thread")
    r = parsed(s, "UID", "FETCH", "1:*", "(UID EMAILID)")
    uid_fetch = fetch_items(r)
    check(one_id(uid_fetch.get(1, {}).get("EMAILID")) == email[1], "UID FETCH EMAILID = FETCH EMAILID")
    r = parsed(s, "COPY", "1", "INBOX")
    copy_uid = str(copyuid_destination(r))
    r = parsed(s, "MOVE", "3", "INBOX")
    move_uid = str(copyuid_destination(r))
    parsed(s, "SELECT", "INBOX")
    ids = fetch_items(parsed(s, "UID", "FETCH", "%s,%s" % (copy_uid, move_uid), "(UID EMAILID THREADID)"))
    by_uid = {str(v.get("UID")): v for v in ids.values()}
    check(one_id(by_uid.get(copy_uid, {}).get("EMAILID")) == email[1],
          "COPY keeps the EMAILID (RFC 8474 5.1): %r" % by_uid.get(copy_uid))
    check(one_id(by_uid.get(move_uid, {}).get("EMAILID")) == email[3],
          "MOVE keeps the EMAILID (RFC 8474 5.1): %r" % by_uid.get(move_uid))
    check(one_id(by_uid.get(copy_uid, {}).get("THREADID")) == thread[1], "a copy keeps its THREADID")
    s.close()
    return failures


def main():
    args = sys.argv[1:]
    d_port, d_user, d_pass, d_home, m_port, m_user, m_pass, out_dir, root = args
    files = sorted(
        os.path.join(root, group, f)
        for group in os.listdir(root)
        if os.path.isdir(os.path.join(root, group))
        for f in os.listdir(os.path.join(root, group))
        if f.endswith(".eml")
    )
    corpus = []
    for path in files:
        data = open(path, "rb").read()
        name = "/".join(path.split("/")[-2:])
        if b"\0" in data:
            # A NUL needs BINARY's literal8 (RFC 3516); CHAR8 excludes it (RFC 9051 4.3).
            continue
        corpus.append((name, crlf(data)))
    if d_home != "-" and os.path.exists(d_home):
        shutil.rmtree(d_home)
    os.makedirs(out_dir, exist_ok=True)
    scripts = []
    for name, port, user, password in (("dovecot", d_port, d_user, d_pass), ("mailvault", m_port, m_user, m_pass)):
        t0 = time.time()
        s = Script(name, int(port), user, password, corpus)
        s.sessions()
        print("%s: %d commands in %.1f s" % (name, len(s.log), time.time() - t0))
        scripts.append(s)
    dov, mv = (normalized(s) for s in scripts)
    for s, log in zip(scripts, (dov, mv)):
        with open(os.path.join(out_dir, s.name + ".json"), "w") as f:
            json.dump(jsonable(log), f, indent=1, ensure_ascii=False)
    # FETCH 1:* of Corpus: sequence number n is corpus message n until the first STORE.
    names = {}
    for e in dov:
        if e["label"].startswith(("FETCH 1:* ", "FETCH %s " % BINARY_RANGE, "UID FETCH")):
            names[e["label"]] = {i + 1: corpus[i][0] for i in range(len(corpus))}
    # CAPABILITY: each server lists what it implements (RFC 9051 7.2.2: "the capability
    # listing contains a space-separated listing of capability names that the server
    # supports"): mailvault's must be among Dovecot's, but SPECIAL-USE (RFC 6154; this
    # Dovecot has no special-use mailboxes configured) and APPENDLIMIT=<n> (RFC 7889 2:
    # "the server supports the APPENDLIMIT extension"; Dovecot 2.3.19 does not implement
    # it: no capability, STATUS APPENDLIMIT answered BAD).
    caps = []
    for log in (dov, mv):
        names_ = [r["names"] for e in log if e["label"] == "CAPABILITY" for r in e["responses"] if r["kind"] == "capability"]
        caps.append(set(names_[0]) if names_ else set())
    # OBJECTID (RFC 8474) neither: Dovecot 2.3.19 does not implement it (no capability,
    # STATUS MAILBOXID and FETCH EMAILID answered BAD); its properties are checked on
    # mailvault alone below (objectid_properties).
    # IMAP4rev2 neither: Dovecot 2.3 speaks IMAP4rev1 only; mailvault advertises both
    # (RFC 9051 6.3.1: the client switches with ENABLE IMAP4rev2, which these sessions
    # never send, so everything compared here is IMAP4rev1); rev2.py checks the rev2
    # behaviour against the RFC text.
    # QUOTA neither: the Dovecot of scripts/peers.sh runs without its quota plugin;
    # sessions.py checks mailvault's QUOTA (RFC 9208) with imaplib's quota commands.
    extra = {c for c in caps[1] - caps[0] - {"SPECIAL-USE", "OBJECTID", "IMAP4REV2", "QUOTA", "QUOTA=RES-STORAGE"} if not c.startswith("APPENDLIMIT=")}
    print("capabilities: Dovecot %d, mailvault %s" % (len(caps[0]), " ".join(sorted(caps[1]))))
    if "IMAP4REV1" not in caps[1] or extra:
        print("DIFFERENCE CAPABILITY: mailvault advertises what Dovecot does not: %s" % sorted(extra))
        return 1
    for e in dov:
        if e["label"] in names:
            for r in e["responses"]:
                if r["kind"] == "fetch" and r["seq"] in names[e["label"]]:
                    DOVECOT_ITEMS.setdefault(names[e["label"]][r["seq"]], {}).update(r["items"])
    diffs = compare(dov, mv, names, apply_rules)
    unexplained = []
    with open(os.path.join(out_dir, "differences.txt"), "w") as f:
        for d in diffs:
            known = next((k for k in KNOWN if k.matches(d)), None)
            f.write(("KNOWN (%s) " % known.why[:60] if known else "") + str(d) + "\n")
            if known:
                known.hits += 1
                known.messages_hit.add(d.message)
            else:
                unexplained.append(d)
    compared = sum(len(e["responses"]) for e in dov)
    print("compared %d commands (%d responses from Dovecot); %d differences, %d listed as known"
          % (len(dov), compared, len(diffs), len(diffs) - len(unexplained)))
    for k in KNOWN:
        print("  known, %4d times: %s" % (k.hits, k.why.splitlines()[0][:150]))
    stale = [k for k in KNOWN if k.hits == 0 or k.stale_messages()]
    for d in unexplained:
        print("DIFFERENCE " + str(d))
    for k in stale:
        print("STALE known difference (no longer occurs: remove it): " + k.why.splitlines()[0]
              + (" (messages %s)" % ", ".join(k.stale_messages()) if k.hits else ""))
    failures = objectid_properties(int(m_port), m_user, m_pass, (int(d_port), d_user, d_pass))
    return 1 if unexplained or stale or failures else 0


if __name__ == "__main__":
    sys.exit(main())
