//! The supervised fine-tuning (SFT) data pipeline of InternVL-Chat, as the release's
//! `internvl_chat_finetune.py` builds it (non-packed, `is_train = False`, i.e. without JPEG
//! augmentation, and without per-sample padding, i.e. `group_by_length = True`):
//!
//! * [`read_jsonl`] / [`SftRecord`], one conversation per line of the release's jsonl format;
//! * [`build_sample`], `LazySupervisedDataset.__getitem__` for one record
//!   (`multi_modal_get_item`, `multi_modal_multi_image_get_item` or `pure_text_get_item`):
//!   tiles, pixel values, image flags, token ids, labels and position ids;
//! * [`tokenize_conversation`], the per-template loss masking (`preprocess_internvl2_5`,
//!   `preprocess_mpt` for `Hermes-2`, `preprocess_internlm`, `preprocess_phi3`);
//! * [`collate`], the release's `concat_pad_data_collator`.
//!
//! Quirks reproduced on purpose (each one changes ids, labels or masks):
//! * **id-0 attention quirk** (`concat_pad_data_collator`): rows are right-padded with id 0
//!   and the attention mask is recomputed as `input_ids != 0`, so real tokens with id 0
//!   (Qwen2's `!`) are masked out of attention; position ids still count them, because the
//!   dataset computes them against the tokenizer's pad id (`cumsum(ids != pad) - 1`, with
//!   `1` at pad-id positions);
//! * **whole-sample ignore** (`preprocess_mpt`, `preprocess_internlm`, `preprocess_phi3`):
//!   when the length recomputed from per-turn tokenisations differs from the tokenised
//!   length (and is below `max_seq_length`), every label becomes −100; `preprocess_internvl2_5`
//!   has no such check;
//! * **offset arithmetic**: `preprocess_mpt` counts `+1` per turn for the `<|im_end|>` the
//!   split removed; `preprocess_phi3` subtracts 1 (first turn) or 2 (later turns) from the
//!   instruction length and 1 from later turn lengths for the BOS of each separate call, and
//!   ignores every `<|endoftext|>` target; `preprocess_internlm` strips messages and
//!   subtracts the BOS of each call;
//! * `internvl2_5` tokenises system / user / assistant chunks separately: the
//!   `<|im_start|>assistant\n` tokens and the final `\n` of assistant chunks are not
//!   targets, `<|im_end|>` is; a leading `system` turn replaces the default system message;
//!   with a BOS-adding tokenizer the BOS text is prepended to the first chunk and the first
//!   id of every chunk is dropped (net: one BOS at the start);
//! * the `Hermes-2`-style templates render with `conversation.py`'s `get_prompt` (an empty
//!   message writes only the role) and replace `<image>` placeholders anywhere in the
//!   prompt; `internvl2_5` replaces them only in human turns;
//! * a gpt-first conversation loses its first turn under the `Hermes-2`-style templates;
//! * truncation to `max_seq_length` happens after tokenisation (whole prompt for the
//!   `Hermes-2`-style templates, concatenated chunks for `internvl2_5`); a truncation that
//!   cuts an image's tokens fails like the release's assertion;
//! * text-only records carry one white 224×224 image tiled with `max_num = 1` (one tile,
//!   `image_flags = 0`); multi-image records tile each image with
//!   `max(1, max_dynamic_patch / images)`; an `image` given as a list takes the multi-image
//!   path even with one entry (no automatic `<image>\n`).
//!
//! Deliberate differences (all on inputs the release cannot train on):
//! * the release prepends `<image>\n` to `conversations[0]` even when that is a system turn
//!   (and then fails); we prepend it to the first human turn;
//! * placeholder counts that differ from the image count are errors here, while the release
//!   may keep surplus `<image>` placeholders as literal text;
//! * `system` turns under `Hermes-2` / `internlm2-chat` / `phi3-chat` are errors (the release
//!   raises `KeyError` there), as are video records and a tokenizer without a pad token.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};
use serde_json::Value;

use crate::processing::image::load_rgb;
use crate::processing::templates::{image_tokens, ChatTemplate, IMAGE_PLACEHOLDER, IMG_END_TOKEN};
use crate::processing::tokenizer::Tokenizer;
use crate::processing::transforms::{dynamic_preprocess, resize_and_normalize};
use crate::{Error, Result};

/// The label of positions that are not trained on (`IGNORE_TOKEN_ID`).
pub use super::losses::IGNORE_INDEX;

/// The templates whose training preprocessing is implemented, with the release function that
/// masks them.
pub const SUPPORTED_TEMPLATES: &[(&str, &str)] = &[
    ("internvl2_5", "preprocess_internvl2_5"),
    ("Hermes-2", "preprocess_mpt"),
    ("internlm2-chat", "preprocess_internlm"),
    ("phi3-chat", "preprocess_phi3"),
];

/// `max_seq_length` of `internvl_chat_finetune.py`'s `DataTrainingArguments`.
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 8192;

/// Side of the white stand-in image of text-only samples (`pure_text_get_item`).
const DUMMY_IMAGE_SIZE: u32 = 224;

/// The pad id of `concat_pad_data_collator` (its `pad_id` default).
const COLLATOR_PAD_ID: u32 = 0;

