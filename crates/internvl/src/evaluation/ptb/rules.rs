//! The rule table of the PTB tokenizer, in priority order.
//!
//! At each position every rule is tried; the one whose match (right context included) is
//! longest wins, and among equally long matches the earlier rule wins. A rule may have a
//! right context that must follow the token without being part of it (`word` before `'s`).
//! The table covers the behaviour of Stanford CoreNLP 3.4.1's `PTBLexer` in its default
//! options (PTB3 escaping, no americanisation, no `/` escaping, untokenisable characters
//! deleted) for everything plausible in image captions; SGML entities beyond `&amp;`,
//! `&apos;`, `&quot;`, `&lt;`, `&gt;`, `&nbsp;` and the dash entities are not handled.

use std::sync::OnceLock;

use super::classes::*;
use super::pattern::{alt, lits, opt, plus, rep, seq, star, Pat};

/// What a matched rule turns into.
pub(super) enum Action {
    /// Emit the whole match, transformed.
    Emit(Form),
    /// Emit all but the last `n` characters of the match, which are scanned again
    /// (`cannot` → `can` + `not`).
    EmitDropping(usize),
    /// Emit the whole match but scan its final period again, which yields an extra `.`
    /// token (an abbreviation that probably ends the sentence).
    EmitRescanningPeriod,
    /// An acronym before a typical sentence-initial word: a one-letter acronym loses its
    /// period (`A.` → `A` + `.`), a longer one keeps it and adds a `.` token.
    SentenceFinalAcronym,
    /// Nothing (white space).
    Skip,
    /// A line break.
    Newline,
    /// An untokenisable character: dropped.
    Delete,
}

/// How the text of an emitted token is normalised.
#[derive(Clone, Copy)]
pub(super) enum Form {
    /// Unchanged.
    AsIs,
    /// Replaced by this text.
    Fixed(&'static str),
    /// Soft hyphens removed.
    NoSoftHyphens,
    /// Quotes in LaTeX style; `opening` says whether ASCII quotes open.
    Quote { opening: bool },
    /// Spaces turned into no-break spaces (so that the token stays one word).
    SpacesToNbsp,
    /// Phone numbers: no-break spaces and bracket names.
    Phone,
    /// Smileys: bracket names.
    Smiley,
    /// Currency signs: cents, `#` for pounds, `$` for other currencies.
    Currency,
    /// Vulgar fractions spelled with a slash.
    Fraction,
    /// `&amp;` turned into `&`.
    Ampersand,
    /// Three or four hyphens become `--`.
    Hyphens,
}

/// One lexer rule.
pub(super) struct Rule {
    pub(super) pattern: Pat,
    pub(super) context: Option<Pat>,
    pub(super) action: Action,
}

fn rule(pattern: Pat, action: Action) -> Rule {
    Rule {
        pattern,
        context: None,
        action,
    }
}

fn rule_before(pattern: Pat, context: Pat, action: Action) -> Rule {
    Rule {
        pattern,
        context: Some(context),
        action,
    }
}

fn emit(form: Form) -> Action {
    Action::Emit(form)
}

const AS_IS: Action = Action::Emit(Form::AsIs);

/// The rules, built once.
pub(super) fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(build_rules)
}

fn build_rules() -> Vec<Rule> {
    let mut rules = special_words();
    rules.extend(words_and_clitics());
    rules.extend(web_and_numbers());
    rules.extend(abbreviations());
    rules.extend(punctuation());
    rules.extend(compounds_and_quotes());
    rules.extend(leftovers());
    rules
}

