//! `internvl::processing` against Pillow, transformers and torchvision.
//!
//! References come from `scripts/gen_processing_refs.py` (Pillow 13.0.0, transformers
//! 4.37.2), `scripts/gen_grid_orders.py` (CPython 3.11) and the project's model fixtures
//! (official preprocessing code). Pixels must be identical; float tensors must agree to
//! 1e-6 relative. Every comparison prints its numbers (`cargo test -- --nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use internvl::processing::image::{decode_rgb, load_rgb};
use internvl::processing::resize::resize_bicubic;
use internvl::processing::transforms::{
    candidate_grids, closest_grid, dynamic_preprocess, resize_and_normalize, to_normalized_tensor,
    ClipImageProcessor, IMAGENET_MEAN, IMAGENET_STD,
};
use serde_json::Value;

/// Relative tolerance (max|diff| / max|ref|) for float tensors.
const FLOAT_TOLERANCE: f32 = 1e-6;

fn workspace_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixtures() -> PathBuf {
    workspace_fixtures().join("processing")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn refs_index() -> Value {
    read_json(&fixtures().join("refs.json"))
}

fn float_refs() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("refs_float.safetensors"), &Device::Cpu).unwrap()
}

/// A reference PNG written by Pillow, read with the `image` crate directly (not through
/// the code under test).
fn reference_png(relative: &str) -> RgbImage {
    image::open(fixtures().join(relative)).unwrap().to_rgb8()
}

fn as_u32(value: &Value) -> u32 {
    value.as_u64().expect("an unsigned integer") as u32
}

// --- Synthetic images: must stay identical to `synth()` in gen_processing_refs.py ---

fn mix32(x: u64, y: u64, c: u64, seed: u64) -> u64 {
    const MASK: u64 = 0xFFFF_FFFF;
    let mut h = (x * 0x9E37_79B1 + y * 0x85EB_CA77 + c * 0xC2B2_AE3D + seed * 0x27D4_EB2F) & MASK;
    h ^= h >> 15;
    h = (h * 0x2C1B_3C6D) & MASK;
    h ^= h >> 12;
    h = (h * 0x297A_2D39) & MASK;
    h ^ (h >> 15)
}

/// Gradients + a sharp-edged checkerboard + hashed noise of amplitude `noise`.
fn synth(width: u32, height: u32, seed: u64, noise: i64) -> RgbImage {
    let (w, h) = (i64::from(width), i64::from(height));
    RgbImage::from_fn(width, height, |x, y| {
        let (xi, yi) = (i64::from(x), i64::from(y));
        let base = [
            xi * 255 / (w - 1).max(1),
            yi * 255 / (h - 1).max(1),
            (xi + yi) * 255 / (w + h - 2).max(1),
        ];
        let block = if (xi / 7 + yi / 5) % 2 == 1 { 64 } else { 0 };
        image::Rgb(std::array::from_fn(|c| {
            let hash = mix32(x.into(), y.into(), c as u64, seed);
            let jitter = (hash % (2 * noise as u64 + 1)) as i64 - noise;
            (base[c] * 3 / 4 + block + jitter).clamp(0, 255) as u8
        }))
    })
}

fn synth_from(spec: &Value) -> RgbImage {
    let spec: Vec<u64> = spec
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    synth(spec[0] as u32, spec[1] as u32, spec[2], spec[3] as i64)
}

// --- Comparisons ---

/// (pixels that differ, largest channel difference).
fn pixel_differences(actual: &RgbImage, reference: &RgbImage) -> (usize, u8) {
    assert_eq!(actual.dimensions(), reference.dimensions(), "image size");
    actual
        .pixels()
        .zip(reference.pixels())
        .fold((0, 0), |(count, worst), (a, r)| {
            let diff =
                a.0.iter()
                    .zip(r.0)
                    .map(|(&a, r)| a.abs_diff(r))
                    .max()
                    .unwrap();
            (count + usize::from(diff > 0), worst.max(diff))
        })
}

/// Prints the comparison and returns whether the images are identical.
fn report_pixels(label: &str, actual: &RgbImage, reference: &RgbImage) -> bool {
    let (differing, worst) = pixel_differences(actual, reference);
    let total = reference.width() * reference.height();
    println!("{label:<58} {differing:>6} of {total:>7} pixels differ (max |diff| {worst})");
    differing == 0
}

