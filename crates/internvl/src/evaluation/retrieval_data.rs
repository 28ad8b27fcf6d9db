//! Readers for image–text retrieval test sets.
//!
//! Every format becomes a [`RetrievalDataset`]: the image paths, the captions, and for each
//! caption the index of its image. Images keep their order of first appearance (COCO-format
//! files: ascending image id, like torchvision's `CocoCaptions`), captions their file order.
//!
//! Supported formats ([`RetrievalDataset::load`] picks one from the content):
//! * Karpathy split JSON (`dataset_coco.json`, `dataset_flickr30k.json`):
//!   `{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw": ...}]}]}`;
//! * a JSON list of `{"image" | "video": path, "caption": text | [texts]}` (BLIP-style
//!   Karpathy test files, MSR-VTT);
//! * COCO captions JSON: `{"images": [{"id", "file_name"}], "annotations": [{"image_id",
//!   "caption"}]}`;
//! * Flickr30K text files: a header line, then `name.jpg,caption` per line (split at the
//!   first `.jpg,`, since captions may contain commas).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

/// Images, captions and which image each caption describes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetrievalDataset {
    /// Image paths (joined to the image root given to the reader).
    pub images: Vec<PathBuf>,
    /// All captions.
    pub captions: Vec<String>,
    /// For each caption, the index of its image in `images`.
    pub text_to_image: Vec<usize>,
}

impl RetrievalDataset {
    /// Reads `path` in whichever supported format its content has. `split` selects the
    /// Karpathy split (`"test"`, `"val"`, `"train"`, `"restval"`) and is ignored by the
    /// other formats; image paths are joined to `image_root`.
    pub fn load(path: impl AsRef<Path>, split: &str, image_root: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        if !text.trim_start().starts_with(['{', '[']) {
            return Self::from_flickr_text(&text, path, image_root.as_ref());
        }
        let json = parse_json(&text, path)?;
        let images = json.get("images").and_then(Value::as_array);
        if json.is_array() {
            Self::from_caption_list(&json, path, image_root.as_ref())
        } else if images.is_some_and(|list| list.iter().any(|i| i.get("sentences").is_some())) {
            Self::from_karpathy(&json, split, path, image_root.as_ref())
        } else if json.get("annotations").is_some() {
            Self::from_coco(&json, path, image_root.as_ref())
        } else {
            Err(bad_format(
                path,
                "not a Karpathy, COCO or caption-list JSON file",
            ))
        }
    }

    /// Reads a Karpathy split JSON file, keeping the images of `split`.
    pub fn from_karpathy_json(
        path: impl AsRef<Path>,
        split: &str,
        image_root: impl AsRef<Path>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let json = parse_json(&read_text(path)?, path)?;
        Self::from_karpathy(&json, split, path, image_root.as_ref())
    }

    /// Reads a JSON list of `{"image" | "video", "caption"}` records.
    pub fn from_caption_list_json(
        path: impl AsRef<Path>,
        image_root: impl AsRef<Path>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let json = parse_json(&read_text(path)?, path)?;
        Self::from_caption_list(&json, path, image_root.as_ref())
    }

    /// Reads a COCO captions JSON file.
    pub fn from_coco_json(path: impl AsRef<Path>, image_root: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = parse_json(&read_text(path)?, path)?;
        Self::from_coco(&json, path, image_root.as_ref())
    }

    /// Reads a Flickr30K-style text file (header, then `name.jpg,caption` lines).
    pub fn from_flickr_txt(path: impl AsRef<Path>, image_root: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_flickr_text(&read_text(path)?, path, image_root.as_ref())
    }

    /// Only the first `n` images and their captions (all of them when `n` is larger).
    pub fn truncated(mut self, n: usize) -> Self {
        if n >= self.images.len() {
            return self;
        }
        self.images.truncate(n);
        let kept: Vec<(String, usize)> = self
            .captions
            .drain(..)
            .zip(self.text_to_image.drain(..))
            .filter(|(_, image)| *image < n)
            .collect();
        (self.captions, self.text_to_image) = kept.into_iter().unzip();
        self
    }

