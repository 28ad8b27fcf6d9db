//! InternViT against the official outputs of the two fixture cases (both encoder families):
//! native size with all hidden states, and every position-embedding interpolation size.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, expected, fixture, F32_TOLERANCE};
use internvl::models::{InternVisionModel, ModelFolder};

fn load(case: &str) -> InternVisionModel {
    let folder = ModelFolder::open(&fixture(case).join("model")).unwrap();
    folder.load_vision(DType::F32, &Device::Cpu).unwrap()
}

fn check_case(case: &str) {
    let model = load(case);
    let golden = expected(case);
    let pixels = &golden["inputs/pixel_values"];
    let out = model.forward(pixels, true).unwrap();
    assert_close(
        &format!("{case} native/last_hidden_state"),
        &out.last_hidden_state,
        &golden["native/last_hidden_state"],
        F32_TOLERANCE,
    );
    assert_close(
        &format!("{case} native/pooler_output"),
        &out.pooler_output,
        &golden["native/pooler_output"],
        F32_TOLERANCE,
    );
    let states = Tensor::stack(&out.hidden_states.unwrap(), 0).unwrap();
    assert_close(
        &format!("{case} native/hidden_states"),
        &states,
        &golden["native/hidden_states"],
        F32_TOLERANCE,
    );

    let mut sizes: Vec<&str> = golden
        .keys()
        .filter_map(|k| k.strip_prefix("inputs/pixel_values_"))
        .collect();
    sizes.sort();
    assert!(!sizes.is_empty(), "{case} has interpolation cases");
    for size in sizes {
        let out = model
            .forward(&golden[&format!("inputs/pixel_values_{size}")], false)
            .unwrap();
        for what in ["last_hidden_state", "pooler_output"] {
            let got = if what == "pooler_output" {
                &out.pooler_output
            } else {
                &out.last_hidden_state
            };
            assert_close(
                &format!("{case} interp_{size}/{what}"),
                got,
                &golden[&format!("interp_{size}/{what}")],
                F32_TOLERANCE,
            );
        }
    }
}

#[test]
fn intern_vit_6b_style_matches_official() {
    check_case("intern_vit_6b_style");
}

#[test]
fn intern_vit_300m_style_matches_official() {
    check_case("intern_vit_300m_style");
}

#[test]
fn select_layer_equals_hidden_state() {
    let model = load("intern_vit_6b_style");
    let golden = expected("intern_vit_6b_style");
    let pixels = &golden["inputs/pixel_values"];
    let all = golden["native/hidden_states"].clone();
    // -1 is the last block; -4 (with 3 blocks) the embeddings; 1 the first block.
    for (select, index) in [(-1i64, 3usize), (-2, 2), (-4, 0), (1, 1)] {
        let out = model.forward_to_layer(pixels, select, false).unwrap();
        assert_close(
            &format!("select_layer {select}"),
            &out.last_hidden_state,
            &all.get(index).unwrap(),
            F32_TOLERANCE,
        );
    }
    let err = model.forward_to_layer(pixels, -5, false).unwrap_err();
    assert!(
        err.to_string().contains("select_layer -5 is out of range"),
        "{err}"
    );
}

#[test]
fn bf16_compute_is_close_to_the_official_bf16_run() {
    let folder = ModelFolder::open(&fixture("intern_vit_6b_style").join("model")).unwrap();
    let model = folder.load_vision(DType::BF16, &Device::Cpu);
    // candle's CPU matmul has no bf16 kernel: either it works (loose check) or it says so.
    match model.and_then(|m| {
        let golden = expected("intern_vit_6b_style");
        let out = m.forward(&golden["inputs/pixel_values"], false)?;
        Ok((out, golden))
    }) {
        Ok((out, golden)) => assert_close(
            "bf16 native/last_hidden_state (loose)",
            &out.last_hidden_state,
            &golden["bf16/native/last_hidden_state"],
            5e-2,
        ),
        Err(e) => println!("bf16 on CPU unavailable: {e}"),
    }
}

#[test]
fn f16_compute_is_close_to_the_f32_reference() {
    let folder = ModelFolder::open(&fixture("intern_vit_300m_style").join("model")).unwrap();
    let model = folder.load_vision(DType::F16, &Device::Cpu).unwrap();
    let golden = expected("intern_vit_300m_style");
    let out = model
        .forward(&golden["inputs/pixel_values"], false)
        .unwrap();
    assert_eq!(out.last_hidden_state.dtype(), DType::F16);
    assert_close(
        "f16 native/last_hidden_state (loose)",
        &out.last_hidden_state,
        &golden["native/last_hidden_state"],
        2e-2,
    );
}