/// Programming languages, and assimilated forms that are split (`gonna` → `gon na`).
fn special_words() -> Vec<Rule> {
    vec![
        rule(lits(&["c++", "c#", "f#"]), AS_IS),
        rule(Pat::Lit("cannot"), Action::EmitDropping(3)),
        rule(Pat::Lit("'twas"), Action::EmitDropping(3)),
        rule(Pat::Lit("'tis"), Action::EmitDropping(2)),
        rule(
            lits(&["gonna", "gotta", "lemme", "gimme", "wanna"]),
            Action::EmitDropping(2),
        ),
        rule(sgml(), emit(Form::SpacesToNbsp)),
        rule(
            alt([
                lits(&["&MD;", "&mdash;", "&ndash;"]),
                Pat::OneOf("\u{96}\u{97}\u{2013}\u{2014}\u{2015}"),
            ]),
            emit(Form::Fixed("--")),
        ),
        rule(Pat::Lit("&amp;"), emit(Form::Ampersand)),
        rule(
            seq([
                Pat::Exact('&'),
                alt([
                    lits(&["HT", "TL", "UR", "LR", "QC", "QL", "QR", "odq", "cdq"]),
                    seq([Pat::Exact('#'), plus(Pat::Class(ascii_digit))]),
                ]),
                Pat::Exact(';'),
            ]),
            AS_IS,
        ),
    ]
}

/// Words, words before clitics (`it` + `'s`, `do` + `n't`) and apostrophe words.
fn words_and_clitics() -> Vec<Rule> {
    vec![
        rule_before(word(), clitic(), emit(Form::NoSoftHyphens)),
        rule_before(word_before_nt(), negation(), emit(Form::NoSoftHyphens)),
        rule(word(), emit(Form::NoSoftHyphens)),
        rule(apostrophe_word(), AS_IS),
        rule_before(
            seq([Pat::Lit("y"), apostrophe()]),
            Pat::Class(plain_letter),
            AS_IS,
        ),
    ]
}

/// Addresses, clitics before non-letters, dates, numbers, fractions, currency.
fn web_and_numbers() -> Vec<Rule> {
    vec![
        rule(full_url(), AS_IS),
        rule(likely_url(), AS_IS),
        rule(email(), AS_IS),
        rule(
            alt([
                seq([
                    Pat::Exact('@'),
                    Pat::Class(|c| c.is_ascii_alphabetic() || c == '_'),
                    star(Pat::Class(|c| c.is_ascii_alphanumeric() || c == '_')),
                ]),
                seq([Pat::Exact('#'), plus(Pat::Class(letter))]),
            ]),
            AS_IS,
        ),
        rule_before(
            clitic(),
            Pat::Class(not_ascii_letter),
            emit(Form::Quote { opening: false }),
        ),
        rule_before(
            negation(),
            Pat::Class(not_ascii_letter),
            emit(Form::Quote { opening: false }),
        ),
        rule(date(), AS_IS),
        rule(number(), emit(Form::NoSoftHyphens)),
        rule(
            seq([
                opt(Pat::OneOf("\u{207A}\u{207B}\u{208A}\u{208B}")),
                alt([
                    plus(Pat::Class(superscript_digit)),
                    plus(Pat::Class(subscript_digit)),
                ]),
            ]),
            AS_IS,
        ),
        rule(fraction(), emit(Form::SpacesToNbsp)),
        rule(Pat::Class(fraction_char), emit(Form::Fraction)),
        rule(treebank_special(), emit(Form::Ampersand)),
        rule(slashed_words(), AS_IS),
        rule(
            alt([
                seq([star(Pat::Class(ascii_upper)), Pat::Exact('$')]),
                Pat::Exact('#'),
            ]),
            AS_IS,
        ),
        rule(
            Pat::OneOf("\u{A2}\u{A3}\u{A4}\u{A5}\u{80}\u{20A0}\u{20AC}\u{60B}\u{E3F}\u{20A4}\u{FFE0}\u{FFE1}\u{FFE5}\u{FFE6}"),
            emit(Form::Currency),
        ),
    ]
}

