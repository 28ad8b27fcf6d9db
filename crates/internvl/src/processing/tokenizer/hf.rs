//! transformers' slow SentencePiece tokenizers (`LlamaTokenizer` in legacy mode and
//! InternLM2's `InternLM2Tokenizer`, both as of transformers 4.37): added and special tokens
//! are cut out of the text first, every remaining segment is encoded by its own
//! sentencepiece call (so each gets its own dummy-prefix `▁`), then BOS/EOS are added.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::added;
use super::hf_config::{AddedToken, HfTokenizerSettings, SlowTokenizerClass, TokenSpec};
use super::model::SentencePieceModel;
use super::normalizer::SPACE_SYMBOL;
use super::vocab::longest_first_by_first_char;
use crate::{Error, Result};

/// A SentencePiece model plus the transformers layer on top of it, reproducing
/// `AutoTokenizer.from_pretrained(folder, use_fast=False)` for LLaMA-family and InternLM2
/// InternVL checkpoints.
#[derive(Debug, Clone)]
pub struct SentencePieceTokenizer {
    model: SentencePieceModel,
    class: SlowTokenizerClass,
    /// Added tokens by id (transformers' `_added_tokens_decoder`).
    added_by_id: HashMap<u32, AddedToken>,
    /// Added token text -> id (`_added_tokens_encoder`).
    added_by_content: HashMap<String, u32>,
    /// Added token texts by first character, longest first, for splitting the text.
    added_by_first_char: HashMap<char, Vec<String>>,
    /// `all_special_tokens` and `all_special_ids`.
    special_tokens: HashSet<String>,
    special_ids: HashSet<u32>,
    /// Added tokens that `_decode` keeps out of `convert_tokens_to_string`.
    standalone_in_decode: HashSet<String>,
    /// `len(tokenizer)`: distinct keys of `get_vocab()`.
    len: usize,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
    add_bos_token: bool,
    add_eos_token: bool,
    clean_up_tokenization_spaces: bool,
}

/// transformers' `clean_up_tokenization`: drops spaces before punctuation and contractions.
fn clean_up_tokenization(text: &str) -> String {
    const RULES: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    RULES
        .iter()
        .fold(text.to_string(), |text, (from, to)| text.replace(from, to))
}

