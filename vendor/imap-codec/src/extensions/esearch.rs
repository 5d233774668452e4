//! IMAP4 Extension for Returning SEARCH Results in a Different Format (RFC 4731).
//!
//! mailvault patch (see `PATCHES.md` beside the vendored crates; upstream issue
//! duesee/imap-codec#379).

use core::{fmt, num::NonZeroU64};

use abnf_core::streaming::{dquote, sp};
use imap_types::{
    command::CommandBody,
    extensions::esearch::{SearchReturnData, SearchReturnOption},
    response::Data,
};
use nom::{
    branch::alt,
    bytes::streaming::{tag, tag_no_case},
    combinator::{map, map_res, opt, value},
    multi::{many0, separated_list0},
    sequence::{delimited, preceded, tuple},
};

use crate::{
    core::{number, number64, nz_number, tag_imap},
    decode::IMAPResult,
    encode::{EncodeContext, EncodeIntoContext},
    sequence::sequence_set,
};

/// ```abnf
/// search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
/// ```
///
/// Without the leading SP.
pub(crate) fn search_return_opts(
    input: &[u8],
) -> IMAPResult<&[u8], alloc::vec::Vec<SearchReturnOption>> {
    preceded(
        tag_no_case(b"RETURN ("),
        nom::sequence::terminated(separated_list0(sp, search_return_opt), tag(b")")),
    )(input)
}

/// ```abnf
/// search-return-opt = "MIN" / "MAX" / "ALL" / "COUNT"
/// search-return-opt =/ "SAVE"   ; RFC 5182, with the `ext_searchres` feature
/// ```
pub(crate) fn search_return_opt(input: &[u8]) -> IMAPResult<&[u8], SearchReturnOption> {
    #[cfg(feature = "ext_searchres")]
    {
        alt((
            value(SearchReturnOption::Save, tag_no_case(b"SAVE")),
            search_return_opt_esearch,
        ))(input)
    }
    #[cfg(not(feature = "ext_searchres"))]
    search_return_opt_esearch(input)
}

/// The `search-return-opt` of RFC 4731.
fn search_return_opt_esearch(input: &[u8]) -> IMAPResult<&[u8], SearchReturnOption> {
    alt((
        value(SearchReturnOption::Min, tag_no_case(b"MIN")),
        value(SearchReturnOption::Max, tag_no_case(b"MAX")),
        value(SearchReturnOption::All, tag_no_case(b"ALL")),
        value(SearchReturnOption::Count, tag_no_case(b"COUNT")),
    ))(input)
}

/// Turns a parsed `SEARCH` into `SEARCH RETURN (...)` when it had return options.
pub(crate) fn with_return_options(
    body: CommandBody<'_>,
    return_options: Option<alloc::vec::Vec<SearchReturnOption>>,
) -> CommandBody<'_> {
    match (body, return_options) {
        (
            CommandBody::Search {
                charset,
                criteria,
                uid,
            },
            Some(return_options),
        ) => CommandBody::ESearch {
            return_options,
            charset,
            criteria,
            uid,
        },
        (body, _) => body,
    }
}

/// ```abnf
/// esearch-response  = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)
/// search-correlator = SP "(" "TAG" SP tag-string ")"
/// ```
///
/// Note: the `tag-string` is read in its quoted form only (a tag holds no
/// quoted-specials, and every server sends it quoted).
pub(crate) fn esearch_response(input: &[u8]) -> IMAPResult<&[u8], Data> {
    let mut parser = tuple((
        tag_no_case(b"ESEARCH"),
        opt(delimited(
            tag_no_case(b" (TAG "),
            delimited(dquote, tag_imap, dquote),
            tag(b")"),
        )),
        opt(value((), tag_no_case(b" UID"))),
        many0(preceded(sp, search_return_data)),
    ));

    let (remaining, (_, tag, uid, items)) = parser(input)?;

    Ok((
        remaining,
        Data::ESearch {
            tag,
            uid: uid.is_some(),
            items,
        },
    ))
}

