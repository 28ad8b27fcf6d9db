//! A SentencePiece BPE model: vocabulary, normaliser, encoding and decoding, reproducing the
//! `sentencepiece` library id for id (version 0.2.3, which made the InternVL reference files).

use std::path::Path;

use super::bpe;
use super::normalizer::{Normalizer, SPACE_SYMBOL};
use super::proto::{self, ModelProto};
use super::vocab::{byte_of_piece, retire_null_piece, VocabIndex};
use crate::{Error, Result};

/// The type of a vocabulary piece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceKind {
    /// An ordinary piece, produced by merging.
    Normal,
    /// The unknown piece (`<unk>`); exactly one per model.
    Unknown,
    /// A control symbol such as `<s>`: never produced from text, decoded as nothing.
    Control,
    /// A piece matched whole in the text before merging and never merged further.
    UserDefined,
    /// A piece that merging may form but that is split back into its halves.
    Unused,
    /// A byte-fallback piece `<0xXX>`.
    Byte,
}

impl PieceKind {
    /// The kind for a `SentencePiece.Type` (llama.cpp's `token_type` uses the same numbers).
    pub fn from_proto(value: i32) -> Option<Self> {
        Some(match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }

    /// NORMAL, USER_DEFINED and UNUSED pieces: the ones BPE merging may produce. The others
    /// (CONTROL, UNKNOWN, BYTE) are "reserved": never formed from text characters.
    pub(crate) fn is_mergeable(self) -> bool {
        matches!(self, Self::Normal | Self::UserDefined | Self::Unused)
    }
}

/// One vocabulary entry; its id is its position in the vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text, with `▁` for a space (byte pieces are spelled `<0xXX>`).
    pub text: String,
    /// Merge priority: the higher, the earlier merged.
    pub score: f32,
    /// What the piece is used for.
    pub kind: PieceKind,
}

/// Model-wide settings that are not part of the piece list.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// Unknown characters become their UTF-8 byte pieces instead of `<unk>`.
    pub byte_fallback: bool,
    /// How text is normalised before segmentation.
    pub normalizer: Normalizer,
    /// Names that identify the special pieces (sentencepiece looks them up by name).
    pub bos_piece: String,
    /// See [`ModelOptions::bos_piece`].
    pub eos_piece: String,
    /// See [`ModelOptions::bos_piece`].
    pub pad_piece: String,
    /// What `<unk>` decodes to.
    pub unk_surface: String,
}

impl Default for ModelOptions {
    /// sentencepiece's defaults (`sentencepiece_model.proto`).
    fn default() -> Self {
        Self {
            byte_fallback: false,
            normalizer: Normalizer {
                add_dummy_prefix: true,
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            },
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
            pad_piece: "<pad>".into(),
            unk_surface: " \u{2047} ".into(),
        }
    }
}

/// A SentencePiece BPE tokenizer model (`tokenizer.model`), equivalent to
/// `sentencepiece.SentencePieceProcessor` for encoding and decoding.
#[derive(Debug, Clone)]
pub struct SentencePieceModel {
    pieces: Vec<Piece>,
    index: VocabIndex,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    normalizer: Normalizer,
    unk_surface: String,
}