/// Acronyms and abbreviations, which keep their period.
fn abbreviations() -> Vec<Rule> {
    let period = || Pat::Exact('.');
    vec![
        rule_before(
            seq([acronym(), period()]),
            seq([
                plus(space_or_newline()),
                alt([sentence_starter(), sgml()]),
                space_or_newline(),
            ]),
            Action::SentenceFinalAcronym,
        ),
        rule_before(
            seq([
                lits(&[
                    "ca", "fig", "figs", "prop", "no", "nos", "art", "bldg", "pp", "op",
                ]),
                period(),
            ]),
            seq([opt(space_or_newline()), Pat::Class(digit)]),
            AS_IS,
        ),
        rule_before(
            seq([
                alt([seq([Pat::Lit("pt"), Pat::OneOf("eyEY")]), Pat::Lit("co")]),
                period(),
            ]),
            seq([space(), lits(&["ltd", "lim"])]),
            AS_IS,
        ),
        rule_before(
            seq([abbreviation_before_lowercase(), period()]),
            seq([
                space_or_newline(),
                alt([space_or_newline(), Pat::Class(uppercase), sgml()]),
            ]),
            Action::EmitRescanningPeriod,
        ),
        rule_before(
            seq([abbreviation_before_lowercase(), period()]),
            seq([Pat::Class(any), Pat::Class(any)]),
            AS_IS,
        ),
        rule(
            seq([abbreviation_before_lowercase(), period()]),
            Action::EmitRescanningPeriod,
        ),
        rule(seq([abbreviation_before_capital(), period()]), AS_IS),
        rule_before(abbreviation_before_capital(), space(), AS_IS),
        rule_before(acronym(), space_or_newline(), AS_IS),
        rule_before(
            seq([
                apostrophe(),
                Pat::Class(ascii_digit),
                Pat::Class(ascii_digit),
            ]),
            space_or_newline(),
            AS_IS,
        ),
        rule_before(
            file_name(),
            alt([space_or_newline(), Pat::OneOf(".?!,")]),
            AS_IS,
        ),
        rule_before(
            seq([word(), period()]),
            in_sentence_punct(),
            emit(Form::NoSoftHyphens),
        ),
    ]
}

/// Phone numbers, quotes, brackets, dashes, ellipses and other punctuation.
fn punctuation() -> Vec<Rule> {
    let double_quote = || alt([Pat::Exact('"'), Pat::Lit("&quot;")]);
    vec![
        rule(phone(), emit(Form::Phone)),
        rule_before(
            double_quote(),
            Pat::Class(|c| c.is_ascii_alphanumeric() || c == '$'),
            emit(Form::Quote { opening: true }),
        ),
        rule(double_quote(), emit(Form::Quote { opening: false })),
        rule(Pat::Exact('\u{7F}'), Action::Skip),
        rule(
            alt([Pat::Exact('<'), Pat::Lit("&lt;")]),
            emit(Form::Fixed("<")),
        ),
        rule(
            alt([Pat::Exact('>'), Pat::Lit("&gt;")]),
            emit(Form::Fixed(">")),
        ),
        rule_before(smiley(), Pat::Class(not_ascii_alnum), emit(Form::Smiley)),
        rule(asian_smiley(), emit(Form::Smiley)),
        rule(Pat::Exact('{'), emit(Form::Fixed("-LCB-"))),
        rule(Pat::Exact('}'), emit(Form::Fixed("-RCB-"))),
        rule(Pat::Exact('['), emit(Form::Fixed("-LSB-"))),
        rule(Pat::Exact(']'), emit(Form::Fixed("-RSB-"))),
        rule(Pat::Exact('('), emit(Form::Fixed("-LRB-"))),
        rule(Pat::Exact(')'), emit(Form::Fixed("-RRB-"))),
        rule(plus(Pat::Exact('-')), emit(Form::Hyphens)),
        rule(ellipsis(), emit(Form::Fixed("..."))),
        rule(
            alt([
                plus(Pat::Exact('@')),
                plus(Pat::Exact('#')),
                plus(Pat::Exact('_')),
            ]),
            AS_IS,
        ),
        rule(
            alt([
                plus(Pat::Exact('*')),
                rep(seq([Pat::Exact('\\'), Pat::Exact('*')]), 1, 3),
            ]),
            AS_IS,
        ),
        rule(in_sentence_punct(), AS_IS),
        rule(plus(Pat::OneOf("?!")), AS_IS),
        rule(Pat::Class(sentence_mark), AS_IS),
        rule(Pat::Exact('='), AS_IS),
        rule(Pat::Exact('/'), AS_IS),
    ]
}

