//! InternVL-C/G as a contrastive model: image and text embeddings, zero-shot classification with
//! prompt-template ensembling (clip_benchmark's protocol), image–text retrieval, and zero-shot
//! video classification from sampled frames.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, D};
use image::RgbImage;

use crate::models::internvl_cg::{l2_normalize, CaptionOptions, Head, InternVLCG};
use crate::models::ModelFolder;
use crate::processing::image::load_rgb;
use crate::processing::resize::resize_bicubic;
use crate::processing::tokenizer::{InternVlCgTextTokenizer, SUMMARIZE_PREFIX};
use crate::processing::transforms::{
    resize_and_normalize, to_normalized_tensor, ClipImageProcessor, IMAGENET_MEAN, IMAGENET_STD,
};
use crate::{Error, Result};

/// The image transforms of the release's evaluation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageTransform {
    /// clip_benchmark "retrieval": squash-resize to S×S (PIL bicubic), no crop.
    Retrieval,
    /// clip_benchmark "classification": shorter side to S, center crop S×S (torchvision rounding).
    Classification,
    /// The checkpoint's `preprocessor_config.json` (CLIPImageProcessor), as the model card does.
    Processor,
}

impl FromStr for ImageTransform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "retrieval" => Ok(Self::Retrieval),
            "classification" => Ok(Self::Classification),
            "processor" => Ok(Self::Processor),
            other => Err(Error::InvalidArgument(format!(
                "unknown preprocessing `{other}` (expected retrieval, classification or processor)"
            ))),
        }
    }
}

/// Turns decoded images into the pixel tensors a C/G model expects.
#[derive(Debug, Clone)]
pub struct ImagePreprocessor {
    transform: ImageTransform,
    size: u32,
    processor: Option<ClipImageProcessor>,
}

impl ImagePreprocessor {
    /// `size` is the model's image size; `processor_config` is needed for
    /// [`ImageTransform::Processor`].
    pub fn new(
        transform: ImageTransform,
        size: usize,
        processor_config: Option<&Path>,
    ) -> Result<Self> {
        let processor = match (transform, processor_config) {
            (ImageTransform::Processor, Some(path)) => Some(ClipImageProcessor::from_file(path)?),
            (ImageTransform::Processor, None) => {
                return Err(Error::InvalidArgument(
                    "--preprocess processor needs a preprocessor_config.json in the model folder"
                        .into(),
                ))
            }
            _ => None,
        };
        Ok(Self {
            transform,
            size: size as u32,
            processor,
        })
    }

    /// `[3, S, S]` pixels of one image.
    pub fn pixels(&self, image: &RgbImage) -> Result<Tensor> {
        let s = self.size;
        match self.transform {
            ImageTransform::Retrieval => resize_and_normalize(image, s, s),
            ImageTransform::Classification => {
                let cropped = center_crop(&resize_shorter_side(image, s), s);
                Ok(to_normalized_tensor(&cropped, IMAGENET_MEAN, IMAGENET_STD))
            }
            ImageTransform::Processor => self
                .processor
                .as_ref()
                .expect("checked in new")
                .preprocess(image),
        }
    }
}

/// torchvision `Resize(size)` on a PIL image: the shorter side becomes `size`, the longer
/// `int(size · long / short)`.
fn resize_shorter_side(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let (short, long) = (w.min(h) as u64, w.max(h) as u64);
    let new_long = ((size as u64 * long) / short) as u32;
    let (nw, nh) = if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    };
    resize_bicubic(image, nw, nh)
}