impl SentencePieceModel {
    /// Loads a `tokenizer.model` file.
    ///
    /// Fails with [`Error::Io`] when the file cannot be read and [`Error::Tokenizer`] when it is
    /// not a valid SentencePiece BPE model or uses an unsupported normaliser.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses a serialised `ModelProto`; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let fail = |reason: String| Error::tokenizer(origin, reason);
        let proto = proto::parse_model_proto(bytes)
            .map_err(|reason| fail(format!("not a valid SentencePiece model: {reason}")))?;
        check_supported(&proto).map_err(fail)?;
        let pieces = proto
            .pieces
            .iter()
            .enumerate()
            .map(|(id, raw)| {
                let kind = PieceKind::from_proto(raw.kind)
                    .ok_or_else(|| fail(format!("piece {id} has unknown type {}", raw.kind)))?;
                Ok(Piece {
                    text: raw.piece.clone(),
                    score: raw.score,
                    kind,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_pieces(pieces, options_of(&proto), origin)
    }

    /// Builds a model from its pieces (id = position), checked as sentencepiece checks them.
    /// With byte fallback, a raw NUL piece becomes UNUSED and unreachable, as in
    /// sentencepiece 0.2.3 (a NUL in the text then encodes as `<0x00>`).
    pub fn from_pieces(
        mut pieces: Vec<Piece>,
        options: ModelOptions,
        origin: &str,
    ) -> Result<Self> {
        if pieces.is_empty() {
            return Err(Error::tokenizer(origin, "the vocabulary is empty"));
        }
        retire_null_piece(&mut pieces, options.byte_fallback);
        let index = VocabIndex::build(&pieces, options.byte_fallback)
            .map_err(|reason| Error::tokenizer(origin, reason))?;
        let mut model = Self {
            pieces,
            index,
            bos_id: None,
            eos_id: None,
            pad_id: None,
            normalizer: options.normalizer,
            unk_surface: options.unk_surface,
        };
        model.bos_id = model.control_id(&options.bos_piece);
        model.eos_id = model.control_id(&options.eos_piece);
        model.pad_id = model.control_id(&options.pad_piece);
        Ok(model)
    }

    /// sentencepiece's `bos_id()` & co.: the piece of that name, if it is a CONTROL piece.
    fn control_id(&self, name: &str) -> Option<u32> {
        self.lookup(name)
            .filter(|&id| self.kind(id) == PieceKind::Control)
    }

    /// Overrides the special ids (GGUF vocabularies give them by id, not by name).
    pub(crate) fn set_special_ids(&mut self, bos: Option<u32>, eos: Option<u32>, pad: Option<u32>) {
        self.bos_id = bos;
        self.eos_id = eos;
        self.pad_id = pad;
    }

    /// The ids of `text` without BOS/EOS, exactly as `SentencePieceProcessor.encode(text)`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalizer.normalize(text);
        let mut ids = Vec::new();
        let mut prev_is_unk = false;
        for (piece, id) in bpe::segment(self, &normalized) {
            match (id, &self.index.byte_ids) {
                (Some(id), _) => ids.push(id),
                (None, Some(byte_ids)) => {
                    ids.extend(piece.bytes().map(|b| byte_ids[usize::from(b)]))
                }
                // Without byte fallback a run of unknown characters is one `<unk>`.
                (None, None) if prev_is_unk => {}
                (None, None) => ids.push(self.index.unk_id),
            }
            prev_is_unk = id.is_none();
        }
        ids
    }

    /// The pieces of `text`, as `SentencePieceProcessor.encode(text, out_type=str)`: unknown
    /// characters appear as byte pieces with byte fallback, and as themselves without.
    pub fn encode_pieces(&self, text: &str) -> Vec<String> {
        let normalized = self.normalizer.normalize(text);
        let mut out: Vec<String> = Vec::new();
        let mut prev_is_unk = false;
        for (piece, id) in bpe::segment(self, &normalized) {
            match (id, self.byte_fallback()) {
                (Some(_), _) => out.push(piece.to_string()),
                (None, true) => out.extend(piece.bytes().map(|b| format!("<0x{b:02X}>"))),
                (None, false) if prev_is_unk => out
                    .last_mut()
                    .expect("a previous unknown piece")
                    .push_str(piece),
                (None, false) => out.push(piece.to_string()),
            }
            prev_is_unk = id.is_none();
        }
        out
    }

    /// The text of `ids`, exactly as `SentencePieceProcessor.decode(ids)`: control pieces
    /// vanish, byte pieces are reassembled (invalid UTF-8 bytes become U+FFFD each), `▁`
    /// becomes a space and the dummy-prefix space of the first piece is dropped.
    ///
    /// Fails with [`Error::InvalidArgument`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let items = ids
            .iter()
            .map(|&id| {
                let piece = self.id_to_piece(id).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "token id {id} is outside the vocabulary of {} pieces",
                        self.pieces.len()
                    ))
                })?;
                Ok((piece, id))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.decode_items(&items))
    }

    /// `SentencePieceProcessor.decode(pieces)` for piece strings (what transformers' slow
    /// tokenizers call): a string that is no piece counts as `<unk>` and is copied as it is.
    pub fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let items: Vec<(&str, u32)> = pieces
            .iter()
            .map(|piece| {
                let piece = piece.as_ref();
                (piece, self.lookup(piece).unwrap_or(self.index.unk_id))
            })
            .collect();
        self.decode_items(&items)
    }

    /// sentencepiece's `DecodeOptimized` over `(piece, id)` pairs.
    fn decode_items(&self, items: &[(&str, u32)]) -> String {
        let mut text = String::new();
        let mut pending_bytes = Vec::new();
        let mut at_start = true;
        for &(piece, id) in items {
            if self.kind(id) == PieceKind::Byte {
                pending_bytes.push(byte_of_piece(piece).expect("byte pieces are checked at load"));
                continue;
            }
            flush_bytes(&mut pending_bytes, &mut text);
            at_start &= text.is_empty();
            if self.kind(id) == PieceKind::Control {
                continue;
            }
            let consumed_prefix = self.push_piece(piece, id, at_start, &mut text);
            at_start &= !consumed_prefix && text.is_empty();
        }
        flush_bytes(&mut pending_bytes, &mut text);
        text
    }

    /// Appends one non-byte, non-control piece; says whether a leading `▁` was consumed as
    /// the dummy prefix (with whitespace removal every leading space goes, so never "yes").
    fn push_piece(&self, piece: &str, id: u32, at_start: bool, text: &mut String) -> bool {
        let normalizer = self.normalizer;
        let mut rest = piece;
        let mut consumed = false;
        if at_start && (normalizer.add_dummy_prefix || normalizer.remove_extra_whitespaces) {
            if let Some(tail) = piece.strip_prefix(SPACE_SYMBOL) {
                rest = tail;
                consumed = !normalizer.remove_extra_whitespaces;
            }
        }
        if id == self.index.unk_id || self.kind(id) == PieceKind::Unknown {
            // An unknown piece is copied raw, `▁` included; only `<unk>` itself is replaced.
            let is_unk_piece = self.pieces[id as usize].text == piece;
            text.push_str(if is_unk_piece {
                &self.unk_surface
            } else {
                piece
            });
        } else {
            text.push_str(&rest.replace(SPACE_SYMBOL, " "));
        }
        consumed
    }

    /// The id of exactly this piece, if it exists.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.lookup(piece)
    }

    pub(crate) fn lookup(&self, piece: &str) -> Option<u32> {
        self.index.ids.get(piece).copied()
    }

    /// The id of a NORMAL, USER_DEFINED or UNUSED piece: what a merge may produce.
    pub(crate) fn mergeable_id(&self, piece: &str) -> Option<u32> {
        self.lookup(piece)
            .filter(|&id| id != self.index.unk_id && self.kind(id).is_mergeable())
    }

    /// The length in bytes of the longest USER_DEFINED piece that starts `text`.
    pub(crate) fn user_defined_prefix(&self, text: &str) -> Option<usize> {
        let first = text.chars().next()?;
        let candidates = self.index.user_defined.get(&first)?;
        candidates
            .iter()
            .find(|piece| text.starts_with(piece.as_str()))
            .map(String::len)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.pieces[id as usize].score
    }

    pub(crate) fn kind(&self, id: u32) -> PieceKind {
        self.pieces[id as usize].kind
    }

    /// The text of piece `id`.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces
            .get(id as usize)
            .map(|piece| piece.text.as_str())
    }

    /// Piece `id` with its score and kind.
    pub fn piece(&self, id: u32) -> Option<&Piece> {
        self.pieces.get(id as usize)
    }

    /// All pieces, indexed by id.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The number of pieces (`get_piece_size()`).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The id of the UNKNOWN piece.
    pub fn unk_id(&self) -> u32 {
        self.index.unk_id
    }

    /// The beginning-of-sentence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The end-of-sentence id, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The padding id, if the model has one (LLaMA-style models have none).
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether unknown characters fall back to byte pieces.
    pub fn byte_fallback(&self) -> bool {
        self.index.byte_ids.is_some()
    }

    /// The normaliser settings.
    pub fn normalizer(&self) -> Normalizer {
        self.normalizer
    }
}