/// max|a - b| / max|b|.
fn relative_difference(actual: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(actual.dims(), reference.dims(), "tensor shape");
    let a = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let r = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = a
        .iter()
        .zip(&r)
        .map(|(a, r)| (a - r).abs())
        .fold(0f32, f32::max);
    let scale = r.iter().map(|r| r.abs()).fold(0f32, f32::max);
    diff / scale.max(f32::MIN_POSITIVE)
}

fn report_tensor(label: &str, actual: &Tensor, reference: &Tensor) -> bool {
    let rel = relative_difference(actual, reference);
    println!("{label:<58} max|diff|/max|ref| = {rel:.3e}");
    rel <= FLOAT_TOLERANCE
}

fn assert_all(ok: Vec<bool>, what: &str) {
    let failures = ok.iter().filter(|&&ok| !ok).count();
    assert_eq!(failures, 0, "{failures} of {} {what} differ", ok.len());
}

// --- Decoding, resizing and tiling against Pillow ---

#[test]
fn decoding_matches_pillow_convert_rgb() {
    let index = refs_index();
    let results = index["decode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let image = case["image"].as_str().unwrap();
            let decoded = load_rgb(&fixtures().join(image)).unwrap();
            let label = format!("{image} ({})", case["pil_mode"].as_str().unwrap());
            report_pixels(
                &label,
                &decoded,
                &reference_png(case["ref"].as_str().unwrap()),
            )
        })
        .collect();
    assert_all(results, "decoded images");
}

#[test]
fn bicubic_resize_matches_pillow() {
    let index = refs_index();
    let results = index["resize"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let source = synth_from(&case["synth"]);
            let (width, height) = (as_u32(&case["width"]), as_u32(&case["height"]));
            let resized = resize_bicubic(&source, width, height);
            let label = format!(
                "resize {}x{} -> {width}x{height}",
                source.width(),
                source.height()
            );
            report_pixels(
                &label,
                &resized,
                &reference_png(case["ref"].as_str().unwrap()),
            )
        })
        .collect();
    assert_all(results, "resized images");
}

#[test]
fn dynamic_preprocess_matches_internvl() {
    let index = refs_index();
    let mut results = Vec::new();
    for case in index["tiling"].as_array().unwrap() {
        let source = synth_from(&case["synth"]);
        let (min_num, max_num) = (as_u32(&case["min_num"]), as_u32(&case["max_num"]));
        let size = as_u32(&case["image_size"]);
        let grid = closest_grid(source.width(), source.height(), min_num, max_num, size);
        let expected_grid = (as_u32(&case["grid"][0]), as_u32(&case["grid"][1]));
        assert_eq!(grid, expected_grid, "grid of {:?}", case["synth"]);
        let tiles = dynamic_preprocess(
            &source,
            min_num,
            max_num,
            size,
            case["use_thumbnail"].as_bool().unwrap(),
        );
        assert_eq!(tiles.len(), case["num_tiles"].as_u64().unwrap() as usize);
        let stacked = reference_png(case["ref"].as_str().unwrap());
        for (k, tile) in tiles.iter().enumerate() {
            let reference =
                image::imageops::crop_imm(&stacked, 0, k as u32 * size, size, size).to_image();
            let label = format!(
                "tile {k} of {}x{} grid {grid:?} at {size}px",
                source.width(),
                source.height()
            );
            results.push(report_pixels(&label, tile, &reference));
        }
    }
    assert_all(results, "tiles");
}

