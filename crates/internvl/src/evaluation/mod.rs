//! Metrics and reports of the evaluation harness: pure functions over scores and strings,
//! reproducing the reference tools the InternVL numbers were produced with.
//!
//! * Captioning ([`captioning`]): BLEU-1..4 and CIDEr-D exactly as pycocoevalcap, after the
//!   same PTB tokenisation ([`ptb`]).
//! * Retrieval ([`retrieval`]): image→text and text→image recall@k as clip_benchmark, from
//!   a similarity matrix; test-set readers in [`retrieval_data`].
//! * Zero-shot classification ([`classification`]): top-1/top-5 accuracy, mean per-class
//!   recall and the confusion matrix, drawn as a PNG by [`confusion_png`]; set readers in
//!   [`zeroshot_data`].
//! * Reports ([`report`]): a serialisable [`EvalResult`] and a Markdown table.
//!
//! Metric values are fractions in [0, 1] (CIDEr on its ×10 scale), as the reference tools
//! print them; the Markdown table shows them ×100.

pub mod captioning;
pub mod classification;
pub mod confusion_png;
pub mod matrix;
pub mod ptb;
pub mod report;
pub mod retrieval;
pub mod retrieval_data;
pub mod zeroshot_data;

pub use captioning::{bleu, cider_d, evaluate_captions, CaptionScores};
pub use classification::{
    classification_metrics, top_k_accuracy, ClassificationMetrics, ConfusionMatrix,
};
pub use confusion_png::{render_confusion_matrix, save_confusion_matrix_png};
pub use matrix::ScoreMatrix;
pub use ptb::{PtbTokenizer, COCO_PUNCTUATION};
pub use report::{markdown_table, EvalResult, EvalTask, Metrics};
pub use retrieval::{retrieval_recall, RetrievalRecall, RECALL_KS};
pub use retrieval_data::{pre_caption, RetrievalDataset};
pub use zeroshot_data::{ZeroShotDataset, IMAGE_EXTENSIONS};