/// Data settings of an SFT run (the `LazySupervisedDataset` arguments that matter here).
#[derive(Debug, Clone, PartialEq)]
pub struct SftDataConfig {
    /// The conversation template (`conv_style`); one of [`SUPPORTED_TEMPLATES`].
    pub template: String,
    /// `<IMG_CONTEXT>` tokens per tile (`(image_size / patch_size)² · downsample_ratio²`).
    pub num_image_token: usize,
    /// Tile side in pixels (`force_image_size`).
    pub image_size: u32,
    /// Whether images are tiled (`dynamic_preprocess`) rather than squashed to one tile.
    pub dynamic_image_size: bool,
    /// Fewest tiles of the tiling grid.
    pub min_dynamic_patch: u32,
    /// Most tiles of the tiling grid (shared among the images of a multi-image record).
    pub max_dynamic_patch: u32,
    /// Whether a thumbnail tile is appended when an image has several tiles.
    pub use_thumbnail: bool,
    /// `tokenizer.model_max_length`: sequences are truncated to this many tokens.
    pub max_seq_length: usize,
    /// The folder's `system_message` (an internvl-rs extension), replacing the template's.
    pub system_message: Option<String>,
}

impl SftDataConfig {
    /// The settings of an InternVL-Chat release `config.json`: `template`, the tile size from
    /// `force_image_size` (or `vision_config.image_size`), tokens per tile from it,
    /// `vision_config.patch_size` and `downsample_ratio` (0.5 when absent),
    /// `dynamic_image_size` / `use_thumbnail` (false when absent), `min_dynamic_patch` /
    /// `max_dynamic_patch` (1 / 12 when absent, the fine-tuning script's defaults) and
    /// [`DEFAULT_MAX_SEQ_LENGTH`].
    ///
    /// Fails with [`Error::InvalidArgument`] for a missing or unsupported template or
    /// missing image sizes.
    pub fn from_model_config(config: &Value) -> Result<Self> {
        let missing = |key: &str| Error::InvalidArgument(format!("config.json has no {key}"));
        let template = config["template"]
            .as_str()
            .ok_or_else(|| missing("template"))?;
        Masking::for_template(template)?;
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
        // int((image_size // patch_size) ** 2 * (downsample_ratio ** 2)), as the script does.
        let grid = (image_size / patch_size) as f64;
        let flag = |key: &str| config[key].as_bool().unwrap_or(false);
        let count = |key: &str, default: u32| {
            config[key]
                .as_u64()
                .map_or(default, |v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        Ok(Self {
            template: template.to_string(),
            num_image_token: (grid * grid * (ratio * ratio)) as usize,
            image_size: u32::try_from(image_size).map_err(|_| {
                Error::InvalidArgument(format!("image size {image_size} too large"))
            })?,
            dynamic_image_size: flag("dynamic_image_size"),
            min_dynamic_patch: count("min_dynamic_patch", 1),
            max_dynamic_patch: count("max_dynamic_patch", 12),
            use_thumbnail: flag("use_thumbnail"),
            max_seq_length: DEFAULT_MAX_SEQ_LENGTH,
            system_message: config["system_message"].as_str().map(str::to_string),
        })
    }
}

/// One line of the release's conversation jsonl.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SftRecord {
    /// Image paths relative to the dataset root; empty for a text-only record.
    pub image: Vec<String>,
    /// Whether the jsonl gave `image` as a list: the release then takes its multi-image path
    /// even for a single image (no automatic `<image>\n`, the tile budget divided by the
    /// number of images).
    pub image_is_list: bool,
    /// The turns as (`from`, `value`): `from` is `system` (first turn only), `human` or `gpt`.
    pub conversations: Vec<(String, String)>,
    /// Where the record came from (`file:line (id …)`), for error messages.
    pub origin: String,
}

impl SftRecord {
    /// A record from one parsed jsonl line; `origin` names it in errors.
    ///
    /// Fails with [`Error::InvalidArgument`] (naming `origin`) when the line is not an object,
    /// `conversations` is missing or malformed, `image` is neither a string nor a list of
    /// strings, or the record is a video record (not supported).
    pub fn from_json(value: &Value, origin: &str) -> Result<Self> {
        let fail = |reason: String| Error::InvalidArgument(format!("{origin}: {reason}"));
        let object = value
            .as_object()
            .ok_or_else(|| fail("the line is not a JSON object".into()))?;
        let (image, image_is_list) = parse_image(object.get("image")).map_err(&fail)?;
        let has_video = object
            .get("video")
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
        if image.is_empty() && has_video {
            return Err(fail("video records are not supported".into()));
        }
        let turns = object
            .get("conversations")
            .ok_or_else(|| fail("missing field \"conversations\"".into()))?
            .as_array()
            .ok_or_else(|| fail("\"conversations\" is not a list".into()))?;
        let conversations = turns
            .iter()
            .enumerate()
            .map(|(k, turn)| parse_turn(turn).map_err(|r| fail(format!("conversations[{k}]: {r}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            image,
            image_is_list,
            conversations,
            origin: origin.to_string(),
        })
    }
}

/// `image` of a jsonl line: absent, a path, or a list of paths.
fn parse_image(value: Option<&Value>) -> std::result::Result<(Vec<String>, bool), String> {
    match value {
        None => Ok((Vec::new(), false)),
        // `len("")` is 0: the release treats an empty path as a text-only record.
        Some(Value::String(path)) if path.is_empty() => Ok((Vec::new(), false)),
        Some(Value::String(path)) => Ok((vec![path.clone()], false)),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|paths| (paths, true))
            .ok_or_else(|| "\"image\" list has an entry that is not a string".to_string()),
        Some(other) => Err(format!(
            "\"image\" must be a string or a list of strings, not {other}"
        )),
    }
}

/// One `{"from": …, "value": …}` turn.
fn parse_turn(turn: &Value) -> std::result::Result<(String, String), String> {
    let field = |key: &str| {
        turn.get(key)
            .ok_or_else(|| format!("missing field {key:?}"))?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{key:?} is not a string"))
    };
    Ok((field("from")?, field("value")?))
}

/// Reads a conversation jsonl file (one JSON object per line; blank lines are skipped).
///
/// Fails with [`Error::Io`] when the file cannot be read and with [`Error::InvalidArgument`]
/// naming the file and line for invalid JSON or a malformed record.
pub fn read_jsonl(path: &Path) -> Result<Vec<SftRecord>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut origin = format!("{}:{}", path.display(), index + 1);
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::InvalidArgument(format!("{origin}: invalid JSON: {e}")))?;
        if let Some(id) = value.get("id") {
            origin.push_str(&format!(" (id {id})"));
        }
        records.push(SftRecord::from_json(&value, &origin)?);
    }
    Ok(records)
}