/// Hyphenated compounds, other word-like things, and single quotes.
fn compounds_and_quotes() -> Vec<Rule> {
    let period = || Pat::Exact('.');
    let upper_compound = || {
        seq([
            plus(Pat::Class(ascii_upper)),
            plus(seq([
                alt([Pat::OneOf("+&"), Pat::Lit("&amp;")]),
                plus(Pat::Class(ascii_upper)),
            ])),
        ])
    };
    vec![
        rule_before(
            seq([hyphenated(), period()]),
            in_sentence_punct(),
            emit(Form::NoSoftHyphens),
        ),
        rule(hyphenated(), emit(Form::NoSoftHyphens)),
        rule_before(seq([thing(), period()]), in_sentence_punct(), AS_IS),
        rule(thing(), AS_IS),
        rule_before(
            seq([upper_compound(), period()]),
            in_sentence_punct(),
            emit(Form::Ampersand),
        ),
        rule(upper_compound(), emit(Form::Ampersand)),
        rule_before(
            Pat::Exact('\''),
            seq([Pat::Class(ascii_letter), Pat::NoneOf(" \t\n\r\u{A0}")]),
            emit(Form::Quote { opening: true }),
        ),
        rule(clitic(), emit(Form::Quote { opening: false })),
        rule(negation(), emit(Form::Quote { opening: false })),
        rule(quotes(), emit(Form::Quote { opening: false })),
    ]
}

/// Symbols, white space, line breaks and untokenisable characters.
fn leftovers() -> Vec<Rule> {
    vec![
        rule(lits(&["<<", ">>"]), AS_IS),
        rule(Pat::Class(misc_symbol), AS_IS),
        rule(
            alt([plus(Pat::OneOf(SPACE_CHARS)), Pat::Class(ignorable)]),
            Action::Skip,
        ),
        rule(newline(), Action::Newline),
        rule(Pat::Lit("&nbsp;"), Action::Skip),
        rule(Pat::NoneOf("\n"), Action::Delete),
    ]
}

// ---------------------------------------------------------------------------------------
// Building blocks.

fn space() -> Pat {
    Pat::OneOf(SPACE_CHARS)
}

fn newline() -> Pat {
    alt([Pat::Lit("\r\n"), Pat::OneOf(NEWLINE_CHARS)])
}

fn space_or_newline() -> Pat {
    alt([space(), newline()])
}

fn in_sentence_punct() -> Pat {
    Pat::OneOf(",;:\u{3001}")
}

/// Apostrophes proper.
fn apostrophe() -> Pat {
    alt([Pat::OneOf("'\u{92}\u{2019}"), Pat::Lit("&apos;")])
}

/// Apostrophes and the characters sometimes typed for them inside words.
fn apostrophe_like() -> Pat {
    alt([apostrophe(), Pat::OneOf("`\u{91}\u{2018}\u{201B}")])
}

/// A word: letters and digits, starting with a letter, possibly with inner `.`, `!` or `?`
/// followed by a letter (`e.g`, `yahoo!news`).
fn word() -> Pat {
    seq([
        Pat::Class(letter),
        star(Pat::Class(letter_or_digit)),
        star(seq([
            Pat::OneOf(".!?"),
            Pat::Class(letter),
            star(Pat::Class(letter_or_digit)),
        ])),
    ])
}

/// Clitics split from the preceding word: `'s`, `'m`, `'d`, `'re`, `'ve`, `'ll`.
fn clitic() -> Pat {
    seq([
        apostrophe(),
        alt([Pat::OneOf("msdMSD"), lits(&["re", "ve", "ll"])]),
    ])
}

/// `n't`.
fn negation() -> Pat {
    seq([Pat::Lit("n"), apostrophe_like(), Pat::Lit("t")])
}

/// An ASCII word that can precede `n't`: it cannot end in `n` (`do`, `ca`, `wo`).
fn word_before_nt() -> Pat {
    seq([
        star(Pat::Class(|c| c.is_ascii_alphabetic() || c == SOFT_HYPHEN)),
        Pat::Class(|c| c.is_ascii_alphabetic() && c != 'n' && c != 'N'),
        star(Pat::Exact(SOFT_HYPHEN)),
    ])
}

