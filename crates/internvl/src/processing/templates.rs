//! InternVL-Chat conversation templates and prompt building, as the official
//! `conversation.py` and `InternVLChatModel.chat()` / `batch_chat()` do it.
//!
//! * [`ChatTemplate`]: every template the released InternVL-Chat models use (`Hermes-2`,
//!   `internlm2-chat`, `phi3-chat`, `internvl2_5`), InternVL-Chat-V1-1's `internvl_zh` and
//!   the V1.0 (LLaVA codebase) `vicuna_v1` / `v1`, with their exact system templates, default
//!   system messages, roles, separators and stop strings, plus a plain `chatml` for GGUF chat
//!   LLMs (SmolLM2, Qwen2 …): no default system message;
//! * [`PromptBuilder`]: a model's template + system message + image tokens per tile, building
//!   the exact query strings of `chat()` (history, automatic `<image>\n` prefix) and
//!   `batch_chat()`, with `<image>` placeholders expanded to
//!   `<img>` + `<IMG_CONTEXT>` × (tokens per tile · tiles) + `</img>`;
//! * [`multi_image_question`] / [`video_question`]: the README's `Image-1: <image>\n…` and
//!   `Frame-1: <image>\n…` conventions.
//!
//! Quirks copied on purpose (each one changes ids):
//! * `Hermes-2` and `internlm2-chat` have no newline after `<|im_end|>`; `internvl2_5` has one;
//! * the default system message is always inserted (it is not empty), with an ASCII comma and
//!   space after "InternVL" in the older one;
//! * `chat()` prefixes `<image>\n` only when images are given, the question has no `<image>`
//!   and no history is passed at all (an empty history list counts as history);
//! * placeholders are replaced in the whole prompt (history turns, even the system message),
//!   left to right, one image each;
//! * an empty message is rendered like a missing one (Python tests `if message:`).

use crate::processing::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The image placeholder users write in questions.
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// Opens an image's tokens.
pub const IMG_START_TOKEN: &str = "<img>";
/// Closes an image's tokens.
pub const IMG_END_TOKEN: &str = "</img>";
/// One image token; its embedding is overwritten by a projected ViT token.
pub const IMG_CONTEXT_TOKEN: &str = "<IMG_CONTEXT>";

/// The default system message of `Hermes-2`, `internlm2-chat` and `phi3-chat`.
pub const INTERNVL_SYSTEM_MESSAGE: &str = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。";
/// The default system message of `internvl2_5` (InternVL2.5 and InternVL3).
pub const INTERNVL2_5_SYSTEM_MESSAGE: &str = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。";
/// The system prompt of Vicuna v1 (LLaVA's `conv_vicuna_v1`, InternVL-Chat V1.0).
pub const VICUNA_V1_SYSTEM_MESSAGE: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// How a template joins the system prompt and the turns (`SeparatorStyle` of
/// `conversation.py`, the styles the InternVL templates use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeparatorStyle {
    /// `system + sep`, then `role + message + sep` per turn; the open turn is `role` alone.
    Mpt,
    /// `system_message + sep2`, then `role + ": " + message` followed by `sep2` (user) or
    /// `sep` (assistant); the open turn is `role + ":"`.
    InternVlZh,
    /// LLaVA's `TWO`: `system + sep`, then `role + ": " + message` followed by `sep` (user)
    /// or `sep2` (assistant); the open turn is `role + ":"`.
    AddColonTwo,
    /// ChatML as chat LLMs' own templates write it: [`SeparatorStyle::Mpt`], except that the
    /// system turn (`system + sep`) is written only when the system message is not empty.
    ChatMl,
}

/// A conversation template: what `get_conv_template(name)` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The registered name (the `template` of a model's `config.json`).
    pub name: &'static str,
    /// The system prompt with a `{system_message}` slot.
    pub system_template: &'static str,
    /// The default system message.
    pub system_message: &'static str,
    /// The user and assistant roles, as they are written into the prompt.
    pub roles: [&'static str; 2],
    /// How turns are joined.
    pub style: SeparatorStyle,
    /// The separator after turns (after every turn for [`SeparatorStyle::Mpt`]).
    pub sep: &'static str,
    /// The second separator, for the styles that alternate two.
    pub sep2: Option<&'static str>,
    /// `stop_str` of the template, where it sets one (informational: `chat()` stops on
    /// [`ChatTemplate::stop_token`]).
    pub stop_str: Option<&'static str>,
}

