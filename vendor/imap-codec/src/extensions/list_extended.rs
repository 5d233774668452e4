//! IMAP4 LIST Command Extensions (RFC 5258), with SPECIAL-USE (RFC 6154) and
//! LIST-STATUS (RFC 5819).
//!
//! mailvault patch (see `PATCHES.md` beside the vendored crates): imap-codec
//! 2.0.0-alpha.10 had the response types of `ext_list_extended` in imap-types but
//! no parser or encoder for them, and no extended `LIST` command.
//!
//! ```abnf
//! list             = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
//!                    [SP list-return-opts]
//! list-select-opts = "(" [list-select-opt *(SP list-select-opt)] ")"
//! mbox-or-pat      = list-mailbox / patterns
//! patterns         = "(" list-mailbox *(SP list-mailbox) ")"
//! list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
//! return-option    = "SUBSCRIBED" / "CHILDREN" / "SPECIAL-USE" / status-option
//! status-option    = "STATUS" SP "(" status-att *(SP status-att) ")"
//! mailbox-list     = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil)
//!                    SP mailbox [SP mbox-list-extended]
//! mbox-list-extended = "(" [mbox-list-extended-item *(SP mbox-list-extended-item)] ")"
//! mbox-list-extended-item = mbox-list-extended-item-tag SP tagged-ext-val
//! ```

use alloc::{boxed::Box, vec::Vec};
use core::fmt::{self, Write};

use abnf_core::streaming::{dquote, sp};
use imap_types::{
    command::CommandBody,
    core::{Vec1, Vec2},
    extensions::list_extended::{
        ListReturnOption, ListSelectBaseOpt, ListSelectBaseOptExtension,
        ListSelectBaseOptExtensionTag, ListSelectOption, MboxListExtendedItem,
        MboxListExtendedItemTag, TaggedExtComp, TaggedExtSimple, TaggedExtVal,
    },
    mailbox::{ListMailbox, Mailbox},
    response::Data,
};
use nom::{
    branch::alt,
    bytes::streaming::{tag, tag_no_case},
    combinator::{map, map_opt, opt, value, verify},
    multi::{separated_list0, separated_list1},
    sequence::{delimited, preceded, tuple},
};

use crate::{
    core::{astring, atom, number},
    decode::{IMAPErrorKind, IMAPParseError, IMAPResult},
    encode::{EncodeContext, EncodeIntoContext, utils::join_serializable},
    mailbox::{list_mailbox, mailbox, mailbox_list},
    sequence::sequence_set,
    status::status_att,
};

/// `list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]`
///
/// A `LIST` without selection options, with a single pattern and without
/// return options is a plain [`CommandBody::List`].
pub(crate) fn list(input: &[u8]) -> IMAPResult<&[u8], CommandBody> {
    let mut parser = tuple((
        tag_no_case(b"LIST"),
        opt(preceded(sp, list_select_opts)),
        sp,
        mailbox,
        sp,
        alt((
            map(list_mailbox, |pattern| (Vec1::from(pattern), false)),
            map(patterns, |patterns| (patterns, true)),
        )),
        opt(preceded(sp, list_return_opts)),
    ));

    let (
        remaining,
        (_, selection_options, _, reference, _, (patterns, parenthesized), return_options),
    ) = parser(input)?;

    if selection_options.is_none() && !parenthesized && return_options.is_none() {
        let mailbox_wildcard = patterns.into_inner().remove(0);
        return Ok((
            remaining,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            },
        ));
    }

    Ok((
        remaining,
        CommandBody::ListExtended {
            selection_options: selection_options.unwrap_or_default(),
            reference,
            patterns,
            return_options: return_options.unwrap_or_default(),
        },
    ))
}

/// `list-select-opts = "(" [list-select-opt *(SP list-select-opt)] ")"`
///
/// `RECURSIVEMATCH` without a base option (`SUBSCRIBED`, `SPECIAL-USE`) is rejected (RFC 5258,
/// section 3.1: "the server MUST return a tagged BAD response").
pub(crate) fn list_select_opts(input: &[u8]) -> IMAPResult<&[u8], Vec<ListSelectOption>> {
    verify(
        delimited(tag(b"("), separated_list0(sp, list_select_opt), tag(b")")),
        |options: &Vec<ListSelectOption>| ListSelectOption::validate(options),
    )(input)
}

