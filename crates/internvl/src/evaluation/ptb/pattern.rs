//! A tiny longest-match pattern engine over `char` slices.
//!
//! Each pattern maps a set of start positions to the set of every position where a match
//! can end (full set semantics, no backtracking order), so the longest match is simply the
//! largest end. That is the matching discipline of a lexer generator, which the Stanford
//! tokenizer was built with, and it is what the rule table in `rules.rs` relies on.

/// A pattern over characters. Literals compare ASCII letters case-insensitively (the
/// reference tokenizer is "caseless" for literal text); character predicates do not fold
/// case, exactly like character classes in the reference.
#[derive(Clone)]
pub(super) enum Pat {
    /// One character satisfying the predicate.
    Class(fn(char) -> bool),
    /// One character from the set.
    OneOf(&'static str),
    /// One character not in the set.
    NoneOf(&'static str),
    /// Exactly this character (case-sensitive).
    Exact(char),
    /// This text, ASCII case-insensitively.
    Lit(&'static str),
    /// Each part in turn.
    Seq(Vec<Pat>),
    /// Any one of the parts.
    Alt(Vec<Pat>),
    /// The part repeated `min..=max` times (`usize::MAX`: unbounded).
    Repeat(Box<Pat>, usize, usize),
}

impl Pat {
    /// Every end position reachable from any of `starts`, sorted and without duplicates.
    pub(super) fn ends(&self, text: &[char], starts: &[usize]) -> Vec<usize> {
        let mut out = match self {
            Pat::Class(pred) => single_char(text, starts, pred),
            Pat::OneOf(set) => single_char(text, starts, |c| set.contains(c)),
            Pat::NoneOf(set) => single_char(text, starts, |c| !set.contains(c)),
            Pat::Exact(want) => single_char(text, starts, |c| c == *want),
            Pat::Lit(lit) => starts
                .iter()
                .filter_map(|&s| literal_end(text, s, lit))
                .collect(),
            Pat::Seq(parts) => {
                let mut current = starts.to_vec();
                for part in parts {
                    if current.is_empty() {
                        break;
                    }
                    current = part.ends(text, &current);
                }
                current
            }
            Pat::Alt(parts) => parts.iter().flat_map(|p| p.ends(text, starts)).collect(),
            Pat::Repeat(part, min, max) => repeat_ends(part, *min, *max, text, starts),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether a match can start with `c` (a cheap filter before [`Pat::ends`]).
    pub(super) fn may_start_with(&self, c: char) -> bool {
        match self {
            Pat::Class(pred) => pred(c),
            Pat::OneOf(set) => set.contains(c),
            Pat::NoneOf(set) => !set.contains(c),
            Pat::Exact(want) => c == *want,
            Pat::Lit(lit) => lit
                .chars()
                .next()
                .is_none_or(|l| l.eq_ignore_ascii_case(&c)),
            Pat::Seq(parts) => {
                for part in parts {
                    if part.may_start_with(c) {
                        return true;
                    }
                    if !part.matches_empty() {
                        return false;
                    }
                }
                false
            }
            Pat::Alt(parts) => parts.iter().any(|p| p.may_start_with(c)),
            Pat::Repeat(part, _, _) => part.may_start_with(c),
        }
    }

    /// Whether the pattern can match the empty string.
    fn matches_empty(&self) -> bool {
        match self {
            Pat::Lit(lit) => lit.is_empty(),
            Pat::Class(_) | Pat::OneOf(_) | Pat::NoneOf(_) | Pat::Exact(_) => false,
            Pat::Seq(parts) => parts.iter().all(Pat::matches_empty),
            Pat::Alt(parts) => parts.iter().any(Pat::matches_empty),
            Pat::Repeat(part, min, _) => *min == 0 || part.matches_empty(),
        }
    }

    /// The longest match starting at `start`, as an end position.
    pub(super) fn longest(&self, text: &[char], start: usize) -> Option<usize> {
        self.ends(text, &[start]).last().copied()
    }
}

fn single_char(text: &[char], starts: &[usize], accept: impl Fn(char) -> bool) -> Vec<usize> {
    starts
        .iter()
        .filter(|&&s| text.get(s).is_some_and(|&c| accept(c)))
        .map(|&s| s + 1)
        .collect()
}

/// End of `lit` matched at `start`, comparing ASCII letters without case.
pub(super) fn literal_end(text: &[char], start: usize, lit: &str) -> Option<usize> {
    let mut pos = start;
    for want in lit.chars() {
        let got = *text.get(pos)?;
        if !got.eq_ignore_ascii_case(&want) {
            return None;
        }
        pos += 1;
    }
    Some(pos)
}

fn repeat_ends(part: &Pat, min: usize, max: usize, text: &[char], starts: &[usize]) -> Vec<usize> {
    let mut result = if min == 0 {
        starts.to_vec()
    } else {
        Vec::new()
    };
    let mut frontier = starts.to_vec();
    // Positions already expanded at a count >= min: expanding them again could only
    // produce ends that are already in `result`.
    let mut expanded: Vec<usize> = Vec::new();
    let mut count = 0;
    while count < max && !frontier.is_empty() {
        count += 1;
        frontier = part.ends(text, &frontier);
        if count >= min {
            result.extend_from_slice(&frontier);
            frontier.retain(|p| !expanded.contains(p));
            expanded.extend_from_slice(&frontier);
        }
    }
    result
}

/// `parts` in sequence.
pub(super) fn seq(parts: impl Into<Vec<Pat>>) -> Pat {
    Pat::Seq(parts.into())
}

/// One of `parts`.
pub(super) fn alt(parts: impl Into<Vec<Pat>>) -> Pat {
    Pat::Alt(parts.into())
}

/// One of the literals (ASCII case-insensitive).
pub(super) fn lits(words: &[&'static str]) -> Pat {
    Pat::Alt(words.iter().map(|w| Pat::Lit(w)).collect())
}

/// Zero or more `part`.
pub(super) fn star(part: Pat) -> Pat {
    Pat::Repeat(Box::new(part), 0, usize::MAX)
}

/// One or more `part`.
pub(super) fn plus(part: Pat) -> Pat {
    Pat::Repeat(Box::new(part), 1, usize::MAX)
}

/// Zero or one `part`.
pub(super) fn opt(part: Pat) -> Pat {
    Pat::Repeat(Box::new(part), 0, 1)
}

/// `part` repeated between `min` and `max` times.
pub(super) fn rep(part: Pat, min: usize, max: usize) -> Pat {
    Pat::Repeat(Box::new(part), min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn literals_fold_ascii_case_only() {
        let text = chars("CaNnot");
        assert_eq!(Pat::Lit("cannot").longest(&text, 0), Some(6));
        assert_eq!(Pat::Lit("cannot!").longest(&text, 0), None);
    }

    #[test]
    fn repetition_reports_every_end() {
        let text = chars("aaa-");
        let p = rep(Pat::Exact('a'), 1, 2);
        assert_eq!(p.ends(&text, &[0]), vec![1, 2]);
        assert_eq!(star(Pat::Exact('a')).ends(&text, &[0]), vec![0, 1, 2, 3]);
    }

    #[test]
    fn longest_alternative_wins() {
        let text = chars("abcd");
        let p = alt([Pat::Lit("ab"), Pat::Lit("abc"), Pat::Lit("a")]);
        assert_eq!(p.longest(&text, 0), Some(3));
        let q = seq([
            plus(Pat::Class(|c| c.is_ascii_lowercase())),
            Pat::Exact('d'),
        ]);
        assert_eq!(q.longest(&text, 0), Some(4));
    }
}