const CHATML_SYSTEM: &str = "<|im_start|>system\n{system_message}";
const CHATML_ROLES: [&str; 2] = ["<|im_start|>user\n", "<|im_start|>assistant\n"];

/// Every template, in `conversation.py` order, then the V1.0 (LLaVA codebase) one, then `chatml`
/// (not an InternVL template: `<|im_start|>{role}\n{content}<|im_end|>\n` per turn, the
/// generation prompt `<|im_start|>assistant\n`, a system turn only when a system message is
/// given).
pub const TEMPLATES: &[ChatTemplate] = &[
    ChatTemplate {
        name: "internvl_zh",
        system_template: "",
        system_message: "",
        roles: ["<human>", "<bot>"],
        style: SeparatorStyle::InternVlZh,
        sep: "</s>",
        sep2: Some(" "),
        stop_str: None,
    },
    ChatTemplate {
        name: "Hermes-2",
        system_template: CHATML_SYSTEM,
        system_message: INTERNVL_SYSTEM_MESSAGE,
        roles: CHATML_ROLES,
        style: SeparatorStyle::Mpt,
        sep: "<|im_end|>",
        sep2: None,
        stop_str: Some("<|endoftext|>"),
    },
    ChatTemplate {
        name: "internlm2-chat",
        system_template: CHATML_SYSTEM,
        system_message: INTERNVL_SYSTEM_MESSAGE,
        roles: CHATML_ROLES,
        style: SeparatorStyle::Mpt,
        sep: "<|im_end|>",
        sep2: None,
        stop_str: None,
    },
    ChatTemplate {
        name: "phi3-chat",
        system_template: "<|system|>\n{system_message}",
        system_message: INTERNVL_SYSTEM_MESSAGE,
        roles: ["<|user|>\n", "<|assistant|>\n"],
        style: SeparatorStyle::Mpt,
        sep: "<|end|>",
        sep2: None,
        stop_str: None,
    },
    ChatTemplate {
        name: "internvl2_5",
        system_template: CHATML_SYSTEM,
        system_message: INTERNVL2_5_SYSTEM_MESSAGE,
        roles: CHATML_ROLES,
        style: SeparatorStyle::Mpt,
        sep: "<|im_end|>\n",
        sep2: None,
        stop_str: None,
    },
    ChatTemplate {
        name: "vicuna_v1",
        system_template: "{system_message}",
        system_message: VICUNA_V1_SYSTEM_MESSAGE,
        roles: ["USER", "ASSISTANT"],
        style: SeparatorStyle::AddColonTwo,
        sep: " ",
        sep2: Some("</s>"),
        stop_str: Some("</s>"),
    },
    ChatTemplate {
        name: "chatml",
        system_template: CHATML_SYSTEM,
        system_message: "",
        roles: CHATML_ROLES,
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>\n",
        sep2: None,
        stop_str: Some("<|im_end|>"),
    },
];

/// Other names the official code registers for a template: LLaVA's `v1` is `vicuna_v1`.
const ALIASES: &[(&str, &str)] = &[("v1", "vicuna_v1")];

/// Python's `str.isspace()`: Unicode White_Space plus U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