/// `list-select-opt = "SUBSCRIBED" / "REMOTE" / "RECURSIVEMATCH" / "SPECIAL-USE"`
pub(crate) fn list_select_opt(input: &[u8]) -> IMAPResult<&[u8], ListSelectOption> {
    alt((
        value(ListSelectOption::Subscribed, tag_no_case(b"SUBSCRIBED")),
        value(ListSelectOption::Remote, tag_no_case(b"REMOTE")),
        value(
            ListSelectOption::RecursiveMatch,
            tag_no_case(b"RECURSIVEMATCH"),
        ),
        value(ListSelectOption::SpecialUse, tag_no_case(b"SPECIAL-USE")),
    ))(input)
}

/// `patterns = "(" list-mailbox *(SP list-mailbox) ")"`
pub(crate) fn patterns(input: &[u8]) -> IMAPResult<&[u8], Vec1<ListMailbox>> {
    map(
        delimited(tag(b"("), separated_list1(sp, list_mailbox), tag(b")")),
        Vec1::unvalidated,
    )(input)
}

/// `list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"`
pub(crate) fn list_return_opts(input: &[u8]) -> IMAPResult<&[u8], Vec<ListReturnOption>> {
    delimited(
        tag_no_case(b"RETURN ("),
        separated_list0(sp, return_option),
        tag(b")"),
    )(input)
}

/// `return-option = "SUBSCRIBED" / "CHILDREN" / "SPECIAL-USE" / status-option`
pub(crate) fn return_option(input: &[u8]) -> IMAPResult<&[u8], ListReturnOption> {
    alt((
        value(ListReturnOption::Subscribed, tag_no_case(b"SUBSCRIBED")),
        value(ListReturnOption::Children, tag_no_case(b"CHILDREN")),
        value(ListReturnOption::SpecialUse, tag_no_case(b"SPECIAL-USE")),
        map(
            preceded(
                tag_no_case(b"STATUS ("),
                nom::sequence::terminated(separated_list1(sp, status_att), tag(b")")),
            ),
            |items| ListReturnOption::Status(Vec1::unvalidated(items)),
        ),
    ))(input)
}

/// `"LIST" SP mailbox-list` with its `SP mbox-list-extended`.
pub(crate) fn list_extended_response(input: &[u8]) -> IMAPResult<&[u8], Data> {
    let mut parser = tuple((tag_no_case(b"LIST "), mailbox_list, sp, mbox_list_extended));

    let (remaining, (_, (items, delimiter, mailbox), _, extended_items)) = parser(input)?;

    Ok((
        remaining,
        Data::ListExtended {
            items: items.unwrap_or_default(),
            delimiter,
            mailbox,
            extended_items,
        },
    ))
}

/// `mbox-list-extended = "(" [mbox-list-extended-item *(SP mbox-list-extended-item)] ")"`
pub(crate) fn mbox_list_extended(input: &[u8]) -> IMAPResult<&[u8], Vec<MboxListExtendedItem>> {
    delimited(
        tag(b"("),
        separated_list0(sp, mbox_list_extended_item),
        tag(b")"),
    )(input)
}

/// ```abnf
/// mbox-list-extended-item = mbox-list-extended-item-tag SP tagged-ext-val
/// childinfo-extended-item = "CHILDINFO" SP "("
///                           list-select-base-opt-quoted *(SP list-select-base-opt-quoted) ")"
/// ```
pub(crate) fn mbox_list_extended_item(input: &[u8]) -> IMAPResult<&[u8], MboxListExtendedItem> {
    alt((
        map(
            preceded(
                tag_no_case(b"CHILDINFO ("),
                nom::sequence::terminated(
                    separated_list1(sp, list_select_base_opt_quoted),
                    tag(b")"),
                ),
            ),
            |options| MboxListExtendedItem::ChildInfo(Vec1::unvalidated(options)),
        ),
        map(
            tuple((
                map_opt(astring, |tag| MboxListExtendedItemTag::try_from(tag).ok()),
                sp,
                tagged_ext_val,
            )),
            |(tag, _, value)| MboxListExtendedItem::Other { tag, value },
        ),
    ))(input)
}

/// `list-select-base-opt-quoted = DQUOTE list-select-base-opt DQUOTE`
fn list_select_base_opt_quoted(input: &[u8]) -> IMAPResult<&[u8], ListSelectBaseOpt> {
    delimited(
        dquote,
        alt((
            value(ListSelectBaseOpt::Subscribed, tag_no_case(b"SUBSCRIBED")),
            map(
                map_opt(atom, |tag| {
                    ListSelectBaseOptExtensionTag::try_from(tag).ok()
                }),
                |tag| ListSelectBaseOpt::Extension(ListSelectBaseOptExtension { tag, value: None }),
            ),
        )),
        dquote,
    )(input)
}

