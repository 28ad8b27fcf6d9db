//! Caption metrics as pycocoevalcap computes them: BLEU-1..4 and CIDEr-D.
//!
//! [`bleu`] and [`cider_d`] take captions that are already tokenised (tokens separated by
//! white space), like pycocoevalcap's scorers; [`evaluate_captions`] tokenises raw
//! captions with [`PtbTokenizer`] first, like `COCOEvalCap.evaluate`.
//!
//! Both scorers take the references and candidates keyed by image id in [`BTreeMap`]s: key
//! order fixes the tokenisation order (see [`PtbTokenizer::ptb_tokens`]) and the order of
//! floating-point sums, so results are reproducible. The key sets must be equal, as
//! pycocoevalcap asserts.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use super::ptb::PtbTokenizer;
use super::report::Metrics;
use crate::{Error, Result};

/// Longest n-gram used by both metrics.
const MAX_N: usize = 4;

/// CIDEr-D's length-penalty width (pycocoevalcap's `sigma`).
const CIDER_SIGMA: f64 = 6.0;

/// Scores of a set of candidate captions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptionScores {
    /// BLEU-1, BLEU-2, BLEU-3, BLEU-4 (corpus level), in [0, 1].
    pub bleu: [f64; 4],
    /// CIDEr-D, mean over images (×10 scale: 1.28 is reported as "128.2").
    pub cider: f64,
}

impl CaptionScores {
    /// `Bleu_1`..`Bleu_4` and `CIDEr`, under pycocoevalcap's names.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = Metrics::new();
        for (n, score) in self.bleu.iter().enumerate() {
            metrics.push(format!("Bleu_{}", n + 1), *score);
        }
        metrics.push("CIDEr", self.cider);
        metrics
    }
}

/// Tokenises references and candidates with [`PtbTokenizer`] (references first, each batch
/// in key order, as pycocoevalcap does) and scores them with [`bleu`] and [`cider_d`].
pub fn evaluate_captions<K: Ord + Clone + Debug>(
    references: &BTreeMap<K, Vec<String>>,
    candidates: &BTreeMap<K, String>,
) -> Result<CaptionScores> {
    check_keys(references, candidates)?;
    let tokenizer = PtbTokenizer::new();
    let flat_refs: Vec<&String> = references.values().flatten().collect();
    let mut tokenised_refs = tokenizer.tokenize(&flat_refs).into_iter();
    let references: BTreeMap<K, Vec<String>> = references
        .iter()
        .map(|(id, refs)| {
            (
                id.clone(),
                tokenised_refs.by_ref().take(refs.len()).collect(),
            )
        })
        .collect();
    let cand_texts: Vec<&String> = candidates.values().collect();
    let candidates: BTreeMap<K, String> = candidates
        .keys()
        .cloned()
        .zip(tokenizer.tokenize(&cand_texts))
        .collect();
    Ok(CaptionScores {
        bleu: bleu(&references, &candidates)?,
        cider: cider_d(&references, &candidates)?,
    })
}

/// The same image ids on both sides, at least one, each with at least one reference.
fn check_keys<K: Ord + Debug, R, C>(
    references: &BTreeMap<K, Vec<R>>,
    candidates: &BTreeMap<K, C>,
) -> Result<()> {
    if candidates.is_empty() {
        return Err(Error::InvalidArgument(
            "caption evaluation: no candidate captions".into(),
        ));
    }
    if let Some(id) = candidates.keys().find(|id| !references.contains_key(id)) {
        return Err(Error::InvalidArgument(format!(
            "caption evaluation: image {id:?} has a candidate but no references"
        )));
    }
    if let Some(id) = references.keys().find(|id| !candidates.contains_key(id)) {
        return Err(Error::InvalidArgument(format!(
            "caption evaluation: image {id:?} has references but no candidate"
        )));
    }
    if let Some((id, _)) = references.iter().find(|(_, refs)| refs.is_empty()) {
        return Err(Error::InvalidArgument(format!(
            "caption evaluation: image {id:?} has an empty reference list"
        )));
    }
    Ok(())
}

/// Counts of every n-gram (n = 1..=4) of a tokenised sentence, in order of first
/// occurrence (n-grams by n, then by position), which is the order in which pycocoevalcap's
/// dictionaries iterate: floating-point sums then run in the same order.
#[derive(Default)]
struct NgramCounts<'a> {
    entries: Vec<(&'a [&'a str], usize)>,
    index: HashMap<&'a [&'a str], usize>,
}

impl<'a> NgramCounts<'a> {
    fn of(words: &'a [&'a str]) -> Self {
        let mut counts = NgramCounts::default();
        for n in 1..=MAX_N {
            for gram in words.windows(n) {
                counts.add(gram, 1);
            }
        }
        counts
    }

    fn add(&mut self, gram: &'a [&'a str], count: usize) {
        match self.index.get(gram) {
            Some(&i) => self.entries[i].1 += count,
            None => {
                self.index.insert(gram, self.entries.len());
                self.entries.push((gram, count));
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&'a [&'a str], usize)> + '_ {
        self.entries.iter().copied()
    }
}

