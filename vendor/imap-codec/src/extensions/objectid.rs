//! IMAP Extension for Object Identifiers (RFC 8474).
//!
//! mailvault patch (see `PATCHES.md` beside the vendored crates).
//!
//! ```abnf
//! fetch-att            =/ "EMAILID" / "THREADID"
//! msg-att-static       =/ fetch-emailid-resp / fetch-threadid-resp
//! fetch-emailid-resp   =  "EMAILID" SP "(" objectid ")"
//! fetch-threadid-resp  =  "THREADID" SP ( "(" objectid ")" / nil )
//! resp-text-code       =/ "MAILBOXID" SP "(" objectid ")"
//! status-att           =/ "MAILBOXID"
//! status-att-value     =/ "MAILBOXID" SP "(" objectid ")"
//! objectid             =  1*255(ALPHA / DIGIT / "_" / "-")
//! ```

use core::fmt;

use imap_types::{
    extensions::objectid::{ObjectId, is_objectid_char},
    fetch::{MessageDataItem, MessageDataItemName},
    response::Code,
    status::{StatusDataItem, StatusDataItemName},
};
use nom::{
    branch::alt,
    bytes::streaming::{tag, tag_no_case, take_while_m_n},
    combinator::{map, map_opt, value},
    sequence::{delimited, preceded},
};

use crate::{
    core::nil,
    decode::IMAPResult,
    encode::{EncodeContext, EncodeIntoContext},
};

/// `objectid = 1*255(ALPHA / DIGIT / "_" / "-")`
pub(crate) fn objectid(input: &[u8]) -> IMAPResult<&[u8], ObjectId> {
    map_opt(
        take_while_m_n(1, 255, is_objectid_char),
        |bytes: &[u8]| {
            // The bytes are ASCII (`is_objectid_char`).
            ObjectId::try_from(core::str::from_utf8(bytes).ok()?).ok()
        },
    )(input)
}

/// `"(" objectid ")"`
fn objectid_paren(input: &[u8]) -> IMAPResult<&[u8], ObjectId> {
    delimited(tag(b"("), objectid, tag(b")"))(input)
}

/// `fetch-att =/ "EMAILID" / "THREADID"`
pub(crate) fn fetch_att_objectid(input: &[u8]) -> IMAPResult<&[u8], MessageDataItemName> {
    alt((
        value(MessageDataItemName::EmailId, tag_no_case(b"EMAILID")),
        value(MessageDataItemName::ThreadId, tag_no_case(b"THREADID")),
    ))(input)
}

/// `fetch-emailid-resp / fetch-threadid-resp`
pub(crate) fn msg_att_objectid(input: &[u8]) -> IMAPResult<&[u8], MessageDataItem> {
    alt((
        map(
            preceded(tag_no_case(b"EMAILID "), objectid_paren),
            MessageDataItem::EmailId,
        ),
        map(
            preceded(
                tag_no_case(b"THREADID "),
                alt((map(objectid_paren, Some), value(None, nil))),
            ),
            MessageDataItem::ThreadId,
        ),
    ))(input)
}

/// `resp-text-code =/ "MAILBOXID" SP "(" objectid ")"`
pub(crate) fn resp_code_mailboxid(input: &[u8]) -> IMAPResult<&[u8], Code> {
    map(
        preceded(tag_no_case(b"MAILBOXID "), objectid_paren),
        Code::MailboxId,
    )(input)
}

/// `status-att =/ "MAILBOXID"`
pub(crate) fn status_att_objectid(input: &[u8]) -> IMAPResult<&[u8], StatusDataItemName> {
    value(StatusDataItemName::MailboxId, tag_no_case(b"MAILBOXID"))(input)
}

/// `status-att-value =/ "MAILBOXID" SP "(" objectid ")"`
pub(crate) fn status_att_val_objectid(input: &[u8]) -> IMAPResult<&[u8], StatusDataItem> {
    map(
        preceded(tag_no_case(b"MAILBOXID "), objectid_paren),
        StatusDataItem::MailboxId,
    )(input)
}