/// `tagged-ext-val = tagged-ext-simple / "(" [tagged-ext-comp] ")"`
pub(crate) fn tagged_ext_val(input: &[u8]) -> IMAPResult<&[u8], TaggedExtVal> {
    alt((
        map(
            delimited(tag(b"("), opt(tagged_ext_comp(8)), tag(b")")),
            TaggedExtVal::Comp,
        ),
        map(sequence_set, |set| {
            TaggedExtVal::Simple(TaggedExtSimple::SequenceSet(set))
        }),
        map(number, |n| TaggedExtVal::Simple(TaggedExtSimple::Number(n))),
    ))(input)
}

/// ```abnf
/// tagged-ext-comp = astring /
///                   tagged-ext-comp *(SP tagged-ext-comp) /
///                   "(" tagged-ext-comp ")"
/// ```
///
/// Recursive: `remaining_recursion` bounds the nesting.
fn tagged_ext_comp(
    remaining_recursion: usize,
) -> impl Fn(&[u8]) -> IMAPResult<&[u8], TaggedExtComp> {
    move |input: &[u8]| tagged_ext_comp_limited(input, remaining_recursion)
}

fn tagged_ext_comp_limited(
    input: &[u8],
    remaining_recursion: usize,
) -> IMAPResult<&[u8], TaggedExtComp> {
    if remaining_recursion == 0 {
        return Err(nom::Err::Failure(IMAPParseError {
            input,
            kind: IMAPErrorKind::RecursionLimitExceeded,
        }));
    }

    let item = |input| {
        alt((
            map(astring, TaggedExtComp::Single),
            map(
                delimited(
                    tag(b"("),
                    |input| tagged_ext_comp_limited(input, remaining_recursion - 1),
                    tag(b")"),
                ),
                |comp| TaggedExtComp::Group(Box::new(comp)),
            ),
        ))(input)
    };

    map_opt(separated_list1(sp, item), |mut items| {
        if items.len() == 1 {
            items.pop()
        } else {
            Vec2::try_from(items).ok().map(TaggedExtComp::Multi)
        }
    })(input)
}

/// Encodes [`CommandBody::ListExtended`].
pub(crate) fn encode_list_extended(
    selection_options: &[ListSelectOption],
    reference: &Mailbox,
    patterns: &Vec1<ListMailbox>,
    return_options: &[ListReturnOption],
    ctx: &mut EncodeContext,
) -> fmt::Result {
    ctx.write_all(b"LIST (")?;
    join_serializable(selection_options, b" ", ctx)?;
    ctx.write_all(b") ")?;
    reference.encode_ctx(ctx)?;
    ctx.write_all(b" ")?;
    match patterns.as_ref() {
        [pattern] => pattern.encode_ctx(ctx)?,
        patterns => {
            ctx.write_all(b"(")?;
            join_serializable(patterns, b" ", ctx)?;
            ctx.write_all(b")")?;
        }
    }
    if !return_options.is_empty() {
        ctx.write_all(b" RETURN (")?;
        join_serializable(return_options, b" ", ctx)?;
        ctx.write_all(b")")?;
    }
    Ok(())
}

impl EncodeIntoContext for ListSelectOption {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        ctx.write_all(match self {
            Self::Subscribed => b"SUBSCRIBED",
            Self::Remote => b"REMOTE",
            Self::RecursiveMatch => b"RECURSIVEMATCH",
            Self::SpecialUse => b"SPECIAL-USE",
        })
    }
}

impl EncodeIntoContext for ListReturnOption {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        match self {
            Self::Subscribed => ctx.write_all(b"SUBSCRIBED"),
            Self::Children => ctx.write_all(b"CHILDREN"),
            Self::SpecialUse => ctx.write_all(b"SPECIAL-USE"),
            Self::Status(items) => {
                ctx.write_all(b"STATUS (")?;
                join_serializable(items.as_ref(), b" ", ctx)?;
                ctx.write_all(b")")
            }
        }
    }
}