/// One dataset item, as `LazySupervisedDataset.__getitem__` returns it (its
/// `attention_mask` is left out: the collator recomputes it).
#[derive(Debug, Clone)]
pub struct SftSample {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Targets: the id where trained, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    /// `cumsum(input_ids != pad) - 1`, with 1 at positions holding the tokenizer's pad id.
    pub position_ids: Vec<i64>,
    /// `[tiles, 3, S, S]` f32 pixel values (CPU).
    pub pixel_values: Tensor,
    /// One flag per tile: 1 for real images, 0 for the stand-in of text-only samples.
    pub image_flags: Vec<i64>,
    /// The number of tiles.
    pub num_tiles: usize,
}

/// `LazySupervisedDataset.__getitem__` with `is_train = False` for one record: images
/// (paths relative to `image_root`) are tiled and normalised, placeholders expanded to
/// `<img>` + `<IMG_CONTEXT>` × (tiles · `num_image_token`) + `</img>`, the conversation
/// tokenised and masked as [`tokenize_conversation`] does.
///
/// * One image given as a string (`multi_modal_get_item`): `<image>\n` is prepended to the
///   first human turn when that turn has no placeholder.
/// * A list of images (`multi_modal_multi_image_get_item`): each image gets
///   `max(1, max_dynamic_patch / images)` tiles at most; placeholders must be in the text.
/// * No image (`pure_text_get_item`): one white 224×224 stand-in tile with `image_flags` 0;
///   any `<image>` text stays literal.
///
/// Fails (naming the record) with [`Error::Io`] / [`Error::Image`] for an unreadable image
/// and [`Error::InvalidArgument`] for an empty or malformed conversation, a placeholder count
/// that differs from the image count, image tokens cut by `max_seq_length`, an unsupported
/// template or a tokenizer without pad or image tokens.
pub fn build_sample(
    record: &SftRecord,
    image_root: &Path,
    tokenizer: &Tokenizer,
    config: &SftDataConfig,
) -> Result<SftSample> {
    let origin = if record.origin.is_empty() {
        "SFT record"
    } else {
        &record.origin
    };
    build_sample_inner(record, image_root, tokenizer, config).map_err(|e| in_record(e, origin))
}

fn build_sample_inner(
    record: &SftRecord,
    image_root: &Path,
    tokenizer: &Tokenizer,
    config: &SftDataConfig,
) -> Result<SftSample> {
    Masking::for_template(&config.template)?;
    if record.conversations.is_empty() {
        return Err(Error::InvalidArgument(
            "the conversation has no turns".into(),
        ));
    }
    let pad_id = pad_id(tokenizer)?;
    let mut conversations = record.conversations.clone();
    let (tiles, image_flag) = if record.image.is_empty() {
        (text_only_tiles(config), 0)
    } else {
        if !record.image_is_list {
            prepend_image_placeholder(&mut conversations);
        }
        (image_tiles(record, image_root, config)?, 1)
    };
    let tokens_per_image: Vec<usize> = if record.image.is_empty() {
        Vec::new()
    } else {
        tiles
            .iter()
            .map(|t| t.len() * config.num_image_token)
            .collect()
    };
    let (input_ids, labels) = tokenize_conversation_with(
        &config.template,
        config.system_message.as_deref(),
        &conversations,
        &tokens_per_image,
        tokenizer,
        config.max_seq_length,
    )?;
    check_image_tokens_kept(&input_ids, tokens_per_image.len(), tokenizer)?;
    let num_tiles = tiles.iter().map(Vec::len).sum();
    let pixel_values = pixel_values(&tiles, config.image_size)?;
    Ok(SftSample {
        position_ids: position_ids(&input_ids, pad_id),
        input_ids,
        labels,
        pixel_values,
        image_flags: vec![image_flag; num_tiles],
        num_tiles,
    })
}