/// ```abnf
/// search-return-data = "MIN" SP nz-number /
///                      "MAX" SP nz-number /
///                      "ALL" SP sequence-set /
///                      "COUNT" SP number /
///                      "MODSEQ" SP mod-sequence-value ; RFC 7162
/// ```
pub(crate) fn search_return_data(input: &[u8]) -> IMAPResult<&[u8], SearchReturnData> {
    alt((
        map(
            preceded(tag_no_case(b"MIN "), nz_number),
            SearchReturnData::Min,
        ),
        map(
            preceded(tag_no_case(b"MAX "), nz_number),
            SearchReturnData::Max,
        ),
        map(
            preceded(tag_no_case(b"ALL "), sequence_set),
            SearchReturnData::All,
        ),
        map(
            preceded(tag_no_case(b"COUNT "), number),
            SearchReturnData::Count,
        ),
        map(
            preceded(
                tag_no_case(b"MODSEQ "),
                map_res(number64, NonZeroU64::try_from),
            ),
            SearchReturnData::ModSeq,
        ),
    ))(input)
}

impl EncodeIntoContext for SearchReturnOption {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        ctx.write_all(match self {
            Self::Min => b"MIN",
            Self::Max => b"MAX",
            Self::All => b"ALL",
            Self::Count => b"COUNT",
            #[cfg(feature = "ext_searchres")]
            Self::Save => b"SAVE",
        })
    }
}

