//! Offline toy datasets for the training recipes: Fashion-MNIST turned into the two formats the
//! recipes read.
//!
//! * The release's image-caption JSON Lines (stages 1–2): `{"image", "caption", "label",
//!   "class"}` per line, read back with [`read_caption_jsonl`] (which also accepts `text` for
//!   the caption, as the release's caption files do).
//! * An image folder (`<split>/<class folder>/<index>.png`, folder name = label), read like
//!   torchvision's `ImageFolder` with [`image_folder`], for linear probing and zero-shot
//!   evaluation; `classes.json` holds the class names and prompt templates.
//!
//! The source files are the IDX files of the Debian package `dataset-fashion-mnist`, fetched
//! into `assets/fashion-mnist/` by `scripts/fetch_fashion_mnist.sh` (no network needed here).
//! IDX files are read uncompressed: a gzip-compressed one is refused with an error saying so,
//! as the crate has no gzip decoder (the fetch script writes uncompressed copies).

use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evaluation::zeroshot_data::{class_folders, images_below};
use crate::tasks::evaluate::progress;
use crate::{Error, Result};

/// Fashion-MNIST's class names by label, lower-case for captions and prompts. Label 0 is
/// "T-shirt/top" upstream: "t-shirt" reads naturally in "a photo of a t-shirt." where the
/// slash would not.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Caption templates (CLIP style). `{c}` is the class name; an `a {c}` becomes `an {c}` before
/// a vowel when captions are written ([`fill_template`]). `classes.json` carries them as they
/// are, so that zero-shot tools that replace `{c}` alone can use them too.
pub const CAPTION_TEMPLATES: [&str; 7] = [
    "a photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a picture of a {c}.",
    "an image of a {c}.",
    "a grayscale photo of a {c}.",
    "a product photo of a {c}.",
];

/// The question of the chat data (`<split>_chat.jsonl`) and of the toy chat evaluation.
pub const CHAT_QUESTION: &str = "What is in this image?";

/// The answer of the chat data to [`CHAT_QUESTION`]: "A sneaker.", "An ankle boot.".
pub fn chat_answer(class: &str) -> String {
    let text = fill_template("a {c}.", class);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// The IDX magic of an unsigned-byte 3-d array (images).
const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// The IDX magic of an unsigned-byte 1-d array (labels).
const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// The first two bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Version of the output layout recorded in `done.json`: a layout change invalidates old output.
const LAYOUT_VERSION: u64 = 3;
/// Mixed into the seed of the test split so that its captions are not the train split's.
const TEST_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Options of [`prepare_fashion_mnist`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareOptions {
    /// Side of the written square images; 28 (the default) keeps the source pixels.
    pub image_size: u32,
    /// Seed of the caption-template draws.
    pub seed: u64,
    /// Only the first (train, test) images of each split; `None` for all of them.
    pub limit_per_split: Option<(usize, usize)>,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            image_size: 28,
            seed: 0,
            limit_per_split: None,
        }
    }
}

/// One written split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSplit {
    /// The image-folder root: `out_dir/<split>`, one sub-folder per class.
    pub images_dir: PathBuf,
    /// The caption JSON Lines: `out_dir/<split>.jsonl`.
    pub captions_jsonl: PathBuf,
    /// The conversation JSON Lines (the release's SFT format): `out_dir/<split>_chat.jsonl`.
    pub chat_jsonl: PathBuf,
    /// Images written.
    pub count: usize,
}

/// The output of [`prepare_fashion_mnist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDataset {
    /// The training split (60,000 images at most).
    pub train: PreparedSplit,
    /// The test split (10,000 images at most).
    pub test: PreparedSplit,
    /// `{"classes": [...], "templates": [...]}`.
    pub classes_json: PathBuf,
}

/// One line of an image-caption JSON Lines file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionRecord {
    /// The image path as written (relative paths are relative to the file's folder).
    pub image: String,
    /// The caption (key `caption` or `text`).
    pub caption: String,
    /// The class index, when the line has a `label`.
    pub label: Option<usize>,
}

/// The line written to `<split>.jsonl`, with its keys in this order.
#[derive(Serialize)]
struct CaptionLine<'a> {
    image: &'a str,
    caption: &'a str,
    label: usize,
    class: &'a str,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_file(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{}: {reason}", path.display()))
}

