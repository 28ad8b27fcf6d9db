//! The transformers-side files of a slow tokenizer: `tokenizer_config.json`,
//! `special_tokens_map.json`, `added_tokens.json` (and, for folders without
//! `added_tokens_decoder`, the `added_tokens` of `tokenizer.json`), read as transformers 4.37
//! `PreTrainedTokenizerBase._from_pretrained` reads them.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The transformers slow-tokenizer class a folder declares. The two SentencePiece classes
/// encode alike and differ in where decoding puts spaces around special tokens; `Qwen2` is the
/// byte-level BPE family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowTokenizerClass {
    /// `LlamaTokenizer` with `legacy=True` (LLaMA, Vicuna, Chinese-LLaMA / QLLaMA).
    Llama,
    /// InternLM2's remote-code `InternLM2Tokenizer`.
    InternLM2,
    /// `Qwen2Tokenizer`: byte-level BPE from `vocab.json` + `merges.txt` (or `tokenizer.json`),
    /// NFC-normalised, no BOS/EOS added.
    Qwen2,
}

/// A token string with transformers' `AddedToken` whitespace options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The token text.
    pub content: String,
    /// Strip whitespace from the text on its left.
    pub lstrip: bool,
    /// Strip whitespace from the text on its right.
    pub rstrip: bool,
    /// Only match as a whole word.
    pub single_word: bool,
}

impl TokenSpec {
    /// A token with all options off.
    pub fn plain(content: &str) -> Self {
        Self {
            content: content.to_string(),
            lstrip: false,
            rstrip: false,
            single_word: false,
        }
    }
}

/// A token that transformers matches in the text before sentencepiece sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    /// Its text and whitespace options.
    pub spec: TokenSpec,
    /// Its id (beyond the sentencepiece vocabulary, or reusing a piece's id).
    pub id: u32,
    /// Special tokens are dropped by `decode(…, skip_special_tokens=true)`.
    pub special: bool,
}

/// Everything the transformers layer adds to a `tokenizer.model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTokenizerSettings {
    /// Which slow tokenizer class decodes.
    pub class: SlowTokenizerClass,
    /// `bos_token`.
    pub bos_token: Option<TokenSpec>,
    /// `eos_token`.
    pub eos_token: Option<TokenSpec>,
    /// `unk_token`.
    pub unk_token: Option<TokenSpec>,
    /// `pad_token`.
    pub pad_token: Option<TokenSpec>,
    /// `additional_special_tokens`, in file order.
    pub additional_special_tokens: Vec<TokenSpec>,
    /// Tokens with explicit ids (`added_tokens_decoder`, or the legacy `added_tokens.json`).
    pub added_tokens: Vec<AddedToken>,
    /// `add_bos_token` (default true).
    pub add_bos_token: bool,
    /// `add_eos_token` (default false).
    pub add_eos_token: bool,
    /// `clean_up_tokenization_spaces` (default false for both classes).
    pub clean_up_tokenization_spaces: bool,
}

impl HfTokenizerSettings {
    /// The constructor defaults of the class, before any file is read.
    pub fn defaults(class: SlowTokenizerClass) -> Self {
        if class == SlowTokenizerClass::Qwen2 {
            // `Qwen2Tokenizer.__init__`: unk/eos/pad `<|endoftext|>`, no BOS.
            let endoftext = || Some(TokenSpec::plain("<|endoftext|>"));
            return Self {
                class,
                bos_token: None,
                eos_token: endoftext(),
                unk_token: endoftext(),
                pad_token: endoftext(),
                additional_special_tokens: Vec::new(),
                added_tokens: Vec::new(),
                add_bos_token: false,
                add_eos_token: false,
                clean_up_tokenization_spaces: false,
            };
        }
        let pad_token = match class {
            SlowTokenizerClass::InternLM2 => Some(TokenSpec::plain("</s>")),
            _ => None,
        };
        Self {
            class,
            bos_token: Some(TokenSpec::plain("<s>")),
            eos_token: Some(TokenSpec::plain("</s>")),
            unk_token: Some(TokenSpec::plain("<unk>")),
            pad_token,
            additional_special_tokens: Vec::new(),
            added_tokens: Vec::new(),
            add_bos_token: true,
            add_eos_token: false,
            clean_up_tokenization_spaces: false,
        }
    }

    /// Reads the JSON files of a model folder (each one optional). A folder whose
    /// `tokenizer_config.json` names no `tokenizer_class` is taken as [`SlowTokenizerClass::Llama`].
    pub fn from_folder(dir: &Path) -> Result<Self> {
        Self::from_folder_or(dir, SlowTokenizerClass::Llama)
    }

