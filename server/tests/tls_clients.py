"""Python's imaplib over TLS against mailvault (issue 13: IMAPS, STARTTLS, AUTHENTICATE).

Run by tls.rs with: HOST IMAP_PORT IMAPS_PORT CAFILE USER PASSWORD MESSAGE_FILE.
The server listens on HOST (127.0.0.2); a connection from 127.0.0.1 is not from the
server's own address, so a password is refused there before STARTTLS (LOGINDISABLED),
and accepted from a socket bound to HOST itself. MESSAGE_FILE holds the one message in
INBOX, byte for byte as IMAP returns it.

Each check prints one line; any failure raises (non-zero exit, traceback on stderr).
"""

import base64
import imaplib
import socket
import ssl
import sys

host, imap_port, imaps_port, cafile, user, password, message_file = sys.argv[1:8]
imap_port, imaps_port = int(imap_port), int(imaps_port)
expected = open(message_file, "rb").read()
ctx = ssl.create_default_context(cafile=cafile)


def caps(m):
    typ, data = m.capability()
    assert typ == "OK", (typ, data)
    return set(data[0].decode().upper().split())


def plain(authzid, authcid, pw):
    return f"{authzid}\0{authcid}\0{pw}".encode()


def expect_bad(m, *command):
    # imaplib refuses to send a command outside its states: pretend.
    state, m.state = m.state, "NONAUTH"
    try:
        typ, data = m._simple_command(*command)
    except imaplib.IMAP4.error as e:
        assert " BAD " in str(e), e
        return str(e)
    finally:
        m.state = state
    raise AssertionError(f"{command}: {typ} {data}, expected BAD")


def fetch_inbox(m, how):
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"1"], (typ, data)
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK", (typ, data)
    got = data[0][1]
    assert got == expected, f"{how}: fetched {len(got)} bytes, expected {len(expected)}"
    print(f"{how}: FETCH BODY[] byte-exact ({len(got)} bytes)")
    m.logout()


# --- IMAPS (implicit TLS), AUTHENTICATE PLAIN in the continuation form (imaplib does not
# use SASL-IR): the server sends an empty challenge, the client its response.
m = imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx)
c = caps(m)
assert "STARTTLS" not in c and "LOGINDISABLED" not in c, c
assert {"AUTH=PLAIN", "SASL-IR"} <= c, c
typ, data = m.authenticate("PLAIN", lambda _challenge: plain("", user, password))
assert typ == "OK", (typ, data)
assert "AUTH=PLAIN" not in caps(m), "AUTH=PLAIN after login"
fetch_inbox(m, "IMAPS + AUTHENTICATE PLAIN (continuation)")

# --- Plain port from another address: no password in the clear.
m = imaplib.IMAP4(host, imap_port)
c = caps(m)
assert {"STARTTLS", "LOGINDISABLED"} <= c and "AUTH=PLAIN" not in c, c
try:
    m.login(user, password)
    raise AssertionError("LOGIN accepted in the clear")
except imaplib.IMAP4.error as e:
    assert "PRIVACYREQUIRED" in str(e), e
try:
    m.authenticate("PLAIN", lambda _challenge: plain("", user, password))
    raise AssertionError("AUTHENTICATE accepted in the clear")
except imaplib.IMAP4.error as e:
    assert "PRIVACYREQUIRED" in str(e), e
print("plain port: CAPABILITY has STARTTLS LOGINDISABLED, LOGIN and AUTHENTICATE refused [PRIVACYREQUIRED]")

# --- STARTTLS, then the capability list changes and LOGIN works.
m.starttls(ssl_context=ctx)
c = caps(m)
assert "STARTTLS" not in c and "LOGINDISABLED" not in c and "AUTH=PLAIN" in c, c
assert "active already" in expect_bad(m, "STARTTLS")
m.login(user, password)
expect_bad(m, "STARTTLS")
fetch_inbox(m, "STARTTLS + LOGIN")

# --- STARTTLS, AUTHENTICATE with SASL-IR (RFC 4959), the refusals.
m = imaplib.IMAP4(host, imap_port)
m.starttls(ssl_context=ctx)
wrong = base64.b64encode(plain("", user, "wrong " + password)).decode()
typ, data = m._simple_command("AUTHENTICATE", "PLAIN", wrong)
assert typ == "NO" and b"AUTHENTICATIONFAILED" in data[-1], (typ, data)
other = base64.b64encode(plain("bob@example.org", user, password)).decode()
typ, data = m._simple_command("AUTHENTICATE", "PLAIN", other)
assert typ == "NO" and b"AUTHORIZATIONFAILED" in data[-1], (typ, data)
typ, data = m._simple_command("AUTHENTICATE", "CRAM-MD5")
assert typ == "NO", (typ, data)
try:
    # imaplib answers the challenge with "*" when the callback returns None.
    m.authenticate("PLAIN", lambda _challenge: None)
    raise AssertionError("a cancelled AUTHENTICATE completed")
except imaplib.IMAP4.error as e:
    assert "BAD" in str(e), e
assert m.state == "NONAUTH"
print("AUTHENTICATE: wrong password NO, other authzid NO, CRAM-MD5 NO, '*' BAD")
good = base64.b64encode(plain(user, user, password)).decode()
typ, data = m._simple_command("AUTHENTICATE", "PLAIN", good)
assert typ == "OK", (typ, data)
m.state = "AUTH"
fetch_inbox(m, "STARTTLS + AUTHENTICATE PLAIN (SASL-IR, authzid = authcid)")