/// Adds the record's name to an error, keeping its kind.
fn in_record(error: Error, origin: &str) -> Error {
    match error {
        Error::InvalidArgument(reason) => Error::InvalidArgument(format!("{origin}: {reason}")),
        Error::Io { path, source } => Error::Io {
            path,
            source: std::io::Error::new(source.kind(), format!("{source} (in {origin})")),
        },
        Error::Image { path, reason } => Error::Image {
            path,
            reason: format!("{reason} (in {origin})"),
        },
        Error::Tokenizer {
            origin: file,
            reason,
        } => Error::Tokenizer {
            origin: file,
            reason: format!("{reason} (in {origin})"),
        },
        other => other,
    }
}

/// The tokenizer's pad id: the release computes masks and position ids against it (and
/// fails without one).
fn pad_id(tokenizer: &Tokenizer) -> Result<u32> {
    tokenizer.pad_id().ok_or_else(|| {
        Error::InvalidArgument(
            "the tokenizer has no pad token (the release's preprocessing compares ids with \
             pad_token_id)"
                .into(),
        )
    })
}

/// `multi_modal_get_item`'s automatic placeholder, put into the first human turn.
fn prepend_image_placeholder(conversations: &mut [(String, String)]) {
    if let Some((_, value)) = conversations.iter_mut().find(|(from, _)| from == "human") {
        if !value.contains(IMAGE_PLACEHOLDER) {
            *value = format!("{IMAGE_PLACEHOLDER}\n{value}");
        }
    }
}

/// The tiles of every image of a record, per image.
fn image_tiles(
    record: &SftRecord,
    image_root: &Path,
    config: &SftDataConfig,
) -> Result<Vec<Vec<RgbImage>>> {
    // Only the multi-image path divides the tile budget (`max_dynamic_patch // num_image`).
    let max_num = if record.image_is_list {
        (config.max_dynamic_patch / record.image.len() as u32).max(1)
    } else {
        config.max_dynamic_patch
    };
    record
        .image
        .iter()
        .map(|relative| {
            let path: PathBuf = image_root.join(relative);
            let image = load_rgb(&path)?;
            Ok(tile(image, config.min_dynamic_patch, max_num, config))
        })
        .collect()
}

/// `dynamic_preprocess` when dynamic tiling is on, else the image itself as one tile.
fn tile(image: RgbImage, min_num: u32, max_num: u32, config: &SftDataConfig) -> Vec<RgbImage> {
    if config.dynamic_image_size {
        dynamic_preprocess(
            &image,
            min_num,
            max_num,
            config.image_size,
            config.use_thumbnail,
        )
    } else {
        vec![image]
    }
}

/// `pure_text_get_item`'s stand-in: a white 224×224 image tiled with `max_num = 1`
/// (whatever `dynamic_image_size` says).
fn text_only_tiles(config: &SftDataConfig) -> Vec<Vec<RgbImage>> {
    let white = RgbImage::from_pixel(DUMMY_IMAGE_SIZE, DUMMY_IMAGE_SIZE, Rgb([255, 255, 255]));
    vec![dynamic_preprocess(
        &white,
        config.min_dynamic_patch,
        1,
        config.image_size,
        config.use_thumbnail,
    )]
}

/// `build_transform(is_train=False)` on every tile, stacked to `[tiles, 3, S, S]`.
fn pixel_values(tiles: &[Vec<RgbImage>], size: u32) -> Result<Tensor> {
    let tensors = tiles
        .iter()
        .flatten()
        .map(|tile| resize_and_normalize(tile, size, size))
        .collect::<Result<Vec<_>>>()?;
    if tensors.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "tiling produced no tile (image_size {size})"
        )));
    }
    Ok(Tensor::stack(&tensors, 0)?)
}

/// The release's assertion that truncation kept every image's `</img>`.
fn check_image_tokens_kept(input_ids: &[u32], images: usize, tokenizer: &Tokenizer) -> Result<()> {
    if images == 0 {
        return Ok(());
    }
    let end_id = tokenizer.token_to_id(IMG_END_TOKEN).ok_or_else(|| {
        Error::InvalidArgument(format!("the tokenizer has no {IMG_END_TOKEN} token"))
    })?;
    let kept = input_ids.iter().filter(|&&id| id == end_id).count();
    if kept != images {
        return Err(Error::InvalidArgument(format!(
            "image tokens are truncated: {kept} {IMG_END_TOKEN} token(s) for {images} image(s) \
             after truncation to max_seq_length"
        )));
    }
    Ok(())
}

/// `attention_mask.cumsum(-1) - 1` with pad-id positions set to 1, the mask being
/// `input_ids != pad_id` as the preprocess functions compute it.
fn position_ids(input_ids: &[u32], pad_id: u32) -> Vec<i64> {
    let mut seen = 0i64;
    input_ids
        .iter()
        .map(|&id| {
            if id == pad_id {
                1
            } else {
                seen += 1;
                seen - 1
            }
        })
        .collect()
}

/// Which release function masks a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Masking {
    /// `preprocess_internvl2_5`.
    InternVl25,
    /// `preprocess_mpt` (`Hermes-2`).
    Mpt,
    /// `preprocess_internlm` (`internlm2-chat`).
    InternLm,
    /// `preprocess_phi3` (`phi3-chat`).
    Phi3,
}

