//! InternVL-C/G (InternVL-14B layout) against the official outputs of the `internvl_c_g` fixture:
//! ViT, QLLaMA text and query features, C and G embeddings and logits, greedy captions.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, expected, fixture, F32_TOLERANCE};
use internvl::models::internvl_cg::{CaptionOptions, Head, InternVLCG};
use internvl::models::ModelFolder;

const CASE: &str = "internvl_c_g";

fn load() -> InternVLCG {
    let folder = ModelFolder::open(&fixture(CASE).join("model")).unwrap();
    InternVLCG::load(&folder, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn embeddings_and_logits_match_official() {
    let model = load();
    let golden = expected(CASE);
    let pixels = &golden["inputs/pixel_values_retrieval"];
    let vit = model.vision_tokens(pixels).unwrap();
    assert_close(
        "vit/last_hidden_state",
        &vit,
        &golden["vit/last_hidden_state"],
        F32_TOLERANCE,
    );

    let ids = &golden["tokens/input_ids"];
    let hidden = model.text_hidden_states(ids).unwrap();
    assert_close(
        "text/qllama_last_hidden_state",
        &hidden,
        &golden["text/qllama_last_hidden_state"],
        F32_TOLERANCE,
    );
    let text = model.text_embeds(ids).unwrap();
    assert_close(
        "c/text_embeds",
        &text,
        &golden["c/text_embeds"],
        F32_TOLERANCE,
    );
    assert_close(
        "g/text_embeds",
        &text,
        &golden["g/text_embeds"],
        F32_TOLERANCE,
    );

    let queries = model.query_features(&vit).unwrap();
    assert_close(
        "g/qllama_query_features",
        &queries,
        &golden["g/qllama_query_features"],
        F32_TOLERANCE,
    );

    for head in [Head::C, Head::G] {
        let h = head.name();
        let image = model.image_embeds(&vit, head).unwrap();
        assert_close(
            &format!("{h}/image_embeds"),
            &image,
            &golden[&format!("{h}/image_embeds")],
            F32_TOLERANCE,
        );
        let logits = model.logits_per_image(&image, &text).unwrap();
        assert_close(
            &format!("{h}/logits_per_image"),
            &logits,
            &golden[&format!("{h}/logits_per_image")],
            F32_TOLERANCE,
        );
    }
}

#[test]
fn greedy_captions_match_official_ids_and_logits() {
    let model = load();
    let golden = expected(CASE);
    let vit = model
        .vision_tokens(&golden["inputs/pixel_values_retrieval"])
        .unwrap();
    let prompts = golden["caption/input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let reference = golden["caption/new_token_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let step_logits = &golden["caption/step_logits"];
    let options = CaptionOptions {
        max_new_tokens: reference[0].len(),
        min_new_tokens: 8,
        num_beams: 1,
        eos_token_id: None,
    };
    for (i, prompt) in prompts.iter().enumerate() {
        let caption = model
            .caption(&vit.narrow(0, i, 1).unwrap(), prompt, &options)
            .unwrap();
        println!("image {i}: ids {:?}", caption.token_ids);
        assert_eq!(caption.token_ids, reference[i], "image {i} greedy ids");
        let ours = caption.step_logits.unwrap();
        let theirs = step_logits.narrow(1, i, 1).unwrap().squeeze(1).unwrap();
        assert_close(
            &format!("caption/step_logits image {i}"),
            &ours,
            &theirs,
            F32_TOLERANCE,
        );
    }
}

#[test]
fn beam_search_runs_and_returns_a_full_length_or_eos_caption() {
    let model = load();
    let golden = expected(CASE);
    let vit = model
        .vision_tokens(
            &golden["inputs/pixel_values_retrieval"]
                .narrow(0, 0, 1)
                .unwrap(),
        )
        .unwrap();
    let prompt = golden["caption/input_ids"]
        .get(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let options = CaptionOptions {
        max_new_tokens: 6,
        min_new_tokens: 2,
        num_beams: 3,
        eos_token_id: None,
    };
    let caption = model.caption(&vit, &prompt, &options).unwrap();
    assert!(!caption.token_ids.is_empty() && caption.token_ids.len() <= 6);
    // With one beam, beam search is greedy.
    let one = CaptionOptions {
        num_beams: 1,
        ..options.clone()
    };
    let greedy = model.caption(&vit, &prompt, &one).unwrap();
    let reference = golden["caption/new_token_ids"]
        .get(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(greedy.token_ids, reference[..6]);
}

#[test]
fn a_vision_only_model_has_no_heads() {
    let folder = ModelFolder::open(&fixture("intern_vit_300m_style").join("model")).unwrap();
    let err = InternVLCG::load(&folder, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not InternVL-C/G"), "{err}");
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu);
}

#[test]
fn input_embeddings_are_the_tied_lm_head_as_in_the_official_code() {
    // The release config leaves transformers' top-level tie_word_embeddings at its default, so the
    // official model embeds text with the stored lm_head.weight. Untying must change the numbers.
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(CASE).join("model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let path = tmp.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["tie_word_embeddings"] = serde_json::Value::Bool(false);
    std::fs::write(&path, config.to_string()).unwrap();
    let untied = InternVLCG::load(
        &ModelFolder::open(tmp.path()).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let golden = expected(CASE);
    let hidden = untied
        .text_hidden_states(&golden["tokens/input_ids"])
        .unwrap();
    let rel = common::rel_diff(&hidden, &golden["text/qllama_last_hidden_state"]);
    println!("untied text hidden states: max|diff|/max|ref| = {rel:.3}");
    assert!(rel > 0.1);
}

#[test]
fn clip_benchmark_transforms_match_official_pixels() {
    use internvl::tasks::contrastive::{ImagePreprocessor, ImageTransform};
    let golden = expected(CASE);
    let model_dir = fixture(CASE).join("model");
    let images: Vec<_> = ["inputs/img0_150x97_rgba.png", "inputs/img1_83x131.png"]
        .iter()
        .map(|p| internvl::processing::load_rgb(&fixture(CASE).join(p)).unwrap())
        .collect();
    for (transform, key) in [
        (ImageTransform::Retrieval, "inputs/pixel_values_retrieval"),
        (
            ImageTransform::Classification,
            "inputs/pixel_values_classification",
        ),
        (
            ImageTransform::Processor,
            "inputs/pixel_values_clip_image_processor",
        ),
    ] {
        let pre = ImagePreprocessor::new(
            transform,
            70,
            Some(&model_dir.join("preprocessor_config.json")),
        )
        .unwrap();
        let pixels: Vec<Tensor> = images.iter().map(|i| pre.pixels(i).unwrap()).collect();
        assert_close(key, &Tensor::stack(&pixels, 0).unwrap(), &golden[key], 1e-6);
    }
}

#[test]
fn beam_search_matches_the_official_generate() {
    let model = load();
    let golden = expected(CASE);
    let vit = model
        .vision_tokens(&golden["inputs/pixel_values_retrieval"])
        .unwrap();
    let prompts = golden["caption/input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("internvl_c_g_beam/reference.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (name, rows) in reference["cases"].as_object().unwrap() {
        let Some(spec) = name.strip_prefix("beams") else {
            continue;
        };
        // "beams{B}_max{N}_min{M}[_eos{E}]"
        let parts: Vec<usize> = spec
            .split('_')
            .map(|p| {
                p.trim_start_matches(|c: char| c.is_alphabetic())
                    .parse()
                    .unwrap()
            })
            .collect();
        let options = CaptionOptions {
            num_beams: parts[0],
            max_new_tokens: parts[1],
            min_new_tokens: parts[2],
            eos_token_id: parts.get(3).map(|&e| e as u32),
        };
        for (i, prompt) in prompts.iter().enumerate() {
            let ours = model
                .caption(&vit.narrow(0, i, 1).unwrap(), prompt, &options)
                .unwrap()
                .token_ids;
            let theirs: Vec<u32> = rows[i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ours, theirs, "{name} image {i}");
            checked += 1;
        }
    }
    println!("{checked} beam-search captions identical to the official generate()");
    assert_eq!(checked, 28);
}
