"""The analysis of each message named on the command line, as Python's `email` package
computes it: the independent parser the analysis tests compare mailvault's with
(tests/suite/mail_analysis.rs). One `== path` line per message, then `key<TAB>value`
lines; a value of `?` means Python could not say (the key is not compared).

Header fields are taken as written (the last occurrence, line breaks removed, trimmed),
as mailvault keeps them for IMAP's ENVELOPE; groups come from the modern header
registry (policy.default); parts from Message.walk(), depth first, a message/rfc822
part followed by the parts of the message it holds.
"""
import email
import email.policy
import email.utils
import re
import sys

FIELDS = ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"]


def raw(msg, name):
    values = msg.get_all(name)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, str):
        return "?"
    if any(ord(c) > 127 for c in value):
        # Bytes outside ASCII: compat32 gives them back in its own way; not compared.
        return "?"
    return re.sub(r"[\r\n]", "", value).strip()


def out(key, value):
    if value is None:
        return
    value = str(value)
    if any(c in value for c in "\t\r\n"):
        value = "?"  # a line break left in a parameter: not comparable line by line
    print(f"{key}\t{value}")


def header_block(data):
    end = 0
    for line in data.splitlines(keepends=True):
        end += len(line)
        if line in (b"\n", b"\r\n"):
            return end
    return len(data)


def envelope(prefix, msg):
    for name in ["Date", "Subject", "Message-ID", "In-Reply-To"]:
        out(f"{prefix}{name.lower()}", raw(msg, name))


def groups(data):
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        for field in FIELDS:
            values = msg.get_all(field)
            if not values:
                continue
            n = 0
            for group in values[-1].groups:
                if group.display_name is not None:
                    out(f"group.{field}.{n}", f"{group.display_name}\t{len(group.addresses)}")
                    n += 1
    except Exception:
        out("group", "?")


def decoded_size(part):
    written = str(part.get("Content-Transfer-Encoding", "7bit"))
    cte = written.strip().lower()
    if written.lower() != cte:
        return "?"  # get_payload does not trim the encoding's name: it would not decode
    payload = part.get_payload(decode=True)
    if payload is None:
        return "?"
    if cte == "quoted-printable" and b"\r" in part.get_payload().encode("ascii", "surrogateescape"):
        return "?"  # quopri rewrites CRLF line breaks as LF
    if cte == "base64":
        return len(payload)
    if cte == "quoted-printable" or cte in ("7bit", "8bit", "binary"):
        return len(payload)
    return "?"


def body_parts(part):
    """Depth first, without descending into attached messages (RFC 8621 §4.1.4: the
    text body of a message is not looked for in the messages it attaches)."""
    if part.is_multipart() and part.get_content_maintype() != "message":
        for sub in part.get_payload():
            yield from body_parts(sub)
    else:
        yield part


def preview(msg):
    for part in body_parts(msg):
        if part.is_multipart() or part.get_content_type() != "text/plain":
            continue
        if part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            return "?"
        charset = part.get_content_charset() or "us-ascii"
        try:
            text = payload.decode(charset)
        except Exception:
            return "?"
        words = text.split()
        return " ".join(words)[:256].rstrip() or None
    return "?"


def analyze(path):
    data = open(path, "rb").read()
    print(f"== {path}")
    msg = email.message_from_bytes(data)
    envelope("", msg)
    date = raw(msg, "Date")
    if date and date != "?":
        parsed = email.utils.parsedate_tz(date)
        if parsed is not None and parsed[9] is not None:
            out("zone", parsed[9] // 60)
    out("header", header_block(data))
    groups(data)
    for i, part in enumerate(msg.walk()):
        out(f"part.{i}.type", part.get_content_type())
        out(f"part.{i}.description", raw(part, "Content-Description"))
        language = raw(part, "Content-Language")
        if language is not None and language != "?":
            language = ",".join(t.strip() for t in language.split(",") if t.strip())
        out(f"part.{i}.language", language)
        out(f"part.{i}.location", raw(part, "Content-Location"))
        out(f"part.{i}.md5", raw(part, "Content-MD5"))
        if part.get("Content-Disposition") is not None:
            params = part.get_params(header="content-disposition") or []
            rendered = []
            for key, value in params[1:]:
                value = email.utils.collapse_rfc2231_value(value)
                rendered.append(f"{key.lower()}={value}")
            out(f"part.{i}.disposition", ";".join(rendered) if all(r.isascii() for r in rendered) else "?")
        if part.get_content_maintype() == "message" and part.is_multipart():
            nested = part.get_payload(0)
            envelope(f"part.{i}.nested.", nested)
        elif not part.is_multipart():
            out(f"part.{i}.size", decoded_size(part))
    out("preview", preview(msg))


for path in sys.argv[1:]:
    analyze(path)