impl Masking {
    /// The masking of `template`, or an error listing the supported templates.
    fn for_template(template: &str) -> Result<Self> {
        match template {
            "internvl2_5" => Ok(Self::InternVl25),
            "Hermes-2" => Ok(Self::Mpt),
            "internlm2-chat" => Ok(Self::InternLm),
            "phi3-chat" => Ok(Self::Phi3),
            other => {
                let supported: Vec<String> = SUPPORTED_TEMPLATES
                    .iter()
                    .map(|(name, function)| format!("{name} ({function})"))
                    .collect();
                Err(Error::InvalidArgument(format!(
                    "SFT preprocessing does not support template {other:?}; supported: {}",
                    supported.join(", ")
                )))
            }
        }
    }
}

/// Tokenisation as the release's `tokenizer(text).input_ids` (BOS as the folder says; the
/// fine-tuning script loads tokenizers with `add_eos_token=False`).
struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    add_bos: bool,
}

impl Encoder<'_> {
    fn ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, self.add_bos, false)
    }

    fn len(&self, text: &str) -> Result<i64> {
        Ok(self.ids(text)?.len() as i64)
    }
}

/// Loss masking of one conversation as the release's `preprocess_*` function of `template`
/// does it: returns `(input_ids, labels)`, labels [`IGNORE_INDEX`] outside the assistant
/// replies (see the module documentation for each template's rules, including the
/// whole-sample ignore rule and the truncation to `max_seq_length`).
///
/// `num_image_token_per_image[k]` is the number of `<IMG_CONTEXT>` tokens of the k-th image
/// (tiles · tokens per tile); an empty slice means a text-only sample, whose `<image>` text
/// (if any) is kept literally. Otherwise the conversation must hold exactly one `<image>`
/// placeholder per image (in human turns for `internvl2_5`).
///
/// Fails with [`Error::InvalidArgument`] for an unsupported template, a tokenizer without a
/// pad token, turns the release rejects (unknown `from`, a `system` turn other than the
/// first one for `internvl2_5` or any `system` turn for the other templates, turns that do not
/// alternate human/gpt for the other templates) or a placeholder count mismatch.
pub fn tokenize_conversation(
    template: &str,
    conversations: &[(String, String)],
    num_image_token_per_image: &[usize],
    tokenizer: &Tokenizer,
    max_seq_length: usize,
) -> Result<(Vec<u32>, Vec<i64>)> {
    tokenize_conversation_with(
        template,
        None,
        conversations,
        num_image_token_per_image,
        tokenizer,
        max_seq_length,
    )
}

/// [`tokenize_conversation`] with the template's default system message replaced by
/// `system_message` (a model folder's `system_message`, so that a model is trained with the
/// system prompt it is asked with); a leading `system` turn still wins for `internvl2_5`.
///
/// Fails as [`tokenize_conversation`] does.
pub fn tokenize_conversation_with(
    template: &str,
    system_message: Option<&str>,
    conversations: &[(String, String)],
    num_image_token_per_image: &[usize],
    tokenizer: &Tokenizer,
    max_seq_length: usize,
) -> Result<(Vec<u32>, Vec<i64>)> {
    let masking = Masking::for_template(template)?;
    let chat = ChatTemplate::by_name(template)?;
    let system = system_message.unwrap_or(chat.system_message);
    let encoder = Encoder {
        tokenizer,
        add_bos: tokenizer.add_bos_token(),
    };
    if masking == Masking::InternVl25 {
        return internvl2_5(
            chat,
            system,
            conversations,
            num_image_token_per_image,
            &encoder,
            max_seq_length,
        );
    }
    let pad = pad_id(tokenizer)?;
    let prompt = render_prompt(chat, system, conversations, masking == Masking::InternLm)?;
    let prompt = expand_in_prompt(&prompt, num_image_token_per_image)?;
    let mut input_ids = encoder.ids(&prompt)?;
    input_ids.truncate(max_seq_length);
    let mut labels: Vec<i64> = input_ids.iter().map(|&id| i64::from(id)).collect();
    let cur_len = match masking {
        Masking::Mpt => mask_mpt(chat, &prompt, &encoder, &mut labels)?,
        Masking::InternLm => mask_internlm(chat, &prompt, &encoder, &mut labels)?,
        _ => mask_phi3(chat, &prompt, &encoder, &mut labels)?,
    };
    // The shared tail of the three functions: beyond the counted length nothing is a target,
    // and a count that disagrees with the real length voids the whole sample.
    fill(&mut labels, cur_len, None);
    let total_len = input_ids.iter().filter(|&&id| id != pad).count() as i64;
    if cur_len < max_seq_length as i64 && cur_len != total_len {
        labels.fill(IGNORE_INDEX);
    }
    Ok((input_ids, labels))
}

/// `labels[start:end] = IGNORE_INDEX` with Python slice semantics (negative indices count
/// from the end, out-of-range bounds are clamped, `None` means to the end).
fn fill(labels: &mut [i64], start: i64, end: Option<i64>) {
    let len = labels.len() as i64;
    let clamp = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) } as usize;
    let (start, end) = (clamp(start), end.map_or(labels.len(), clamp));
    if start < end {
        labels[start..end].fill(IGNORE_INDEX);
    }
}

