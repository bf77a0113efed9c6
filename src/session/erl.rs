//! Reply texts that depend on Erlang.
//!
//! Most are built by RabbitMQ printing an Erlang term with
//! `io_lib:format("~p")`: frame payload snippets (`rabbit_reader`'s
//! `payload_snippet`) and expiration parse errors (`rabbit_basic`'s
//! `parse_expiration`). `~p` pretty-prints: a binary is `<<"text">>` when
//! every byte is printable latin-1 and `<<1,2,3>>` otherwise, and a term
//! that does not fit in 80 columns from where it starts is broken over
//! lines (`io_lib_pretty`), so the texts carry newlines exactly where
//! RabbitMQ's do. The layout rules are io_lib_pretty's (OTP 25, what
//! RabbitMQ 3.10.8 runs on), reduced to the terms printed here; they were
//! checked against that `io_lib:format` on some 11,000 generated inputs
//! (the tests keep a sample).
//!
//! Only error paths come here. Bytes above 0x9F that Erlang prints as
//! latin-1 characters become the same characters in UTF-8 (RabbitMQ sends
//! the raw latin-1 byte, which is not UTF-8).

use crate::protocol::AmqpError;

/// `~p`'s line length.
const LINE: usize = 80;

/// The column io_lib_format starts a `~p` at after `text` (1-based): it
/// counts characters since the last newline, tabs to the next multiple of 8.
fn column_after(text: &[u8], mut col: usize) -> usize {
    for &c in text {
        col = match c {
            b'\n' => 0,
            b'\t' => (col + 8) / 8 * 8,
            _ => col + 1,
        };
    }
    col + 1
}

/// `io_lib:printable_latin1_list`, byte by byte.
pub(crate) fn printable(c: u8) -> bool {
    matches!(c, 32..=126 | 160..=255 | b'\n' | b'\r' | b'\t' | 11 | 8 | 12 | 27)
}

/// A printable byte string as an Erlang string literal, `"..."`.
pub(crate) fn quoted(bytes: &[u8], out: &mut String) {
    out.push('"');
    for &c in bytes {
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            11 => out.push_str("\\v"),
            8 => out.push_str("\\b"),
            12 => out.push_str("\\f"),
            27 => out.push_str("\\e"),
            c => out.push(c as char),
        }
    }
    out.push('"');
}

fn quoted_len(bytes: &[u8]) -> usize {
    2 + bytes
        .iter()
        .map(|&c| match c {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 11 | 8 | 12 | 27 => 2,
            _ => 1,
        })
        .sum::<usize>()
}

fn digits(c: u8) -> usize {
    match c {
        0..=9 => 1,
        10..=99 => 2,
        _ => 3,
    }
}

/// `bytes` as comma-separated integers, the inside of `[...]` or `<<...>>`.
fn ints_len(bytes: &[u8]) -> usize {
    bytes.iter().map(|&c| digits(c)).sum::<usize>() + bytes.len().saturating_sub(1)
}

/// A binary printed with `~p` starting at column `col`.
fn binary(bytes: &[u8], col: usize, out: &mut String) {
    use std::fmt::Write;
    if bytes.is_empty() {
        out.push_str("<<>>");
        return;
    }
    if bytes.iter().all(|&c| printable(c)) {
        // A string never breaks.
        out.push_str("<<");
        quoted(bytes, out);
        out.push_str(">>");
        return;
    }
    let len = 4 + ints_len(bytes);
    out.push_str("<<");
    if len < LINE.saturating_sub(col) {
        for (i, c) in bytes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{c}");
        }
    } else {
        // io_lib_pretty's pp_binary: fill lines of `n0` characters,
        // continuing under the first element.
        let n0 = (LINE as isize - (col as isize + 2)).min(len as isize - 4).max(8);
        let indent = " ".repeat(col + 1);
        let mut n = n0;
        let (last, init) = bytes.split_last().expect("not empty");
        for &c in init {
            let l = digits(c) as isize + 1;
            if n - l < 0 {
                out.push('\n');
                out.push_str(&indent);
                n = n0 - l;
            } else {
                n -= l;
            }
            let _ = write!(out, "{c},");
        }
        if digits(*last) as isize > n {
            out.push('\n');
            out.push_str(&indent);
        }
        let _ = write!(out, "{last}");
    }
    out.push_str(">>");
}