fn split_words(sentence: &str) -> Vec<&str> {
    sentence.split_whitespace().collect()
}

/// Corpus BLEU-1..4 of tokenised captions, exactly as pycocoevalcap's `Bleu(4)`.
///
/// Clipped n-gram matches and candidate n-gram counts are summed over the corpus; the
/// reference length of each image is the reference length closest to the candidate's (the
/// shorter one on ties); BLEU-n is the geometric mean of the first n precisions, each
/// computed as `(matches + 1e-15) / (total + 1e-9)`, times the brevity penalty
/// `exp(1 - r/c)` when the candidates are shorter than the references.
pub fn bleu<K: Ord + Debug>(
    references: &BTreeMap<K, Vec<String>>,
    candidates: &BTreeMap<K, String>,
) -> Result<[f64; 4]> {
    check_keys(references, candidates)?;
    let mut totals = BleuTotals::default();
    for (id, candidate) in candidates {
        totals.add(candidate, &references[id]);
    }
    Ok(totals.scores())
}

/// The sufficient statistics of corpus BLEU.
#[derive(Default)]
struct BleuTotals {
    candidate_len: usize,
    reference_len: usize,
    /// Candidate n-grams, per n.
    guesses: [usize; MAX_N],
    /// Candidate n-grams matched in a reference (clipped by the reference maximum), per n.
    matches: [usize; MAX_N],
}

impl BleuTotals {
    fn add(&mut self, candidate: &str, references: &[String]) {
        let cand_words = split_words(candidate);
        let ref_words: Vec<Vec<&str>> = references.iter().map(|r| split_words(r)).collect();
        let len = cand_words.len();
        self.candidate_len += len;
        self.reference_len += closest_length(len, &ref_words);
        let max_ref_counts = max_counts(&ref_words);
        for (gram, count) in NgramCounts::of(&cand_words).iter() {
            let clip = max_ref_counts.get(gram).copied().unwrap_or(0);
            self.matches[gram.len() - 1] += count.min(clip);
        }
        for n in 1..=MAX_N {
            self.guesses[n - 1] += (len + 1).saturating_sub(n);
        }
    }

    fn scores(&self) -> [f64; 4] {
        const TINY: f64 = 1e-15;
        const SMALL: f64 = 1e-9;
        let mut product = 1.0;
        let mut scores = [0.0; MAX_N];
        for (k, score) in scores.iter_mut().enumerate() {
            product *= (self.matches[k] as f64 + TINY) / (self.guesses[k] as f64 + SMALL);
            *score = product.powf(1.0 / (k + 1) as f64);
        }
        let ratio = (self.candidate_len as f64 + TINY) / (self.reference_len as f64 + SMALL);
        if ratio < 1.0 {
            let penalty = (1.0 - 1.0 / ratio).exp();
            scores.iter_mut().for_each(|s| *s *= penalty);
        }
        scores
    }
}

/// The reference length closest to `len`; the shorter one wins ties.
fn closest_length(len: usize, references: &[Vec<&str>]) -> usize {
    references
        .iter()
        .map(|r| r.len())
        .min_by_key(|&r| (r.abs_diff(len), r))
        .unwrap_or(0)
}

/// For each n-gram, its largest count in any one reference.
fn max_counts<'a>(references: &'a [Vec<&'a str>]) -> HashMap<&'a [&'a str], usize> {
    let mut max = HashMap::new();
    for words in references {
        for (gram, count) in NgramCounts::of(words).iter() {
            let entry = max.entry(gram).or_insert(0);
            *entry = (*entry).max(count);
        }
    }
    max
}

/// CIDEr-D of tokenised captions, exactly as pycocoevalcap's `Cider()`.
///
/// For n = 1..=4, every sentence becomes a TF-IDF vector of its n-grams, with document
/// frequencies counted over the reference sets of the evaluated images (an n-gram counts
/// once per image) and IDF `ln(N) - ln(max(1, df))`. The candidate is compared with each
/// reference by a cosine in which candidate weights are clipped by the reference weights,
/// multiplied by `exp(-δ²/72)` where δ is the difference of the two sentences' bigram
/// counts (pycocoevalcap's "length"); the score averages over n and over references, is
/// scaled by 10, and the corpus score is the mean over images.
pub fn cider_d<K: Ord + Debug>(
    references: &BTreeMap<K, Vec<String>>,
    candidates: &BTreeMap<K, String>,
) -> Result<f64> {
    check_keys(references, candidates)?;
    let ref_words: Vec<Vec<Vec<&str>>> = candidates
        .keys()
        .map(|id| references[id].iter().map(|r| split_words(r)).collect())
        .collect();
    let ref_counts: Vec<Vec<NgramCounts>> = ref_words
        .iter()
        .map(|refs| refs.iter().map(|w| NgramCounts::of(w)).collect())
        .collect();
    let idf = Idf::new(&ref_counts);
    let cand_words: Vec<Vec<&str>> = candidates.values().map(|c| split_words(c)).collect();
    let per_image: Vec<f64> = cand_words
        .iter()
        .zip(&ref_counts)
        .map(|(cand, refs)| cider_image(&idf.vector(&NgramCounts::of(cand)), refs, &idf))
        .collect();
    Ok(per_image.iter().sum::<f64>() / per_image.len() as f64)
}

/// Document frequencies over the reference sets, and ln(number of images).
struct Idf<'a> {
    document_frequency: HashMap<&'a [&'a str], f64>,
    log_images: f64,
}