    /// [`HfTokenizerSettings::from_folder`] with the class to assume when
    /// `tokenizer_config.json` (or its `tokenizer_class`) is missing.
    pub fn from_folder_or(dir: &Path, default_class: SlowTokenizerClass) -> Result<Self> {
        let config = read_json_object(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let config_path = dir.join("tokenizer_config.json");
        let mut settings = Self::defaults(class_of(&config, &config_path, default_class)?);
        settings.apply_config(&config, &config_path)?;
        if settings.class == SlowTokenizerClass::Qwen2 {
            // `Qwen2Tokenizer` has no `add_bos_token`/`add_eos_token`: it never adds either.
            settings.add_bos_token = false;
            settings.add_eos_token = false;
        }
        match config.get("added_tokens_decoder") {
            Some(decoder) => {
                settings.added_tokens = parse_added_tokens_decoder(decoder, &config_path)?
            }
            // Older folders: transformers then reads the two legacy files instead.
            None => settings.apply_legacy_files(dir)?,
        }
        Ok(settings)
    }

    fn apply_config(&mut self, config: &Map<String, Value>, path: &Path) -> Result<()> {
        self.add_bos_token = bool_or(config, "add_bos_token", true, path)?;
        self.add_eos_token = bool_or(config, "add_eos_token", false, path)?;
        self.clean_up_tokenization_spaces =
            bool_or(config, "clean_up_tokenization_spaces", false, path)?;
        self.apply_special_tokens(config, path)?;
        if let Some(list) = config.get("additional_special_tokens") {
            self.additional_special_tokens = parse_token_list(list, path)?;
        }
        Ok(())
    }

    /// Sets every special-token key present in `map` (a null value clears it).
    fn apply_special_tokens(&mut self, map: &Map<String, Value>, path: &Path) -> Result<()> {
        let slots = [
            ("bos_token", &mut self.bos_token),
            ("eos_token", &mut self.eos_token),
            ("unk_token", &mut self.unk_token),
            ("pad_token", &mut self.pad_token),
        ];
        for (key, slot) in slots {
            if let Some(value) = map.get(key) {
                *slot = parse_token(value, path, key)?;
            }
        }
        Ok(())
    }

    fn apply_legacy_files(&mut self, dir: &Path) -> Result<()> {
        let map_path = dir.join("special_tokens_map.json");
        if let Some(map) = read_json_object(&map_path)? {
            self.apply_special_tokens(&map, &map_path)?;
            if let Some(list) = map.get("additional_special_tokens") {
                for token in parse_token_list(list, &map_path)? {
                    if !self
                        .additional_special_tokens
                        .iter()
                        .any(|t| t.content == token.content)
                    {
                        self.additional_special_tokens.push(token);
                    }
                }
            }
        }
        let added_path = dir.join("added_tokens.json");
        if let Some(added) = read_json_object(&added_path)? {
            let specials = self.special_contents();
            for (content, id) in &added {
                let id = id.as_u64().and_then(|id| u32::try_from(id).ok());
                let id = id.ok_or_else(|| {
                    config_error(&added_path, format!("id of {content:?} is not a u32"))
                })?;
                self.added_tokens.push(AddedToken {
                    spec: TokenSpec::plain(content),
                    id,
                    special: specials.contains(content),
                });
            }
        }
        // transformers also takes `tokenizer.json`'s `added_tokens` (fast -> slow), after
        // added_tokens.json, so the same id there wins.
        let json_path = dir.join("tokenizer.json");
        if let Some(tokenizer_json) = read_json_object(&json_path)? {
            if let Some(list) = tokenizer_json.get("added_tokens") {
                self.added_tokens
                    .extend(parse_tokenizer_json_added_tokens(list, &json_path)?);
            }
        }
        Ok(())
    }

    /// transformers' `all_special_tokens_extended` order: bos, eos, unk, pad, then the
    /// additional ones; repeated contents are kept once.
    pub fn special_tokens_in_order(&self) -> Vec<&TokenSpec> {
        let named = [
            &self.bos_token,
            &self.eos_token,
            &self.unk_token,
            &self.pad_token,
        ];
        let all = named
            .into_iter()
            .flatten()
            .chain(&self.additional_special_tokens);
        let mut seen = std::collections::HashSet::new();
        all.filter(|token| seen.insert(token.content.as_str()))
            .collect()
    }

    fn special_contents(&self) -> Vec<String> {
        self.special_tokens_in_order()
            .iter()
            .map(|t| t.content.clone())
            .collect()
    }
}

fn config_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The JSON object in `path`, or `None` when the file does not exist.
fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(config_error(path, "not a JSON object")),
        Err(e) => Err(config_error(path, e)),
    }
}