/// `template` with `{c}` replaced by `class`, and the article before it made to agree
/// ("a {c}" → "an ankle boot").
pub fn fill_template(template: &str, class: &str) -> String {
    let starts_with_vowel = class
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    let filled = if starts_with_vowel {
        // Only a standalone "a" right before the placeholder is an article to fix.
        let fixed = template.replace(" a {c}", " an {c}");
        match fixed.strip_prefix("a {c}") {
            Some(rest) => format!("an {{c}}{rest}"),
            None => fixed,
        }
    } else {
        template.to_string()
    };
    filled.replace("{c}", class)
}

/// The image-folder sub-folder of a class: `<label>_<name with spaces as underscores>`, so
/// that the sorted folder order is the label order (labels are single digits).
pub fn class_folder_name(label: usize, class: &str) -> String {
    format!("{label}_{}", class.replace(' ', "_"))
}

/// The bytes of `path`, refusing gzip data clearly rather than as a wrong IDX magic.
fn read_idx_bytes(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    if bytes.starts_with(&GZIP_MAGIC) {
        return Err(bad_file(
            path,
            "gzip-compressed; this build reads uncompressed IDX files only (gunzip it, or use \
             the uncompressed copies that scripts/fetch_fashion_mnist.sh writes)",
        ));
    }
    Ok(bytes)
}

/// The big-endian u32 at `offset`, or a truncation error naming `what`.
fn be_u32(path: &Path, bytes: &[u8], offset: usize, what: &str) -> Result<u32> {
    match bytes.get(offset..offset + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(bad_file(
            path,
            format!(
                "truncated IDX file: {} bytes, too short for its {what}",
                bytes.len()
            ),
        )),
    }
}

/// Checks the magic, reads the dimensions and returns them with the data, whose length must
/// be their product exactly (a shorter file is truncated, a longer one is not this format).
fn idx_payload<'a>(path: &Path, bytes: &'a [u8], magic: u32) -> Result<(Vec<usize>, &'a [u8])> {
    let found = be_u32(path, bytes, 0, "magic number")?;
    if found != magic {
        let kind = if magic == IDX_IMAGES_MAGIC {
            "images"
        } else {
            "labels"
        };
        return Err(bad_file(
            path,
            format!("not an IDX {kind} file: magic 0x{found:08x}, expected 0x{magic:08x}"),
        ));
    }
    let ndims = (magic & 0xff) as usize;
    let dims = (0..ndims)
        .map(|d| be_u32(path, bytes, 4 + 4 * d, "dimensions").map(|v| v as usize))
        .collect::<Result<Vec<_>>>()?;
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad_file(path, format!("IDX dimensions {dims:?} overflow")))?;
    let data = &bytes[4 + 4 * ndims..];
    if data.len() != expected {
        let problem = if data.len() < expected {
            "truncated IDX file"
        } else {
            "IDX file longer than its header says"
        };
        return Err(bad_file(
            path,
            format!(
                "{problem}: dimensions {dims:?} need {expected} data bytes, found {}",
                data.len()
            ),
        ));
    }
    Ok((dims, data))
}

/// Reads an IDX image file (magic 0x00000803, `[count, rows, cols]` unsigned bytes): returns
/// (rows, cols, one row-major `rows * cols` buffer per image).
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, Vec<Vec<u8>>)> {
    let bytes = read_idx_bytes(path)?;
    let (dims, data) = idx_payload(path, &bytes, IDX_IMAGES_MAGIC)?;
    let (rows, cols) = (dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(bad_file(path, format!("empty images ({rows}x{cols})")));
    }
    let images = data.chunks_exact(rows * cols).map(<[u8]>::to_vec).collect();
    Ok((rows, cols, images))
}

/// Reads an IDX label file (magic 0x00000801, `[count]` unsigned bytes).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_idx_bytes(path)?;
    let (_, data) = idx_payload(path, &bytes, IDX_LABELS_MAGIC)?;
    Ok(data.to_vec())
}

/// `source_dir/<stem>`, else `source_dir/<stem>.gz` (refused later with a clear message).
fn source_file(source_dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = source_dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = source_dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(bad_file(
        source_dir,
        format!("no {stem} (nor {stem}.gz): run scripts/fetch_fashion_mnist.sh"),
    ))
}