impl ChatTemplate {
    /// The template registered as `name` (`get_conv_template`).
    ///
    /// Fails with [`Error::InvalidArgument`] for an unknown name, listing the known ones.
    pub fn by_name(name: &str) -> Result<&'static ChatTemplate> {
        let name = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, target)| target);
        TEMPLATES.iter().find(|t| t.name == name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown chat template {name:?} (known: {})",
                Self::names().join(", ")
            ))
        })
    }

    /// Every known template name, aliases included.
    pub fn names() -> Vec<&'static str> {
        TEMPLATES
            .iter()
            .map(|t| t.name)
            .chain(ALIASES.iter().map(|(alias, _)| *alias))
            .collect()
    }

    /// `system_template.format(system_message=…)`.
    pub fn system_prompt(&self, system_message: &str) -> String {
        self.system_template
            .replace("{system_message}", system_message)
    }

    /// `get_prompt()` of a conversation whose turns alternate user, assistant, user, …;
    /// `None` (or an empty string) is an open turn: only its role is written.
    pub fn render(&self, system_message: &str, turns: &[Option<&str>]) -> String {
        fn message<'a>(turn: &Option<&'a str>) -> Option<&'a str> {
            turn.filter(|m| !m.is_empty())
        }
        match self.style {
            SeparatorStyle::Mpt | SeparatorStyle::ChatMl => {
                let mut out = String::new();
                if self.style == SeparatorStyle::Mpt || !system_message.is_empty() {
                    out = self.system_prompt(system_message) + self.sep;
                }
                for (i, turn) in turns.iter().enumerate() {
                    out.push_str(self.roles[i % 2]);
                    if let Some(m) = message(turn) {
                        out.push_str(m);
                        out.push_str(self.sep);
                    }
                }
                out
            }
            SeparatorStyle::InternVlZh | SeparatorStyle::AddColonTwo => {
                let sep2 = self.sep2.unwrap_or(self.sep);
                // INTERNVL_ZH: seps = [sep2, sep] and the raw system message; TWO: [sep, sep2].
                let (seps, mut out) = match self.style {
                    SeparatorStyle::InternVlZh => ([sep2, self.sep], system_message.to_string()),
                    _ => ([self.sep, sep2], self.system_prompt(system_message)),
                };
                out.push_str(seps[0]);
                for (i, turn) in turns.iter().enumerate() {
                    out.push_str(self.roles[i % 2]);
                    match message(turn) {
                        Some(m) => {
                            out.push_str(": ");
                            out.push_str(m);
                            out.push_str(seps[i % 2]);
                        }
                        None => out.push(':'),
                    }
                }
                out
            }
        }
    }

    /// The prompt of `chat()` before image expansion: the system prompt, every
    /// `(question, answer)` of `history`, then `question` and the open assistant turn.
    pub fn prompt<Q: AsRef<str>, A: AsRef<str>>(
        &self,
        system_message: &str,
        history: &[(Q, A)],
        question: &str,
    ) -> String {
        let mut turns: Vec<Option<&str>> = Vec::with_capacity(2 * history.len() + 2);
        for (q, a) in history {
            turns.push(Some(q.as_ref()));
            turns.push(Some(a.as_ref()));
        }
        turns.push(Some(question));
        turns.push(None);
        self.render(system_message, &turns)
    }

    /// The token generation stops on: `template.sep.strip()` (`<|im_end|>`, `<|end|>`,
    /// `</s>`), whose id `chat()` passes as `eos_token_id`. The V1.0 template stops on `</s>`.
    pub fn stop_token(&self) -> &'static str {
        match self.style {
            SeparatorStyle::AddColonTwo => py_strip(self.sep2.unwrap_or(self.sep)),
            _ => py_strip(self.sep),
        }
    }

    /// `chat()`'s answer from the decoded output (decoded with `skip_special_tokens=True`):
    /// the text before the first stop token, stripped.
    pub fn response(&self, decoded: &str) -> String {
        let before = decoded.split(self.stop_token()).next().unwrap_or("");
        py_strip(before).to_string()
    }
}

/// `<img>` + `<IMG_CONTEXT>` × (`num_image_token` · `tiles`) + `</img>`.
pub fn image_tokens(num_image_token: usize, tiles: usize) -> String {
    let mut out = String::with_capacity(
        IMG_START_TOKEN.len()
            + IMG_END_TOKEN.len()
            + IMG_CONTEXT_TOKEN.len() * num_image_token * tiles,
    );
    out.push_str(IMG_START_TOKEN);
    for _ in 0..num_image_token * tiles {
        out.push_str(IMG_CONTEXT_TOKEN);
    }
    out.push_str(IMG_END_TOKEN);
    out
}