fn class_of(
    config: &Map<String, Value>,
    path: &Path,
    default_class: SlowTokenizerClass,
) -> Result<SlowTokenizerClass> {
    let class = match config.get("tokenizer_class") {
        None | Some(Value::Null) => return Ok(default_class),
        Some(Value::String(name)) => name.trim_end_matches("Fast"),
        Some(other) => {
            return Err(config_error(
                path,
                format!("tokenizer_class is not a string: {other}"),
            ))
        }
    };
    match class {
        "LlamaTokenizer" => {
            // transformers 4.37 treats a missing/null `legacy` as true (with a warning).
            if config.get("legacy") == Some(&Value::Bool(false)) {
                return Err(config_error(
                    path,
                    "LlamaTokenizer with legacy=false is not supported",
                ));
            }
            Ok(SlowTokenizerClass::Llama)
        }
        "InternLM2Tokenizer" => Ok(SlowTokenizerClass::InternLM2),
        "Qwen2Tokenizer" => Ok(SlowTokenizerClass::Qwen2),
        other => Err(config_error(
            path,
            format!(
                "tokenizer_class {other:?} is not supported (LlamaTokenizer, InternLM2Tokenizer, \
                 Qwen2Tokenizer)"
            ),
        )),
    }
}

fn bool_or(config: &Map<String, Value>, key: &str, default: bool, path: &Path) -> Result<bool> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(config_error(
            path,
            format!("{key} is not a boolean: {other}"),
        )),
    }
}

/// A special-token value: a string, an `AddedToken` object, or null.
fn parse_token(value: &Value, path: &Path, key: &str) -> Result<Option<TokenSpec>> {
    match value {
        Value::Null => Ok(None),
        Value::String(content) => Ok(Some(TokenSpec::plain(content))),
        Value::Object(object) => parse_token_object(object, path, key).map(Some),
        other => Err(config_error(path, format!("{key} is not a token: {other}"))),
    }
}

fn parse_token_object(object: &Map<String, Value>, path: &Path, key: &str) -> Result<TokenSpec> {
    let content = object.get("content").and_then(Value::as_str);
    let content =
        content.ok_or_else(|| config_error(path, format!("{key} has no string \"content\"")))?;
    let flag = |name: &str| object.get(name).and_then(Value::as_bool).unwrap_or(false);
    Ok(TokenSpec {
        content: content.to_string(),
        lstrip: flag("lstrip"),
        rstrip: flag("rstrip"),
        single_word: flag("single_word"),
    })
}

fn parse_token_list(value: &Value, path: &Path) -> Result<Vec<TokenSpec>> {
    let Value::Array(items) = value else {
        return Err(config_error(
            path,
            "additional_special_tokens is not a list",
        ));
    };
    let key = "additional_special_tokens";
    items
        .iter()
        .map(|item| {
            parse_token(item, path, key)?
                .ok_or_else(|| config_error(path, format!("null in {key}")))
        })
        .collect()
}

/// `added_tokens_decoder`: `{"id": {"content": …, "special": …, "lstrip": …}}`.
fn parse_added_tokens_decoder(value: &Value, path: &Path) -> Result<Vec<AddedToken>> {
    let Value::Object(entries) = value else {
        return Err(config_error(path, "added_tokens_decoder is not an object"));
    };
    entries
        .iter()
        .map(|(id, entry)| {
            let id: u32 = id.parse().map_err(|_| {
                config_error(
                    path,
                    format!("added_tokens_decoder key {id:?} is not an id"),
                )
            })?;
            let Value::Object(object) = entry else {
                return Err(config_error(
                    path,
                    format!("added_tokens_decoder[{id}] is not an object"),
                ));
            };
            let spec = parse_token_object(object, path, &format!("added_tokens_decoder[{id}]"))?;
            let special = object
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(AddedToken { spec, id, special })
        })
        .collect()
}

/// `tokenizer.json`'s `added_tokens`: `[{"id": …, "content": …, "special": …, "lstrip": …}]`.
fn parse_tokenizer_json_added_tokens(value: &Value, path: &Path) -> Result<Vec<AddedToken>> {
    let Value::Array(items) = value else {
        return Err(config_error(path, "added_tokens is not a list"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let key = format!("added_tokens[{i}]");
            let Value::Object(object) = item else {
                return Err(config_error(path, format!("{key} is not an object")));
            };
            let id = object.get("id").and_then(Value::as_u64);
            let id = id
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| config_error(path, format!("{key} has no u32 \"id\"")))?;
            let spec = parse_token_object(object, path, &key)?;
            let special = object
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(AddedToken { spec, id, special })
        })
        .collect()
}