# --- From the server's own address the plain port takes a password (Dovecot's rule).
s = socket.create_connection((host, imap_port), source_address=(host, 0))
m = imaplib.IMAP4(host, imap_port)
m.sock.close()
m.sock, m.file = s, s.makefile("rb")
m.file.readline()  # the greeting
c = caps(m)
assert "STARTTLS" in c and "LOGINDISABLED" not in c and "AUTH=PLAIN" in c, c
m.login(user, password)
fetch_inbox(m, "plain port from the server's own address + LOGIN")

# --- STARTTLS command injection (CVE-2011-0411): a command sent in the same packet as
# STARTTLS must not run inside TLS.
s = socket.create_connection((host, imap_port))
f = s.makefile("rb")
assert f.readline().startswith(b"* OK"), "greeting"
s.sendall(b"a STARTTLS\r\nb LOGIN x y\r\nc CAPABILITY\r\n")
line = f.readline()
assert line.startswith(b"a OK"), line
t = ctx.wrap_socket(s, server_hostname=host)
t.sendall(b"d NOOP\r\n")
tf = t.makefile("rb")
lines = []
while True:
    line = tf.readline()
    assert line, f"connection closed after {lines}"
    lines.append(line)
    if line.startswith(b"d "):
        break
assert lines == [b"d OK completed\r\n"], lines
t.close()

# The same with the injected command in a second packet, before the client reads the OK:
# whether the server reads it before the handshake (dropped) or as the handshake (which
# then fails), it never runs.
s = socket.create_connection((host, imap_port))
f = s.makefile("rb")
assert f.readline().startswith(b"* OK"), "greeting"
s.sendall(b"a STARTTLS\r\n")
s.sendall(b"b LOGIN x y\r\n")
line = f.readline()
assert line.startswith(b"a OK"), line
try:
    t = ctx.wrap_socket(s, server_hostname=host)
    t.sendall(b"d NOOP\r\n")
    tf = t.makefile("rb")
    line = tf.readline()
    assert line == b"d OK completed\r\n", line
    t.close()
    outcome = "dropped before the handshake"
except (ssl.SSLError, ConnectionError) as e:
    outcome = f"handshake failed ({type(e).__name__})"
print(f"STARTTLS injection: commands pipelined after STARTTLS were not executed (second packet: {outcome})")

# --- AUTHENTICATE with a response that is not base64: BAD, and the connection takes
# commands again (the exchange is over).
t = ctx.wrap_socket(socket.create_connection((host, imaps_port)), server_hostname=host)
tf = t.makefile("rb")
assert tf.readline().startswith(b"* OK"), "greeting"
t.sendall(b"a AUTHENTICATE PLAIN\r\n")
assert tf.readline() == b"+ \r\n"
t.sendall(b"!!! not base64\r\n")
line = tf.readline()
assert line.startswith(b"a BAD"), line
t.sendall(b"b NOOP\r\n")
line = tf.readline()
assert line.startswith(b"b OK"), line
t.close()
print("AUTHENTICATE: a response that is not base64 is BAD, the connection goes on")

# --- The end of a session: after LOGOUT the server sends TLS close_notify before it
# closes (RFC 8446 6.1: "Each party MUST send a close_notify alert before closing its
# write side of the connection"; RFC 9051 6.1.3 ends the session with BYE and OK). With
# suppress_ragged_eofs=False, recv() returns b"" only on close_notify: a bare TCP close
# raises ("unexpected eof while reading"). Then unwrap() (TLS
# shutdown from this side) completes, which it does only once the peer's alert is in.
# Python sets OP_IGNORE_UNEXPECTED_EOF on its contexts (OpenSSL 3 then takes a bare
# close for close_notify): cleared here.
strict = ssl.create_default_context(cafile=cafile)
strict.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)


def logout_closes_tls(t, how):
    tf = t.makefile("rb")
    t.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
    line = tf.readline()
    assert line.startswith(b"a OK"), line
    t.sendall(b"b LOGOUT\r\n")
    lines = [tf.readline(), tf.readline()]
    assert lines[0].startswith(b"* BYE") and lines[1].startswith(b"b OK"), lines
    try:
        rest = t.recv(1)
    except ssl.SSLError as e:
        raise AssertionError(f"{how}: the server closed TCP without close_notify ({e})")
    assert rest == b"", f"{how}: bytes after LOGOUT: {rest!r}"
    tf.close()
    t.unwrap().close()
    print(f"{how}: LOGOUT ends with TLS close_notify")


t = strict.wrap_socket(socket.create_connection((host, imaps_port)), server_hostname=host,
                       suppress_ragged_eofs=False)
assert t.makefile("rb").readline().startswith(b"* OK"), "greeting"
logout_closes_tls(t, "IMAPS")

s = socket.create_connection((host, imap_port))
f = s.makefile("rb")
assert f.readline().startswith(b"* OK"), "greeting"
s.sendall(b"a STARTTLS\r\n")
assert f.readline().startswith(b"a OK"), "STARTTLS"
t = strict.wrap_socket(s, server_hostname=host, suppress_ragged_eofs=False)
logout_closes_tls(t, "STARTTLS")
