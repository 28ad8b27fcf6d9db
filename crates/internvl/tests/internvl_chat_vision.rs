//! InternVL-Chat's vision side (ViT → pixel shuffle v1/v2 → mlp1) against the official outputs of
//! the three chat fixtures.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, expected, fixture, F32_TOLERANCE};
use internvl::models::internvl_chat::ChatVision;
use internvl::models::ModelFolder;

fn check(case: &str) {
    let folder = ModelFolder::open(&fixture(case).join("model")).unwrap();
    let vision = ChatVision::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let golden = expected(case);
    let pixels = Tensor::cat(
        &[
            &golden["inputs/pixel_values_img0"],
            &golden["inputs/pixel_values_img1"],
        ],
        0,
    )
    .unwrap();
    let features = vision.extract(&pixels).unwrap();
    assert_close(
        &format!("{case} vit_last_hidden_state"),
        &features.vit,
        &golden["chat_multi_image/vit_last_hidden_state"],
        F32_TOLERANCE,
    );
    assert_close(
        &format!("{case} vit_pixel_shuffled"),
        &features.shuffled,
        &golden["chat_multi_image/vit_pixel_shuffled"],
        F32_TOLERANCE,
    );
    assert_close(
        &format!("{case} image_embeds"),
        &features.embeds,
        &golden["chat_multi_image/image_embeds"],
        F32_TOLERANCE,
    );
    assert_eq!(vision.tokens_per_tile(), features.embeds.dim(1).unwrap());
}

#[test]
fn qwen2_case_v2_shuffle() {
    check("internvl_chat_qwen2");
}

#[test]
fn internlm2_case_v2_shuffle() {
    check("internvl_chat_internlm2");
}

#[test]
fn llama_case_v1_shuffle() {
    check("internvl_chat_llama");
}