#[test]
fn candidate_grid_order_matches_cpython() {
    let orders = read_json(&fixtures().join("grid_orders.json"));
    let cases = orders["cases"].as_array().unwrap();
    for case in cases {
        let (min_num, max_num) = (as_u32(&case["min_num"]), as_u32(&case["max_num"]));
        let expected: Vec<(u32, u32)> = case["grids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (as_u32(&g[0]), as_u32(&g[1])))
            .collect();
        assert_eq!(
            candidate_grids(min_num, max_num),
            expected,
            "min_num {min_num}, max_num {max_num}"
        );
    }
    println!(
        "candidate grid order identical to CPython {} for {} (min_num, max_num) cases",
        orders["python"],
        cases.len()
    );
}

#[test]
fn grid_choice_matches_the_internvl_examples() {
    // (width, height, max_num) -> (grid, tiles including the thumbnail), image_size 448.
    let cases = [
        (448, 448, 12, (1, 1), 1),
        (800, 800, 12, (2, 2), 5),
        (1000, 1000, 12, (3, 3), 10),
        (1000, 600, 12, (3, 2), 7),
        (1920, 1080, 12, (4, 2), 9),
        (500, 2000, 12, (1, 4), 5),
        (640, 480, 12, (4, 3), 13),
        (300, 200, 12, (3, 2), 7),
        (1000, 800, 6, (3, 2), 7),
    ];
    for (width, height, max_num, grid, tiles) in cases {
        assert_eq!(
            closest_grid(width, height, 1, max_num, 448),
            grid,
            "{width}x{height} max {max_num}"
        );
        let (columns, rows) = grid;
        let count = columns * rows + u32::from(columns * rows != 1);
        assert_eq!(count, tiles, "{width}x{height}");
    }
    // Tile count check through the real pipeline on a cheap image of the same shape.
    let tiles = dynamic_preprocess(&synth(300, 200, 1, 10), 1, 12, 448, true);
    assert_eq!(tiles.len(), 7);
    assert!(tiles.iter().all(|t| t.dimensions() == (448, 448)));
}

// --- Float outputs ---

#[test]
fn clip_image_processor_matches_transformers() {
    let index = refs_index();
    let floats = float_refs();
    let results = index["clip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let config = fixtures().join(case["config"].as_str().unwrap());
            let processor = ClipImageProcessor::from_file(&config).unwrap();
            let actual = processor.preprocess(&synth_from(&case["synth"])).unwrap();
            let name = case["tensor"].as_str().unwrap();
            report_tensor(name, &actual, &floats[name])
        })
        .collect();
    assert_all(results, "CLIP outputs");
}

#[test]
fn to_tensor_normalize_matches_torchvision_semantics() {
    let index = refs_index();
    let floats = float_refs();
    for case in index["to_tensor"].as_array().unwrap() {
        let actual = to_normalized_tensor(&synth_from(&case["synth"]), IMAGENET_MEAN, IMAGENET_STD);
        let name = case["tensor"].as_str().unwrap();
        let reference = &floats[name];
        let (a, r) = (
            actual.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            reference.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let differing = a
            .iter()
            .zip(&r)
            .filter(|(a, r)| a.to_bits() != r.to_bits())
            .count();
        println!(
            "{name:<58} {differing} of {} values differ bitwise",
            r.len()
        );
        assert_eq!(actual.dims(), reference.dims());
        assert_eq!(differing, 0);
    }
}

/// Both model fixtures: `inputs/pixel_values` (CLIPImageProcessor of the model folder)
/// and every `inputs/pixel_values_HxW` (torchvision Resize/ToTensor/Normalize).
#[test]
fn project_fixture_pixel_values_are_reproduced() {
    let mut results = Vec::new();
    for case in ["intern_vit_6b_style", "intern_vit_300m_style"] {
        let root = workspace_fixtures().join(case);
        let golden =
            candle_core::safetensors::load(root.join("expected.safetensors"), &Device::Cpu)
                .unwrap();
        let inputs = read_json(&root.join("inputs/inputs.json"));
        let images: Vec<RgbImage> = inputs["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|img| load_rgb(&root.join(img["file"].as_str().unwrap())).unwrap())
            .collect();

        let processor =
            ClipImageProcessor::from_file(&root.join("model/preprocessor_config.json")).unwrap();
        let pixel_values = processor.preprocess_batch(&images).unwrap();
        results.push(report_tensor(
            &format!("{case} inputs/pixel_values"),
            &pixel_values,
            &golden["inputs/pixel_values"],
        ));

        for hw in inputs["interp_sizes_hw"].as_array().unwrap() {
            let (height, width) = (as_u32(&hw[0]), as_u32(&hw[1]));
            let resized: Vec<Tensor> = images
                .iter()
                .map(|img| resize_and_normalize(img, height, width).unwrap())
                .collect();
            let batch = Tensor::stack(&resized, 0).unwrap();
            let key = format!("inputs/pixel_values_{height}x{width}");
            results.push(report_tensor(
                &format!("{case} {key}"),
                &batch,
                &golden[&key],
            ));
        }
    }
    assert_all(results, "fixture tensors");
}

// --- Bad and extreme inputs ---

/// A per-process scratch file; the directory is the system temp dir.
fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("internvl-processing-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    let message = load_rgb(path).unwrap_err().to_string();
    println!("{}: {message}", path.file_name().unwrap().to_string_lossy());
    message
}

/// A PNG made of a signature and an IHDR chunk only.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bytes.extend(width.to_be_bytes());
    bytes.extend(height.to_be_bytes());
    bytes.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]); // depth, colour type, methods, (bad) CRC
    bytes
}

