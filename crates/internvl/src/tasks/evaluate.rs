//! The evaluation harness behind `internvl eval`: runs an InternVL-C/G model over a dataset and
//! scores it with [`crate::evaluation`] (zero-shot classification of images or videos, image–text
//! retrieval, captioning), with progress bars on stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use crate::evaluation::{
    classification_metrics, evaluate_captions, retrieval_recall, ClassificationMetrics, EvalResult,
    EvalTask, RetrievalDataset, ScoreMatrix, ZeroShotDataset, RECALL_KS,
};
use crate::models::internvl_cg::{l2_normalize, CaptionOptions, Head};
use crate::tasks::contrastive::{
    frames_from_folder, frames_from_video, sorted_entries, video_embedding, ContrastiveSession,
};
use crate::{Error, Result};

/// clip_benchmark ranks with a fixed factor 100 instead of the model's logit scale.
const CLIP_BENCHMARK_SCALE: f64 = 100.0;

/// A progress bar of `len` items labelled `what` (evaluation and data preparation).
pub(crate) fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Normalised embeddings `[N, E]` of image files, in batches; any unreadable file is an error that
/// names it (an evaluation must not silently drop samples).
pub fn embed_images(
    session: &ContrastiveSession,
    paths: &[PathBuf],
    head: Head,
    batch_size: usize,
) -> Result<Tensor> {
    let bar = progress(paths.len(), "images");
    let mut rows = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(batch_size.max(1)) {
        for (path, embed) in chunk.iter().zip(session.image_embeds_raw(chunk, head)?) {
            let embed =
                embed.map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
            rows.push(embed.to_dtype(DType::F32)?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    l2_normalize(&Tensor::stack(&rows, 0)?)
}

/// Normalised text embeddings `[N, E]` in batches.
pub fn embed_texts(
    session: &ContrastiveSession,
    texts: &[String],
    batch_size: usize,
) -> Result<Tensor> {
    let bar = progress(texts.len(), "texts");
    let mut parts = Vec::new();
    for chunk in texts.chunks(batch_size.max(1)) {
        parts.push(session.text_embeds_normalized(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Tensor::cat(&parts, 0)?)
}

/// Zero-shot classification: clip_benchmark's classifier (template ensembling), logits
/// `100 · cos`, top-1 / top-5 / mean per-class recall and the confusion matrix.
pub fn zero_shot(
    session: &ContrastiveSession,
    dataset: &ZeroShotDataset,
    class_names: &[String],
    templates: &[String],
    head: Head,
    batch_size: usize,
) -> Result<ClassificationMetrics> {
    let weights = session.classifier(class_names, templates)?;
    let paths: Vec<PathBuf> = dataset.samples.iter().map(|(p, _)| p.clone()).collect();
    let images = embed_images(session, &paths, head, batch_size)?;
    score_classification(&images, &weights, &dataset.labels())
}

/// Zero-shot video classification: every sample is a video file or a folder of frames; its
/// embedding is the mean of `frames` uniformly sampled frame embeddings.
pub fn zero_shot_videos(
    session: &ContrastiveSession,
    videos: &[(PathBuf, usize)],
    class_names: &[String],
    templates: &[String],
    head: Head,
    frames: usize,
) -> Result<ClassificationMetrics> {
    let weights = session.classifier(class_names, templates)?;
    let bar = progress(videos.len(), "videos");
    let mut rows = Vec::new();
    for (video, _) in videos {
        let scratch =
            std::env::temp_dir().join(format!("internvl-eval-frames-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).map_err(|source| Error::Io {
            path: scratch.clone(),
            source,
        })?;
        let files = if video.is_dir() {
            frames_from_folder(video, frames)?
        } else {
            frames_from_video(video, frames, &scratch)?
        };
        let embeds = session
            .image_embeds_raw(&files, head)?
            .into_iter()
            .zip(&files)
            .map(|(e, f)| e.map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.display()))))
            .collect::<Result<Vec<_>>>()?;
        rows.push(video_embedding(&embeds)?.to_dtype(DType::F32)?);
        let _ = std::fs::remove_dir_all(&scratch);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let labels: Vec<usize> = videos.iter().map(|(_, l)| *l).collect();
    score_classification(&l2_normalize(&Tensor::stack(&rows, 0)?)?, &weights, &labels)
}

fn score_classification(
    images: &Tensor,
    weights: &Tensor,
    labels: &[usize],
) -> Result<ClassificationMetrics> {
    let logits = (images.matmul(weights)? * CLIP_BENCHMARK_SCALE)?;
    let (n, c) = logits.dims2()?;
    let data = logits.flatten_all()?.to_vec1::<f32>()?;
    classification_metrics(&ScoreMatrix::new(&data, n, c)?, labels)
}

/// A video classification set: `root/<class>/<video file or frame folder>`, classes sorted; the
/// samples are the videos.
pub fn video_folder(root: &Path) -> Result<ZeroShotDataset> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: no class folders",
            root.display()
        )));
    }
    let mut names = Vec::new();
    let mut videos = Vec::new();
    for (index, class) in classes.iter().enumerate() {
        let items = sorted_entries(class)?;
        if items.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: class folder has no videos",
                class.display()
            )));
        }
        names.push(
            class
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        videos.extend(items.into_iter().map(|v| (v, index)));
    }
    Ok(ZeroShotDataset {
        class_names: names,
        samples: videos,
    })
}

