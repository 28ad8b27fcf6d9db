//! Zero-shot classification metrics, as clip_benchmark reports them for single-label sets.
//!
//! * `acc1`, `acc5`: top-k accuracy, the fraction of samples whose label is among the k
//!   best-scored classes; `acc5` is NaN with fewer than 5 classes (clip_benchmark skips it).
//! * `mean_per_class_recall`: scikit-learn's `balanced_accuracy_score` of the top-1
//!   predictions: the mean over the classes that occur among the labels of
//!   (correct predictions / samples) for that class. Classes without samples are left out.
//!
//! Ties between class scores are broken by the lower class index, like `argmax` (the
//! prediction clip_benchmark uses for the confusion matrix and per-class recall).

use super::matrix::{rank_of, ScoreMatrix};
use super::report::Metrics;
use crate::{Error, Result};

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    n_classes: usize,
    /// Row-major: `counts[truth * n_classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An all-zero matrix for `n_classes` classes.
    pub fn new(n_classes: usize) -> Self {
        ConfusionMatrix {
            n_classes,
            counts: vec![0; n_classes * n_classes],
        }
    }

    /// Records one prediction. Panics if a class index is out of range.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        assert!(truth < self.n_classes && predicted < self.n_classes);
        self.counts[truth * self.n_classes + predicted] += 1;
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Samples of class `truth` predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.n_classes + predicted]
    }

    /// Samples whose true class is `truth`.
    pub fn support(&self, truth: usize) -> u64 {
        (0..self.n_classes).map(|p| self.count(truth, p)).sum()
    }

    /// Recall of each class (correct / support), `None` for classes without samples.
    pub fn per_class_recall(&self) -> Vec<Option<f64>> {
        (0..self.n_classes)
            .map(|c| {
                let support = self.support(c);
                (support > 0).then(|| self.count(c, c) as f64 / support as f64)
            })
            .collect()
    }

    /// Mean of [`ConfusionMatrix::per_class_recall`] over classes with samples (balanced
    /// accuracy); NaN when there are no samples.
    pub fn mean_per_class_recall(&self) -> f64 {
        let recalls: Vec<f64> = self.per_class_recall().into_iter().flatten().collect();
        recalls.iter().sum::<f64>() / recalls.len() as f64
    }

    /// The largest cell count.
    pub fn max_count(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }
}

/// Classification metrics of a set of logits.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationMetrics {
    /// Top-1 accuracy, in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy, in [0, 1]; NaN with fewer than 5 classes.
    pub top5: f64,
    /// Balanced accuracy (mean per-class recall), in [0, 1].
    pub mean_per_class_recall: f64,
    /// Confusion matrix of the top-1 predictions.
    pub confusion: ConfusionMatrix,
}

impl ClassificationMetrics {
    /// `acc1`, `acc5`, `mean_per_class_recall`, under clip_benchmark's names.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = Metrics::new();
        metrics.push("acc1", self.top1);
        metrics.push("acc5", self.top5);
        metrics.push("mean_per_class_recall", self.mean_per_class_recall);
        metrics
    }
}

/// Metrics from logits `[n_samples × n_classes]` and the true class of each sample.
pub fn classification_metrics(
    logits: &ScoreMatrix,
    labels: &[usize],
) -> Result<ClassificationMetrics> {
    check_labels(logits, labels)?;
    let mut confusion = ConfusionMatrix::new(logits.cols());
    for (sample, &label) in labels.iter().enumerate() {
        confusion.add(label, argmax(logits.row(sample)));
    }
    let top5 = if logits.cols() >= 5 {
        top_k_accuracy(logits, labels, 5)?
    } else {
        f64::NAN
    };
    Ok(ClassificationMetrics {
        top1: top_k_accuracy(logits, labels, 1)?,
        top5,
        mean_per_class_recall: confusion.mean_per_class_recall(),
        confusion,
    })
}

/// Fraction of samples whose label ranks among the `k` highest logits.
pub fn top_k_accuracy(logits: &ScoreMatrix, labels: &[usize], k: usize) -> Result<f64> {
    check_labels(logits, labels)?;
    if k == 0 {
        return Err(Error::InvalidArgument("top-k accuracy needs k >= 1".into()));
    }
    let hits = labels
        .iter()
        .enumerate()
        .filter(|&(sample, &label)| {
            let row = logits.row(sample);
            rank_of(row.iter().copied(), label, row[label]) < k
        })
        .count();
    Ok(hits as f64 / labels.len() as f64)
}

/// Index of the largest value, the first one on ties.
fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .reduce(|best, i| if row[i] > row[best] { i } else { best })
        .expect("at least one class")
}

fn check_labels(logits: &ScoreMatrix, labels: &[usize]) -> Result<()> {
    if logits.rows() == 0 || logits.cols() == 0 {
        return Err(Error::InvalidArgument(format!(
            "classification: empty logits ({} samples × {} classes)",
            logits.rows(),
            logits.cols()
        )));
    }
    if labels.len() != logits.rows() {
        return Err(Error::InvalidArgument(format!(
            "classification: {} labels for {} rows of logits",
            labels.len(),
            logits.rows()
        )));
    }
    if let Some((sample, label)) = labels.iter().enumerate().find(|(_, &l)| l >= logits.cols()) {
        return Err(Error::InvalidArgument(format!(
            "classification: sample {sample} has label {label}, but there are {} classes",
            logits.cols()
        )));
    }
    Ok(())
}