/// Words that contain an apostrophe and stay whole (`o'clock`, `'em`, `'90s`, `y'know`).
fn apostrophe_word() -> Pat {
    let letters = || Pat::Class(plain_letter);
    alt([
        seq([apostrophe(), Pat::Lit("n"), opt(apostrophe())]),
        seq([Pat::OneOf("lLdDjJ"), apostrophe()]),
        seq([lits(&["dunkin", "somethin", "ol"]), apostrophe()]),
        seq([apostrophe(), Pat::Lit("em")]),
        seq([
            // Initials such as O'Neil or D'Angelo; lower case only for n.
            Pat::Class(|c| (c.is_ascii_uppercase() && c != 'I' && c != 'Y') || c == 'n'),
            apostrophe_like(),
            letters(),
            letters(),
            star(letters()),
        ]),
        seq([apostrophe(), Pat::OneOf("23456789"), Pat::Lit("0s")]),
        seq([apostrophe(), Pat::Lit("til"), opt(Pat::Lit("l"))]),
        seq([
            letters(),
            star(letters()),
            Pat::OneOf("aeiouyAEIOUY"),
            apostrophe_like(),
            Pat::Class(|c| "aeiou".contains(c) || c.is_ascii_uppercase()),
            star(letters()),
        ]),
        seq([apostrophe(), Pat::Lit("cause")]),
        seq([Pat::Lit("cont'd"), opt(Pat::Exact('.'))]),
        lits(&[
            "'twas",
            "nor'easter",
            "c'mon",
            "e'er",
            "s'mores",
            "ev'ry",
            "li'l",
            "nat'l",
        ]),
        seq([Pat::Lit("o"), apostrophe_like(), Pat::Lit("o")]),
    ])
}

/// An SGML/XML tag (`<b>`, `</b>`, `<unk>`, `<a href="x">`, `<!-- ... >`).
fn sgml() -> Pat {
    let name = || {
        seq([
            Pat::Class(ascii_letter),
            star(Pat::Class(|c| {
                c.is_ascii_alphanumeric() || "_:.-".contains(c)
            })),
        ])
    };
    let spaces = || star(Pat::Exact(' '));
    let quoted = || {
        alt([
            seq([Pat::Exact('\''), star(Pat::NoneOf("'")), Pat::Exact('\'')]),
            seq([Pat::Exact('"'), star(Pat::NoneOf("\"")), Pat::Exact('"')]),
        ])
    };
    let attribute = seq([
        plus(Pat::Exact(' ')),
        alt([
            name(),
            seq([name(), spaces(), Pat::Exact('='), spaces(), quoted()]),
        ]),
    ]);
    seq([
        Pat::Exact('<'),
        alt([
            seq([
                Pat::OneOf("!?"),
                Pat::Class(|c| c.is_ascii_alphabetic() || c == '-'),
                star(Pat::NoneOf(">\r\n")),
            ]),
            seq([name(), star(attribute), spaces(), opt(Pat::Exact('/'))]),
            seq([Pat::Exact('/'), name()]),
        ]),
        spaces(),
        Pat::Exact('>'),
    ])
}

fn full_url() -> Pat {
    seq([
        Pat::Lit("http"),
        opt(Pat::Lit("s")),
        Pat::Lit("://"),
        plus(Pat::NoneOf(" \t\n\u{C}\r\"<>|(){}")),
        Pat::NoneOf(" \t\n\u{C}\r\"<>|.!?(){},-"),
    ])
}

/// `www.host.tld` or `host.com|net|org|edu`, with an optional path.
fn likely_url() -> Pat {
    let www = seq([
        Pat::Lit("www."),
        plus(seq([
            plus(Pat::NoneOf(" \t\n\u{C}\r\"<>|.!?(){},")),
            Pat::Exact('.'),
        ])),
        rep(Pat::Class(ascii_letter), 2, 4),
    ]);
    let bare = seq([
        plus(seq([plus(Pat::Class(bare_host_char)), Pat::Exact('.')])),
        lits(&["com", "net", "org", "edu"]),
    ]);
    let path = seq([
        Pat::Exact('/'),
        plus(Pat::NoneOf(" \t\n\u{C}\r\"<>|()")),
        Pat::NoneOf(" \t\n\u{C}\r\"<>|.!?(){},-"),
    ]);
    seq([alt([www, bare]), opt(path)])
}