/// RabbitMQ's `"type ~p, ~s octets = ~p"` for a frame it cannot take: at
/// most the first 16 octets, as an Erlang binary.
fn frame_octets(kind: u8, payload: &[u8]) -> String {
    let (which, shown) = if payload.len() <= 16 {
        ("all", payload)
    } else {
        ("first 16", &payload[..16])
    };
    let mut out = format!("type {kind}, {which} octets = ");
    let col = column_after(out.as_bytes(), 0);
    binary(shown, col, &mut out);
    out
}

/// 501 for a frame RabbitMQ cannot even classify (`rabbit_command_assembler:
/// analyze_frame` says `error`): an unknown type, a heartbeat with a
/// payload, a method or content header too short for its fixed fields.
pub(super) fn unknown_frame(kind: u8, payload: &[u8]) -> AmqpError {
    AmqpError::frame(format!("{}: unknown_frame", frame_octets(kind, payload)))
}

/// 505 for a well-formed frame where none of its type may come.
pub(super) fn unexpected_frame(kind: u8, payload: &[u8]) -> AmqpError {
    AmqpError::unexpected_frame(frame_octets(kind, payload))
}

/// Exchange types RabbitMQ 3.10.8 calls "invalid" rather than "unknown".
/// `rabbit_exchange:check_type` says "invalid" when the name happens to be
/// an atom its Erlang node already has (any module's: `foo`, `test`, `x`)
/// and "unknown" otherwise (`nosuch`, `my-type`, and plugin types such as
/// `x-delayed-message` while the plugin is off). Which atoms a node has
/// cannot be known from outside: these are the names checked against
/// 3.10.8; any other name is "unknown", the answer for made-up names.
const ATOM_EXCHANGE_TYPES: &str = "\
    A B X Direct a b c d e f g h i j k l m n p q r s t u v w x y z \
    all amqp any bad bar basic broadcast classic consumer data debug default dummy error event events \
    exchange false foo global hash hello info internal invalid invalid_type key local log match \
    message missing name new nil none nonexisting not_found notfound null ok old one other priority \
    publish queue quorum rabbit random route sample simple stream string system temp test test1 \
    testing tmp trace true type undefined unknown unknown_type unsupported value warning world";

/// 503 for an exchange type RabbitMQ does not have, in its words.
pub(super) fn bad_exchange_type(kind: &[u8]) -> AmqpError {
    let name = String::from_utf8_lossy(kind);
    let atom = ATOM_EXCHANGE_TYPES.split_ascii_whitespace().any(|a| a == name);
    let word = if atom { "invalid" } else { "unknown" };
    AmqpError::command_invalid(format!("{word} exchange type '{name}'"))
}

/// Why RabbitMQ refuses an `expiration` property (`rabbit_basic:
/// parse_expiration`: `string:to_integer`, then `rabbit_misc:check_expiry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadExpiration {
    /// No integer at the start.
    NoInteger,
    /// An integer, then more (`rest` is where the integer ends).
    Leftover { rest: usize },
    /// Below 0 (e.g. `-1`; `-0` is 0 and fine).
    Negative,
    /// Over ten years of milliseconds.
    TooLarge,
}

/// RabbitMQ's longest expiration: ten years in milliseconds.
const MAX_EXPIRY_MS: u64 = 315_360_000_000;