/// Replaces the `<image>` placeholders of `query` in order, the k-th by the tokens of an image
/// with `num_patches_list[k]` tiles.
///
/// Fails with [`Error::InvalidArgument`] when the counts differ (the official code would keep
/// extra placeholders as text, or drop extra images' tokens and then fail in the model).
pub fn expand_image_placeholders(
    query: &str,
    num_patches_list: &[usize],
    num_image_token: usize,
) -> Result<String> {
    let placeholders = query.matches(IMAGE_PLACEHOLDER).count();
    if placeholders != num_patches_list.len() {
        let more = if placeholders > num_patches_list.len() {
            "more <image> placeholders than images"
        } else {
            "more images than <image> placeholders"
        };
        return Err(Error::InvalidArgument(format!(
            "{more}: {placeholders} placeholder(s) for {} image(s)",
            num_patches_list.len()
        )));
    }
    let mut pieces = query.split(IMAGE_PLACEHOLDER);
    let mut out = pieces.next().unwrap_or("").to_string();
    for (piece, &tiles) in pieces.zip(num_patches_list) {
        out.push_str(&image_tokens(num_image_token, tiles));
        out.push_str(piece);
    }
    Ok(out)
}

/// The README's multi-image question: `Image-1: <image>\n` … `Image-n: <image>\n` + `question`.
pub fn multi_image_question(num_images: usize, question: &str) -> String {
    numbered_images("Image", num_images) + question
}

/// The README's video question: `Frame-1: <image>\n` … `Frame-n: <image>\n` + `question`.
pub fn video_question(num_frames: usize, question: &str) -> String {
    numbered_images("Frame", num_frames) + question
}

fn numbered_images(label: &str, count: usize) -> String {
    (1..=count)
        .map(|i| format!("{label}-{i}: {IMAGE_PLACEHOLDER}\n"))
        .collect()
}

/// One prompt built by [`PromptBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The question as it enters the conversation (with the automatic `<image>\n` prefix
    /// where it applies): what `chat()` appends to the history with the answer.
    pub question: String,
    /// The exact string given to the tokenizer: template applied, placeholders expanded.
    pub query: String,
}

impl ChatPrompt {
    /// `tokenizer(query).input_ids`: the ids `chat()` feeds the model (BOS where the
    /// tokenizer adds it).
    ///
    /// Fails with [`Error::Tokenizer`] when a byte-level BPE vocabulary lacks a byte's token.
    pub fn input_ids(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
        tokenizer.encode_with_defaults(&self.query)
    }

    /// The query as `chat(verbose=True)` prints it: `<IMG_CONTEXT>` removed and `<img></img>`
    /// shown as `<image>`.
    pub fn printable_query(&self) -> String {
        self.query.replace(IMG_CONTEXT_TOKEN, "").replace(
            &format!("{IMG_START_TOKEN}{IMG_END_TOKEN}"),
            IMAGE_PLACEHOLDER,
        )
    }
}

/// A model's prompt settings: its template, system message and image tokens per tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptBuilder {
    template: &'static ChatTemplate,
    system_message: String,
    num_image_token: usize,
}

impl PromptBuilder {
    /// The template `template_name` with `system_message` (the template's default when
    /// `None`) and `num_image_token` image tokens per tile (`(S/14)² · downsample_ratio²`,
    /// 256 for the released models).
    ///
    /// Fails with [`Error::InvalidArgument`] for an unknown template name.
    pub fn new(
        template_name: &str,
        system_message: Option<&str>,
        num_image_token: usize,
    ) -> Result<Self> {
        let template = ChatTemplate::by_name(template_name)?;
        Ok(Self {
            template,
            system_message: system_message
                .unwrap_or(template.system_message)
                .to_string(),
            num_image_token,
        })
    }

    /// The settings of an InternVL-Chat `config.json`: `template`, `system_message` (when the
    /// key is a string; the official code would write a `null` as the text `None`, we take the
    /// template's default), and image tokens per tile from `force_image_size` (or
    /// `vision_config.image_size`), `vision_config.patch_size` and `downsample_ratio`.
    ///
    /// Fails with [`Error::InvalidArgument`] for a missing or unknown template or missing
    /// image sizes.
    pub fn from_config(config: &serde_json::Value) -> Result<Self> {
        let missing = |key: &str| Error::InvalidArgument(format!("config.json has no {key}"));
        let template = config["template"]
            .as_str()
            .ok_or_else(|| missing("template"))?;
        let system_message = config.get("system_message").and_then(|m| m.as_str());
        let vision = &config["vision_config"];
        let image_size = config["force_image_size"]
            .as_u64()
            .or_else(|| vision["image_size"].as_u64())
            .ok_or_else(|| missing("force_image_size or vision_config.image_size"))?;
        let patch_size = vision["patch_size"]
            .as_u64()
            .filter(|&p| p > 0)
            .ok_or_else(|| missing("vision_config.patch_size"))?;
        let ratio = config["downsample_ratio"].as_f64().unwrap_or(0.5);
        // int((image_size // patch_size) ** 2 * (downsample_ratio ** 2))
        let grid = (image_size / patch_size) as f64;
        let num_image_token = (grid * grid * (ratio * ratio)) as usize;
        Self::new(template, system_message, num_image_token)
    }

