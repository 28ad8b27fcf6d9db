//! SentencePiece text normalisation without a character map (the "identity" normaliser
//! that LLaMA, Chinese-LLaMA and InternLM2 ship): whitespace handling only.

/// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space.
pub const SPACE_SYMBOL: &str = "\u{2581}";

/// The whitespace switches of a `NormalizerSpec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalizer {
    /// Prepend one space so that the first word looks like any later word (`▁word`).
    pub add_dummy_prefix: bool,
    /// Drop leading and trailing spaces and collapse runs of spaces into one.
    pub remove_extra_whitespaces: bool,
    /// Replace every ASCII space by [`SPACE_SYMBOL`].
    pub escape_whitespaces: bool,
}

impl Normalizer {
    /// The normalised form of `text`, as `normalizer::Normalizer::Normalize` computes it for
    /// an empty character map. Only U+0020 counts as a space: tabs and newlines are kept.
    pub fn normalize(&self, text: &str) -> String {
        let text = if self.remove_extra_whitespaces {
            text.trim_start_matches(' ')
        } else {
            text
        };
        // sentencepiece returns early on (all-space) empty input: no dummy prefix either.
        if text.is_empty() {
            return String::new();
        }
        let space = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            " "
        };
        let mut out = String::with_capacity(text.len() * 3 + space.len());
        if self.add_dummy_prefix {
            out.push_str(space);
        }
        let mut prev_is_space = self.remove_extra_whitespaces;
        for c in text.chars() {
            if c == ' ' {
                if !prev_is_space {
                    out.push_str(space);
                }
                prev_is_space = self.remove_extra_whitespaces;
            } else {
                out.push(c);
                prev_is_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: Normalizer = Normalizer {
        add_dummy_prefix: true,
        remove_extra_whitespaces: false,
        escape_whitespaces: true,
    };

    #[test]
    fn identity_keeps_every_space() {
        assert_eq!(LLAMA.normalize(" a  b\t\n"), "▁▁a▁▁b\t\n");
        assert_eq!(LLAMA.normalize(""), "");
        assert_eq!(LLAMA.normalize(" "), "▁▁");
    }

    #[test]
    fn extra_whitespace_is_collapsed_when_asked() {
        let nmt = Normalizer {
            remove_extra_whitespaces: true,
            ..LLAMA
        };
        assert_eq!(nmt.normalize("  a   b  "), "▁a▁b");
        assert_eq!(nmt.normalize("   "), "");
    }
}