    /// The captions of image `image`.
    pub fn captions_of(&self, image: usize) -> impl Iterator<Item = &str> {
        self.captions
            .iter()
            .zip(&self.text_to_image)
            .filter(move |(_, &i)| i == image)
            .map(|(c, _)| c.as_str())
    }

    fn from_karpathy(json: &Value, split: &str, path: &Path, root: &Path) -> Result<Self> {
        let images = json
            .get("images")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_format(path, "no \"images\" list"))?;
        let mut dataset = GroupedCaptions::default();
        for (i, image) in images.iter().enumerate() {
            if image.get("split").and_then(Value::as_str) != Some(split) {
                continue;
            }
            let name = str_field(image, &["filename"], path, i)?;
            let folder = image.get("filepath").and_then(Value::as_str).unwrap_or("");
            let sentences = image
                .get("sentences")
                .and_then(Value::as_array)
                .ok_or_else(|| bad_record(path, i, "no \"sentences\" list"))?;
            let file = root.join(folder).join(name);
            for sentence in sentences {
                dataset.add(&file, str_field(sentence, &["raw"], path, i)?);
            }
        }
        dataset.finish(path)
    }

    fn from_caption_list(json: &Value, path: &Path, root: &Path) -> Result<Self> {
        let records = json
            .as_array()
            .ok_or_else(|| bad_format(path, "expected a JSON list"))?;
        let mut dataset = GroupedCaptions::default();
        for (i, record) in records.iter().enumerate() {
            let file = root.join(str_field(record, &["image", "video"], path, i)?);
            match record.get("caption") {
                Some(Value::String(caption)) => dataset.add(&file, caption),
                Some(Value::Array(captions)) => {
                    for caption in captions {
                        let caption = caption
                            .as_str()
                            .ok_or_else(|| bad_record(path, i, "a caption is not a string"))?;
                        dataset.add(&file, caption);
                    }
                }
                _ => return Err(bad_record(path, i, "no \"caption\" string or list")),
            }
        }
        dataset.finish(path)
    }

    fn from_coco(json: &Value, path: &Path, root: &Path) -> Result<Self> {
        let list = |key: &str| {
            json.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| bad_format(path, &format!("no \"{key}\" list")))
        };
        let mut images: Vec<(i64, &str)> = Vec::new();
        for (i, image) in list("images")?.iter().enumerate() {
            let id = int_field(image, "id", path, i)?;
            images.push((id, str_field(image, &["file_name"], path, i)?));
        }
        images.sort_by_key(|&(id, _)| id);
        let mut captions: HashMap<i64, Vec<&str>> = HashMap::new();
        for (i, annotation) in list("annotations")?.iter().enumerate() {
            let id = int_field(annotation, "image_id", path, i)?;
            captions
                .entry(id)
                .or_default()
                .push(str_field(annotation, &["caption"], path, i)?);
        }
        let mut dataset = GroupedCaptions::default();
        for (id, name) in images {
            let file = root.join(name);
            for caption in captions.remove(&id).unwrap_or_default() {
                dataset.add(&file, caption);
            }
        }
        dataset.finish(path)
    }

    fn from_flickr_text(text: &str, path: &Path, root: &Path) -> Result<Self> {
        let mut dataset = GroupedCaptions::default();
        for (number, line) in text.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, caption) = line.split_once(".jpg,").ok_or_else(|| {
                bad_format(
                    path,
                    &format!("line {}: no \"name.jpg,caption\"", number + 1),
                )
            })?;
            dataset.add(&root.join(format!("{name}.jpg")), caption);
        }
        dataset.finish(path)
    }
}