/// Python's `str.strip()` (Unicode whitespace plus U+001C..U+001F).
fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// `conv.get_prompt()` as `preprocess_mpt` / `preprocess_internlm` / `preprocess_phi3` build
/// it: default system message, first turn dropped when it is not human, strict human/gpt
/// alternation; `strip` for `preprocess_internlm`'s stripped messages.
fn render_prompt(
    chat: &ChatTemplate,
    system: &str,
    conversations: &[(String, String)],
    strip: bool,
) -> Result<String> {
    let role_index = |from: &str| match from {
        "human" => Ok(0),
        "gpt" => Ok(1),
        other => Err(Error::InvalidArgument(format!(
            "turn role {other:?} is not supported by template {} (the release's preprocessing \
             only maps \"human\" and \"gpt\"; system turns work with internvl2_5 only)",
            chat.name
        ))),
    };
    let first_is_human = match conversations.first() {
        Some((from, _)) => role_index(from)? == 0,
        None => true,
    };
    let turns = if first_is_human {
        conversations
    } else {
        &conversations[1..]
    };
    let mut messages = Vec::with_capacity(turns.len());
    for (j, (from, value)) in turns.iter().enumerate() {
        if role_index(from)? != j % 2 {
            return Err(Error::InvalidArgument(format!(
                "turn {j} is from {from:?}: template {} needs turns alternating human, gpt, \
                 human, … (the release asserts it)",
                chat.name
            )));
        }
        messages.push(if strip {
            py_strip(value)
        } else {
            value.as_str()
        });
    }
    let messages: Vec<Option<&str>> = messages.into_iter().map(Some).collect();
    Ok(chat.render(system, &messages))
}

/// The `<image>` placeholders of a whole prompt replaced one by one, left to right.
fn expand_in_prompt(prompt: &str, tokens_per_image: &[usize]) -> Result<String> {
    if tokens_per_image.is_empty() {
        return Ok(prompt.to_string());
    }
    check_placeholder_count(
        prompt.matches(IMAGE_PLACEHOLDER).count(),
        tokens_per_image.len(),
    )?;
    let mut out = prompt.to_string();
    for &tokens in tokens_per_image {
        out = out.replacen(IMAGE_PLACEHOLDER, &image_tokens(tokens, 1), 1);
    }
    Ok(out)
}

fn check_placeholder_count(placeholders: usize, images: usize) -> Result<()> {
    if placeholders == images {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) for {images} image(s)"
    )))
}

/// `re_turns` of `preprocess_mpt` / `preprocess_phi3`: the prompt split on `sep`, regrouped as
/// system + user + assistant, then user + assistant pairs.
fn regroup_turns<'a>(prompt: &'a str, sep: &str) -> Vec<String> {
    let turns: Vec<&'a str> = prompt.split(sep).collect();
    let mut groups = vec![turns[..turns.len().min(3)].join(sep)];
    for start in (3..turns.len()).step_by(2) {
        groups.push(turns[start..(start + 2).min(turns.len())].join(sep));
    }
    groups
}

/// `preprocess_mpt`'s masking loop; returns `cur_len`.
fn mask_mpt(chat: &ChatTemplate, prompt: &str, enc: &Encoder, labels: &mut [i64]) -> Result<i64> {
    let instruction_end = format!("{}{}", chat.sep, chat.roles[1]);
    let mut cur_len = 0i64;
    for turn in regroup_turns(prompt, chat.sep) {
        if turn.is_empty() {
            break;
        }
        // +1: the `<|im_end|>` that the split removed from the end of the group.
        let turn_len = enc.len(&turn)? + 1;
        let parts: Vec<&str> = turn.split(instruction_end.as_str()).collect();
        if parts.len() != 2 {
            break;
        }
        let instruction_len = enc.len(&format!("{}{instruction_end}", parts[0]))?;
        fill(labels, cur_len, Some(cur_len + instruction_len));
        cur_len += turn_len;
    }
    Ok(cur_len)
}

/// `preprocess_phi3`'s masking loop; returns `cur_len`.
fn mask_phi3(chat: &ChatTemplate, prompt: &str, enc: &Encoder, labels: &mut [i64]) -> Result<i64> {
    let instruction_end = format!("{}{}", chat.sep, chat.roles[1]);
    // The BOS is never a target.
    let mut cur_len = 1i64;
    fill(labels, 0, Some(cur_len));
    // `convert_tokens_to_ids('<|endoftext|>')`; a vocabulary without it has nothing to hide.
    if let Some(end_of_text) = enc.tokenizer.token_to_id("<|endoftext|>") {
        for label in labels.iter_mut().filter(|l| **l == i64::from(end_of_text)) {
            *label = IGNORE_INDEX;
        }
    }
    for (i, turn) in regroup_turns(prompt, chat.sep).iter().enumerate() {
        if turn.is_empty() {
            break;
        }
        // Later groups lose the BOS of their own tokenizer call (and, in the instruction, one
        // more token: the release's hard-coded offset).
        let turn_len = enc.len(turn)? - i64::from(i != 0);
        let parts: Vec<&str> = turn.split(instruction_end.as_str()).collect();
        if parts.len() != 2 {
            break;
        }
        let offset = if i == 0 { 1 } else { 2 };
        let instruction_len = enc.len(&format!("{}{instruction_end}", parts[0]))? - offset;
        fill(labels, cur_len, Some(cur_len + instruction_len));
        cur_len += turn_len;
    }
    Ok(cur_len)
}