impl EncodeIntoContext for MboxListExtendedItem<'_> {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        match self {
            Self::ChildInfo(options) => {
                ctx.write_all(b"CHILDINFO (")?;
                for (i, option) in options.as_ref().iter().enumerate() {
                    if i > 0 {
                        ctx.write_all(b" ")?;
                    }
                    ctx.write_all(b"\"")?;
                    option.encode_ctx(ctx)?;
                    ctx.write_all(b"\"")?;
                }
                ctx.write_all(b")")
            }
            Self::Other { tag, value } => {
                tag.inner().encode_ctx(ctx)?;
                ctx.write_all(b" ")?;
                value.encode_ctx(ctx)
            }
        }
    }
}

impl EncodeIntoContext for ListSelectBaseOpt<'_> {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        match self {
            Self::Subscribed => ctx.write_all(b"SUBSCRIBED"),
            Self::Extension(extension) => {
                extension.tag.inner().encode_ctx(ctx)?;
                if let Some(value) = &extension.value {
                    ctx.write_all(b" (")?;
                    value.encode_ctx(ctx)?;
                    ctx.write_all(b")")?;
                }
                Ok(())
            }
        }
    }
}

impl EncodeIntoContext for TaggedExtVal<'_> {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        match self {
            Self::Simple(TaggedExtSimple::SequenceSet(set)) => set.encode_ctx(ctx),
            Self::Simple(TaggedExtSimple::Number(n)) => write!(ctx, "{n}"),
            Self::Comp(comp) => {
                ctx.write_all(b"(")?;
                if let Some(comp) = comp {
                    comp.encode_ctx(ctx)?;
                }
                ctx.write_all(b")")
            }
        }
    }
}