impl EncodeIntoContext for SearchReturnData {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        use fmt::Write;
        match self {
            Self::Min(n) => write!(ctx, "MIN {n}"),
            Self::Max(n) => write!(ctx, "MAX {n}"),
            Self::All(set) => {
                ctx.write_all(b"ALL ")?;
                set.encode_ctx(ctx)
            }
            Self::Count(n) => write!(ctx, "COUNT {n}"),
            Self::ModSeq(n) => write!(ctx, "MODSEQ {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use imap_types::{
        command::{Command, CommandBody},
        core::{Tag, Vec1},
        response::{Data, Response},
        search::SearchKey,
    };

    use super::*;
    use crate::{
        CommandCodec,
        decode::Decoder,
        testing::{kat_inverse_command, kat_inverse_response},
    };

    #[test]
    fn test_kat_inverse_command_esearch() {
        kat_inverse_command(&[
            (
                b"A SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ESearch {
                        return_options: vec![
                            SearchReturnOption::Min,
                            SearchReturnOption::Max,
                            SearchReturnOption::Count,
                            SearchReturnOption::All,
                        ],
                        charset: None,
                        criteria: Vec1::from(SearchKey::Unseen),
                        uid: false,
                    },
                )
                .unwrap(),
            ),
            (
                b"A UID SEARCH RETURN () CHARSET UTF-8 ALL\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ESearch {
                        return_options: vec![],
                        charset: Some("UTF-8".try_into().unwrap()),
                        criteria: Vec1::from(SearchKey::All),
                        uid: true,
                    },
                )
                .unwrap(),
            ),
            (
                // Without RETURN: the plain SEARCH of RFC 3501, unchanged.
                b"A SEARCH 1:5\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::Search {
                        charset: None,
                        criteria: Vec1::from(SearchKey::SequenceSet("1:5".try_into().unwrap())),
                        uid: false,
                    },
                )
                .unwrap(),
            ),
        ]);
    }

    #[test]
    fn test_parse_esearch_command_lowercase() {
        let (_, cmd) = CommandCodec::default()
            .decode(b"a uid search return (count) deleted\r\n")
            .unwrap();
        assert_eq!(
            cmd.body,
            CommandBody::ESearch {
                return_options: vec![SearchReturnOption::Count],
                charset: None,
                criteria: Vec1::from(SearchKey::Deleted),
                uid: true,
            }
        );
    }

    #[test]
    fn test_parse_esearch_command_malformed() {
        for line in [
            b"A SEARCH RETURN (MIN\r\n".as_ref(),
            b"A SEARCH RETURN (MINIMUM) ALL\r\n",
            #[cfg(not(feature = "ext_searchres"))]
            b"A SEARCH RETURN (SAVE) ALL\r\n",
            b"A SEARCH RETURN MIN ALL\r\n",
            b"A SEARCH RETURN (MIN)\r\n",
            b"A SEARCH RETURN (MIN  MAX) ALL\r\n",
        ] {
            assert!(
                CommandCodec::default().decode(line).is_err(),
                "{}",
                alloc::string::String::from_utf8_lossy(line)
            );
        }
    }

    /// mailvault patch (`ext_searchres`): RFC 5182 `SAVE` and `$`.
    #[cfg(feature = "ext_searchres")]
    #[test]
    fn test_kat_inverse_command_searchres() {
        use imap_types::{
            fetch::{MacroOrMessageDataItemNames, MessageDataItemName},
            sequence::{Sequence, SequenceSet},
        };

        let last = || SequenceSet(Vec1::from(Sequence::LastCommand));
        kat_inverse_command(&[
            (
                b"A SEARCH RETURN (SAVE MIN) UNSEEN\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ESearch {
                        return_options: vec![SearchReturnOption::Save, SearchReturnOption::Min],
                        charset: None,
                        criteria: Vec1::from(SearchKey::Unseen),
                        uid: false,
                    },
                )
                .unwrap(),
            ),
            (
                b"A UID SEARCH RETURN (SAVE) UID $\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ESearch {
                        return_options: vec![SearchReturnOption::Save],
                        charset: None,
                        criteria: Vec1::from(SearchKey::Uid(last())),
                        uid: true,
                    },
                )
                .unwrap(),
            ),
            (
                b"A SEARCH $\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::Search {
                        charset: None,
                        criteria: Vec1::from(SearchKey::SequenceSet(last())),
                        uid: false,
                    },
                )
                .unwrap(),
            ),
            (
                b"A UID FETCH $ (UID)\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::fetch(
                        last(),
                        MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                            MessageDataItemName::Uid,
                        ]),
                        true,
                    )
                    .unwrap(),
                )
                .unwrap(),
            ),
            (
                b"A COPY $ Trash\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new("A", CommandBody::copy(last(), "Trash", false).unwrap()).unwrap(),
            ),
        ]);
    }

    /// mailvault patch (`ext_searchres`): `$` is a whole sequence set (RFC 5182,
    /// section 4: `sequence-set =/ seq-last-command`), never a member or a range end.
    #[cfg(feature = "ext_searchres")]
    #[test]
    fn test_parse_searchres_malformed() {
        for line in [
            b"A FETCH $,1 (UID)\r\n".as_ref(),
            b"A FETCH 1,$ (UID)\r\n",
            b"A FETCH $:3 (UID)\r\n",
            b"A FETCH 1:$ (UID)\r\n",
            b"A FETCH $$ (UID)\r\n",
            b"A SEARCH RETURN (SAVE SAVED) ALL\r\n",
        ] {
            assert!(
                CommandCodec::default().decode(line).is_err(),
                "{}",
                alloc::string::String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn test_kat_inverse_response_esearch() {
        kat_inverse_response(&[
            (
                b"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::ESearch {
                    tag: Some(Tag::try_from("A282").unwrap()),
                    uid: false,
                    items: vec![
                        SearchReturnData::Min(2.try_into().unwrap()),
                        SearchReturnData::Count(3),
                    ],
                }),
            ),
            (
                b"* ESEARCH (TAG \"A283\") UID ALL 2,10:11 MAX 11 MODSEQ 917162500\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::ESearch {
                    tag: Some(Tag::try_from("A283").unwrap()),
                    uid: true,
                    items: vec![
                        SearchReturnData::All("2,10:11".try_into().unwrap()),
                        SearchReturnData::Max(11.try_into().unwrap()),
                        SearchReturnData::ModSeq(917162500.try_into().unwrap()),
                    ],
                }),
            ),
            (
                // No match: no MIN, MAX or ALL (RFC 4731, section 3.1).
                b"* ESEARCH (TAG \"A284\") COUNT 0\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::ESearch {
                    tag: Some(Tag::try_from("A284").unwrap()),
                    uid: false,
                    items: vec![SearchReturnData::Count(0)],
                }),
            ),
            (
                b"* ESEARCH\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::ESearch {
                    tag: None,
                    uid: false,
                    items: vec![],
                }),
            ),
        ]);
    }
}