/// A split's first `limit` images and labels, checked against each other.
struct SplitData {
    size: (usize, usize),
    images: Vec<Vec<u8>>,
    labels: Vec<u8>,
}

fn load_split(source_dir: &Path, prefix: &str, limit: Option<usize>) -> Result<SplitData> {
    let images_path = source_file(source_dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = source_file(source_dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (rows, cols, mut images) = read_idx_images(&images_path)?;
    let mut labels = read_idx_labels(&labels_path)?;
    if images.len() != labels.len() {
        return Err(bad_file(
            &labels_path,
            format!(
                "{} labels for the {} images of {}",
                labels.len(),
                images.len(),
                images_path.display()
            ),
        ));
    }
    if let Some(i) = labels
        .iter()
        .position(|&l| l as usize >= FASHION_MNIST_CLASSES.len())
    {
        return Err(bad_file(
            &labels_path,
            format!("label {} of image {i} is not a class (0-9)", labels[i]),
        ));
    }
    let keep = limit.unwrap_or(usize::MAX).min(images.len());
    images.truncate(keep);
    labels.truncate(keep);
    Ok(SplitData {
        size: (rows, cols),
        images,
        labels,
    })
}

/// A grayscale image as RGB at `size`×`size`. Upscaling is bilinear: nearest-neighbour would
/// turn each source pixel into a hard-edged block (8×8 at 224), an artefact the vision encoder
/// never saw in photos; bilinear keeps the strokes smooth, and a 1× "resize" is skipped so
/// that the default size keeps the source pixels exactly.
fn to_rgb(pixels: &[u8], (rows, cols): (usize, usize), size: u32) -> RgbImage {
    let rgb: Vec<u8> = pixels.iter().flat_map(|&v| [v, v, v]).collect();
    let image = RgbImage::from_raw(cols as u32, rows as u32, rgb)
        .expect("rows * cols * 3 bytes, as read_idx_images guarantees");
    if image.dimensions() == (size, size) {
        image
    } else {
        image::imageops::resize(&image, size, size, FilterType::Triangle)
    }
}

fn write_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::image(path.display(), e))?;
    std::fs::write(path, png).map_err(io_error(path))
}

/// Writes a split's PNGs (in parallel) and its caption JSON Lines; returns the image count.
fn write_split(
    out_dir: &Path,
    split: &str,
    data: &SplitData,
    options: &PrepareOptions,
    seed: u64,
) -> Result<usize> {
    let split_dir = out_dir.join(split);
    // All ten class folders, even empty ones, so that a folder's sorted position is its label.
    // Earlier output is removed first: a smaller limit must not leave extra images behind.
    for (label, class) in FASHION_MNIST_CLASSES.iter().enumerate() {
        let dir = split_dir.join(class_folder_name(label, class));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    }
    // Zero-padded indices keep the sorted file order (image_folder) the dataset order.
    let width = data.images.len().saturating_sub(1).to_string().len().max(5);
    let relative: Vec<String> = data
        .labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let folder = class_folder_name(l as usize, FASHION_MNIST_CLASSES[l as usize]);
            format!("{split}/{folder}/{i:0width$}.png")
        })
        .collect();

    let bar = progress(data.images.len(), split);
    (0..data.images.len()).into_par_iter().try_for_each(|i| {
        let image = to_rgb(&data.images[i], data.size, options.image_size);
        write_png(&out_dir.join(&relative[i]), &image)?;
        bar.inc(1);
        Ok::<_, Error>(())
    })?;
    bar.finish_and_clear();

    // Captions are drawn in dataset order, so a limit keeps the first captions unchanged.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut jsonl = String::new();
    for (image, &label) in relative.iter().zip(&data.labels) {
        let class = FASHION_MNIST_CLASSES[label as usize];
        let template = CAPTION_TEMPLATES[rng.random_range(0..CAPTION_TEMPLATES.len())];
        let line = CaptionLine {
            image,
            caption: &fill_template(template, class),
            label: label as usize,
            class,
        };
        jsonl.push_str(&serde_json::to_string(&line).expect("plain strings and integers"));
        jsonl.push('\n');
    }
    let path = out_dir.join(format!("{split}.jsonl"));
    std::fs::write(&path, jsonl).map_err(io_error(&path))?;
    write_chat_jsonl(out_dir, split, &relative, &data.labels)?;
    if split == "test" {
        // Captioning is evaluated on the test split only.
        write_caption_references(out_dir, split, &relative, &data.labels)?;
    }
    Ok(data.images.len())
}