/// Parses an `expiration` property as RabbitMQ does: an optional sign, at
/// least one ASCII digit, nothing after, within [0, ten years].
pub(super) fn parse_expiration(raw: &[u8]) -> Result<u64, BadExpiration> {
    let unsigned = match raw.first() {
        Some(b'+' | b'-') => &raw[1..],
        _ => raw,
    };
    let n = unsigned.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return Err(BadExpiration::NoInteger);
    }
    if n < unsigned.len() {
        return Err(BadExpiration::Leftover {
            rest: raw.len() - unsigned.len() + n,
        });
    }
    let significant = unsigned
        .iter()
        .position(|&c| c != b'0')
        .map_or(&[][..], |i| &unsigned[i..]);
    if significant.is_empty() {
        return Ok(0);
    }
    if raw[0] == b'-' {
        return Err(BadExpiration::Negative);
    }
    // Anything longer than 12 digits is over the limit (and may not fit a u64).
    let ms = if significant.len() > 12 {
        u64::MAX
    } else {
        significant.iter().fold(0u64, |v, c| v * 10 + u64::from(c - b'0'))
    };
    if ms > MAX_EXPIRY_MS {
        return Err(BadExpiration::TooLarge);
    }
    Ok(ms)
}

/// An element of the printed error term: written whole (atomic), or a
/// list of integers that may break over lines.
enum Elem<'a> {
    Atomic(String),
    Ints(&'a [u8]),
}

impl Elem<'_> {
    fn len(&self) -> usize {
        match self {
            Elem::Atomic(s) => s.chars().count(),
            Elem::Ints(b) => 2 + ints_len(b),
        }
    }
}

/// The error term of a refused expiration printed with `~p` at `col`.
fn expiration_term(raw: &[u8], why: BadExpiration, col: usize, out: &mut String) {
    let (tag, elem) = match why {
        BadExpiration::NoInteger => {
            out.push_str("no_integer");
            return;
        }
        BadExpiration::Leftover { rest } => {
            let s = &raw[rest..];
            let elem = if s.iter().all(|&c| printable(c)) {
                let mut q = String::with_capacity(quoted_len(s));
                quoted(s, &mut q);
                Elem::Atomic(q)
            } else {
                Elem::Ints(s)
            };
            ("leftover_string", elem)
        }
        BadExpiration::Negative | BadExpiration::TooLarge => {
            // The integer as Erlang prints it: no '+', no leading zeros.
            let unsigned = match raw[0] {
                b'+' | b'-' => &raw[1..],
                _ => raw,
            };
            let digits = unsigned
                .iter()
                .position(|&c| c != b'0')
                .map_or(&b"0"[..], |i| &unsigned[i..]);
            let sign = if why == BadExpiration::Negative { "-" } else { "" };
            let tag = if why == BadExpiration::Negative {
                "value_negative"
            } else {
                "value_too_large"
            };
            (
                tag,
                Elem::Atomic(format!("{sign}{}", String::from_utf8_lossy(digits))),
            )
        }
    };
    tagged_pair(tag, &elem, col, out);
}

/// `{Tag,Elem}` as io_lib_pretty lays out a tagged 2-tuple at column
/// `col` (top level: no trailing characters to leave room for).
fn tagged_pair(tag: &str, elem: &Elem, col: usize, out: &mut String) {
    let tlen = tag.len();
    let elen = elem.len();
    // The whole term's length is also io_lib_pretty's `M` here.
    let m = tlen + elen + 3;
    out.push('{');
    out.push_str(tag);
    if m < LINE.saturating_sub(col) {
        out.push(',');
        write_elem(elem, out);
        out.push('}');
        return;
    }
    // The tuple's indentation: elements after the tag when the tag ends
    // before mid-line, else on the next lines, indented 4 if that is
    // still before mid-line, else 1.
    let tag_ind = tlen + 2;
    let tcol = col + tag_ind;
    let indent_of_col = col - 1;
    if tcol < LINE / 2 {
        out.push(',');
        elem_at(elem, tcol, m, indent_of_col + tag_ind, 1, tlen + 2, out);
    } else {
        let tind = if col + 4 <= LINE / 2 { 4 } else { 1 };
        let col1 = col + tind;
        let indent = indent_of_col + tind;
        // Atomic elements stay on the tag's line when they fit.
        let fits = matches!(elem, Elem::Atomic(_)) && elen + 1 < LINE.saturating_sub(tcol + 1);
        if fits {
            out.push(',');
            write_elem(elem, out);
        } else {
            out.push_str(",\n");
            out.push_str(&" ".repeat(indent));
            elem_at(elem, col1, m, indent, 1, 0, out);
        }
    }
    out.push('}');
}