/// Appends accumulated byte-piece bytes as UTF-8, one U+FFFD per byte that does not start a
/// valid character (sentencepiece's `ProcessByteQueue`).
fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        text.extend(std::iter::repeat_n('\u{FFFD}', chunk.invalid().len()));
    }
    bytes.clear();
}

/// The options a `ModelProto` stores outside its pieces.
fn options_of(proto: &ModelProto) -> ModelOptions {
    ModelOptions {
        byte_fallback: proto.trainer.byte_fallback,
        normalizer: Normalizer {
            add_dummy_prefix: proto.normalizer.add_dummy_prefix,
            remove_extra_whitespaces: proto.normalizer.remove_extra_whitespaces,
            escape_whitespaces: proto.normalizer.escape_whitespaces,
        },
        bos_piece: proto.trainer.bos_piece.clone(),
        eos_piece: proto.trainer.eos_piece.clone(),
        pad_piece: proto.trainer.pad_piece.clone(),
        unk_surface: proto
            .trainer
            .unk_surface
            .clone()
            .unwrap_or(ModelOptions::default().unk_surface),
    }
}

/// What sentencepiece would refuse, or what this port does not implement.
fn check_supported(proto: &ModelProto) -> std::result::Result<(), String> {
    if proto.pieces.is_empty() {
        return Err("no pieces (empty file, or not a SentencePiece model)".into());
    }
    if !proto.has_trainer_spec || !proto.has_normalizer_spec {
        return Err("trainer_spec or normalizer_spec is missing (truncated file?)".into());
    }
    let model_type = proto.trainer.model_type;
    if model_type != 2 {
        let name = match model_type {
            1 => "UNIGRAM",
            3 => "WORD",
            4 => "CHAR",
            _ => "unknown",
        };
        return Err(format!(
            "model_type {model_type} ({name}) is not supported: only BPE (2) models are"
        ));
    }
    if proto.trainer.treat_whitespace_as_suffix {
        return Err("treat_whitespace_as_suffix is not supported".into());
    }
    let charsmap_error = |what: &str, name: &str| {
        format!(
            "{what} {name:?} uses a precompiled character map (NFKC-style rules), which is not \
             supported: only identity normalisation is"
        )
    };
    if proto.normalizer.precompiled_charsmap_len > 0 {
        return Err(charsmap_error("normalizer", &proto.normalizer.name));
    }
    if let Some(spec) = proto
        .denormalizer
        .as_ref()
        .filter(|spec| spec.precompiled_charsmap_len > 0)
    {
        return Err(charsmap_error("denormalizer", &spec.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str, score: f32, kind: PieceKind) -> Piece {
        Piece {
            text: text.into(),
            score,
            kind,
        }
    }

    fn toy_model(byte_fallback: bool, extra: &[Piece]) -> SentencePieceModel {
        let mut pieces = vec![
            piece("<unk>", 0.0, PieceKind::Unknown),
            piece("<s>", 0.0, PieceKind::Control),
            piece("</s>", 0.0, PieceKind::Control),
        ];
        if byte_fallback {
            pieces
                .extend((0..=255u8).map(|b| piece(&format!("<0x{b:02X}>"), 0.0, PieceKind::Byte)));
        }
        pieces.extend(extra.iter().cloned());
        let options = ModelOptions {
            byte_fallback,
            normalizer: Normalizer {
                add_dummy_prefix: true,
                remove_extra_whitespaces: false,
                escape_whitespaces: true,
            },
            ..ModelOptions::default()
        };
        SentencePieceModel::from_pieces(pieces, options, "<toy>").unwrap()
    }

    fn normal(text: &str, score: f32) -> Piece {
        piece(text, score, PieceKind::Normal)
    }

    #[test]
    fn merges_highest_score_first_and_leftmost_on_ties() {
        let extra = [
            normal("▁", -1.0),
            normal("a", -1.0),
            normal("b", -1.0),
            normal("ab", -2.0),
            normal("▁a", -3.0),
        ];
        let model = toy_model(false, &extra);
        // "▁ab": ("a","b") outscores ("▁","a").
        assert_eq!(model.encode_pieces("ab"), ["▁", "ab"]);
        let tie = [
            normal("▁", -1.0),
            normal("a", -1.0),
            normal("▁a", -2.0),
            normal("aa", -2.0),
        ];
        let model = toy_model(false, &tie);
        assert_eq!(model.encode_pieces("aa"), ["▁a", "a"]);
    }

    #[test]
    fn unused_pieces_are_split_back() {
        let extra = [
            normal("▁", -1.0),
            normal("x", -1.0),
            normal("y", -1.0),
            piece("xy", -0.5, PieceKind::Unused),
        ];
        let model = toy_model(false, &extra);
        assert_eq!(model.encode_pieces("xy"), ["▁", "x", "y"]);
    }

    #[test]
    fn unknown_characters_use_bytes_or_one_unk_per_run() {
        let extra = [normal("▁", -1.0), normal("a", -1.0)];
        let with_bytes = toy_model(true, &extra);
        let ids = with_bytes.encode("aé");
        assert_eq!(ids.len(), 4);
        assert_eq!(with_bytes.decode(&ids).unwrap(), "aé");
        let without = toy_model(false, &extra);
        assert_eq!(without.encode("aéé"), [without.lookup("▁").unwrap(), 4, 0]);
        assert_eq!(without.encode_pieces("aéé"), ["▁", "a", "éé"]);
        assert_eq!(without.decode(&without.encode("aéé")).unwrap(), "a ⁇ ");
    }

    #[test]
    fn user_defined_pieces_are_matched_whole() {
        let extra = [
            normal("▁", -1.0),
            normal("a", -1.0),
            normal("b", -1.0),
            normal("▁a", -1.0),
            piece("ab", 0.0, PieceKind::UserDefined),
        ];
        let model = toy_model(false, &extra);
        assert_eq!(model.encode_pieces("aab"), ["▁a", "ab"]);
    }

    #[test]
    fn decode_handles_bytes_controls_and_prefix() {
        let model = toy_model(true, &[normal("▁", -1.0), normal("a", -1.0)]);
        let byte = |b: u8| model.lookup(&format!("<0x{b:02X}>")).unwrap();
        let space = model.lookup("▁").unwrap();
        let a = model.lookup("a").unwrap();
        assert_eq!(model.decode(&[1, space, a, 2]).unwrap(), "a");
        assert_eq!(model.decode(&[byte(0xE4), space, a]).unwrap(), "\u{FFFD} a");
        assert!(model.decode(&[100_000]).is_err());
    }

    #[test]
    fn rejects_inconsistent_vocabularies() {
        let options = ModelOptions::default();
        let no_unk = vec![normal("a", 0.0)];
        assert!(SentencePieceModel::from_pieces(no_unk, options.clone(), "t").is_err());
        let dup = vec![
            piece("<unk>", 0.0, PieceKind::Unknown),
            normal("a", 0.0),
            normal("a", 0.0),
        ];
        assert!(SentencePieceModel::from_pieces(dup, options.clone(), "t").is_err());
        let bytes_off = vec![
            piece("<unk>", 0.0, PieceKind::Unknown),
            piece("<0x00>", 0.0, PieceKind::Byte),
        ];
        assert!(SentencePieceModel::from_pieces(bytes_off, options, "t").is_err());
    }
}