/// `<split>_captions.json`: the caption-list JSON the captioning evaluation reads, every
/// template of the image's class as its reference captions.
fn write_caption_references(
    out_dir: &Path,
    split: &str,
    images: &[String],
    labels: &[u8],
) -> Result<()> {
    let records: Vec<Value> = images
        .iter()
        .zip(labels)
        .map(|(image, &label)| {
            let class = FASHION_MNIST_CLASSES[label as usize];
            let references: Vec<String> = CAPTION_TEMPLATES
                .iter()
                .map(|t| fill_template(t, class))
                .collect();
            serde_json::json!({"image": image, "caption": references})
        })
        .collect();
    write_json(
        &out_dir.join(format!("{split}_captions.json")),
        &Value::Array(records),
    )
}

/// `<split>_chat.jsonl`: one conversation per image in the release's SFT format, the human
/// turn `<image>\n` + [`CHAT_QUESTION`], the gpt turn [`chat_answer`].
fn write_chat_jsonl(out_dir: &Path, split: &str, images: &[String], labels: &[u8]) -> Result<()> {
    let mut jsonl = String::new();
    for (id, (image, &label)) in images.iter().zip(labels).enumerate() {
        let line = serde_json::json!({
            "id": id,
            "image": image,
            "conversations": [
                {"from": "human", "value": format!("<image>\n{CHAT_QUESTION}")},
                {"from": "gpt", "value": chat_answer(FASHION_MNIST_CLASSES[label as usize])},
            ],
        });
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let path = out_dir.join(format!("{split}_chat.jsonl"));
    std::fs::write(&path, jsonl).map_err(io_error(&path))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a JSON value");
    std::fs::write(path, text + "\n").map_err(io_error(path))
}

fn prepared(out_dir: &Path, train: usize, test: usize) -> PreparedDataset {
    let split = |name: &str, count| PreparedSplit {
        images_dir: out_dir.join(name),
        captions_jsonl: out_dir.join(format!("{name}.jsonl")),
        chat_jsonl: out_dir.join(format!("{name}_chat.jsonl")),
        count,
    };
    PreparedDataset {
        train: split("train", train),
        test: split("test", test),
        classes_json: out_dir.join("classes.json"),
    }
}

/// The earlier output in `out_dir` when its `done.json` records the same options and layout
/// and its files are there; `None` (prepare again) otherwise, a malformed marker included.
fn completed(out_dir: &Path, options: &PrepareOptions) -> Option<PreparedDataset> {
    let text = std::fs::read_to_string(out_dir.join("done.json")).ok()?;
    let marker: Value = serde_json::from_str(&text).ok()?;
    let same = marker.get("layout")?.as_u64()? == LAYOUT_VERSION
        && marker.get("options")? == &serde_json::to_value(options).ok()?;
    let counts = marker.get("counts")?;
    let train = counts.get("train")?.as_u64()? as usize;
    let test = counts.get("test")?.as_u64()? as usize;
    let done = prepared(out_dir, train, test);
    let files_there = [&done.train, &done.test]
        .iter()
        .all(|s| s.images_dir.is_dir() && s.captions_jsonl.is_file() && s.chat_jsonl.is_file())
        && done.classes_json.is_file();
    (same && files_there).then_some(done)
}

/// Writes Fashion-MNIST from the IDX files in `source_dir` (`{train,t10k}-{images-idx3,
/// labels-idx1}-ubyte`, as `scripts/fetch_fashion_mnist.sh` leaves them in
/// `assets/fashion-mnist/`) into `out_dir`:
///
/// * `{train,test}/<label>_<class>/<index>.png`: RGB PNGs of `options.image_size` pixels, an
///   image folder for probing and zero-shot evaluation;
/// * `{train,test}.jsonl`: `{"image", "caption", "label", "class"}` per image (paths relative
///   to `out_dir`, captions drawn from [`CAPTION_TEMPLATES`] with `options.seed`);
/// * `{train,test}_chat.jsonl`: the same images as SFT conversations ([`CHAT_QUESTION`] →
///   [`chat_answer`]);
/// * `test_captions.json`: caption-list JSON for `internvl eval caption` (every
///   template of the class as references);
/// * `classes.json`: `{"classes": [...], "templates": [...]}` for zero-shot classification;
/// * `done.json`: the completion marker. A second call with the same options returns at once;
///   other options rewrite the output (earlier class folders are replaced).
pub fn prepare_fashion_mnist(
    source_dir: &Path,
    out_dir: &Path,
    options: &PrepareOptions,
) -> Result<PreparedDataset> {
    if options.image_size == 0 || options.image_size > 4096 {
        return Err(Error::InvalidArgument(format!(
            "image_size must be 1..=4096, got {}",
            options.image_size
        )));
    }
    if let Some(done) = completed(out_dir, options) {
        return Ok(done);
    }
    // An interrupted rewrite must never look complete.
    let marker = out_dir.join("done.json");
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(io_error(&marker))?;
    }
    std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;

    let (train_limit, test_limit) = options.limit_per_split.unzip();
    let train = load_split(source_dir, "train", train_limit)?;
    let train_count = write_split(out_dir, "train", &train, options, options.seed)?;
    drop(train);
    let test = load_split(source_dir, "t10k", test_limit)?;
    let test_seed = options.seed ^ TEST_SEED_SALT;
    let test_count = write_split(out_dir, "test", &test, options, test_seed)?;

    let done = prepared(out_dir, train_count, test_count);
    let classes = serde_json::json!({
        "classes": FASHION_MNIST_CLASSES,
        "templates": CAPTION_TEMPLATES,
    });
    write_json(&done.classes_json, &classes)?;
    let marker_value = serde_json::json!({
        "layout": LAYOUT_VERSION,
        "options": options,
        "counts": {"train": train_count, "test": test_count},
    });
    write_json(&marker, &marker_value)?;
    Ok(done)
}