/// `preprocess_internlm`'s masking; returns `cur_len`.
fn mask_internlm(
    chat: &ChatTemplate,
    prompt: &str,
    enc: &Encoder,
    labels: &mut [i64],
) -> Result<i64> {
    let [user, assistant] = chat.roles;
    // Every length drops the BOS of its own tokenizer call.
    let len = |text: &str| -> Result<i64> { Ok(enc.len(text)? - 1) };
    let mut cur_len = 1i64;
    fill(labels, 0, Some(cur_len));
    let parts: Vec<&str> = prompt.split(assistant).collect();
    let head = len(&format!("{}{assistant}", parts[0]))?;
    fill(labels, cur_len, Some(cur_len + head));
    cur_len += head;
    for info in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        let pieces: Vec<&str> = info.split(user).collect();
        let [answer, question] = pieces.as_slice() else {
            return Err(Error::InvalidArgument(format!(
                "an assistant turn of the internlm2-chat prompt holds {} {user:?} markers \
                 (preprocess_internlm needs exactly one between assistant turns)",
                pieces.len() - 1
            )));
        };
        cur_len += len(answer)?;
        let instruction = len(&format!("{user}{question}{assistant}"))?;
        fill(labels, cur_len, Some(cur_len + instruction));
        cur_len += instruction;
    }
    // `parts[-1]`: the last answer (or the whole prompt again when there is no answer).
    cur_len += len(parts[parts.len() - 1])?;
    Ok(cur_len)
}

/// `preprocess_internvl2_5`: chunks tokenised one by one, assistant chunks trained except for
/// their role header and final `\n`, then truncation.
fn internvl2_5(
    chat: &ChatTemplate,
    default_system: &str,
    conversations: &[(String, String)],
    tokens_per_image: &[usize],
    enc: &Encoder,
    max_seq_length: usize,
) -> Result<(Vec<u32>, Vec<i64>)> {
    let (system, turns) = match conversations.split_first() {
        Some(((from, value), rest)) if from == "system" => (value.as_str(), rest),
        _ => (default_system, conversations),
    };
    let turns = expand_in_human_turns(turns, tokens_per_image)?;
    let mut chunks = vec![(false, chat.system_prompt(system) + chat.sep)];
    for (k, (from, value)) in turns.iter().enumerate() {
        let role = match from.as_str() {
            "human" => 0,
            "gpt" => 1,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "turn {k} after the system prompt is from {other:?}: internvl2_5 takes \
                     \"human\" and \"gpt\" turns after an optional first \"system\" turn"
                )))
            }
        };
        chunks.push((
            role == 1,
            format!("{}{value}{}", chat.roles[role], chat.sep),
        ));
    }
    let chunk_ids = encode_chunks(&chunks, enc)?;
    let header = enc.len(chat.roles[1])? - i64::from(enc.add_bos);
    let mut input_ids = Vec::new();
    let mut labels = Vec::new();
    for ((trained, _), ids) in chunks.iter().zip(chunk_ids) {
        let mut target: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        if *trained {
            fill(&mut target, 0, Some(header));
            fill(&mut target, -1, None);
        } else {
            target.fill(IGNORE_INDEX);
        }
        input_ids.extend(ids);
        labels.extend(target);
    }
    input_ids.truncate(max_seq_length);
    labels.truncate(max_seq_length);
    Ok((input_ids, labels))
}

/// Each chunk's ids; with a BOS-adding tokenizer the BOS text goes before the first chunk and
/// the first id of every chunk is dropped, as the release does for InternLM tokenizers.
fn encode_chunks(chunks: &[(bool, String)], enc: &Encoder) -> Result<Vec<Vec<u32>>> {
    let bos_text = match (enc.add_bos, enc.tokenizer.bos_id()) {
        (true, Some(id)) => enc.tokenizer.id_to_token(id).unwrap_or_default(),
        _ => String::new(),
    };
    chunks
        .iter()
        .enumerate()
        .map(|(k, (_, text))| {
            let text = if k == 0 {
                format!("{bos_text}{text}")
            } else {
                text.clone()
            };
            let ids = enc.ids(&text)?;
            let skip = usize::from(enc.add_bos).min(ids.len());
            Ok(ids[skip..].to_vec())
        })
        .collect()
}

/// `preprocess_internvl2_5`'s placeholder expansion: human turns only, in order, one image
/// per placeholder; a text-only sample (no images) keeps its text.
fn expand_in_human_turns(
    turns: &[(String, String)],
    tokens_per_image: &[usize],
) -> Result<Vec<(String, String)>> {
    if tokens_per_image.is_empty() {
        return Ok(turns.to_vec());
    }
    let placeholders = turns
        .iter()
        .filter(|(from, _)| from == "human")
        .map(|(_, value)| value.matches(IMAGE_PLACEHOLDER).count())
        .sum();
    check_placeholder_count(placeholders, tokens_per_image.len())?;
    let mut images = tokens_per_image.iter();
    Ok(turns
        .iter()
        .map(|(from, value)| {
            let mut value = value.clone();
            if from == "human" {
                for _ in 0..value.matches(IMAGE_PLACEHOLDER).count() {
                    let tokens = images.next().copied().unwrap_or(0);
                    value = value.replacen(IMAGE_PLACEHOLDER, &image_tokens(tokens, 1), 1);
                }
            }
            (from.clone(), value)
        })
        .collect())
}

