//! Character classes of the PTB tokenizer.
//!
//! The reference lexer works on UTF-16 code units: a character outside the Basic
//! Multilingual Plane arrives as two surrogates that belong to no class, so it is deleted
//! (emoji, for example). Every predicate here is therefore false outside the BMP. Letter and
//! digit tests use Rust's Unicode tables, which are newer than the reference's; the two agree
//! on every script found in English captions.

/// Soft hyphen: allowed inside words and removed from the token text.
pub(super) const SOFT_HYPHEN: char = '\u{AD}';

/// Horizontal white space (no line breaks).
pub(super) const SPACE_CHARS: &str = " \t\u{A0}\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200A}\u{3000}";

/// Characters that end a line (`\r\n` is one line break made of two of them).
pub(super) const NEWLINE_CHARS: &str = "\r\n\u{2028}\u{2029}\u{B}\u{C}\u{85}";

fn in_bmp(c: char) -> bool {
    (c as u32) <= 0xFFFF
}

/// A letter in the general sense (Unicode letters, soft hyphen, combining diacritics).
pub(super) fn letter(c: char) -> bool {
    plain_letter(c) || c == SOFT_HYPHEN || ('\u{300}'..='\u{36F}').contains(&c)
}

/// A Unicode letter. Rust's "alphabetic" also covers letter-like numbers (Roman numerals)
/// and circled letters, which Java does not count as letters.
pub(super) fn plain_letter(c: char) -> bool {
    in_bmp(c) && c.is_alphabetic() && !c.is_numeric() && !('\u{24B6}'..='\u{24E9}').contains(&c)
}

/// A decimal digit of any script (superscripts, fractions and circled numbers excluded).
pub(super) fn digit(c: char) -> bool {
    if c.is_ascii_digit() {
        return true;
    }
    let cp = c as u32;
    in_bmp(c) && cp >= 0x660 && c.is_numeric() && !c.is_alphabetic() && !symbolic_number(cp)
}

/// Numeric characters that are not decimal digits (Unicode categories No and Nl).
fn symbolic_number(cp: u32) -> bool {
    matches!(
        cp,
        0x2070..=0x218F
            | 0x2460..=0x24FF
            | 0x2776..=0x2793
            | 0x3007
            | 0x3021..=0x3029
            | 0x3038..=0x303A
            | 0x3192..=0x3195
            | 0x3220..=0x3229
            | 0x3248..=0x324F
            | 0x3251..=0x325F
            | 0x3280..=0x3289
            | 0x32B1..=0x32BF
            | 0x09F4..=0x09F9
            | 0x0BF0..=0x0BF2
            | 0x0F2A..=0x0F33
            | 0x1369..=0x137C
            | 0x16EE..=0x16F0
            | 0x17F0..=0x17F9
            | 0xA830..=0xA835
    )
}

/// [`letter`] or [`digit`].
pub(super) fn letter_or_digit(c: char) -> bool {
    letter(c) || digit(c)
}

/// [`plain_letter`] or [`digit`].
pub(super) fn plain_letter_or_digit(c: char) -> bool {
    plain_letter(c) || digit(c)
}

/// An upper-case letter.
pub(super) fn uppercase(c: char) -> bool {
    in_bmp(c) && c.is_uppercase()
}

/// `[A-Za-z]`.
pub(super) fn ascii_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
}

/// `[A-Z]`.
pub(super) fn ascii_upper(c: char) -> bool {
    c.is_ascii_uppercase()
}

/// `[0-9]`.
pub(super) fn ascii_digit(c: char) -> bool {
    c.is_ascii_digit()
}

/// `[A-Za-z0-9]`.
pub(super) fn ascii_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Not `[A-Za-z]` (the right context of clitics).
pub(super) fn not_ascii_letter(c: char) -> bool {
    !c.is_ascii_alphabetic()
}

/// Not `[A-Za-z0-9]` (the right context of smileys).
pub(super) fn not_ascii_alnum(c: char) -> bool {
    !c.is_ascii_alphanumeric()
}

/// Any character at all.
pub(super) fn any(_: char) -> bool {
    true
}

/// Characters allowed in the host labels of a bare `name.com` address: the reference
/// excludes white space, quotes, brackets, sentence punctuation, `$` and the whole ASCII
/// range from `,` to `_` (digits and upper-case letters included).
pub(super) fn bare_host_char(c: char) -> bool {
    !(" \t\n\u{C}\r\"`'<>|.!?(){}$".contains(c) || (','..='_').contains(&c))
}

/// Stand-alone symbols that form one-character tokens (maths, currency-like signs, arrows,
/// letter-like symbols, full-width punctuation, ...).
pub(super) fn misc_symbol(c: char) -> bool {
    let cp = c as u32;
    "+%&~^|\\\u{A6}\u{A7}\u{A8}\u{A9}\u{AC}\u{AE}\u{AF}\u{D7}\u{F7}".contains(c)
        || matches!(
            cp,
            0xB0..=0xBA
                | 0x387
                | 0x5BE
                | 0x5C0
                | 0x5C3
                | 0x5C6
                | 0x5F3
                | 0x5F4
                | 0x600..=0x603
                | 0x606..=0x60A
                | 0x60C
                | 0x614
                | 0x61B
                | 0x61E
                | 0x66A
                | 0x66D
                | 0x703..=0x70D
                | 0x7F6..=0x7F8
                | 0x964
                | 0x965
                | 0xE4F
                | 0x1FBD
                | 0x2016
                | 0x2017
                | 0x2020..=0x2023
                | 0x2030..=0x2038
                | 0x203B
                | 0x203E..=0x2042
                | 0x2044
                | 0x207A..=0x207F
                | 0x208A..=0x208E
                | 0x2100..=0x214F
                | 0x2190..=0x21FF
                | 0x2200..=0x2BFF
                | 0x3012
                | 0x30FB
                | 0xFF01..=0xFF0F
                | 0xFF1A..=0xFF20
                | 0xFF3B..=0xFF40
                | 0xFF5B..=0xFF65
        )
}

/// Sentence-final and other one-character punctuation marks.
pub(super) fn sentence_mark(c: char) -> bool {
    ".\u{A1}\u{BF}\u{37E}\u{589}\u{61F}\u{6D4}\u{700}\u{701}\u{702}\u{7FA}\u{3002}".contains(c)
}

/// Superscript digits (and the superscript one, two, three of Latin-1).
pub(super) fn superscript_digit(c: char) -> bool {
    matches!(c as u32, 0x2070 | 0xB9 | 0xB2 | 0xB3 | 0x2074..=0x2079)
}

/// Subscript digits.
pub(super) fn subscript_digit(c: char) -> bool {
    matches!(c as u32, 0x2080..=0x2089)
}

/// Vulgar fraction characters.
pub(super) fn fraction_char(c: char) -> bool {
    matches!(c as u32, 0xBC..=0xBE | 0x2153..=0x215E)
}

/// Characters that the reference ignores like white space: NUL, zero-width space, direction
/// marks and the byte-order mark.
pub(super) fn ignorable(c: char) -> bool {
    "\0\u{200B}\u{200E}\u{200F}\u{FEFF}".contains(c)
}
