//! A borrowed row-major score matrix (similarities or logits).

use crate::{Error, Result};

/// A read-only view of a row-major `rows × cols` matrix of scores.
#[derive(Debug, Clone, Copy)]
pub struct ScoreMatrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> ScoreMatrix<'a> {
    /// Wraps `data` as a `rows × cols` matrix. Fails when the length does not match or when
    /// a score is NaN (NaN has no rank).
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::InvalidArgument(format!(
                "score matrix: {} values cannot form {rows} × {cols}",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| v.is_nan()) {
            return Err(Error::InvalidArgument(format!(
                "score matrix: NaN at row {}, column {}",
                i / cols,
                i % cols
            )));
        }
        Ok(ScoreMatrix { data, rows, cols })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The score at (`row`, `col`).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.data[row * self.cols + col]
    }

    /// One row.
    pub fn row(&self, row: usize) -> &'a [f32] {
        &self.data[row * self.cols..(row + 1) * self.cols]
    }
}

/// How many of `scores` rank strictly before item `item`, in descending score order with
/// ties broken by lower index (a stable descending sort).
pub(crate) fn rank_of(scores: impl Iterator<Item = f32>, item: usize, score: f32) -> usize {
    scores
        .enumerate()
        .filter(|&(j, s)| s > score || (s == score && j < item))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_nan_are_checked() {
        assert!(ScoreMatrix::new(&[0.0; 6], 2, 3).is_ok());
        assert!(ScoreMatrix::new(&[0.0; 6], 4, 2).is_err());
        assert!(ScoreMatrix::new(&[0.0, f32::NAN], 1, 2).is_err());
    }

    #[test]
    fn ties_rank_by_index() {
        let s = [0.5, 0.9, 0.5, 0.1];
        assert_eq!(rank_of(s.iter().copied(), 0, 0.5), 1);
        assert_eq!(rank_of(s.iter().copied(), 2, 0.5), 2);
        assert_eq!(rank_of(s.iter().copied(), 1, 0.9), 0);
    }
}