/// torchvision `CenterCrop(size)`: offsets `int(round((h − size) / 2))` (round half to even), zero
/// padding when the image is smaller.
fn center_crop(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let offset = |len: u32| -> i64 { round_half_even((len as f64 - size as f64) / 2.0) as i64 };
    let (top, left) = (offset(h), offset(w));
    RgbImage::from_fn(size, size, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx >= 0 && sy >= 0 && (sx as u32) < w && (sy as u32) < h {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The result for one input item: its value or the error that stopped it.
pub type ItemResult<T> = std::result::Result<T, String>;

/// A decoded caption and its generated token ids.
pub type CaptionText = (String, Vec<u32>);

/// Unnormalised image embeddings of image files, one result per file (a file that fails to
/// decode gets its own error; the others are still embedded).
pub fn embed_image_files(
    model: &InternVLCG,
    preprocessor: &ImagePreprocessor,
    head: Head,
    paths: &[PathBuf],
    device: &Device,
) -> Result<Vec<ItemResult<Tensor>>> {
    let pixels: Vec<ItemResult<Tensor>> = paths
        .iter()
        .map(|p| {
            load_rgb(p)
                .and_then(|img| preprocessor.pixels(&img))
                .map_err(|e| e.to_string())
        })
        .collect();
    let good: Vec<Tensor> = pixels
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut embeds = if good.is_empty() {
        Vec::new()
    } else {
        let batch = Tensor::stack(&good, 0)?.to_device(device)?;
        let tokens = model.vision_tokens(&batch)?;
        let e = model.image_embeds(&tokens, head)?;
        (0..good.len())
            .map(|i| e.get(i))
            .collect::<candle_core::Result<Vec<_>>>()?
    }
    .into_iter();
    Ok(pixels
        .into_iter()
        .map(|p| p.map(|_| embeds.next().expect("one embedding per decoded image")))
        .collect())
}

/// clip_benchmark's zero-shot classifier: for each class, the normalised text embeddings of all
/// its prompts are averaged and renormalised. `class_embeds[c]` are the unnormalised text
/// embeddings `[templates, E]` of class c. Returns `[E, classes]`.
pub fn classifier_weights(class_embeds: &[Tensor]) -> Result<Tensor> {
    if class_embeds.is_empty() {
        return Err(Error::InvalidArgument("no class labels".into()));
    }
    let columns = class_embeds
        .iter()
        .map(|e| {
            l2_normalize(&l2_normalize(e)?.mean(0)?.unsqueeze(0)?).and_then(|v| Ok(v.squeeze(0)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&columns, 1)?)
}

/// Class probabilities `softmax(scale · norm(image) · W)` for image embeddings `[N, E]`.
pub fn class_probabilities(image_embeds: &Tensor, weights: &Tensor, scale: f32) -> Result<Tensor> {
    let logits = (l2_normalize(image_embeds)?.matmul(weights)? * scale as f64)?;
    Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
}

/// The `count` frame indices sampled uniformly from `total` frames, as the release's video
/// retrieval code does: `interval = ceil(total / count)`, indices `k·interval + interval / 2`
/// (clamped to the last frame when a short video cannot provide distinct frames).
pub fn sample_frame_indices(total: usize, count: usize) -> Result<Vec<usize>> {
    if total == 0 || count == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot sample {count} frames from a video of {total} frames"
        )));
    }
    let interval = total.div_ceil(count);
    Ok((0..count)
        .map(|k| (k * interval + interval / 2).min(total - 1))
        .collect())
}

/// The entries of a folder sorted by name, hidden ones (`.name`) left out.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    Ok(entries)
}

/// The frames of a video given as a folder of images (sorted by name), sampled uniformly.
pub fn frames_from_folder(dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "video folder {} has no frames",
            dir.display()
        )));
    }
    Ok(sample_frame_indices(files.len(), count)?
        .into_iter()
        .map(|i| files[i].clone())
        .collect())
}

