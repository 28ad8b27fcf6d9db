//! SentencePiece's BPE segmentation (`bpe::Model::SampleEncode` without dropout).
//!
//! The text is cut into characters (user-defined pieces are kept whole and never merged),
//! then the adjacent pair whose concatenation is a vocabulary piece with the highest score
//! is merged, repeatedly; ties go to the leftmost pair. Pieces of type UNUSED may be formed
//! during merging but are split back into the two halves that formed them at the end.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::model::{PieceKind, SentencePieceModel};

/// A live or merged-away symbol: a byte range of the normalised text.
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    /// User-defined pieces take part in no merge.
    frozen: bool,
}

/// A possible merge of `symbols[left]` and `symbols[right]` into a piece of `len` bytes.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for Candidate {
    /// Max-heap order: higher score first, then the smaller left index. Scores compare as
    /// C++ floats do (`-0.0 == 0.0`), not with `total_cmp`.
    fn cmp(&self, other: &Self) -> Ordering {
        let by_score = self
            .score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal);
        by_score.then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The state of one segmentation.
struct Merger<'a, 'm> {
    model: &'m SentencePieceModel,
    text: &'a str,
    symbols: Vec<Symbol>,
    agenda: BinaryHeap<Candidate>,
    /// UNUSED piece -> the two pieces whose merge produced it (last recorded wins, as in
    /// sentencepiece, which records it when the candidate is queued).
    rev_merge: HashMap<&'a str, (&'a str, &'a str)>,
}

impl<'a, 'm> Merger<'a, 'm> {
    fn new(model: &'m SentencePieceModel, text: &'a str) -> Self {
        let mut symbols = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let rest = &text[start..];
            let (len, frozen) = match model.user_defined_prefix(rest) {
                Some(len) => (len, true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            let index = symbols.len();
            symbols.push(Symbol {
                start,
                len,
                prev: index.checked_sub(1),
                next: (start + len < text.len()).then_some(index + 1),
                frozen,
            });
            start += len;
        }
        Self {
            model,
            text,
            symbols,
            agenda: BinaryHeap::new(),
            rev_merge: HashMap::new(),
        }
    }

    fn piece(&self, index: usize) -> &'a str {
        let symbol = &self.symbols[index];
        &self.text[symbol.start..symbol.start + symbol.len]
    }

    /// Queues the merge of two neighbours when their concatenation is a mergeable piece.
    fn maybe_add_pair(&mut self, left: Option<usize>, right: Option<usize>) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (&self.symbols[left], &self.symbols[right]);
        if l.frozen || r.frozen {
            return;
        }
        let len = l.len + r.len;
        let merged = &self.text[l.start..l.start + len];
        let Some(id) = self.model.mergeable_id(merged) else {
            return;
        };
        self.agenda.push(Candidate {
            score: self.model.score(id),
            left,
            right,
            len,
        });
        if self.model.kind(id) == PieceKind::Unused {
            let halves = (self.piece(left), self.piece(right));
            self.rev_merge.insert(merged, halves);
        }
    }

    fn run(&mut self) {
        for right in 1..self.symbols.len() {
            self.maybe_add_pair(Some(right - 1), Some(right));
        }
        while let Some(top) = self.agenda.pop() {
            let (l, r) = (&self.symbols[top.left], &self.symbols[top.right]);
            // Stale: one side was merged away or grew since the candidate was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != top.len {
                continue;
            }
            self.merge(top.left, top.right);
        }
    }

    fn merge(&mut self, left: usize, right: usize) {
        let right_len = self.symbols[right].len;
        let right_next = self.symbols[right].next;
        self.symbols[left].len += right_len;
        self.symbols[left].next = right_next;
        if let Some(next) = right_next {
            self.symbols[next].prev = Some(left);
        }
        self.symbols[right].len = 0;
        self.maybe_add_pair(self.symbols[left].prev, Some(left));
        self.maybe_add_pair(Some(left), self.symbols[left].next);
    }

    /// Splits UNUSED pieces back into the pieces they were merged from and resolves ids as
    /// sentencepiece 0.2.3's `resegment` does: a piece that is missing, reserved
    /// (CONTROL/UNKNOWN/BYTE) or UNUSED without a recorded merge is unknown (`None`).
    fn resegment(&self, piece: &'a str, depth: usize, out: &mut Vec<(&'a str, Option<u32>)>) {
        let id = self.model.mergeable_id(piece);
        let is_unused = id.is_some_and(|id| self.model.kind(id) == PieceKind::Unused);
        if depth > MAX_RESEGMENT_DEPTH || !is_unused {
            out.push((piece, id));
            return;
        }
        match self.rev_merge.get(piece) {
            Some(&(left, right)) => {
                self.resegment(left, depth + 1, out);
                self.resegment(right, depth + 1, out);
            }
            None => out.push((piece, None)),
        }
    }

    fn into_pieces(self) -> Vec<(&'a str, Option<u32>)> {
        let mut out = Vec::with_capacity(self.symbols.len());
        let mut index = (!self.symbols.is_empty()).then_some(0);
        while let Some(i) = index {
            self.resegment(self.piece(i), 0, &mut out);
            index = self.symbols[i].next;
        }
        out
    }
}

/// sentencepiece stops splitting UNUSED pieces this deep (a guard against hostile models).
const MAX_RESEGMENT_DEPTH: usize = 100;

/// The BPE pieces of already-normalised text, as slices of it, each with its id (`None` for
/// an unknown piece, which the caller turns into bytes or `<unk>`).
pub(crate) fn segment<'a>(
    model: &SentencePieceModel,
    normalized: &'a str,
) -> Vec<(&'a str, Option<u32>)> {
    let mut merger = Merger::new(model, normalized);
    merger.run();
    merger.into_pieces()
}
