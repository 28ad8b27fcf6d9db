//! InternVL-Chat's dynamic high-resolution tiling (`dynamic_preprocess`).

use image::{imageops, RgbImage};

use super::py_set::PySet;
use crate::processing::resize::resize_bicubic;

/// The candidate `(columns, rows)` grids with `min_num <= columns * rows <= max_num`, in
/// exactly the order InternVL iterates them:
///
/// ```python
/// sorted(set((i, j) for n in range(min_num, max_num + 1)
///            for i in range(1, n + 1) for j in range(1, n + 1)
///            if min_num <= i * j <= max_num), key=lambda x: x[0] * x[1])
/// ```
///
/// Grids with the same tile count stay in CPython's set iteration order, which is
/// emulated (64-bit CPython 3.8+).
pub fn candidate_grids(min_num: u32, max_num: u32) -> Vec<(u32, u32)> {
    let mut set = PySet::new();
    for grid in first_occurrences(min_num, max_num) {
        set.add(grid);
    }
    let mut grids = set.into_ordered();
    // Stable, like Python's `sorted`.
    grids.sort_by_key(|&(columns, rows)| u64::from(columns) * u64::from(rows));
    grids
}

/// The grids of the Python generator in generation order, each at its first occurrence.
///
/// Adding an element a set already holds leaves the set untouched, so only first
/// occurrences matter. Skipping repeats (and impossible products) keeps this
/// O(max_num log max_num) instead of the generator's O(max_num^3).
fn first_occurrences(min_num: u32, max_num: u32) -> Vec<(u32, u32)> {
    let (min, max) = (u64::from(min_num), u64::from(max_num));
    let mut grids = Vec::new();
    for n in min..=max {
        // The other factors f of `side` with min <= side * f <= max, up to `limit`.
        let partners = |side: u64, limit: u64| min.div_ceil(side).max(1)..=(max / side).min(limit);
        if n == min {
            // The first round generates every (i, j) with i, j <= n.
            for i in 1..=n {
                grids.extend(partners(i, n).map(|j| (i, j)));
            }
        } else {
            // Later rounds only add grids with a side equal to n: (i, n) for i < n, then
            // (n, j), in the generator's i-major order.
            grids.extend(partners(n, n - 1).map(|i| (i, n)));
            grids.extend(partners(n, n).map(|j| (n, j)));
        }
    }
    grids
        .into_iter()
        .map(|(i, j)| (i as u32, j as u32))
        .collect()
}

/// InternVL's `find_closest_aspect_ratio`: the `(columns, rows)` grid whose aspect ratio
/// is closest to `width / height`. On an exact tie, a later candidate wins when the image
/// area exceeds half the grid's pixel area (`0.5 * image_size^2 * columns * rows`).
/// Returns `(1, 1)` when there is no candidate.
pub fn closest_grid(
    width: u32,
    height: u32,
    min_num: u32,
    max_num: u32,
    image_size: u32,
) -> (u32, u32) {
    let aspect_ratio = f64::from(width) / f64::from(height);
    let area = f64::from(width) * f64::from(height);
    let mut best = (1, 1);
    let mut best_diff = f64::INFINITY;
    for (columns, rows) in candidate_grids(min_num, max_num) {
        let diff = (aspect_ratio - f64::from(columns) / f64::from(rows)).abs();
        if diff < best_diff {
            best_diff = diff;
            best = (columns, rows);
        } else if diff == best_diff {
            // Same evaluation order as Python's `0.5 * image_size * image_size * i * j`.
            let half_grid_area = 0.5
                * f64::from(image_size)
                * f64::from(image_size)
                * f64::from(columns)
                * f64::from(rows);
            if area > half_grid_area {
                best = (columns, rows);
            }
        }
    }
    best
}

/// InternVL-Chat's `dynamic_preprocess`: resize the whole image (PIL bicubic) to the
/// closest grid of `image_size` tiles, cut the tiles row by row, and with
/// `use_thumbnail` append the whole image resized to `image_size` squared when there is
/// more than one tile. `image_size` must be at least 1 (0 yields no tiles).
pub fn dynamic_preprocess(
    img: &RgbImage,
    min_num: u32,
    max_num: u32,
    image_size: u32,
    use_thumbnail: bool,
) -> Vec<RgbImage> {
    if image_size == 0 {
        return Vec::new();
    }
    let (columns, rows) = closest_grid(img.width(), img.height(), min_num, max_num, image_size);
    let resized = resize_bicubic(img, image_size * columns, image_size * rows);
    let mut tiles: Vec<RgbImage> = (0..rows)
        .flat_map(|row| (0..columns).map(move |column| (column, row)))
        .map(|(column, row)| {
            imageops::crop_imm(
                &resized,
                column * image_size,
                row * image_size,
                image_size,
                image_size,
            )
            .to_image()
        })
        .collect();
    if use_thumbnail && tiles.len() != 1 {
        tiles.push(resize_bicubic(img, image_size, image_size));
    }
    tiles
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator exactly as written in Python, for comparison with the fast path.
    fn naive_first_occurrences(min_num: u32, max_num: u32) -> Vec<(u32, u32)> {
        let mut seen = Vec::new();
        for n in min_num..=max_num {
            for i in 1..=n {
                for j in 1..=n {
                    if (min_num..=max_num).contains(&(i * j)) && !seen.contains(&(i, j)) {
                        seen.push((i, j));
                    }
                }
            }
        }
        seen
    }

    #[test]
    fn first_occurrences_match_the_generator() {
        for min_num in 0..5 {
            for max_num in 0..30 {
                assert_eq!(
                    first_occurrences(min_num, max_num),
                    naive_first_occurrences(min_num, max_num),
                    "min {min_num} max {max_num}"
                );
            }
        }
    }

    #[test]
    fn empty_range_gives_the_default_grid() {
        assert!(candidate_grids(5, 4).is_empty());
        assert_eq!(closest_grid(100, 10, 5, 4, 448), (1, 1));
    }
}
