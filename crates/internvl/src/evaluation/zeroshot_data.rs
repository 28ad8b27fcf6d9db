//! Readers for zero-shot classification sets: (image path, class index) samples and the
//! class names.
//!
//! * An image folder with one sub-folder per class, read like torchvision's `ImageFolder`:
//!   classes are the sub-folder names sorted, images are the files with an image extension
//!   found anywhere below a class folder, sorted by folder then file name.
//! * A list file: CSV (`path,label` per line, an optional header such as `path,label`; the
//!   line is split at its last comma so paths may contain commas) or JSON Lines
//!   (`{"path" | "image" | "filepath": ..., "label" | "class": name or index}`). Relative
//!   paths are relative to the list file's folder. Labels are class indices when they are
//!   all integers, otherwise class names (sorted to give the class order) — unless the class
//!   names are given, in which case names must be among them and indices below their count.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::retrieval_data::read_text;
use crate::{Error, Result};

/// File extensions accepted as images in class folders (case-insensitive), as torchvision's.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// A zero-shot classification set.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotDataset {
    /// Class names, by class index.
    pub class_names: Vec<String>,
    /// (image path, class index) of every sample.
    pub samples: Vec<(PathBuf, usize)>,
}

impl ZeroShotDataset {
    /// Reads an `ImageFolder`-style tree: `root/<class>/**/<image>`.
    pub fn from_image_folder(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let class_names = class_folders(root)?;
        let mut samples = Vec::new();
        for (index, class) in class_names.iter().enumerate() {
            let images = images_below(&root.join(class))?;
            if images.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{}: class folder {class:?} has no image ({})",
                    root.display(),
                    IMAGE_EXTENSIONS.join(", ")
                )));
            }
            samples.extend(images.into_iter().map(|path| (path, index)));
        }
        Ok(ZeroShotDataset {
            class_names,
            samples,
        })
    }

    /// Reads a CSV (`.csv`, `.txt`, ...) or JSON Lines (`.jsonl`) list of images and labels.
    pub fn from_list(path: impl AsRef<Path>, class_names: Option<&[String]>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let jsonl = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
        let rows = if jsonl {
            jsonl_rows(&text, path)?
        } else {
            csv_rows(&text, path)?
        };
        if rows.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: no samples",
                path.display()
            )));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let (class_names, indices) = resolve_labels(&rows, class_names, path)?;
        let samples = rows
            .into_iter()
            .zip(indices)
            .map(|((file, _), index)| (base.join(file), index))
            .collect();
        Ok(ZeroShotDataset {
            class_names,
            samples,
        })
    }

    /// The class index of every sample, in order.
    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|(_, label)| *label).collect()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sorted names of the sub-folders of `root` (torchvision's `find_classes`).
pub(crate) fn class_folders(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io_error(root))? {
        let entry = entry.map_err(io_error(root))?;
        if entry.path().is_dir() {
            let name = entry.file_name().into_string().map_err(|name| {
                Error::InvalidArgument(format!(
                    "{}: class folder name {name:?} is not UTF-8",
                    root.display()
                ))
            })?;
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: no class folders",
            root.display()
        )));
    }
    names.sort();
    Ok(names)
}

/// Image files anywhere below `folder`, sorted by (folder path, file name) like
/// torchvision's `sorted(os.walk(...))` then `sorted(files)`.
pub(crate) fn images_below(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(String, String, PathBuf)> = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if has_image_extension(&path) {
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                found.push((dir.to_string_lossy().into_owned(), name, path));
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, path)| path).collect())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// (path, label text) rows of a CSV list.
fn csv_rows(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (file, label) = line.rsplit_once(',').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: line {}: expected \"path,label\"",
                path.display(),
                number + 1
            ))
        })?;
        let (file, label) = (unquote(file), unquote(label));
        if rows.is_empty() && is_header(&file, &label) {
            continue;
        }
        rows.push((file, label));
    }
    Ok(rows)
}

fn unquote(field: &str) -> String {
    let field = field.trim();
    field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(field)
        .to_string()
}

fn is_header(file: &str, label: &str) -> bool {
    const FILE_HEADERS: [&str; 5] = ["path", "image", "filepath", "file", "filename"];
    const LABEL_HEADERS: [&str; 4] = ["label", "class", "class_name", "target"];
    FILE_HEADERS.contains(&file.to_ascii_lowercase().as_str())
        && LABEL_HEADERS.contains(&label.to_ascii_lowercase().as_str())
}

/// (path, label text) rows of a JSON Lines list.
fn jsonl_rows(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: &str| {
            Error::InvalidArgument(format!("{}: line {}: {reason}", path.display(), number + 1))
        };
        let record: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let file = ["path", "image", "filepath"]
            .iter()
            .find_map(|k| record.get(*k).and_then(Value::as_str))
            .ok_or_else(|| bad("no \"path\" string"))?;
        let label = match ["label", "class"].iter().find_map(|k| record.get(*k)) {
            Some(Value::String(name)) => name.clone(),
            Some(Value::Number(index)) if index.is_u64() => index.to_string(),
            _ => return Err(bad("no \"label\" (class name or index)")),
        };
        rows.push((file.to_string(), label));
    }
    Ok(rows)
}

/// Class names and the class index of every row.
fn resolve_labels(
    rows: &[(String, String)],
    given: Option<&[String]>,
    path: &Path,
) -> Result<(Vec<String>, Vec<usize>)> {
    let labels: Vec<&str> = rows.iter().map(|(_, l)| l.as_str()).collect();
    let all_indices: Option<Vec<usize>> = labels.iter().map(|l| l.parse().ok()).collect();
    let class_names = match (given, &all_indices) {
        (Some(names), _) => names.to_vec(),
        (None, Some(indices)) => {
            let count = indices.iter().max().map_or(0, |m| m + 1);
            (0..count).map(|i| i.to_string()).collect()
        }
        (None, None) => {
            let mut names: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
            names.sort();
            names.dedup();
            names
        }
    };
    let index_of = |label: &str| -> Result<usize> {
        let by_index = all_indices
            .as_ref()
            .and_then(|_| label.parse::<usize>().ok());
        let index = match by_index {
            Some(i) => Some(i).filter(|&i| i < class_names.len()),
            None => class_names.iter().position(|n| n == label),
        };
        index.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: label {label:?} is not one of the {} classes",
                path.display(),
                class_names.len()
            ))
        })
    };
    let indices = labels
        .iter()
        .map(|l| index_of(l))
        .collect::<Result<Vec<_>>>()?;
    Ok((class_names, indices))
}