/// The result record of a classification run.
pub fn classification_result(
    model: &str,
    dataset: &str,
    samples: usize,
    metrics: &ClassificationMetrics,
) -> EvalResult {
    EvalResult {
        model: model.to_string(),
        dataset: dataset.to_string(),
        task: EvalTask::ZeroShotClassification,
        num_samples: samples,
        metrics: metrics.metrics(),
    }
}

/// Zero-shot image–text retrieval: recall@1/5/10 in both directions (clip_benchmark's names).
pub fn retrieval(
    session: &ContrastiveSession,
    dataset: &RetrievalDataset,
    head: Head,
    batch_size: usize,
    model: &str,
    name: &str,
) -> Result<EvalResult> {
    let images = embed_images(session, &dataset.images, head, batch_size)?;
    let texts = embed_texts(session, &dataset.captions, batch_size)?;
    let sim = images.matmul(&texts.t()?)?;
    let (n, m) = sim.dims2()?;
    let data = sim.flatten_all()?.to_vec1::<f32>()?;
    let recall = retrieval_recall(
        &ScoreMatrix::new(&data, n, m)?,
        &dataset.text_to_image,
        &RECALL_KS,
    )?;
    let mut metrics = recall.metrics();
    metrics.push("mean_recall", recall.mean_recall());
    Ok(EvalResult {
        model: model.to_string(),
        dataset: name.to_string(),
        task: EvalTask::ZeroShotRetrieval,
        num_samples: n,
        metrics,
    })
}