/// Builds a dataset from (image, caption) pairs, numbering images by first appearance.
#[derive(Default)]
struct GroupedCaptions {
    dataset: RetrievalDataset,
    index: HashMap<PathBuf, usize>,
}

impl GroupedCaptions {
    fn add(&mut self, image: &Path, caption: &str) {
        let next = self.dataset.images.len();
        let index = *self.index.entry(image.to_path_buf()).or_insert(next);
        if index == next {
            self.dataset.images.push(image.to_path_buf());
        }
        self.dataset.captions.push(caption.to_string());
        self.dataset.text_to_image.push(index);
    }

    fn finish(self, path: &Path) -> Result<RetrievalDataset> {
        if self.dataset.captions.is_empty() {
            return Err(bad_format(path, "no image with captions (wrong split?)"));
        }
        Ok(self.dataset)
    }
}

/// BLIP's caption clean-up used by clip_benchmark for Flickr30K and COCO: lower-case,
/// `.!"()*#:;~` → space, runs of two or more white-space characters → one space, trailing
/// newlines and surrounding spaces removed, at most `max_words` space-separated words.
pub fn pre_caption(caption: &str, max_words: usize) -> String {
    let replaced: String = caption
        .to_lowercase()
        .chars()
        .map(|c| if ".!\"()*#:;~".contains(c) { ' ' } else { c })
        .collect();
    let collapsed = collapse_whitespace_runs(&replaced);
    let trimmed = collapsed.trim_end_matches('\n').trim_matches(' ');
    let words: Vec<&str> = trimmed.split(' ').collect();
    if words.len() > max_words {
        words[..max_words].join(" ")
    } else {
        trimmed.to_string()
    }
}

/// Replaces every run of at least two white-space characters by one space (a single
/// white-space character is kept as it is).
fn collapse_whitespace_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            run.push(c);
            continue;
        }
        flush_run(&mut out, &mut run);
        out.push(c);
    }
    flush_run(&mut out, &mut run);
    out
}

fn flush_run(out: &mut String, run: &mut String) {
    if run.chars().count() >= 2 {
        out.push(' ');
    } else {
        out.push_str(run);
    }
    run.clear();
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_json(text: &str, path: &Path) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| bad_format(path, &format!("invalid JSON: {e}")))
}

fn bad_format(path: &Path, reason: &str) -> Error {
    Error::InvalidArgument(format!("{}: {reason}", path.display()))
}

fn bad_record(path: &Path, index: usize, reason: &str) -> Error {
    bad_format(path, &format!("record {index}: {reason}"))
}

/// The first of `keys` that holds a string.
fn str_field<'a>(record: &'a Value, keys: &[&str], path: &Path, index: usize) -> Result<&'a str> {
    keys.iter()
        .find_map(|k| record.get(*k).and_then(Value::as_str))
        .ok_or_else(|| bad_record(path, index, &format!("no string field {keys:?}")))
}

fn int_field(record: &Value, key: &str, path: &Path, index: usize) -> Result<i64> {
    record
        .get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| bad_record(path, index, &format!("no integer \"{key}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_first_images_and_their_captions() {
        let set = RetrievalDataset {
            images: vec!["a".into(), "b".into(), "c".into()],
            captions: vec!["a1".into(), "b1".into(), "a2".into(), "c1".into()],
            text_to_image: vec![0, 1, 0, 2],
        };
        let two = set.clone().truncated(2);
        assert_eq!(two.images.len(), 2);
        assert_eq!(two.captions, ["a1", "b1", "a2"]);
        assert_eq!(two.text_to_image, [0, 1, 0]);
        assert_eq!(set.clone().truncated(5), set);
    }

    #[test]
    fn pre_caption_follows_blip() {
        assert_eq!(pre_caption("A Dog (brown)!  runs.", 50), "a dog brown runs");
        assert_eq!(pre_caption("one two three", 2), "one two");
        assert_eq!(pre_caption("tab\there", 50), "tab\there");
    }
}
