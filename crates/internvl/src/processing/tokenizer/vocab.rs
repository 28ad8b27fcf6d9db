//! Indexes and checks a piece list as sentencepiece 0.2.3's `InitializePieces` does for BPE.

use std::collections::HashMap;

use super::model::{Piece, PieceKind};

/// sentencepiece refuses pieces of this many bytes or more.
const MAX_PIECE_BYTES: usize = 8000;
/// A raw NUL piece: third-party converters add one next to `<0x00>` (InternLM2 has it at 354).
const NULL_PIECE: &str = "\0";

/// Lookup tables built from the pieces.
#[derive(Debug, Clone)]
pub(crate) struct VocabIndex {
    /// Piece text -> id, all kinds in one map (BPE models have no separate reserved map).
    pub ids: HashMap<String, u32>,
    /// USER_DEFINED pieces by first character, longest first.
    pub user_defined: HashMap<char, Vec<String>>,
    /// Byte value -> `<0xXX>` piece id, when byte fallback is on.
    pub byte_ids: Option<Vec<u32>>,
    pub unk_id: u32,
}

/// The byte a `<0xXX>` piece stands for (upper-case hex, as sentencepiece writes them).
pub(crate) fn byte_of_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    let upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    if hex.len() != 2 || !hex.bytes().all(upper_hex) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// sentencepiece 0.2.3 turns a raw NUL piece into an UNUSED piece that no lookup finds, so a
/// NUL in the text falls back to `<0x00>`; it only does so with byte fallback on.
pub(crate) fn retire_null_piece(pieces: &mut [Piece], byte_fallback: bool) {
    if byte_fallback {
        for piece in pieces.iter_mut().filter(|p| p.text == NULL_PIECE) {
            piece.kind = PieceKind::Unused;
        }
    }
}

impl VocabIndex {
    /// Indexes `pieces`, refusing what sentencepiece refuses: empty, overlong or repeated
    /// pieces, NUL characters, no or several UNKNOWN pieces, byte pieces without byte fallback
    /// and byte fallback without all 256 byte pieces.
    pub fn build(pieces: &[Piece], byte_fallback: bool) -> Result<Self, String> {
        let mut index = Self {
            ids: HashMap::with_capacity(pieces.len()),
            user_defined: HashMap::new(),
            byte_ids: None,
            unk_id: 0,
        };
        let mut unk_id = None;
        let mut byte_ids = vec![None; 256];
        let mut user_defined = Vec::new();
        for (id, piece) in pieces.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| "more than 2^32 pieces".to_string())?;
            if byte_fallback && piece.text == NULL_PIECE && piece.kind == PieceKind::Unused {
                continue;
            }
            index.insert(id, piece)?;
            match piece.kind {
                PieceKind::UserDefined => user_defined.push(piece.text.clone()),
                PieceKind::Unknown if unk_id.is_some() => {
                    return Err(format!(
                        "pieces {} and {id} are both UNKNOWN",
                        unk_id.unwrap_or(0)
                    ));
                }
                PieceKind::Unknown => unk_id = Some(id),
                PieceKind::Byte => {
                    byte_ids[usize::from(check_byte_piece(piece, byte_fallback)?)] = Some(id)
                }
                _ => {}
            }
        }
        index.unk_id = unk_id.ok_or("no piece of type UNKNOWN")?;
        if byte_fallback {
            let all: Option<Vec<u32>> = byte_ids.into_iter().collect();
            index.byte_ids =
                Some(all.ok_or("byte_fallback is on but not all 256 byte pieces exist")?);
        }
        index.user_defined = longest_first_by_first_char(user_defined.iter());
        Ok(index)
    }

    fn insert(&mut self, id: u32, piece: &Piece) -> Result<(), String> {
        let text = &piece.text;
        if text.is_empty() {
            return Err(format!("piece {id} is empty"));
        }
        if text.len() >= MAX_PIECE_BYTES {
            return Err(format!("piece {id} is too long ({} bytes)", text.len()));
        }
        if text.contains('\0') {
            return Err(format!("piece {id} {text:?} contains a NUL character"));
        }
        match self.ids.insert(text.clone(), id) {
            Some(previous) => Err(format!(
                "piece {id} {text:?} is already defined as {previous}"
            )),
            None => Ok(()),
        }
    }
}

fn check_byte_piece(piece: &Piece, byte_fallback: bool) -> Result<u8, String> {
    if !byte_fallback {
        return Err(format!(
            "byte piece {:?} found although byte_fallback is off",
            piece.text
        ));
    }
    byte_of_piece(&piece.text).ok_or_else(|| format!("invalid byte piece {:?}", piece.text))
}

/// Texts grouped by their first character, longest first: the first one that starts a string
/// is its longest match (user-defined pieces, transformers' added tokens).
pub(crate) fn longest_first_by_first_char<'a>(
    texts: impl Iterator<Item = &'a String>,
) -> HashMap<char, Vec<String>> {
    let mut index: HashMap<char, Vec<String>> = HashMap::new();
    for text in texts {
        if let Some(first) = text.chars().next() {
            index.entry(first).or_default().push(text.clone());
        }
    }
    for candidates in index.values_mut() {
        candidates.sort_by_key(|text| std::cmp::Reverse(text.len()));
    }
    index
}