fn write_elem(elem: &Elem, out: &mut String) {
    match elem {
        Elem::Atomic(s) => out.push_str(s),
        Elem::Ints(b) => {
            out.push('[');
            for (i, c) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&c.to_string());
            }
            out.push(']');
        }
    }
}

/// io_lib_pretty's pp_element / pp of the last element of a tuple at
/// `col`, with `ld` characters to follow it and `w` already on its line;
/// `indent` is the indentation of its lines (spaces).
fn elem_at(elem: &Elem, col: usize, m: usize, indent: usize, ld: usize, w: usize, out: &mut String) {
    let len = elem.len();
    let ints = match elem {
        Elem::Ints(b) if !(len + ld < LINE.saturating_sub(col) && len + w + ld <= m) => *b,
        _ => {
            write_elem(elem, out);
            return;
        }
    };
    // A list that does not fit: fill lines, continuing under the first
    // element (pp_list / pp_tail).
    out.push('[');
    let col0 = col + 1;
    let ind = " ".repeat(indent + 1);
    let ll = LINE as isize;
    let (m, ld) = (m as isize, ld as isize);
    let mut w = w as isize + 1;
    let mut cur;
    let (first, rest) = ints.split_first().expect("leftover is not empty");
    {
        let l = digits(*first) as isize;
        let ld1 = if rest.is_empty() { ld + 1 } else { 0 };
        let we = if l < ll - col0 as isize - ld1 && l + w + ld1 <= m {
            l
        } else {
            ll
        };
        out.push_str(&first.to_string());
        cur = col0 as isize + we;
        w += we;
    }
    for (i, &c) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let ld1 = if last { ld + 1 } else { 0 };
        let elen = 1 + digits(c) as isize;
        let stays = if ld1 == 0 {
            elen + 1 < ll - cur && w + elen < m
        } else {
            elen < ll - cur - ld1 && w + elen + ld1 <= m
        };
        if stays {
            out.push(',');
            out.push_str(&c.to_string());
            cur += elen;
            w += elen;
        } else {
            out.push_str(",\n");
            out.push_str(&ind);
            out.push_str(&c.to_string());
            let l = elen - 1;
            let we = if l < ll - col0 as isize - ld1 && l + ld1 <= m {
                l
            } else {
                ll
            };
            cur = col0 as isize + we;
            w = we;
        }
    }
    out.push(']');
}