fn email() -> Pat {
    const NOT_LOCAL: &str = " \t\n\u{C}\r\"<>|()\u{A0}{}";
    const NOT_DOMAIN: &str = " \t\n\u{C}\r\"<>|(){}.\u{A0}";
    seq([
        opt(alt([Pat::Lit("&lt;"), Pat::Exact('<')])),
        Pat::Class(ascii_alnum),
        star(Pat::NoneOf(NOT_LOCAL)),
        Pat::Exact('@'),
        star(seq([plus(Pat::NoneOf(NOT_DOMAIN)), Pat::Exact('.')])),
        plus(Pat::NoneOf(NOT_DOMAIN)),
        opt(alt([Pat::Lit("&gt;"), Pat::Exact('>')])),
    ])
}

fn date() -> Pat {
    let digits = |min, max| rep(Pat::Class(digit), min, max);
    seq([
        digits(1, 2),
        Pat::OneOf("-/"),
        digits(1, 2),
        Pat::OneOf("-/"),
        digits(2, 4),
    ])
}

/// Signed integers and numbers with `.`, `,` or `:` separators (`3.5`, `1,000`, `10:30`).
fn number() -> Pat {
    seq([
        opt(Pat::OneOf("-+")),
        alt([
            plus(Pat::Class(digit)),
            seq([
                star(Pat::Class(digit)),
                plus(seq([
                    Pat::OneOf(".:,\u{AD}\u{66B}\u{66C}"),
                    plus(Pat::Class(digit)),
                ])),
            ]),
        ]),
    ])
}

/// `1/2`, `3 1/2` (one token; the space becomes a no-break space), `3-1/2`.
fn fraction() -> Pat {
    let digits = || rep(Pat::Class(digit), 1, 4);
    seq([
        opt(seq([digits(), Pat::OneOf("- \u{A0}")])),
        digits(),
        alt([
            seq([opt(Pat::Exact('\\')), Pat::Exact('/')]),
            Pat::Exact('\u{2044}'),
        ]),
        digits(),
    ])
}

/// Treebank bracket names and a few fixed forms (`pro-`, `anti-`, `S&P-500`, `c'est`).
fn treebank_special() -> Pat {
    let amp = || alt([Pat::Exact('&'), Pat::Lit("&amp;")]);
    alt([
        seq([
            Pat::Exact('-'),
            lits(&["RRB", "LRB", "RCB", "LCB", "RSB", "LSB"]),
            Pat::Exact('-'),
        ]),
        lits(&["C.D.s", "pro-", "anti-"]),
        seq([Pat::Lit("S"), amp(), Pat::Lit("P-500")]),
        seq([Pat::Lit("S"), amp(), Pat::Lit("Ls")]),
        seq([Pat::Lit("Cap"), apostrophe(), Pat::Lit("n")]),
        seq([Pat::Lit("c"), apostrophe(), Pat::Lit("est")]),
    ])
}

/// ASCII words joined by slashes (`black/white`, `and/or`, `24/7`-like codes).
fn slashed_words() -> Pat {
    let part = || {
        seq([
            plus(Pat::Class(ascii_alnum)),
            rep(seq([Pat::Exact('-'), plus(Pat::Class(ascii_letter))]), 0, 2),
        ])
    };
    seq([
        part(),
        rep(seq([opt(Pat::Exact('\\')), Pat::Exact('/'), part()]), 1, 2),
    ])
}

/// ASCII letter acronyms (`U.S`, `a.m`, single letters) and a few hyphenated ones.
fn acronym() -> Pat {
    acronym_with(star)
}

/// Acronyms of at least two letters.
fn dotted_acronym() -> Pat {
    acronym_with(plus)
}

fn acronym_with(repeat: fn(Pat) -> Pat) -> Pat {
    alt([
        seq([
            Pat::Class(ascii_letter),
            repeat(seq([Pat::Exact('.'), Pat::Class(ascii_letter)])),
        ]),
        seq([
            lits(&["Canada", "Sino", "Korean", "EU", "Japan", "non"]),
            Pat::Lit("-U.S"),
        ]),
        seq([Pat::Lit("U.S.-"), lits(&["U.K", "U.S.S.R"])]),
    ])
}

