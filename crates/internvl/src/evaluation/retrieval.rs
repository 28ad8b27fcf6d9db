//! Zero-shot image–text retrieval recall, as clip_benchmark (and InternVL's fork) defines it.
//!
//! A query is a hit at k when at least one of its positives is among its k best-scored
//! items; recall@k is the fraction of hits over all queries:
//! * image→text: each image queries all texts; its positives are its captions;
//! * text→image: each text queries all images; its positive is its image.
//!
//! clip_benchmark names image→text `text_retrieval_recall@k` and text→image
//! `image_retrieval_recall@k` (the retrieved modality); [`RetrievalRecall::metrics`] uses
//! those names.
//!
//! Ties: items with equal scores are ranked by index, lower first (a stable descending
//! sort). `torch.topk` leaves the order of ties unspecified, so with exact ties the
//! reference implementation may differ; with real embeddings ties do not occur. A k at or
//! above the number of items makes every query a hit (`torch.topk` would refuse it).

use rayon::prelude::*;

use super::matrix::{rank_of, ScoreMatrix};
use super::report::Metrics;
use crate::{Error, Result};

/// The k of recall@k reported for retrieval.
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// Recall@k in both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalRecall {
    /// The k values, in the order of the recall vectors.
    pub ks: Vec<usize>,
    /// Image→text recall@k (clip_benchmark's `text_retrieval_recall@k`), in [0, 1].
    pub image_to_text: Vec<f64>,
    /// Text→image recall@k (clip_benchmark's `image_retrieval_recall@k`), in [0, 1].
    pub text_to_image: Vec<f64>,
}

impl RetrievalRecall {
    /// The mean of all recalls of both directions (the "mean recall" of the READMEs).
    pub fn mean_recall(&self) -> f64 {
        let all: Vec<f64> = self
            .image_to_text
            .iter()
            .chain(&self.text_to_image)
            .copied()
            .collect();
        all.iter().sum::<f64>() / all.len() as f64
    }

    /// The recalls under clip_benchmark's names, then `mean_recall`.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = Metrics::new();
        for (k, r) in self.ks.iter().zip(&self.text_to_image) {
            metrics.push(format!("image_retrieval_recall@{k}"), *r);
        }
        for (k, r) in self.ks.iter().zip(&self.image_to_text) {
            metrics.push(format!("text_retrieval_recall@{k}"), *r);
        }
        metrics.push("mean_recall", self.mean_recall());
        metrics
    }
}

/// Recall@k for every k in `ks` from a similarity matrix `[n_images × n_texts]`, where
/// text `t` describes image `text_to_image[t]`. Every image needs at least one text.
pub fn retrieval_recall(
    similarity: &ScoreMatrix,
    text_to_image: &[usize],
    ks: &[usize],
) -> Result<RetrievalRecall> {
    let texts_of_image = group_texts(similarity, text_to_image)?;
    if ks.is_empty() || ks.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "retrieval: recall needs k >= 1, got {ks:?}"
        )));
    }
    let image_ranks: Vec<usize> = (0..similarity.rows())
        .into_par_iter()
        .map(|image| best_text_rank(similarity, image, &texts_of_image[image]))
        .collect();
    let text_ranks: Vec<usize> = (0..similarity.cols())
        .into_par_iter()
        .map(|text| image_rank(similarity, text, text_to_image[text]))
        .collect();
    Ok(RetrievalRecall {
        ks: ks.to_vec(),
        image_to_text: ks.iter().map(|&k| hit_rate(&image_ranks, k)).collect(),
        text_to_image: ks.iter().map(|&k| hit_rate(&text_ranks, k)).collect(),
    })
}

/// The texts of each image, after checking the ground truth against the matrix.
fn group_texts(similarity: &ScoreMatrix, text_to_image: &[usize]) -> Result<Vec<Vec<usize>>> {
    let (n_images, n_texts) = (similarity.rows(), similarity.cols());
    if n_images == 0 || n_texts == 0 {
        return Err(Error::InvalidArgument(format!(
            "retrieval: empty similarity matrix ({n_images} images × {n_texts} texts)"
        )));
    }
    if text_to_image.len() != n_texts {
        return Err(Error::InvalidArgument(format!(
            "retrieval: {} ground-truth entries for {n_texts} texts (matrix is images × texts)",
            text_to_image.len()
        )));
    }
    let mut texts_of_image = vec![Vec::new(); n_images];
    for (text, &image) in text_to_image.iter().enumerate() {
        let texts = texts_of_image.get_mut(image).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "retrieval: text {text} belongs to image {image}, but there are {n_images} images"
            ))
        })?;
        texts.push(text);
    }
    if let Some(image) = texts_of_image.iter().position(Vec::is_empty) {
        return Err(Error::InvalidArgument(format!(
            "retrieval: image {image} has no text"
        )));
    }
    Ok(texts_of_image)
}

/// Rank of an image's best-ranked text among all texts (0 = first).
fn best_text_rank(similarity: &ScoreMatrix, image: usize, texts: &[usize]) -> usize {
    let row = similarity.row(image);
    // The best-ranked positive is the highest score, lowest index on ties.
    let best = texts
        .iter()
        .copied()
        .reduce(|best, t| if row[t] > row[best] { t } else { best })
        .expect("every image has a text");
    rank_of(row.iter().copied(), best, row[best])
}

/// Rank of a text's image among all images (0 = first).
fn image_rank(similarity: &ScoreMatrix, text: usize, image: usize) -> usize {
    let column = (0..similarity.rows()).map(|i| similarity.get(i, text));
    rank_of(column, image, similarity.get(image, text))
}

fn hit_rate(ranks: &[usize], k: usize) -> f64 {
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}