impl<'a> Idf<'a> {
    fn new(ref_counts: &[Vec<NgramCounts<'a>>]) -> Self {
        let mut document_frequency = HashMap::new();
        for refs in ref_counts {
            let mut grams: Vec<&[&str]> =
                refs.iter().flat_map(|c| c.iter().map(|(g, _)| g)).collect();
            grams.sort_unstable();
            grams.dedup();
            for gram in grams {
                *document_frequency.entry(gram).or_insert(0.0) += 1.0;
            }
        }
        Idf {
            document_frequency,
            log_images: (ref_counts.len() as f64).ln(),
        }
    }

    fn vector(&self, counts: &NgramCounts<'a>) -> TfIdf<'a> {
        let mut weights: [Vec<(&'a [&'a str], f64)>; MAX_N] = Default::default();
        let mut lookup: [HashMap<&'a [&'a str], f64>; MAX_N] = Default::default();
        let mut norms = [0.0; MAX_N];
        let mut bigrams = 0;
        for (gram, count) in counts.iter() {
            let df = self.document_frequency.get(gram).copied().unwrap_or(0.0);
            let weight = count as f64 * (self.log_images - df.max(1.0).ln());
            let n = gram.len() - 1;
            weights[n].push((gram, weight));
            lookup[n].insert(gram, weight);
            norms[n] += weight * weight;
            if n == 1 {
                // pycocoevalcap's sentence "length" is its number of bigrams.
                bigrams += count;
            }
        }
        TfIdf {
            weights,
            lookup,
            norms: norms.map(f64::sqrt),
            bigrams,
        }
    }
}

/// A sentence's TF-IDF vectors for n = 1..=4.
struct TfIdf<'a> {
    /// Weights in n-gram order (the order of the sums).
    weights: [Vec<(&'a [&'a str], f64)>; MAX_N],
    /// The same weights, for look-up.
    lookup: [HashMap<&'a [&'a str], f64>; MAX_N],
    norms: [f64; MAX_N],
    bigrams: usize,
}

fn cider_image(candidate: &TfIdf, references: &[NgramCounts], idf: &Idf) -> f64 {
    let mut sum = [0.0; MAX_N];
    for reference in references {
        let reference = idf.vector(reference);
        let similarity = clipped_cosine(candidate, &reference);
        sum.iter_mut().zip(similarity).for_each(|(s, v)| *s += v);
    }
    let mean_over_n = sum.iter().sum::<f64>() / MAX_N as f64;
    mean_over_n / references.len() as f64 * 10.0
}

/// Per-n clipped cosine similarity with the Gaussian length penalty.
fn clipped_cosine(candidate: &TfIdf, reference: &TfIdf) -> [f64; MAX_N] {
    let delta = candidate.bigrams as f64 - reference.bigrams as f64;
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * CIDER_SIGMA * CIDER_SIGMA));
    std::array::from_fn(|n| {
        let mut value: f64 = candidate.weights[n]
            .iter()
            .map(|&(gram, w)| {
                let r = reference.lookup[n].get(gram).copied().unwrap_or(0.0);
                w.min(r) * r
            })
            .fold(0.0, |sum, term| sum + term);
        if candidate.norms[n] != 0.0 && reference.norms[n] != 0.0 {
            value /= candidate.norms[n] * reference.norms[n];
        }
        value * penalty
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(refs: &[&str], cand: &str) -> (BTreeMap<u32, Vec<String>>, BTreeMap<u32, String>) {
        let refs = BTreeMap::from([(1, refs.iter().map(|s| s.to_string()).collect())]);
        (refs, BTreeMap::from([(1, cand.to_string())]))
    }

    #[test]
    fn identical_caption_has_bleu_one() {
        let (refs, cands) = one(&["a dog runs on the grass"], "a dog runs on the grass");
        for score in bleu(&refs, &cands).unwrap() {
            assert!((score - 1.0).abs() < 1e-9, "{score}");
        }
    }

    #[test]
    fn closest_reference_length_prefers_shorter_on_ties() {
        let refs = [vec!["a"; 4], vec!["a"; 6]];
        assert_eq!(closest_length(5, &refs), 4);
    }

    #[test]
    fn single_image_cider_is_zero() {
        // With one image every reference n-gram has idf ln(1) - ln(1) = 0.
        let (refs, cands) = one(&["a dog", "the dog"], "a dog");
        assert_eq!(cider_d(&refs, &cands).unwrap(), 0.0);
    }
}