/// RabbitMQ's 406 text for a refused expiration (without the code name):
/// `invalid expiration '<raw>': <reason>`.
pub(super) fn expiration_error(raw: &[u8], why: BadExpiration) -> String {
    let mut out = format!("invalid expiration '{}': ", String::from_utf8_lossy(raw));
    let col = column_after(raw, "invalid expiration '".len()) + "': ".len();
    expiration_term(raw, why, col, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiration(raw: &str) -> String {
        match parse_expiration(raw.as_bytes()) {
            Ok(ms) => format!("ok {ms}"),
            Err(why) => expiration_error(raw.as_bytes(), why),
        }
    }

    #[test]
    fn expiration_as_rabbitmq_parses_it() {
        let cases = [
            ("0", "ok 0"),
            ("+12", "ok 12"),
            ("-0", "ok 0"),
            ("007", "ok 7"),
            ("315360000000", "ok 315360000000"),
            ("", "invalid expiration '': no_integer"),
            ("abc", "invalid expiration 'abc': no_integer"),
            ("+-1", "invalid expiration '+-1': no_integer"),
            (" 12", "invalid expiration ' 12': no_integer"),
            ("-1", "invalid expiration '-1': {value_negative,-1}"),
            ("-007", "invalid expiration '-007': {value_negative,-7}"),
            ("12x", "invalid expiration '12x': {leftover_string,\"x\"}"),
            ("1.5", "invalid expiration '1.5': {leftover_string,\".5\"}"),
            (
                "12\"\n",
                "invalid expiration '12\"\n': {leftover_string,\"\\\"\\n\"}",
            ),
            ("12\u{1}", "invalid expiration '12\u{1}': {leftover_string,[1]}"),
            (
                "315360000001",
                "invalid expiration '315360000001': {value_too_large,315360000001}",
            ),
            (
                "99999999999999999999999999",
                "invalid expiration '99999999999999999999999999': {value_too_large,\n                                                  99999999999999999999999999}",
            ),
        ];
        for (raw, text) in cases {
            assert_eq!(expiration(raw), text, "{raw:?}");
        }
    }

    #[test]
    fn frame_octets_as_rabbitmq_prints_them() {
        let cases: [(u8, &[u8], &str); 6] = [
            (8, b"", "type 8, all octets = <<>>"),
            (1, &[0, 20, 0, 10, 0], "type 1, all octets = <<0,20,0,10,0>>"),
            (3, b"ab", "type 3, all octets = <<\"ab\">>"),
            (
                7,
                b"a\nb\t\"\\\x1b\x08",
                "type 7, all octets = <<\"a\\nb\\t\\\"\\\\\\e\\b\">>",
            ),
            (
                7,
                &[
                    1, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0,
                ],
                "type 7, first 16 octets = <<1,255,255,255,255,255,255,255,255,255,255,255,255,\n                            255,255,255>>",
            ),
            (
                7,
                &[b'c'; 17],
                "type 7, first 16 octets = <<\"cccccccccccccccc\">>",
            ),
        ];
        for (kind, payload, text) in cases {
            assert_eq!(frame_octets(kind, payload), text, "{payload:?}");
        }
    }

    /// The text as RabbitMQ's bytes: the expiration itself verbatim, every
    /// character of ours as the latin-1 byte Erlang would write.
    fn rabbit_bytes(raw: &[u8]) -> Vec<u8> {
        let Err(why) = parse_expiration(raw) else {
            panic!("{raw:?} is valid");
        };
        let mut out: String = "invalid expiration '".into();
        out.extend(raw.iter().map(|&c| c as char));
        out.push_str("': ");
        let col = column_after(raw, "invalid expiration '".len()) + "': ".len();
        expiration_term(raw, why, col, &mut out);
        out.chars().map(|c| c as u32 as u8).collect()
    }

    /// Layouts of a term that does not fit on its line, as OTP 25's
    /// io_lib:format wrote them (newlines and tabs in the expiration move
    /// the column the term starts at).
    #[test]
    fn long_terms_break_as_in_erlang() {
        let cases: [(&[u8], &[u8]); 4] = [
            (
                b"80\x01894099780",
                b"invalid expiration '80\x01894099780': {leftover_string,\n                                       [1,56,57,52,48,57,57,55,56,48]}",
            ),
            (
                b"9\x84\x12\xc7\xe3u\x19,\xce\xec\xb6S\x94\x94c",
                b"invalid expiration '9\x84\x12\xc7\xe3u\x19,\xce\xec\xb6S\x94\x94c': {leftover_string,\n                                       [132,18,199,227,117,25,44,206,236,182,\n                                        83,148,148,99]}",
            ),
            (
                b"1\n\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
                b"invalid expiration '1\n\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80': {leftover_string,[10,128,128,128,128,128,128,128,128,128,128,\n                                128]}",
            ),
            (
                b"1\t\x80\x80\x80\x80\x80\x80\x80",
                b"invalid expiration '1\t\x80\x80\x80\x80\x80\x80\x80': {leftover_string,\n                                      [9,128,128,128,128,128,128,128]}",
            ),
        ];
        for (raw, text) in cases {
            assert_eq!(rabbit_bytes(raw), text, "{raw:?}");
        }
    }

    #[test]
    fn exchange_types_rabbitmq_knows_as_atoms_are_invalid() {
        let text = |k: &str| bad_exchange_type(k.as_bytes()).reply_text();
        assert_eq!(text("foo"), "COMMAND_INVALID - invalid exchange type 'foo'");
        assert_eq!(text("nosuch"), "COMMAND_INVALID - unknown exchange type 'nosuch'");
        assert_eq!(
            text("x-delayed-message"),
            "COMMAND_INVALID - unknown exchange type 'x-delayed-message'"
        );
    }
}