/// A word that must start with this exact capital, the rest in any case.
fn capitalised(word: &'static str) -> Pat {
    let first = word.chars().next().expect("non-empty word");
    seq([Pat::Exact(first), Pat::Lit(&word[first.len_utf8()..])])
}

fn any_of(caseless: &[&'static str], capitalised_only: &[&'static str]) -> Pat {
    let mut parts = vec![lits(caseless)];
    parts.extend(capitalised_only.iter().map(|w| capitalised(w)));
    alt(parts)
}

/// Words after which a period after an acronym probably ends the sentence.
fn sentence_starter() -> Pat {
    any_of(
        &[],
        &[
            "About",
            "According",
            "Additionally",
            "After",
            "An",
            "A",
            "As",
            "At",
            "But",
            "Earlier",
            "He",
            "Her",
            "Here",
            "However",
            "If",
            "In",
            "It",
            "Last",
            "Many",
            "More",
            "Mr.",
            "Ms.",
            "Now",
            "Once",
            "One",
            "Other",
            "Our",
            "She",
            "Since",
            "So",
            "Some",
            "Such",
            "That",
            "The",
            "Their",
            "Then",
            "There",
            "These",
            "They",
            "This",
            "We",
            "When",
            "While",
            "What",
            "Yet",
            "You",
        ],
    )
}

/// Abbreviations usually followed by lower-case words (months, days, states, company
/// suffixes, `etc`): at a sentence end they also yield a `.` token.
fn abbreviation_before_lowercase() -> Pat {
    any_of(
        &[
            // months and days
            "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
            "mon", "tue", "tues", "wed", "thu", "thurs", "fri", // states
            "ala", "ariz", "calif", "colo", "conn", "ct", "dak", "fla", "ga", "ind", "kan", "kans",
            "ky", "md", "mich", "minn", "mo", "mont", "neb", "nev", "okla", "penn", "tenn", "va",
            "vt", "wis", "wisc", "wyo", // companies
            "inc", "co", "cos", "corp", "pty", "pte", "ptys", "ptes", "ppty", "ppte", "pptys",
            "pptes", "ltd", "plc", "rt", "bancorp", "bhd", "assn", "univ", "intl", "sys",
            // before numbers, personal titles, misc
            "tel", "est", "ext", "sq", "jr", "sr", "bros", "ed.d", "ph.d", "blvd", "rd", "esq",
            "etc", "al", "seq", "bldg",
        ],
        &[
            "Az", "Ark", "Del", "Ill", "La", "Mass", "Miss", "Ore", "Pa", "Tex", "Wash",
        ],
    )
}

/// Abbreviations usually followed by a capitalised word (titles, `St`, `Mt`, `vs`,
/// acronyms): the period always stays on the token.
fn abbreviation_before_capital() -> Pat {
    alt([
        any_of(
            &[
                "mr", "mrs", "ms", "dr", "drs", "prof", "profs", "sen", "sens", "rep", "reps",
                "atty", "attys", "lt", "col", "gen", "messrs", "gov", "govs", "adm", "rev", "maj",
                "sgt", "cpl", "pvt", "capt", "st", "ste", "ave", "pres", "lieut", "hon", "brig",
                "cmdr", "comdr", "pfc", "spc", "supt", "supts", "det", "mt", "ft", "adj", "adv",
                "asst", "assoc", "ens", "insp", "mlle", "mme", "msgr", "sfc", "vs", "alex", "wm",
                "jos", "cie", "a.k.a", "cf", "treas", "ph", "invt", "elec", "natl", "mfg", "mtg",
                "dept",
            ],
            &["Miss"],
        ),
        acronym(),
    ])
}

fn file_name() -> Pat {
    let chunk = || plus(Pat::Class(letter_or_digit));
    seq([
        chunk(),
        star(seq([Pat::Exact('.'), chunk()])),
        Pat::Exact('.'),
        lits(&[
            "bat", "bmp", "c", "class", "cgi", "cpp", "dll", "doc", "docx", "exe", "gif", "gz",
            "h", "htm", "html", "jar", "java", "jpeg", "jpg", "mov", "mp3", "pdf", "php", "pl",
            "png", "ppt", "ps", "py", "sql", "tar", "txt", "wav", "x", "xml", "zip",
        ]),
    ])
}

