//! InternVL-Chat's `load_image` (dynamic tiling + per-tile transform) against the pixel tensors the
//! official code produced for the chat fixtures (one case with tile size 84 and max 6 tiles incl.
//! the square-image tie-break, one with tile size 56).

mod common;

use candle_core::Tensor;
use common::{assert_close, expected, fixture};
use internvl::processing::load_rgb;
use internvl::processing::transforms::{dynamic_preprocess, resize_and_normalize};

fn check(case: &str) {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(case).join("model/config.json")).unwrap(),
    )
    .unwrap();
    let size = config["force_image_size"].as_u64().unwrap() as u32;
    let max_tiles = config["max_dynamic_patch"].as_u64().unwrap() as u32;
    let min_tiles = config["min_dynamic_patch"].as_u64().unwrap() as u32;
    let thumbnail = config["use_thumbnail"].as_bool().unwrap();
    let inputs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(case).join("inputs/inputs.json")).unwrap(),
    )
    .unwrap();
    let golden = expected(case);
    for (i, image) in inputs["images"].as_array().unwrap().iter().enumerate() {
        let path = fixture(case).join(image["file"].as_str().unwrap());
        let tiles = dynamic_preprocess(
            &load_rgb(&path).unwrap(),
            min_tiles,
            max_tiles,
            size,
            thumbnail,
        );
        let pixels: Vec<Tensor> = tiles
            .iter()
            .map(|t| resize_and_normalize(t, size, size).unwrap())
            .collect();
        let pixels = Tensor::stack(&pixels, 0).unwrap();
        let reference = &golden[&format!("inputs/pixel_values_img{i}")];
        assert_eq!(
            pixels.dims(),
            reference.dims(),
            "{case} image {i}: tile count"
        );
        assert_close(
            &format!("{case} pixel_values_img{i}"),
            &pixels,
            reference,
            1e-6,
        );
    }
}

#[test]
fn qwen2_case_tiles_match_official() {
    check("internvl_chat_qwen2");
}

#[test]
fn internlm2_case_tiles_match_official() {
    check("internvl_chat_internlm2");
}