impl EncodeIntoContext for TaggedExtComp<'_> {
    fn encode_ctx(&self, ctx: &mut EncodeContext) -> fmt::Result {
        match self {
            Self::Single(astring) => astring.encode_ctx(ctx),
            Self::Multi(comps) => join_serializable(comps.as_ref(), b" ", ctx),
            Self::Group(comp) => {
                ctx.write_all(b"(")?;
                comp.encode_ctx(ctx)?;
                ctx.write_all(b")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use imap_types::{
        command::{Command, CommandBody},
        core::{AString, Vec1},
        extensions::list_extended::ListSelectBaseOpt,
        flag::FlagNameAttribute,
        response::{Data, Response},
        status::StatusDataItemName,
    };

    use super::*;
    use crate::{
        CommandCodec, ResponseCodec,
        decode::Decoder,
        testing::{kat_inverse_command, kat_inverse_response},
    };

    #[test]
    fn test_kat_inverse_command_list_extended() {
        kat_inverse_command(&[
            (
                b"A LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX* \"Other Users/*\") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n?"
                    .as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ListExtended {
                        selection_options: vec![
                            ListSelectOption::Subscribed,
                            ListSelectOption::RecursiveMatch,
                        ],
                        reference: "".try_into().unwrap(),
                        patterns: Vec1::try_from(vec![
                            "INBOX*".try_into().unwrap(),
                            ListMailbox::String("Other Users/*".try_into().unwrap()),
                        ])
                        .unwrap(),
                        return_options: vec![
                            ListReturnOption::Children,
                            ListReturnOption::Status(
                                Vec1::try_from(vec![
                                    StatusDataItemName::Messages,
                                    StatusDataItemName::Unseen,
                                ])
                                .unwrap(),
                            ),
                        ],
                    },
                )
                .unwrap(),
            ),
            (
                b"A LIST () \"\" %\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ListExtended {
                        selection_options: vec![],
                        reference: "".try_into().unwrap(),
                        patterns: Vec1::from(ListMailbox::try_from("%").unwrap()),
                        return_options: vec![],
                    },
                )
                .unwrap(),
            ),
            (
                b"A LIST (REMOTE SPECIAL-USE) \"\" * RETURN (SUBSCRIBED SPECIAL-USE)\r\n?"
                    .as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::ListExtended {
                        selection_options: vec![
                            ListSelectOption::Remote,
                            ListSelectOption::SpecialUse,
                        ],
                        reference: "".try_into().unwrap(),
                        patterns: Vec1::from(ListMailbox::try_from("*").unwrap()),
                        return_options: vec![
                            ListReturnOption::Subscribed,
                            ListReturnOption::SpecialUse,
                        ],
                    },
                )
                .unwrap(),
            ),
            (
                // The plain LIST of RFC 3501 is unchanged.
                b"A LIST \"\" *\r\n?".as_ref(),
                b"?".as_ref(),
                Command::new(
                    "A",
                    CommandBody::List {
                        reference: "".try_into().unwrap(),
                        mailbox_wildcard: "*".try_into().unwrap(),
                    },
                )
                .unwrap(),
            ),
        ]);
    }

    #[test]
    fn test_parse_list_extended_recursivematch_with_special_use() {
        let (_, cmd) = CommandCodec::default()
            .decode(b"A LIST (SPECIAL-USE RECURSIVEMATCH) \"\" *\r\n")
            .unwrap();
        assert!(matches!(cmd.body, CommandBody::ListExtended { .. }));
    }

    #[test]
    fn test_parse_list_extended_forms() {
        // RETURN alone, and a parenthesized single pattern, make an extended LIST.
        let (_, cmd) = CommandCodec::default()
            .decode(b"A list \"\" (*) return (status (uidnext))\r\n")
            .unwrap();
        assert_eq!(
            cmd.body,
            CommandBody::ListExtended {
                selection_options: vec![],
                reference: "".try_into().unwrap(),
                patterns: Vec1::from(ListMailbox::try_from("*").unwrap()),
                return_options: vec![ListReturnOption::Status(Vec1::from(
                    StatusDataItemName::UidNext
                ))],
            }
        );
    }

    #[test]
    fn test_parse_list_extended_malformed() {
        for line in [
            // RECURSIVEMATCH needs a base option (RFC 5258, section 3.1).
            b"A LIST (RECURSIVEMATCH) \"\" *\r\n".as_ref(),
            b"A LIST (REMOTE RECURSIVEMATCH) \"\" *\r\n",
            b"A LIST (FOO) \"\" *\r\n",
            b"A LIST (SUBSCRIBED \"\" *\r\n",
            b"A LIST \"\" () \r\n",
            b"A LIST \"\" * RETURN (STATUS ())\r\n",
            b"A LIST \"\" * RETURN (STATUS (BOGUS))\r\n",
            b"A LIST \"\" * RETURN (FOO)\r\n",
            b"A LIST \"\" * RETURN CHILDREN\r\n",
            b"A LIST \"\" (a b\r\n",
        ] {
            assert!(
                CommandCodec::default().decode(line).is_err(),
                "{}",
                alloc::string::String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn test_kat_inverse_response_list_extended() {
        kat_inverse_response(&[
            (
                b"* LIST () \"/\" Foo (CHILDINFO (\"SUBSCRIBED\"))\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::ListExtended {
                    items: vec![],
                    delimiter: Some('/'.try_into().unwrap()),
                    mailbox: "Foo".try_into().unwrap(),
                    extended_items: vec![MboxListExtendedItem::ChildInfo(Vec1::from(
                        ListSelectBaseOpt::Subscribed,
                    ))],
                }),
            ),
            (
                b"* LIST (\\HasNoChildren) \"/\" Bar (OLDNAME (Baz) X-NUM 5)\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::ListExtended {
                    items: vec![FlagNameAttribute::from(
                        imap_types::core::Atom::try_from("HasNoChildren").unwrap(),
                    )],
                    delimiter: Some('/'.try_into().unwrap()),
                    mailbox: "Bar".try_into().unwrap(),
                    extended_items: vec![
                        MboxListExtendedItem::Other {
                            tag: MboxListExtendedItemTag::try_from(
                                AString::try_from("OLDNAME").unwrap(),
                            )
                            .unwrap(),
                            value: TaggedExtVal::Comp(Some(TaggedExtComp::Single(
                                AString::try_from("Baz").unwrap(),
                            ))),
                        },
                        MboxListExtendedItem::Other {
                            tag: MboxListExtendedItemTag::try_from(
                                AString::try_from("X-NUM").unwrap(),
                            )
                            .unwrap(),
                            value: TaggedExtVal::Simple(TaggedExtSimple::SequenceSet(
                                "5".try_into().unwrap(),
                            )),
                        },
                    ],
                }),
            ),
            (
                // Without extended data: the plain LIST response, unchanged.
                b"* LIST () NIL Foo\r\n???".as_ref(),
                b"???".as_ref(),
                Response::Data(Data::List {
                    items: vec![],
                    delimiter: None,
                    mailbox: "Foo".try_into().unwrap(),
                }),
            ),
        ]);
    }

    #[test]
    fn test_list_extended_response_recursion_is_bounded() {
        let mut line = alloc::string::String::from("* LIST () \"/\" Foo (X ");
        line.push_str(&"(".repeat(100));
        line.push('a');
        line.push_str(&")".repeat(100));
        line.push_str(")\r\n");
        assert!(ResponseCodec::default().decode(line.as_bytes()).is_err());
    }
}