/// Captioning: generate a caption per image and score BLEU-1..4 and CIDEr-D against the dataset's
/// captions of that image. Returns the result and the generated captions (image path, text).
pub fn captioning(
    session: &ContrastiveSession,
    dataset: &RetrievalDataset,
    prompt: &str,
    options: &CaptionOptions,
    model: &str,
    name: &str,
) -> Result<(EvalResult, Vec<(PathBuf, String)>)> {
    let bar = progress(dataset.images.len(), "captions");
    let mut references = BTreeMap::new();
    let mut candidates = BTreeMap::new();
    let mut generated = Vec::new();
    for (i, path) in dataset.images.iter().enumerate() {
        let caption = session
            .caption(std::slice::from_ref(path), prompt, options)?
            .pop()
            .expect("one result per image")
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        references.insert(
            i,
            dataset.captions_of(i).map(String::from).collect::<Vec<_>>(),
        );
        candidates.insert(i, caption.0.clone());
        generated.push((path.clone(), caption.0));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let scores = evaluate_captions(&references, &candidates)?;
    Ok((
        EvalResult {
            model: model.to_string(),
            dataset: name.to_string(),
            task: EvalTask::Captioning,
            num_samples: dataset.images.len(),
            metrics: scores.metrics(),
        },
        generated,
    ))
}

/// Which class an answer names: the class whose name occurs in it (case-insensitive, between
/// non-alphanumeric characters), the longest name winning where names overlap ("t-shirt" over
/// "shirt"); `None` when it names none.
pub fn named_class(answer: &str, class_names: &[String]) -> Option<usize> {
    let answer = answer.to_lowercase();
    let mut order: Vec<usize> = (0..class_names.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(class_names[i].len()));
    let mut masked = answer.clone();
    for i in order {
        let name = class_names[i].to_lowercase();
        if name.is_empty() {
            continue;
        }
        let mut start = 0;
        while let Some(at) = masked[start..].find(&name) {
            let (begin, end) = (start + at, start + at + name.len());
            let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
            if !alnum(masked[..begin].chars().next_back()) && !alnum(masked[end..].chars().next()) {
                return Some(i);
            }
            start = end;
        }
        // Blank this name out so that a shorter one inside it ("shirt" in "t-shirt") cannot
        // match there.
        masked = masked.replace(&name, &" ".repeat(name.len()));
    }
    None
}

/// The answers of a [`chat_classification`] run and their score.
#[derive(Debug, Clone)]
pub struct ChatClassification {
    /// Accuracy (answers whose named class is the true one), mean per-class recall and
    /// the confusion matrix; its last class is "no class named".
    pub metrics: ClassificationMetrics,
    /// (image, true class, answer, named class) per sample.
    pub answers: Vec<(PathBuf, usize, String, Option<usize>)>,
}

/// Asks `model` `question` about every image of `dataset` (greedy answers of at most
/// `max_new_tokens` tokens) and scores the class each answer names ([`named_class`] over
/// `class_names`) against the truth.
///
/// Fails when an image cannot be read or generation fails (naming the image).
pub fn chat_classification(
    model: &crate::tasks::chat::ChatModel,
    dataset: &ZeroShotDataset,
    class_names: &[String],
    question: &str,
    max_new_tokens: usize,
) -> Result<ChatClassification> {
    let options = crate::tasks::chat::GenerationOptions {
        max_new_tokens,
        ..Default::default()
    };
    text_classification(dataset, class_names, "chat", |path| {
        let images = model.prepare_images(std::slice::from_ref(path), None)?;
        let tiles: Vec<usize> = images
            .as_ref()
            .map(|i| i.num_patches_list.clone())
            .unwrap_or_default();
        let (_, ids) = model.prompt_ids(question, None, &tiles)?;
        let generation = model.generate(&ids, images.as_ref(), &options, &mut |_| {})?;
        Ok(generation.text)
    })
}

/// Captions every image of `dataset` with an InternVL-G `session` (`prompt`, `options`) and
/// scores the class each caption names ([`named_class`] over `class_names`) against the truth:
/// does the captioner say what the image shows?
///
/// Fails when an image cannot be read or captioning fails (naming the image).
pub fn caption_classification(
    session: &ContrastiveSession,
    dataset: &ZeroShotDataset,
    class_names: &[String],
    prompt: &str,
    options: &CaptionOptions,
) -> Result<ChatClassification> {
    text_classification(dataset, class_names, "captions", |path| {
        let caption = session
            .caption(std::slice::from_ref(path), prompt, options)?
            .pop()
            .expect("one result per image")
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(caption.0)
    })
}

/// Scores the class named by `describe(image)` for every image of `dataset`.
fn text_classification(
    dataset: &ZeroShotDataset,
    class_names: &[String],
    label: &'static str,
    mut describe: impl FnMut(&PathBuf) -> Result<String>,
) -> Result<ChatClassification> {
    let none = class_names.len();
    let mut confusion = crate::evaluation::ConfusionMatrix::new(none + 1);
    let mut answers = Vec::with_capacity(dataset.samples.len());
    let bar = progress(dataset.samples.len(), label);
    for (path, truth) in &dataset.samples {
        let text = describe(path)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        let class = named_class(&text, class_names);
        confusion.add(*truth, class.unwrap_or(none));
        answers.push((path.clone(), *truth, text, class));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let correct = answers.iter().filter(|(_, t, _, c)| *c == Some(*t)).count();
    let total = answers.len().max(1) as f64;
    let recalls: Vec<f64> = confusion
        .per_class_recall()
        .into_iter()
        .take(none)
        .flatten()
        .collect();
    let mean_recall = recalls.iter().sum::<f64>() / recalls.len().max(1) as f64;
    Ok(ChatClassification {
        metrics: ClassificationMetrics {
            top1: correct as f64 / total,
            top5: f64::NAN,
            mean_per_class_recall: mean_recall,
            confusion,
        },
        answers,
    })
}

/// The [`EvalResult`] of a [`chat_classification`] run: `acc1` and `mean_per_class_recall`.
pub fn chat_classification_result(
    model: &str,
    dataset: &str,
    run: &ChatClassification,
) -> EvalResult {
    let mut metrics = crate::evaluation::Metrics::new();
    metrics.push("acc1", run.metrics.top1);
    metrics.push("mean_per_class_recall", run.metrics.mean_per_class_recall);
    EvalResult {
        model: model.to_string(),
        dataset: dataset.to_string(),
        task: EvalTask::ChatClassification,
        num_samples: run.answers.len(),
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::named_class;

    #[test]
    fn answers_name_the_longest_matching_class() {
        let names: Vec<String> = ["t-shirt", "shirt", "ankle boot", "bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(named_class("A t-shirt.", &names), Some(0));
        assert_eq!(named_class("A shirt.", &names), Some(1));
        assert_eq!(named_class("An Ankle boot.", &names), Some(2));
        assert_eq!(named_class("A handbag.", &names), None);
        assert_eq!(named_class("bags", &names), None);
        assert_eq!(named_class("xt-shirt", &names), None);
        assert_eq!(named_class("It is a bag", &names), Some(3));
        assert_eq!(named_class("", &names), None);
    }
}