/// A collated training batch (`concat_pad_data_collator`).
#[derive(Debug, Clone)]
pub struct SftBatch {
    /// `[B, L]` i64 ids, right-padded with 0.
    pub input_ids: Tensor,
    /// `[B, L]` i64 targets, right-padded with [`IGNORE_INDEX`].
    pub labels: Tensor,
    /// `[B, L]` u8: `input_ids != 0` (real id-0 tokens included: the release's quirk).
    pub attention_mask: Tensor,
    /// `[B, L]` i64 position ids from the samples, right-padded with 0.
    pub position_ids: Tensor,
    /// `[tiles, 3, S, S]` f32: every sample's tiles, concatenated in order.
    pub pixel_values: Tensor,
    /// `[tiles]` i64 image flags, concatenated in order.
    pub image_flags: Tensor,
}

/// `concat_pad_data_collator` (with its default `pad_id = 0`): rows right-padded to the
/// longest sample, the attention mask recomputed as `input_ids != 0`, tiles and image flags
/// concatenated. Tensors are created on `device`.
///
/// Fails with [`Error::InvalidArgument`] for no samples or a sample whose labels or position
/// ids do not match its ids in length, and with [`Error::Candle`] when tiles differ in size.
pub fn collate(samples: &[SftSample], device: &Device) -> Result<SftBatch> {
    if samples.is_empty() {
        return Err(Error::InvalidArgument(
            "cannot collate an empty batch".into(),
        ));
    }
    for (k, sample) in samples.iter().enumerate() {
        let len = sample.input_ids.len();
        if sample.labels.len() != len || sample.position_ids.len() != len {
            return Err(Error::InvalidArgument(format!(
                "sample {k}: {len} ids but {} labels and {} position ids",
                sample.labels.len(),
                sample.position_ids.len()
            )));
        }
    }
    let width = samples.iter().map(|s| s.input_ids.len()).max().unwrap_or(0);
    let pad = i64::from(COLLATOR_PAD_ID);
    let ids = padded(samples, width, pad, |s| {
        s.input_ids.iter().map(|&id| i64::from(id)).collect()
    });
    let attention: Vec<u8> = ids.iter().map(|&id| u8::from(id != pad)).collect();
    let labels = padded(samples, width, IGNORE_INDEX, |s| s.labels.clone());
    let positions = padded(samples, width, pad, |s| s.position_ids.clone());
    let shape = (samples.len(), width);
    let tiles: Vec<&Tensor> = samples.iter().map(|s| &s.pixel_values).collect();
    let flags: Vec<i64> = samples.iter().flat_map(|s| s.image_flags.clone()).collect();
    let num_flags = flags.len();
    Ok(SftBatch {
        input_ids: Tensor::from_vec(ids, shape, device)?,
        labels: Tensor::from_vec(labels, shape, device)?,
        attention_mask: Tensor::from_vec(attention, shape, device)?,
        position_ids: Tensor::from_vec(positions, shape, device)?,
        pixel_values: Tensor::cat(&tiles, 0)?.to_device(device)?,
        image_flags: Tensor::from_vec(flags, num_flags, device)?,
    })
}

/// Row-major `[B, width]` values, each row right-padded with `pad`.
fn padded(
    samples: &[SftSample],
    width: usize,
    pad: i64,
    row: impl Fn(&SftSample) -> Vec<i64>,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(samples.len() * width);
    for sample in samples {
        let values = row(sample);
        out.extend_from_slice(&values);
        out.resize(out.len() + width - values.len(), pad);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_follows_python_slices() {
        let mut v = vec![1i64, 2, 3, 4];
        fill(&mut v, -1, None);
        assert_eq!(v, [1, 2, 3, IGNORE_INDEX]);
        let mut v = vec![1i64, 2, 3, 4];
        fill(&mut v, 3, Some(2));
        assert_eq!(v, [1, 2, 3, 4]);
        let mut v = vec![1i64, 2, 3, 4];
        fill(&mut v, 1, Some(10));
        assert_eq!(v, [1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]);
        let mut v: Vec<i64> = Vec::new();
        fill(&mut v, -1, None);
        assert!(v.is_empty());
    }

    #[test]
    fn position_ids_skip_pad_tokens() {
        assert_eq!(position_ids(&[5, 9, 6, 9, 7], 9), [0, 1, 1, 1, 2]);
    }

    #[test]
    fn regrouping_matches_the_release() {
        let groups = regroup_turns("S|U1|A1|U2|A2|", "|");
        assert_eq!(groups, ["S|U1|A1", "U2|A2", ""]);
    }

    #[test]
    fn unsupported_template_lists_the_supported_ones() {
        let err = Masking::for_template("vicuna_v1").unwrap_err().to_string();
        assert!(
            err.contains("vicuna_v1") && err.contains("internvl2_5") && err.contains("phi3-chat")
        );
    }
}