    /// The template.
    pub fn template(&self) -> &'static ChatTemplate {
        self.template
    }

    /// The system message in use.
    pub fn system_message(&self) -> &str {
        &self.system_message
    }

    /// Image tokens per tile.
    pub fn num_image_token(&self) -> usize {
        self.num_image_token
    }

    /// The token generation stops on (see [`ChatTemplate::stop_token`]).
    pub fn stop_token(&self) -> &'static str {
        self.template.stop_token()
    }

    /// `eos_token_id` of `chat()`: the id of [`PromptBuilder::stop_token`] in `tokenizer`.
    ///
    /// Fails with [`Error::Tokenizer`] when the tokenizer has no such token.
    pub fn eos_token_id(&self, tokenizer: &Tokenizer) -> Result<u32> {
        let token = self.stop_token();
        tokenizer.token_to_id(token).ok_or_else(|| {
            Error::tokenizer(
                "<chat template>",
                format!(
                    "the stop token {token:?} of template {} is not in the vocabulary",
                    self.template.name
                ),
            )
        })
    }

    /// `model.chat(tokenizer, pixel_values, question, history=history,
    /// num_patches_list=num_patches_list)`'s query: one entry of `num_patches_list` per image
    /// (its tile count; empty for a text-only chat), `history` `None` for a first turn.
    ///
    /// Fails with [`Error::InvalidArgument`] when the prompt's `<image>` placeholders (after
    /// the automatic prefix) do not match the images one to one.
    pub fn chat<Q: AsRef<str>, A: AsRef<str>>(
        &self,
        question: &str,
        history: Option<&[(Q, A)]>,
        num_patches_list: &[usize],
    ) -> Result<ChatPrompt> {
        let question = if history.is_none()
            && !num_patches_list.is_empty()
            && !question.contains(IMAGE_PLACEHOLDER)
        {
            format!("{IMAGE_PLACEHOLDER}\n{question}")
        } else {
            question.to_string()
        };
        let history: &[(Q, A)] = history.unwrap_or(&[]);
        let prompt = self
            .template
            .prompt(&self.system_message, history, &question);
        let query = expand_image_placeholders(&prompt, num_patches_list, self.num_image_token)?;
        Ok(ChatPrompt { question, query })
    }

    /// `model.batch_chat(tokenizer, pixel_values, questions, num_patches_list=…)`'s queries:
    /// with images, one image per question (`num_patches_list[i]` tiles, `<image>\n`
    /// prefixed where the question has no placeholder); `None` for text-only questions.
    ///
    /// Fails with [`Error::InvalidArgument`] when the list length differs from the number of
    /// questions or a query's placeholders do not match its image.
    pub fn batch_chat<S: AsRef<str>>(
        &self,
        questions: &[S],
        num_patches_list: Option<&[usize]>,
    ) -> Result<Vec<ChatPrompt>> {
        if let Some(list) = num_patches_list {
            if list.len() != questions.len() {
                return Err(Error::InvalidArgument(format!(
                    "batch_chat: {} questions but {} entries in num_patches_list",
                    questions.len(),
                    list.len()
                )));
            }
        }
        questions
            .iter()
            .enumerate()
            .map(|(i, question)| {
                let images: &[usize] = match num_patches_list {
                    Some(list) => std::slice::from_ref(&list[i]),
                    None => &[],
                };
                let no_history: Option<&[(&str, &str)]> = None;
                self.chat(question.as_ref(), no_history, images)
            })
            .collect()
    }
}