/// Extracts `count` uniformly sampled frames of a video file with the system `ffmpeg` into `out`
/// (PNG files) and returns their paths.
pub fn frames_from_video(video: &Path, count: usize, out: &Path) -> Result<Vec<PathBuf>> {
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(video)
        .output()
        .map_err(|_| Error::InvalidArgument("video input needs ffmpeg (ffprobe and ffmpeg on PATH); install it, or pass a folder of frames".into()))?;
    if !probe.status.success() {
        return Err(Error::image(
            video.display(),
            format!(
                "ffprobe cannot read it: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ),
        ));
    }
    let total: usize = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::image(video.display(), "ffprobe reported no frame count"))?;
    let indices = sample_frame_indices(total, count)?;
    let select = indices
        .iter()
        .map(|i| format!("eq(n\\,{i})"))
        .collect::<Vec<_>>()
        .join("+");
    let pattern = out.join("frame-%04d.png");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(video)
        .args(["-vf", &format!("select={select}"), "-vsync", "0"])
        .arg(&pattern)
        .status()
        .map_err(|_| Error::InvalidArgument("video input needs ffmpeg on PATH".into()))?;
    if !status.success() {
        return Err(Error::image(
            video.display(),
            "ffmpeg failed to extract frames",
        ));
    }
    frames_from_folder(out, count).map(|mut frames| {
        frames.truncate(indices.len());
        frames
    })
}

/// A video embedding: the mean of its frames' unnormalised embeddings (the release's protocol).
pub fn video_embedding(frame_embeds: &[Tensor]) -> Result<Tensor> {
    if frame_embeds.is_empty() {
        return Err(Error::InvalidArgument("no frames".into()));
    }
    Ok(Tensor::stack(frame_embeds, 0)?.mean(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_indices_follow_the_release() {
        assert_eq!(
            sample_frame_indices(100, 8).unwrap(),
            vec![6, 19, 32, 45, 58, 71, 84, 97]
        );
        assert_eq!(sample_frame_indices(10, 1).unwrap(), vec![5]);
        assert_eq!(
            sample_frame_indices(3, 8).unwrap(),
            vec![0, 1, 2, 2, 2, 2, 2, 2]
        );
        assert!(sample_frame_indices(0, 8).is_err());
    }

    #[test]
    fn rounding_is_bankers() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-0.5), 0.0);
        assert_eq!(round_half_even(1.2), 1.0);
    }

    #[test]
    fn parses_transforms() {
        assert_eq!(
            "retrieval".parse::<ImageTransform>().unwrap(),
            ImageTransform::Retrieval
        );
        assert!("squash".parse::<ImageTransform>().is_err());
    }
}

/// A loaded InternVL-C/G model with its tokenizer and image preprocessing, ready for the
/// `embed`, `classify`, `retrieve` and `caption` commands.
#[derive(Debug)]
pub struct ContrastiveSession {
    model: InternVLCG,
    tokenizer: InternVlCgTextTokenizer,
    preprocessor: ImagePreprocessor,
    device: Device,
}

impl ContrastiveSession {
    /// Loads model, tokenizer and the chosen image transform from a release folder.
    pub fn open(
        folder: &ModelFolder,
        transform: ImageTransform,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let model = InternVLCG::load(folder, dtype, device)?;
        let tokenizer = InternVlCgTextTokenizer::from_folder(folder.dir())?;
        let preprocessor = ImagePreprocessor::new(
            transform,
            model.image_size(),
            folder.preprocessor_config().as_deref(),
        )?;
        Ok(Self {
            model,
            tokenizer,
            preprocessor,
            device: device.clone(),
        })
    }

    /// The model.
    pub fn model(&self) -> &InternVLCG {
        &self.model
    }

