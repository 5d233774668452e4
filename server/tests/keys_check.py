"""What the key and officer commands' tests (`keys_cli.rs`, issue 15) read back over IMAP,
with Python's own `imaplib` (a client no one here wrote).

  keys_check.py read PORT USER PASSWORD
      Logs in on 127.0.0.1:PORT, reads every message of INBOX whole (BODY.PEEK[]) and
      prints one JSON object: {"login": "ok", "messages": N, "digests": [sorted SHA-256
      of each body]}. A refused login prints {"login": "refused", ...} and exits 3.
"""

import hashlib
import imaplib
import json
import sys


def read(port, user, password):
    imap = imaplib.IMAP4("127.0.0.1", int(port))
    try:
        imap.login(user, password)
    except imaplib.IMAP4.error as e:
        print(json.dumps({"login": "refused", "reason": str(e)}))
        return 3
    typ, data = imap.select("INBOX", readonly=True)
    if typ != "OK":
        print(json.dumps({"login": "ok", "select": str(data)}))
        return 1
    count = int(data[0])
    digests = []
    if count:
        typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
        if typ != "OK":
            print(json.dumps({"login": "ok", "fetch": str(data)}))
            return 1
        for item in data:
            if isinstance(item, tuple):
                digests.append(hashlib.sha256(item[1]).hexdigest())
    imap.logout()
    print(json.dumps({"login": "ok", "messages": count, "digests": sorted(digests)}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "read":
        print(__doc__)
        sys.exit(2)
    sys.exit(read(*sys.argv[2:]))
