//! Penn Treebank tokenisation of captions, as pycocoevalcap does it before scoring.
//!
//! pycocoevalcap's `PTBTokenizer` writes every caption of a batch on its own line (inner
//! line breaks replaced by spaces), runs Stanford CoreNLP 3.4.1's `PTBTokenizer` with
//! `-preserveLines -lowerCase` over the whole file, and then drops the tokens in its
//! punctuation list ([`COCO_PUNCTUATION`]). [`PtbTokenizer`] reproduces both steps in Rust.
//!
//! Things a re-implementation has to copy, because they change the scores:
//! * the lexer sees the whole batch, so a caption's last token can depend on the first
//!   word of the next caption (a one-letter acronym such as `A.` before `The` loses its
//!   period); batches are therefore tokenised as one stream, in the order given;
//! * brackets become `-lrb-`, `-rrb-`, `-lsb-`, ... and are *not* removed (the wrapper's
//!   list has the upper-case forms, but the tokens were lower-cased first);
//! * `!!`, `?!`, `--` made of five or more hyphens, `#`, `$`, `%`, `&`, `/`, `*`, `@`
//!   stay as tokens; `"` becomes ` `` ` or `''` depending on the next character and is
//!   removed;
//! * clitics are split (`it 's`, `do n't`, `ca n't`, `i 'm`), as are `cannot` (`can not`)
//!   and `gonna`/`wanna`/`gotta`/`gimme`/`lemme` (`gon na`);
//! * hyphenated words, `black/white`, numbers (`3.5`, `1,000`, `-5`), `3 1/2` (one token
//!   with a no-break space), `e.g.`, `u.s.`, `st.`, `mr.`, `etc.` stay whole;
//! * emoji and other characters outside the Basic Multilingual Plane are deleted.
//!
//! Known differences from the Java tool: line-break characters inside a caption other than
//! `\n` (`\r`, U+2028, U+2029, vertical tab, form feed) are treated as spaces, whereas the
//! Java pipeline would start a new line and misalign every later caption; SGML character
//! entities other than the few listed in `rules.rs` are not decoded.

mod classes;
mod pattern;
mod rules;

use rules::{rules, Action, Form};

/// The tokens that pycocoevalcap's wrapper removes after tokenisation.
pub const COCO_PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Line breaks that the Java tool honours; inside a caption they are replaced by spaces so
/// that each caption stays on one line.
const INNER_LINE_BREAKS: &[char] = &['\n', '\r', '\u{2028}', '\u{2029}', '\u{B}', '\u{C}'];

/// Tokeniser matching pycocoevalcap's `PTBTokenizer` (CoreNLP 3.4.1 PTB3 tokenisation,
/// lower-cased, punctuation removed).
#[derive(Debug, Clone, Copy, Default)]
pub struct PtbTokenizer;

impl PtbTokenizer {
    /// A tokeniser with pycocoevalcap's settings.
    pub fn new() -> Self {
        PtbTokenizer
    }

    /// The lower-cased PTB tokens of each caption, before punctuation removal: what the
    /// Java tool prints on each line. The captions are tokenised as one stream, in order.
    pub fn ptb_tokens<S: AsRef<str>>(&self, captions: &[S]) -> Vec<Vec<String>> {
        let joined: Vec<char> = captions
            .iter()
            .enumerate()
            .flat_map(|(i, caption)| {
                let separator = (i > 0).then_some('\n');
                separator
                    .into_iter()
                    .chain(caption.as_ref().chars().map(|c| {
                        if INNER_LINE_BREAKS.contains(&c) {
                            ' '
                        } else {
                            c
                        }
                    }))
            })
            .collect();
        let mut lines = split_lines(scan(&joined));
        // An empty batch is one empty line for the scanner but no caption for the caller.
        lines.resize_with(captions.len(), Vec::new);
        lines
    }