    /// Indices of the texts that the release's 80-token limit truncates (their EOS is kept).
    pub fn truncated_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<usize>> {
        let limit = self.tokenizer.max_length() - 2;
        let mut out = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let body = self.tokenizer.tokenizer().encode(
                &format!("{SUMMARIZE_PREFIX}{}", text.as_ref()),
                false,
                false,
            )?;
            if body.len() > limit {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Tokens the model reads for each text (BOS, `"summarize:"` prefix, text, EOS; after
    /// the release's truncation).
    pub fn text_token_counts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<usize>> {
        Ok(self
            .tokenizer
            .encode_batch(texts)?
            .attention_mask
            .iter()
            .map(|row| row.iter().filter(|&&m| m != 0).count())
            .collect())
    }

    /// L2-normalised text embeddings `[N, E]` (`"summarize:"` prefix, BOS/EOS, right padding with 0).
    pub fn text_embeds_normalized<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::InvalidArgument("no texts".into()));
        }
        let ids = self
            .tokenizer
            .encode_batch(texts)?
            .input_ids_tensor(&self.device)?;
        l2_normalize(&self.model.text_embeds(&ids)?.to_dtype(DType::F32)?)
    }

    /// L2-normalised image embeddings, one result per file.
    pub fn image_embeds_normalized(
        &self,
        paths: &[PathBuf],
        head: Head,
    ) -> Result<Vec<ItemResult<Vec<f32>>>> {
        let embeds = embed_image_files(&self.model, &self.preprocessor, head, paths, &self.device)?;
        embeds
            .into_iter()
            .map(|r| match r {
                Ok(t) => Ok(Ok(l2_normalize(&t.to_dtype(DType::F32)?)?.to_vec1::<f32>()?)),
                Err(e) => Ok(Err(e)),
            })
            .collect()
    }

    /// Unnormalised image embeddings `[E]` per file (for video frame averaging).
    pub fn image_embeds_raw(
        &self,
        paths: &[PathBuf],
        head: Head,
    ) -> Result<Vec<ItemResult<Tensor>>> {
        embed_image_files(&self.model, &self.preprocessor, head, paths, &self.device)
    }

    /// `exp(logit_scale) · image · textsᵀ` for one normalised image embedding and normalised
    /// text embeddings `[T, E]`.
    pub fn logits_for(&self, image: &[f32], texts: &Tensor) -> Result<Vec<f32>> {
        let image = Tensor::new(image, texts.device())?.unsqueeze(0)?;
        let logits = (image.matmul(&texts.t()?)? * self.model.logit_scale()? as f64)?;
        Ok(logits.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// The zero-shot classifier `[E, classes]` from class names and templates (`{c}` is replaced
    /// by the class name; no templates means the class name alone).
    pub fn classifier(&self, classes: &[String], templates: &[String]) -> Result<Tensor> {
        if classes.is_empty() {
            return Err(Error::InvalidArgument("empty label list".into()));
        }
        let embeds = classes
            .iter()
            .map(|c| {
                let prompts: Vec<String> = if templates.is_empty() {
                    vec![c.clone()]
                } else {
                    templates.iter().map(|t| t.replace("{c}", c)).collect()
                };
                let ids = self
                    .tokenizer
                    .encode_batch(&prompts)?
                    .input_ids_tensor(&self.device)?;
                Ok(self.model.text_embeds(&ids)?.to_dtype(DType::F32)?)
            })
            .collect::<Result<Vec<_>>>()?;
        classifier_weights(&embeds)
    }

    /// Captions image files; one result per file.
    pub fn caption(
        &self,
        paths: &[PathBuf],
        prompt: &str,
        options: &CaptionOptions,
    ) -> Result<Vec<ItemResult<CaptionText>>> {
        let prompt_ids = self.tokenizer.tokenizer().encode(prompt, true, false)?;
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let pixels = match load_rgb(path).and_then(|img| self.preprocessor.pixels(&img)) {
                Ok(p) => p,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    continue;
                }
            };
            let tokens = self
                .model
                .vision_tokens(&pixels.unsqueeze(0)?.to_device(&self.device)?)?;
            let caption = self.model.caption(&tokens, &prompt_ids, options)?;
            let text = self
                .tokenizer
                .tokenizer()
                .decode(&caption.token_ids, true)?
                .trim()
                .to_string();
            out.push(Ok((text, caption.token_ids)));
        }
        Ok(out)
    }
}