fn phone() -> Pat {
    let digits = |min, max| rep(Pat::Class(ascii_digit), min, max);
    let separator = || Pat::OneOf("- \u{A0}");
    let plus_signs = || seq([Pat::Exact('+'), opt(Pat::Exact('+'))]);
    let spaced = seq([
        alt([
            seq([
                Pat::Exact('('),
                digits(2, 3),
                Pat::Exact(')'),
                opt(Pat::OneOf(" \u{A0}")),
            ]),
            seq([
                opt(plus_signs()),
                opt(seq([digits(2, 4), separator()])),
                digits(2, 4),
                separator(),
            ]),
        ]),
        digits(3, 4),
        opt(separator()),
        digits(3, 5),
    ]);
    let dotted = seq([
        opt(seq([opt(plus_signs()), digits(2, 4), Pat::Exact('.')])),
        digits(2, 4),
        Pat::Exact('.'),
        digits(3, 4),
        Pat::Exact('.'),
        digits(3, 5),
    ]);
    alt([spaced, dotted])
}

fn smiley() -> Pat {
    seq([
        opt(Pat::OneOf("<>")),
        Pat::OneOf(":;="),
        opt(Pat::OneOf("-o*'")),
        Pat::OneOf("()DPdpO\\{@|[]"),
    ])
}

fn asian_smiley() -> Pat {
    const EYES: &str = "-^x=~<>'";
    alt([
        seq([Pat::OneOf(EYES), Pat::Exact('_'), Pat::OneOf(EYES)]),
        seq([
            Pat::Exact('('),
            Pat::OneOf(EYES),
            opt(Pat::OneOf("_.")),
            Pat::OneOf(EYES),
            Pat::Exact(')'),
        ]),
        seq([
            Pat::Exact('('),
            Pat::OneOf("^x=~<>'"),
            Pat::Exact('-'),
            Pat::OneOf("^x=~<>'`"),
            Pat::Exact(')'),
        ]),
    ])
}

fn ellipsis() -> Pat {
    alt([
        rep(Pat::Exact('.'), 3, 5),
        seq([
            rep(seq([Pat::Exact('.'), Pat::OneOf(" \u{A0}")]), 2, 4),
            Pat::Exact('.'),
        ]),
        Pat::OneOf("\u{85}\u{2026}"),
    ])
}

/// ASCII compounds with hyphens whose first part may contain `.` or `,` (`3.5-inch`,
/// `well-known`, `co-U.S.`).
fn hyphenated() -> Pat {
    seq([
        Pat::Class(ascii_alnum),
        star(Pat::Class(|c| {
            c.is_ascii_alphanumeric() || c == '.' || c == ',' || c == SOFT_HYPHEN
        })),
        plus(seq([
            Pat::Exact('-'),
            alt([
                plus(Pat::Class(|c| {
                    c.is_ascii_alphanumeric() || c == SOFT_HYPHEN
                })),
                seq([dotted_acronym(), Pat::Exact('.')]),
            ]),
        ])),
    ])
}

/// Letters and digits of any script joined by hyphens or underscores (`snake_case`,
/// `café-bar`, `2nd`, `o'clock`).
fn thing() -> Pat {
    let part = || {
        seq([
            opt(seq([
                Pat::OneOf("dDoOlL"),
                apostrophe_like(),
                Pat::Class(plain_letter_or_digit),
            ])),
            plus(Pat::Class(plain_letter_or_digit)),
        ])
    };
    seq([
        part(),
        star(seq([Pat::OneOf("-_\u{58A}\u{2010}\u{2011}"), part()])),
    ])
}

/// Quote characters, alone or in pairs.
fn quotes() -> Pat {
    alt([
        apostrophe(),
        Pat::Lit("''"),
        rep(
            Pat::OneOf("`\u{2018}\u{2019}\u{201A}\u{201B}\u{201C}\u{201D}\u{91}\u{92}\u{93}\u{94}\u{201E}\u{201F}\u{2039}\u{203A}\u{AB}\u{BB}"),
            1,
            2,
        ),
    ])
}