    /// Each caption as pycocoevalcap's `PTBTokenizer.tokenize` returns it: the lower-cased
    /// tokens without those in [`COCO_PUNCTUATION`], joined by single spaces.
    pub fn tokenize<S: AsRef<str>>(&self, captions: &[S]) -> Vec<String> {
        self.ptb_tokens(captions)
            .into_iter()
            .map(|tokens| {
                // The wrapper strips trailing white space from the Java output line before
                // splitting it at spaces (it matters for a last token such as a URL ending
                // in a no-break space).
                let line = tokens.join(" ");
                line.trim_end_matches(python_space)
                    .split(' ')
                    .filter(|t| !COCO_PUNCTUATION.contains(t))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }
}

/// Python's `str.isspace`.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// What the scanner produces.
enum Piece {
    Token(String),
    LineBreak,
}

fn split_lines(pieces: Vec<Piece>) -> Vec<Vec<String>> {
    let mut lines = vec![Vec::new()];
    for piece in pieces {
        match piece {
            Piece::Token(token) => lines.last_mut().expect("one line").push(token),
            Piece::LineBreak => lines.push(Vec::new()),
        }
    }
    lines
}

/// The winning rule at a position.
struct Choice {
    rule: usize,
    /// End of the token proper (right context excluded).
    end: usize,
    /// End of the match including right context: what "longest" is measured on.
    reach: usize,
}

fn scan(text: &[char]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let choice = best_rule(text, pos);
        let (piece, next) = apply(&rules()[choice.rule].action, text, pos, choice.end);
        pieces.extend(piece);
        pos = next;
    }
    pieces
}

/// The longest match over all rules; the earliest rule wins ties.
fn best_rule(text: &[char], pos: usize) -> Choice {
    let mut best: Option<Choice> = None;
    for (index, rule) in rules().iter().enumerate() {
        if !rule.pattern.may_start_with(text[pos]) {
            continue;
        }
        let ends = rule.pattern.ends(text, &[pos]);
        let Some((end, reach)) = match_extent(&ends, rule.context.as_ref(), text) else {
            continue;
        };
        if end > pos && best.as_ref().is_none_or(|b| reach > b.reach) {
            best = Some(Choice {
                rule: index,
                end,
                reach,
            });
        }
    }
    // The last rule accepts any single character except '\n', and '\n' is a line break.
    best.expect("the rule table covers every character")
}

/// The (token end, reach) of a rule given its possible token ends: the longest reach, and
/// for equal reach the longest token.
fn match_extent(
    ends: &[usize],
    context: Option<&pattern::Pat>,
    text: &[char],
) -> Option<(usize, usize)> {
    let Some(context) = context else {
        return ends.last().map(|&e| (e, e));
    };
    ends.iter()
        .rev()
        .filter_map(|&end| context.longest(text, end).map(|reach| (end, reach)))
        .reduce(|best, next| if next.1 > best.1 { next } else { best })
}

/// The pieces emitted by a rule matched on `text[start..end]`, and where scanning resumes.
fn apply(action: &Action, text: &[char], start: usize, end: usize) -> (Option<Piece>, usize) {
    let slice = |to: usize| -> String { text[start..to].iter().collect() };
    let token = |s: String| Some(Piece::Token(s.to_lowercase()));
    match action {
        Action::Emit(form) => (token(normalise(*form, &slice(end))), end),
        Action::EmitDropping(n) => (token(slice(end - n)), end - n),
        Action::EmitRescanningPeriod => (token(slice(end)), end - 1),
        Action::SentenceFinalAcronym if end - start == 2 => (token(slice(start + 1)), start + 1),
        Action::SentenceFinalAcronym => (token(slice(end)), end - 1),
        Action::Skip | Action::Delete => (None, end),
        Action::Newline => (Some(Piece::LineBreak), end),
    }
}

fn normalise(form: Form, text: &str) -> String {
    match form {
        Form::AsIs => text.to_string(),
        Form::Fixed(fixed) => fixed.to_string(),
        Form::NoSoftHyphens => without_soft_hyphens(text),
        Form::Quote { opening } => latex_quotes(text, opening),
        Form::SpacesToNbsp => text.replace(' ', "\u{A0}"),
        Form::Phone => bracket_names(&text.replace(' ', "\u{A0}")),
        Form::Smiley => bracket_names(text),
        Form::Currency => currency(text),
        Form::Fraction => fractions(text),
        Form::Ampersand => ampersands(text),
        Form::Hyphens if (3..=4).contains(&text.chars().count()) => "--".to_string(),
        Form::Hyphens => text.to_string(),
    }
}

fn without_soft_hyphens(text: &str) -> String {
    let out: String = text
        .chars()
        .filter(|&c| c != classes::SOFT_HYPHEN)
        .collect();
    // Never produce an empty token.
    if out.is_empty() {
        "-".to_string()
    } else {
        out
    }
}

/// ASCII quotes become `` ` ``/`` `` `` when opening and `'`/`''` when closing; typographic
/// quotes map by their direction.
fn latex_quotes(text: &str, opening: bool) -> String {
    let (single, double) = if opening { ("`", "``") } else { ("'", "''") };
    let text = text.replace("&apos;", "'").replace("&quot;", "\"");
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '\'' => out.push_str(single),
            '"' => out.push_str(double),
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            other => out.push(other),
        }
    }
    out
}

fn bracket_names(text: &str) -> String {
    text.replace('(', "-LRB-").replace(')', "-RRB-")
}

fn currency(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\u{A2}' => out.push_str("cents"),
            '\u{A3}' => out.push('#'),
            '\u{80}' | '\u{A4}' | '\u{20A0}' | '\u{20AC}' => out.push('$'),
            other => out.push(other),
        }
    }
    out
}

fn fractions(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\u{BC}' => out.push_str("1/4"),
            '\u{BD}' => out.push_str("1/2"),
            '\u{BE}' => out.push_str("3/4"),
            '\u{2153}' => out.push_str("1/3"),
            '\u{2154}' => out.push_str("2/3"),
            other => out.push(other),
        }
    }
    out
}

/// `&amp;` (any case) → `&`.
fn ampersands(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match pattern::literal_end(&chars, i, "&amp;") {
            Some(end) => {
                out.push('&');
                i = end;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> String {
        PtbTokenizer::new().ptb_tokens(&[text])[0].join(" ")
    }

    #[test]
    fn splits_clitics_and_keeps_compounds() {
        assert_eq!(
            tokens("It's a dog's well-known toy."),
            "it 's a dog 's well-known toy ."
        );
        assert_eq!(tokens("I can't, won't!"), "i ca n't , wo n't !");
    }

    #[test]
    fn trailing_context_counts_for_the_longest_match() {
        // "etc." followed by two characters beats the word "etc.a".
        assert_eq!(tokens("etc.a b"), "etc. a b");
    }

    #[test]
    fn empty_batch_gives_no_lines() {
        let none: [&str; 0] = [];
        assert!(PtbTokenizer::new().tokenize(&none).is_empty());
        assert_eq!(PtbTokenizer::new().tokenize(&["", "a"]), vec!["", "a"]);
    }
}