impl EncodeIntoContext for ObjectId {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        ctx.write_all(self.as_str().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use imap_types::{
        command::{Command, CommandBody},
        core::{Text, Vec1},
        fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
        response::{Code, Data, Response, Status, StatusBody, StatusKind},
        status::{StatusDataItem, StatusDataItemName},
    };

    use super::*;
    use crate::{
        CommandCodec, ResponseCodec,
        decode::Decoder,
        testing::{kat_inverse_command, kat_inverse_response},
    };

    fn id(s: &str) -> ObjectId {
        ObjectId::try_from(s).unwrap()
    }

    #[test]
    fn test_kat_inverse_command_objectid() {
        kat_inverse_command(&[
            (
                b"A UID FETCH 1:* (EMAILID THREADID)\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::Fetch {
                        sequence_set: "1:*".try_into().unwrap(),
                        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(
                            vec![MessageDataItemName::EmailId, MessageDataItemName::ThreadId],
                        ),
                        uid: true,
                        #[cfg(feature = "ext_condstore_qresync")]
                        modifiers: vec![],
                    },
                )
                .unwrap(),
            ),
            (
                b"A STATUS foo (MAILBOXID MESSAGES)\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::Status {
                        mailbox: "foo".try_into().unwrap(),
                        item_names: vec![
                            StatusDataItemName::MailboxId,
                            StatusDataItemName::Messages,
                        ]
                        .into(),
                    },
                )
                .unwrap(),
            ),
        ]);
    }

    #[test]
    fn test_kat_inverse_response_objectid() {
        kat_inverse_response(&[
            (
                b"* 3 FETCH (EMAILID (M6d99ac3275bb4e) THREADID (T64b478a75b7ea9))\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::Fetch {
                    seq: 3.try_into().unwrap(),
                    items: Vec1::try_from(vec![
                        MessageDataItem::EmailId(id("M6d99ac3275bb4e")),
                        MessageDataItem::ThreadId(Some(id("T64b478a75b7ea9"))),
                    ])
                    .unwrap(),
                }),
            ),
            (
                b"* 4 FETCH (THREADID NIL)\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::Fetch {
                    seq: 4.try_into().unwrap(),
                    items: Vec1::from(MessageDataItem::ThreadId(None)),
                }),
            ),
            (
                b"* STATUS foo (MAILBOXID (F2212ea87-6097-4256-9d51-71338625) MESSAGES 0)\r\n???"
                    .as_ref(),
                b"???".as_ref(),
                Response::Data(Data::Status {
                    mailbox: "foo".try_into().unwrap(),
                    items: vec![
                        StatusDataItem::MailboxId(id("F2212ea87-6097-4256-9d51-71338625")),
                        StatusDataItem::Messages(0),
                    ]
                    .into(),
                }),
            ),
            (
                b"* OK [MAILBOXID (F2212ea87-6097-4256-9d51-71338625)] Ok\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Status(Status::Untagged(StatusBody {
                    kind: StatusKind::Ok,
                    code: Some(Code::MailboxId(id("F2212ea87-6097-4256-9d51-71338625"))),
                    text: Text::unvalidated("Ok"),
                })),
            ),
        ]);
    }

    #[test]
    fn test_objectid_malformed() {
        for line in [
            b"A FETCH 1 (EMAILIDS)\r\n".as_ref(),
            b"A STATUS foo (MAILBOXID2)\r\n",
        ] {
            assert!(CommandCodec::default().decode(line).is_err());
        }
        for line in [
            b"* 1 FETCH (EMAILID ())\r\n".as_ref(),
            b"* 1 FETCH (EMAILID (a.b))\r\n",
            b"* 1 FETCH (EMAILID abc)\r\n",
            b"* 1 FETCH (THREADID ( x))\r\n",
        ] {
            assert!(
                ResponseCodec::default().decode(line).is_err(),
                "{}",
                alloc::string::String::from_utf8_lossy(line)
            );
        }
        let long = alloc::format!("* 1 FETCH (EMAILID ({}))\r\n", "a".repeat(256));
        assert!(ResponseCodec::default().decode(long.as_bytes()).is_err());
    }
}