#[test]
fn missing_file_error_names_the_path() {
    let path = fixtures().join("images/does_not_exist.png");
    let message = load_error(&path);
    assert!(message.contains("does_not_exist.png"), "{message}");
}

#[test]
fn truncated_png_is_reported() {
    let full = std::fs::read(fixtures().join("images/png_rgb8.png")).unwrap();
    let path = scratch_file("truncated.png", &full[..full.len() / 2]);
    let message = load_error(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(message.contains("truncated.png"), "{message}");
    assert!(message.contains("truncated or corrupt PNG"), "{message}");
}

#[test]
fn truncated_jpeg_is_reported() {
    let full = std::fs::read(fixtures().join("images/jpeg_rgb_420.jpg")).unwrap();
    let message = decode_rgb(&full[..full.len() / 2], "half.jpg")
        .unwrap_err()
        .to_string();
    println!("half.jpg: {message}");
    assert!(
        message.contains("half.jpg") && message.contains("truncated or corrupt JPEG"),
        "{message}"
    );
}

#[test]
fn non_image_file_is_reported() {
    let path = scratch_file("notes.png", b"just some text, not an image\n");
    let message = load_error(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(message.contains("notes.png"), "{message}");
    assert!(
        message.contains("not a supported image format (PNG, JPEG, WebP, GIF, BMP)"),
        "{message}"
    );
}

#[test]
fn zero_size_image_is_reported() {
    for (width, height) in [(0, 0), (0, 10), (10, 0)] {
        let message = decode_rgb(&png_header(width, height), "empty.png")
            .unwrap_err()
            .to_string();
        println!("{width}x{height}: {message}");
        assert!(
            message.contains("empty.png") && message.contains("image has zero width or height"),
            "{message}"
        );
    }
}

#[test]
fn absurd_dimensions_are_rejected_before_allocation() {
    let message = decode_rgb(&png_header(100_000, 100_000), "huge.png")
        .unwrap_err()
        .to_string();
    println!("100000x100000: {message}");
    assert!(
        message.contains("huge.png") && message.contains("too large"),
        "{message}"
    );
}

#[test]
fn one_pixel_image_resizes_and_tiles() {
    let pixel = synth(1, 1, 3, 50);
    let tensor = resize_and_normalize(&pixel, 56, 56).unwrap();
    assert_eq!(tensor.dims(), &[3, 56, 56]);
    let tiles = dynamic_preprocess(&pixel, 1, 12, 56, true);
    // 1x1 is square: grid (1, 1), and no thumbnail for a single tile.
    assert_eq!(tiles.len(), 1);
    assert!(tiles[0].pixels().all(|p| p == pixel.get_pixel(0, 0)));
}

#[test]
fn very_wide_image_resizes_and_tiles() {
    let wide = synth(20_000, 1, 4, 30);
    assert_eq!(
        resize_and_normalize(&wide, 448, 448).unwrap().dims(),
        &[3, 448, 448]
    );
    let message = resize_and_normalize(&wide, 0, 448).unwrap_err().to_string();
    assert!(message.contains("sizes must be positive"), "{message}");
    assert_eq!(closest_grid(20_000, 1, 1, 12, 448), (12, 1));
    let tiles = dynamic_preprocess(&wide, 1, 12, 448, true);
    assert_eq!(tiles.len(), 13);
    assert!(tiles.iter().all(|t| t.dimensions() == (448, 448)));
}

#[test]
fn unsupported_resample_is_a_config_error() {
    let path = scratch_file(
        "preprocessor_config.json",
        br#"{"size": 224, "resample": 2}"#,
    );
    let message = ClipImageProcessor::from_file(&path)
        .unwrap_err()
        .to_string();
    std::fs::remove_file(&path).unwrap();
    println!("{message}");
    assert!(
        message.contains("preprocessor_config.json") && message.contains("resample = 2"),
        "{message}"
    );
}
