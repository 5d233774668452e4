"""The text that Python's `email` package decodes from messages: the independent decoder
the search-text tests (tests/suite/search_text.rs) check mailvault's extraction with.
Values are printed as hex of their UTF-8 (`key<TAB>hex` lines under `== name` lines).

  python_search_text.py corpus PATH...   every text/plain part's decoded content
                                         (`text`) and every part's filename (`filename`)
  python_search_text.py generate         messages Python encodes itself in many charsets
                                         (`raw`: the message bytes) with the subject,
                                         body text and attachment name they carry
"""
import base64
import email
import email.policy
import sys
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.mime.application import MIMEApplication
from email.header import Header


def out(key, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    print(f"{key}\t{value.hex()}")


def corpus(paths):
    for path in paths:
        print(f"== {path}")
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        for part in msg.walk():
            try:
                name = part.get_filename()
            except Exception:
                name = None
            if name:
                out("filename", str(name))
            if part.get_content_type() != "text/plain" or part.is_multipart():
                continue
            try:
                text = part.get_content()
            except Exception:
                continue  # an unknown charset or broken encoding: not compared
            out("text", text)


# (charset, text in a script that charset encodes, the transfer encoding Python picks)
SAMPLES = [
    ("iso-2022-jp", "東京で会議があります。よろしくお願いします"),
    ("shift_jis", "カタカナとひらがなの混ざった文章です"),
    ("euc-jp", "日本語の電子メールを検索する"),
    ("koi8-r", "Привет, мир! Встреча в понедельник"),
    ("windows-1251", "Съешь же ещё этих мягких французских булок"),
    ("iso-8859-7", "Καλημέρα κόσμε, ΟΔΟΣ ΣΤΑΔΙΟΥ"),
    ("iso-8859-2", "Zażółć gęślą jaźń, Příliš žluťoučký kůň"),
    ("iso-8859-1", "Grüße aus Köln, Straße und Café"),
    ("gb2312", "中文电子邮件搜索测试"),
    ("big5", "繁體中文郵件搜尋測試"),
    ("euc-kr", "한국어 전자 메일 검색"),
    ("utf-8", "Ünïcödé ﬁnance Ｆｕｌｌｗｉｄｔｈ ǆungla"),
]


def generate():
    for i, (charset, text) in enumerate(SAMPLES):
        # IANA charset names as written by mail programs (Python's own Header and MIMEText
        # write its codec aliases, e.g. `big5_tw`, which no other program knows).
        msg = MIMEMultipart()  # compat32: header values are written as given
        msg["From"] = "Sender <sender@example.org>"
        msg["To"] = "rcpt@example.org"
        subject = text.split()[0] if " " in text else text[:6]
        encoded = base64.b64encode(f"{subject} {i}".encode(charset)).decode()
        msg["Subject"] = f"=?{charset}?b?{encoded}?="
        body = EmailMessage()
        cte = "base64" if i % 2 == 0 else "quoted-printable"
        body.set_content((text + "\n").encode(charset), "text", "plain", cte=cte)
        body.set_param("charset", charset)
        msg.attach(body)
        attachment = MIMEApplication(b"%PDF-1.4 binary", "pdf")
        filename = f"{subject}-{i}.pdf"
        name_charset = "utf-8" if charset == "iso-2022-jp" else charset
        attachment.add_header(
            "Content-Disposition", "attachment", filename=(name_charset, "", filename)
        )
        msg.attach(attachment)
        print(f"== {charset}")
        out("raw", msg.as_bytes())
        out("subject", f"{subject} {i}")
        out("body", text)
        out("filename", filename)
    # HTML only, entities and markup: the text a reader sees is searchable, not the tags.
    html = EmailMessage()
    html["From"] = "web@example.org"
    html["Subject"] = "html only"
    html.set_content("<html><head><style>p{color:red}</style></head><body><p>Gr&uuml;&szlig;e <b>aus</b> K&ouml;ln</p><p>zweite&nbsp;Zeile</p></body></html>", subtype="html", cte="quoted-printable")
    print("== html-only")
    out("raw", html.as_bytes())
    out("subject", "html only")
    out("body", "Grüße aus Köln")
    out("filename", "")


if __name__ == "__main__":
    if sys.argv[1] == "corpus":
        corpus(sys.argv[2:])
    else:
        generate()
