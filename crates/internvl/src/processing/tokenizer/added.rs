//! transformers' slow-tokenizer handling of added tokens (`PreTrainedTokenizer.tokenize`, 4.37):
//! the text is cut at added tokens (leftmost match, longest there), then each token's
//! `lstrip`/`rstrip`/`single_word` rule edits its neighbours. Shared by the SentencePiece and
//! byte-level BPE tokenizers.

use std::collections::HashMap;

use super::hf_config::AddedToken;

/// Python's `str.isspace()`: Unicode White_Space plus the separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The non-empty segments of `text`: added tokens (their exact text) and the text between them,
/// as the model-specific `_tokenize` will see it.
///
/// `by_first_char` lists the added token texts by first character, longest first;
/// `by_content` and `by_id` are transformers' `_added_tokens_encoder` / `_added_tokens_decoder`.
pub(crate) fn segments(
    text: &str,
    by_first_char: &HashMap<char, Vec<String>>,
    by_content: &HashMap<String, u32>,
    by_id: &HashMap<u32, AddedToken>,
) -> Vec<String> {
    let mut parts = split_on_added_tokens(text, by_first_char);
    apply_whitespace_rules(&mut parts, by_content, by_id);
    parts.retain(|part| !part.is_empty());
    parts
}

/// Cuts `text` at added tokens, leftmost match first and the longest one there (what
/// transformers' `Trie.split` does for these token sets).
fn split_on_added_tokens(text: &str, by_first_char: &HashMap<char, Vec<String>>) -> Vec<String> {
    let mut parts = Vec::new();
    let mut plain_start = 0;
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let first = rest.chars().next().expect("pos is a char boundary");
        let matched = by_first_char
            .get(&first)
            .and_then(|candidates| candidates.iter().find(|c| rest.starts_with(c.as_str())));
        match matched {
            Some(token) => {
                if plain_start < pos {
                    parts.push(text[plain_start..pos].to_string());
                }
                parts.push(token.clone());
                pos += token.len();
                plain_start = pos;
            }
            None => pos += first.len_utf8(),
        }
    }
    if plain_start < text.len() {
        parts.push(text[plain_start..].to_string());
    }
    parts
}

/// The `lstrip`/`rstrip`/`single_word` rules of `PreTrainedTokenizer.tokenize`, applied in
/// place in the same order.
fn apply_whitespace_rules(
    parts: &mut [String],
    by_content: &HashMap<String, u32>,
    by_id: &HashMap<u32, AddedToken>,
) {
    for i in 0..parts.len() {
        let Some(token) = by_content.get(&parts[i]).map(|id| &by_id[id]) else {
            continue;
        };
        let spec = &token.spec;
        // Python reads both neighbours once, before any of them is stripped.
        let left = (i > 0)
            .then(|| parts[i - 1].clone())
            .filter(|l| !l.is_empty());
        let right = parts.get(i + 1).cloned().filter(|r| !r.is_empty());
        if let (true, Some(right)) = (spec.rstrip, &right) {
            parts[i + 1] = right.trim_start_matches(is_py_space).to_string();
        }
        if let (true, Some(left)) = (spec.lstrip, &left) {
            parts[i - 1] = left.trim_end_matches(is_py_space).to_string();
        }
        if spec.single_word && left.is_some_and(|l| !l.ends_with(' ')) {
            let word = std::mem::take(&mut parts[i]);
            parts[i - 1].push_str(&word);
        } else if spec.single_word && right.is_some_and(|r| !r.starts_with(' ')) {
            let word = std::mem::take(&mut parts[i]);
            parts[i + 1].insert_str(0, &word);
        }
    }
}