impl SentencePieceTokenizer {
    /// Loads `tokenizer.model` and the transformers JSON files of a model folder.
    ///
    /// Fails with [`Error::Io`] when `tokenizer.model` cannot be read, [`Error::Tokenizer`]
    /// when it is invalid and [`Error::Config`] for a malformed or unsupported JSON file.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let settings = HfTokenizerSettings::from_folder(dir)?;
        if settings.class == SlowTokenizerClass::Qwen2 {
            return Err(Error::tokenizer(
                dir.join("tokenizer_config.json").display(),
                "Qwen2Tokenizer is a byte-level BPE (vocab.json/merges.txt or tokenizer.json), \
                 not a sentencepiece tokenizer.model",
            ));
        }
        let model = SentencePieceModel::from_file(dir.join("tokenizer.model"))?;
        Ok(Self::new(model, settings))
    }

    /// Wraps a model with transformers settings. Special tokens that are neither added tokens
    /// nor pieces get new ids after the vocabulary, as transformers' `_add_tokens` does.
    pub fn new(model: SentencePieceModel, settings: HfTokenizerSettings) -> Self {
        let (added_by_id, added_by_content) = added_token_tables(&model, &settings);
        let special_tokens: HashSet<String> = settings
            .special_tokens_in_order()
            .iter()
            .map(|t| t.content.clone())
            .collect();
        let special_ids = special_tokens
            .iter()
            .map(|content| token_id(&model, &added_by_content, content))
            .collect();
        let standalone_in_decode =
            standalone_in_decode(&model, &settings, &added_by_content, &special_tokens);
        let id_of = |token: &Option<TokenSpec>| {
            token
                .as_ref()
                .and_then(|t| added_by_content.get(&t.content).copied())
        };
        Self {
            bos_id: id_of(&settings.bos_token),
            eos_id: id_of(&settings.eos_token),
            unk_id: id_of(&settings.unk_token),
            pad_id: id_of(&settings.pad_token),
            len: hf_vocab_len(&model, &added_by_id),
            added_by_first_char: longest_first_by_first_char(added_by_content.keys()),
            model,
            class: settings.class,
            added_by_id,
            added_by_content,
            special_tokens,
            special_ids,
            standalone_in_decode,
            add_bos_token: settings.add_bos_token,
            add_eos_token: settings.add_eos_token,
            clean_up_tokenization_spaces: settings.clean_up_tokenization_spaces,
        }
    }

    /// The non-empty segments of `text`: added tokens, and the text between them as each
    /// sentencepiece call will see it.
    fn segments(&self, text: &str) -> Vec<String> {
        added::segments(
            text,
            &self.added_by_first_char,
            &self.added_by_content,
            &self.added_by_id,
        )
    }

    /// transformers' `tokenize(text)`: added tokens as they are, every other segment as
    /// sentencepiece pieces (`sp_model.encode(segment, out_type=str)`).
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        for part in self.segments(text) {
            if self.added_by_content.contains_key(&part) {
                tokens.push(part);
            } else {
                tokens.extend(self.model.encode_pieces(&part));
            }
        }
        tokens
    }

    /// The ids of `text`, optionally with BOS first and EOS last (transformers'
    /// `tokenizer(text).input_ids` when the flags equal `add_bos_token`/`add_eos_token`).
    pub fn encode(&self, text: &str, add_bos: bool, add_eos: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = self.bos_id.filter(|_| add_bos).into_iter().collect();
        for part in self.segments(text) {
            match self.added_by_content.get(&part) {
                Some(&id) => ids.push(id),
                None => ids.extend(self.model.encode(&part)),
            }
        }
        ids.extend(self.eos_id.filter(|_| add_eos));
        ids
    }

    /// [`SentencePieceTokenizer::encode`] with the folder's `add_bos_token`/`add_eos_token`.
    pub fn encode_with_defaults(&self, text: &str) -> Vec<u32> {
        self.encode(text, self.add_bos_token, self.add_eos_token)
    }

    /// transformers' `decode(ids, skip_special_tokens)` (with its defaults
    /// `spaces_between_special_tokens=True` and the folder's `clean_up_tokenization_spaces`).
    ///
    /// Fails with [`Error::InvalidArgument`] for an id that is neither a piece nor an added token.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let tokens = ids
            .iter()
            .filter(|id| !(skip_special_tokens && self.special_ids.contains(id)))
            .map(|&id| {
                self.id_to_token(id).ok_or_else(|| {
                    Error::InvalidArgument(format!("token id {id} is not in the vocabulary"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let text = self.join_decoded(&tokens);
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// `_decode`'s assembly: stand-alone added tokens as they are, the runs between them
    /// through `convert_tokens_to_string`, all joined by single spaces.
    fn join_decoded(&self, tokens: &[&str]) -> String {
        let mut texts = Vec::new();
        let mut run: Vec<&str> = Vec::new();
        for token in tokens {
            if self.standalone_in_decode.contains(*token) {
                if !run.is_empty() {
                    let text = self.tokens_to_string(&run);
                    if !text.is_empty() {
                        texts.push(text);
                    }
                    run.clear();
                }
                texts.push(token.to_string());
            } else {
                run.push(token);
            }
        }
        if !run.is_empty() {
            texts.push(self.tokens_to_string(&run));
        }
        texts.join(" ")
    }

    /// `convert_tokens_to_string` of the folder's class.
    fn tokens_to_string(&self, tokens: &[&str]) -> String {
        match self.class {
            // `from_folder` refuses Qwen2 folders; Qwen2 settings given to `new` decode as LLaMA.
            SlowTokenizerClass::Llama | SlowTokenizerClass::Qwen2 => {
                self.llama_tokens_to_string(tokens)
            }
            SlowTokenizerClass::InternLM2 => self.internlm2_tokens_to_string(tokens),
        }
    }

    /// `LlamaTokenizer.convert_tokens_to_string` (legacy): the first token loses one leading
    /// `▁` (sentencepiece may then drop another as the dummy prefix), and a space goes before a
    /// special token that follows ordinary text.
    fn llama_tokens_to_string(&self, tokens: &[&str]) -> String {
        let mut tokens = tokens.to_vec();
        if let Some(first) = tokens.first_mut() {
            *first = first.strip_prefix(SPACE_SYMBOL).unwrap_or(first);
        }
        self.decode_around_specials(&tokens, false)
    }

    /// `InternLM2Tokenizer.convert_tokens_to_string`: a space before every special token that
    /// follows ordinary text (even at the start), then `clean_up_tokenization`. Its
    /// `_maybe_add_prefix_space` always adds a space that the final `[1:]` removes again
    /// (it looks a token string up in a set of ids), so neither appears here.
    fn internlm2_tokens_to_string(&self, tokens: &[&str]) -> String {
        clean_up_tokenization(&self.decode_around_specials(tokens, true))
    }

    /// Decodes runs of pieces with sentencepiece and copies special tokens as they are, with a
    /// space before a special token that follows a non-special one (or starts the list, when
    /// `space_at_start`).
    fn decode_around_specials(&self, tokens: &[&str], space_at_start: bool) -> String {
        let mut out = String::new();
        let mut run: Vec<&str> = Vec::new();
        let mut prev_is_special = false;
        for (i, token) in tokens.iter().enumerate() {
            if !self.special_tokens.contains(*token) {
                run.push(token);
                prev_is_special = false;
                continue;
            }
            if !prev_is_special && (i != 0 || space_at_start) {
                out.push(' ');
            }
            out.push_str(&self.model.decode_pieces(&run));
            out.push_str(token);
            run.clear();
            prev_is_special = true;
        }
        out.push_str(&self.model.decode_pieces(&run));
        out
    }

    /// The id of an added token or of exactly this sentencepiece piece.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added_by_content
            .get(token)
            .copied()
            .or_else(|| self.model.piece_to_id(token))
    }

    /// The added token or sentencepiece piece with this id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match self.added_by_id.get(&id) {
            Some(token) => Some(token.spec.content.as_str()),
            None => self.model.id_to_piece(id),
        }
    }

    /// The id of `bos_token`.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The id of `eos_token`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id of `unk_token`.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// The id of `pad_token`, if the folder sets one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The folder's `add_bos_token`.
    pub fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }

    /// The folder's `add_eos_token`.
    pub fn add_eos_token(&self) -> bool {
        self.add_eos_token
    }

    /// `len(tokenizer)`: the distinct tokens of `get_vocab()`, pieces and added tokens.
    pub fn vocab_size(&self) -> usize {
        self.len
    }

    /// The added tokens, by id.
    pub fn added_tokens(&self) -> impl Iterator<Item = &AddedToken> {
        self.added_by_id.values()
    }

    /// Whether `id` is one of `all_special_ids` (dropped by `skip_special_tokens`).
    pub fn is_special_id(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The slow tokenizer class that decodes.
    pub fn class(&self) -> SlowTokenizerClass {
        self.class
    }

    /// The underlying sentencepiece model.
    pub fn model(&self) -> &SentencePieceModel {
        &self.model
    }
}

/// `len(get_vocab())`: the token of every piece id (an added token's text where one has that
/// id) plus every added token, counted once each.
fn hf_vocab_len(model: &SentencePieceModel, added_by_id: &HashMap<u32, AddedToken>) -> usize {
    let mut keys: HashSet<&str> = (0..model.vocab_size() as u32)
        .map(|id| match added_by_id.get(&id) {
            Some(token) => token.spec.content.as_str(),
            None => model.id_to_piece(id).expect("id below the vocabulary size"),
        })
        .collect();
    keys.extend(
        added_by_id
            .values()
            .map(|token| token.spec.content.as_str()),
    );
    keys.len()
}

/// transformers' `_add_tokens(all_special_tokens_extended, special_tokens=True)`: a special
/// token that is not yet an added token takes its piece's id, or a new id after
/// `len(get_vocab())`.
fn register_special_tokens(
    model: &SentencePieceModel,
    settings: &HfTokenizerSettings,
    added_by_id: &mut HashMap<u32, AddedToken>,
    added_by_content: &mut HashMap<String, u32>,
) {
    let mut next_id = hf_vocab_len(model, added_by_id) as u32;
    for spec in settings.special_tokens_in_order() {
        if spec.content.is_empty() || added_by_content.contains_key(&spec.content) {
            continue;
        }
        let id = model.piece_to_id(&spec.content).unwrap_or_else(|| {
            next_id += 1;
            next_id - 1
        });
        added_by_content.insert(spec.content.clone(), id);
        added_by_id.insert(
            id,
            AddedToken {
                spec: spec.clone(),
                id,
                special: true,
            },
        );
    }
}

/// The added tokens of the settings plus the special tokens registered after them:
/// id -> token (`_added_tokens_decoder`) and text -> id (`_added_tokens_encoder`).
fn added_token_tables(
    model: &SentencePieceModel,
    settings: &HfTokenizerSettings,
) -> (HashMap<u32, AddedToken>, HashMap<String, u32>) {
    let mut added_by_id: HashMap<u32, AddedToken> = HashMap::new();
    for token in &settings.added_tokens {
        added_by_id.insert(token.id, token.clone());
    }
    let mut added_by_content: HashMap<String, u32> = added_by_id
        .iter()
        .map(|(&id, t)| (t.spec.content.clone(), id))
        .collect();
    register_special_tokens(model, settings, &mut added_by_id, &mut added_by_content);
    (added_by_id, added_by_content)
}

/// `convert_tokens_to_ids`: an added token, else the piece, else `<unk>`.
fn token_id(model: &SentencePieceModel, added: &HashMap<String, u32>, token: &str) -> u32 {
    added
        .get(token)
        .copied()
        .or_else(|| model.piece_to_id(token))
        .unwrap_or(model.unk_id())
}

/// `_decode`'s `legacy_added_tokens`: non-special added tokens, plus the additional special
/// tokens whose id lies beyond the sentencepiece vocabulary.
fn standalone_in_decode(
    model: &SentencePieceModel,
    settings: &HfTokenizerSettings,
    added: &HashMap<String, u32>,
    special_tokens: &HashSet<String>,
) -> HashSet<String> {
    let mut tokens: HashSet<String> = added
        .keys()
        .filter(|c| !special_tokens.contains(*c))
        .cloned()
        .collect();
    for token in &settings.additional_special_tokens {
        if token_id(model, added, &token.content) as usize >= model.vocab_size() {
            tokens.insert(token.content.clone());
        }
    }
    tokens
}