/// The caption of a JSON Lines record: `caption`, else `text`.
fn record_caption(object: &serde_json::Map<String, Value>) -> Option<&str> {
    object
        .get("caption")
        .or_else(|| object.get("text"))
        .and_then(Value::as_str)
}

fn parse_caption_line(line: &str) -> std::result::Result<CaptionRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let image = object
        .get("image")
        .and_then(Value::as_str)
        .ok_or("no string \"image\"")?;
    let caption = record_caption(object).ok_or("no string \"caption\" (or \"text\")")?;
    let label = match object.get("label") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("\"label\" {v} is not a non-negative integer"))?
                as usize,
        ),
    };
    Ok(CaptionRecord {
        image: image.to_string(),
        caption: caption.to_string(),
        label,
    })
}

/// Reads an image-caption JSON Lines file: one object per non-blank line with a string
/// `image`, a string `caption` (or `text`) and an optional integer `label`. A malformed line is
/// an error naming `file:line`.
pub fn read_caption_jsonl(path: &Path) -> Result<Vec<CaptionRecord>> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_caption_line(line).map_err(|reason| {
                Error::InvalidArgument(format!("{}:{}: {reason}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Sorted names of the sub-folders of `root`: the classes of an image folder, label = position
/// (torchvision's `find_classes`).
pub fn image_folder_classes(root: &Path) -> Result<Vec<String>> {
    class_folders(root)
}

/// An image-folder dataset, like torchvision's `ImageFolder`: (image path, label) with the
/// labels of [`image_folder_classes`], images with an image extension anywhere below their
/// class folder, sorted. An empty class folder keeps its label and contributes no sample
/// (torchvision's `allow_empty=True`): a small `limit_per_split` can leave a class empty.
pub fn image_folder(root: &Path) -> Result<Vec<(PathBuf, usize)>> {
    let mut samples = Vec::new();
    for (label, class) in image_folder_classes(root)?.iter().enumerate() {
        let images = images_below(&root.join(class))?;
        samples.extend(images.into_iter().map(|path| (path, label)));
    }
    Ok(samples)
}
