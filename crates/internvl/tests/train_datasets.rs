//! Fashion-MNIST preparation (`internvl::training::datasets`) on tiny synthetic IDX files:
//! folder layout, PNG pixels, caption JSON Lines, `classes.json`, idempotence, seeding, the
//! image-folder reader and the error cases; plus a check on the real files when
//! `scripts/fetch_fashion_mnist.sh` has put them in `assets/fashion-mnist`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use internvl::training::datasets::{
    chat_answer, class_folder_name, fill_template, image_folder, image_folder_classes,
    prepare_fashion_mnist, read_caption_jsonl, read_idx_images, read_idx_labels, CaptionRecord,
    PrepareOptions, CAPTION_TEMPLATES, CHAT_QUESTION, FASHION_MNIST_CLASSES,
};
use serde_json::Value;

const SIDE: usize = 28;

/// An IDX image file of `count` SIDE×SIDE images; pixel (i, r, c) = `pixel(i, r, c)`.
fn idx_images(count: usize, pixel: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [count, SIDE, SIDE] {
        bytes.extend((d as u32).to_be_bytes());
    }
    for i in 0..count {
        for r in 0..SIDE {
            bytes.extend((0..SIDE).map(|c| pixel(i, r, c)));
        }
    }
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 1];
    bytes.extend((labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A valid gzip stream of `data` with stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = chunk.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// Synthetic pixel: distinct per image and position.
fn pixel(i: usize, r: usize, c: usize) -> u8 {
    ((i * 37 + r * 7 + c * 3) % 256) as u8
}

fn train_labels(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 3) % 10) as u8).collect()
}

fn test_labels(n: usize) -> Vec<u8> {
    (0..n).map(|i| (9 - i % 10) as u8).collect()
}

/// A source folder with 30 train and 12 test images, uncompressed.
fn synthetic_source(dir: &Path) -> PathBuf {
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(source.join(name), bytes).unwrap();
    write("train-images-idx3-ubyte", idx_images(30, pixel));
    write("train-labels-idx1-ubyte", idx_labels(&train_labels(30)));
    write("t10k-images-idx3-ubyte", idx_images(12, pixel));
    write("t10k-labels-idx1-ubyte", idx_labels(&test_labels(12)));
    source
}

fn options(limit: Option<(usize, usize)>) -> PrepareOptions {
    PrepareOptions {
        limit_per_split: limit,
        ..PrepareOptions::default()
    }
}

fn jsonl_values(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn error_text<T: std::fmt::Debug>(result: internvl::Result<T>) -> String {
    result.expect_err("an error").to_string()
}

#[test]
fn idx_readers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let labels = dir.path().join("labels");
    std::fs::write(&images, idx_images(3, pixel)).unwrap();
    std::fs::write(&labels, idx_labels(&[4, 0, 9])).unwrap();
    let (rows, cols, read) = read_idx_images(&images).unwrap();
    assert_eq!((rows, cols, read.len()), (SIDE, SIDE, 3));
    assert_eq!(read[2][SIDE + 5], pixel(2, 1, 5));
    assert_eq!(read_idx_labels(&labels).unwrap(), vec![4, 0, 9]);
}

/// Gzip input is recognised and refused with a message saying so (no gzip decoder in the
/// crate), not reported as a wrong IDX magic.
#[test]
fn gzipped_idx_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-labels-idx1-ubyte.gz");
    let gz = gzip_stored(&idx_labels(&[1, 2, 3]));
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    std::fs::write(&path, gz).unwrap();
    let message = error_text(read_idx_labels(&path));
    println!("{message}");
    assert!(message.contains("gzip") && message.contains("train-labels-idx1-ubyte.gz"));

    // A source folder with only .gz files reaches the same error through prepare.
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    for (name, bytes) in [
        ("train-images-idx3-ubyte.gz", idx_images(2, pixel)),
        ("train-labels-idx1-ubyte.gz", idx_labels(&[1, 2])),
    ] {
        std::fs::write(source.join(name), gzip_stored(&bytes)).unwrap();
    }
    let message = error_text(prepare_fashion_mnist(
        &source,
        &dir.path().join("out"),
        &options(None),
    ));
    assert!(message.contains("gzip"), "{message}");
}

#[test]
fn idx_errors_name_the_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad-idx");
    let check = |bytes: Vec<u8>, images: bool, expected: &str| {
        std::fs::write(&path, bytes).unwrap();
        let message = if images {
            error_text(read_idx_images(&path))
        } else {
            error_text(read_idx_labels(&path))
        };
        println!("{message}");
        assert!(message.contains("bad-idx"), "{message}");
        assert!(message.contains(expected), "{message}");
    };
    // A label file read as images, and the reverse.
    check(
        idx_labels(&[1, 2]),
        true,
        "magic 0x00000801, expected 0x00000803",
    );
    check(
        idx_images(1, pixel),
        false,
        "magic 0x00000803, expected 0x00000801",
    );
    check(
        b"hello world, not idx".to_vec(),
        false,
        "not an IDX labels file",
    );
    check(vec![0, 0], false, "truncated");
    // Header cut inside the dimensions, then pixels missing, then bytes to spare.
    check(idx_images(2, pixel)[..10].to_vec(), true, "truncated");
    let full = idx_images(2, pixel);
    check(full[..full.len() - 1].to_vec(), true, "truncated");
    let mut long = idx_labels(&[1, 2]);
    long.push(7);
    check(long, false, "longer than its header");
    let missing = dir.path().join("missing");
    assert!(error_text(read_idx_labels(&missing)).contains("missing"));
}

#[test]
fn fill_template_fixes_articles() {
    assert_eq!(
        fill_template("a photo of a {c}.", "ankle boot"),
        "a photo of an ankle boot."
    );
    assert_eq!(
        fill_template("an image of a {c}.", "ankle boot"),
        "an image of an ankle boot."
    );
    assert_eq!(fill_template("a {c}", "ankle boot"), "an ankle boot");
    assert_eq!(
        fill_template("an image of a {c}.", "bag"),
        "an image of a bag."
    );
    assert_eq!(class_folder_name(9, "ankle boot"), "9_ankle_boot");
    assert_eq!(class_folder_name(0, "t-shirt"), "0_t-shirt");
}

#[test]
fn prepare_writes_layout_pngs_captions_and_classes() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic_source(dir.path());
    let out = dir.path().join("out");
    let done = prepare_fashion_mnist(&source, &out, &options(Some((20, 7)))).unwrap();
    assert_eq!((done.train.count, done.test.count), (20, 7));
    assert_eq!(done.train.images_dir, out.join("train"));
    assert_eq!(done.test.captions_jsonl, out.join("test.jsonl"));

    // Layout: all ten class folders in each split, in label order.
    let folders: Vec<String> = FASHION_MNIST_CLASSES
        .iter()
        .enumerate()
        .map(|(l, c)| class_folder_name(l, c))
        .collect();
    for split in ["train", "test"] {
        assert_eq!(image_folder_classes(&out.join(split)).unwrap(), folders);
    }
    assert!(out.join("train/9_ankle_boot").is_dir());

    // Captions: one line per image, in dataset order, with the right label, class and article.
    let lines = jsonl_values(&done.train.captions_jsonl);
    assert_eq!(lines.len(), 20);
    for (i, line) in lines.iter().enumerate() {
        let label = train_labels(30)[i] as usize;
        let class = FASHION_MNIST_CLASSES[label];
        let image = format!("train/{}/{i:05}.png", folders[label]);
        assert_eq!(line["image"], image.as_str());
        assert_eq!(line["label"], label);
        assert_eq!(line["class"], class);
        let caption = line["caption"].as_str().unwrap();
        assert!(
            CAPTION_TEMPLATES
                .iter()
                .any(|t| fill_template(t, class) == caption),
            "{caption:?} is not a template of {class:?}"
        );
        assert!(!caption.contains(" a ankle") && !caption.starts_with("a ankle"));
        if label == 9 {
            assert!(caption.contains("an ankle boot"), "{caption}");
        }

        // The PNG is RGB, 28×28, and holds the source pixels in every channel.
        let png = image::open(out.join(&image)).unwrap();
        assert_eq!(png.color(), image::ColorType::Rgb8);
        let rgb = png.to_rgb8();
        assert_eq!(rgb.dimensions(), (SIDE as u32, SIDE as u32));
        for (c, r, p) in rgb.enumerate_pixels() {
            let v = pixel(i, r as usize, c as usize);
            assert_eq!(p.0, [v, v, v], "image {i} pixel ({r}, {c})");
        }
    }
    let test_lines = jsonl_values(&done.test.captions_jsonl);
    assert_eq!(test_lines.len(), 7);
    assert_eq!(test_lines[0]["image"], "test/9_ankle_boot/00000.png");
    let pngs = |split: &str| image_folder(&out.join(split)).unwrap().len();
    assert_eq!((pngs("train"), pngs("test")), (20, 7));

    // The same images as SFT conversations, read back by the SFT loader.
    assert_eq!(done.train.chat_jsonl, out.join("train_chat.jsonl"));
    let chats = jsonl_values(&done.train.chat_jsonl);
    assert_eq!(chats.len(), 20);
    for (i, (chat, caption)) in chats.iter().zip(&lines).enumerate() {
        assert_eq!(chat["image"], caption["image"]);
        assert_eq!(chat["id"], i);
        let turns = chat["conversations"].as_array().unwrap();
        assert_eq!(turns[0]["from"], "human");
        assert_eq!(turns[0]["value"], format!("<image>\n{CHAT_QUESTION}"));
        assert_eq!(turns[1]["from"], "gpt");
        let class = caption["class"].as_str().unwrap();
        assert_eq!(turns[1]["value"], chat_answer(class));
    }
    assert_eq!(chat_answer("ankle boot"), "An ankle boot.");
    assert_eq!(chat_answer("t-shirt"), "A t-shirt.");
    let records = internvl::training::sft_data::read_jsonl(&done.test.chat_jsonl).unwrap();
    assert_eq!(records.len(), 7);

    // The caption reader reads the written files back.
    let records = read_caption_jsonl(&done.train.captions_jsonl).unwrap();
    assert_eq!(records.len(), 20);
    assert_eq!(records[0].image, lines[0]["image"].as_str().unwrap());
    assert_eq!(records[3].label, Some(train_labels(30)[3] as usize));

    let classes: Value =
        serde_json::from_str(&std::fs::read_to_string(&done.classes_json).unwrap()).unwrap();
    assert_eq!(classes["classes"], serde_json::json!(FASHION_MNIST_CLASSES));
    assert_eq!(classes["templates"], serde_json::json!(CAPTION_TEMPLATES));
    assert!(CAPTION_TEMPLATES.len() >= 5);
    assert!(CAPTION_TEMPLATES.iter().all(|t| t.contains("a {c}")));
}

#[test]
fn prepare_is_idempotent_and_redoes_on_new_options() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic_source(dir.path());
    let out = dir.path().join("out");
    let first = prepare_fashion_mnist(&source, &out, &options(Some((20, 7)))).unwrap();
    // A removed image is not rewritten by a second call with the same options: it returns
    // at once from done.json.
    let (victim, _) = image_folder(&first.train.images_dir).unwrap()[0].clone();
    std::fs::remove_file(&victim).unwrap();
    let second = prepare_fashion_mnist(&source, &out, &options(Some((20, 7)))).unwrap();
    assert_eq!(first, second);
    assert!(!victim.exists());

    // Other options rewrite everything; the smaller limit leaves no stale image behind.
    let third = prepare_fashion_mnist(&source, &out, &options(Some((5, 3)))).unwrap();
    assert_eq!((third.train.count, third.test.count), (5, 3));
    assert_eq!(image_folder(&out.join("train")).unwrap().len(), 5);
    assert_eq!(image_folder(&out.join("test")).unwrap().len(), 3);
    assert_eq!(jsonl_values(&third.train.captions_jsonl).len(), 5);

    // No limit: every image; a corrupt done.json counts as no marker.
    std::fs::write(out.join("done.json"), "{").unwrap();
    let all = prepare_fashion_mnist(&source, &out, &options(None)).unwrap();
    assert_eq!((all.train.count, all.test.count), (30, 12));
    let marker: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("done.json")).unwrap()).unwrap();
    assert_eq!(marker["counts"]["train"], 30);
}

#[test]
fn captions_are_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic_source(dir.path());
    let run = |name: &str, seed: u64| {
        let opts = PrepareOptions {
            seed,
            ..options(None)
        };
        let done = prepare_fashion_mnist(&source, &dir.path().join(name), &opts).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        (
            read(&done.train.captions_jsonl),
            read(&done.test.captions_jsonl),
        )
    };
    let a = run("a", 7);
    assert_eq!(a, run("b", 7));
    let c = run("c", 8);
    assert_ne!(a.0, c.0);
    // The two splits draw different template sequences.
    let draws = |text: &str| -> Vec<usize> {
        text.lines()
            .map(|l| {
                let line: Value = serde_json::from_str(l).unwrap();
                let (caption, class) = (&line["caption"], line["class"].as_str().unwrap());
                CAPTION_TEMPLATES
                    .iter()
                    .position(|t| fill_template(t, class) == caption.as_str().unwrap())
                    .unwrap()
            })
            .collect()
    };
    assert_ne!(draws(&a.0)[..12], draws(&a.1)[..]);
}

#[test]
fn upscaled_images_are_bilinear_and_sized() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    // Image 0: flat grey; image 1: left half black, right half white.
    let images = idx_images(2, |i, _, c| match i {
        0 => 90,
        _ if c < SIDE / 2 => 0,
        _ => 255,
    });
    for prefix in ["train", "t10k"] {
        std::fs::write(source.join(format!("{prefix}-images-idx3-ubyte")), &images).unwrap();
        std::fs::write(
            source.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_labels(&[3, 4]),
        )
        .unwrap();
    }
    let out = dir.path().join("out");
    let opts = PrepareOptions {
        image_size: 112,
        ..PrepareOptions::default()
    };
    prepare_fashion_mnist(&source, &out, &opts).unwrap();
    let flat = image::open(out.join("train/3_dress/00000.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(flat.dimensions(), (112, 112));
    assert!(flat.pixels().all(|p| p.0 == [90, 90, 90]));
    let edge = image::open(out.join("test/4_coat/00001.png"))
        .unwrap()
        .to_rgb8();
    let row: Vec<u8> = (0..112).map(|x| edge.get_pixel(x, 50).0[0]).collect();
    assert_eq!((row[0], row[111]), (0, 255));
    // Bilinear: the step is ramped (some value strictly between), monotone.
    assert!(row.iter().any(|&v| v > 0 && v < 255), "{row:?}");
    assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");

    let zero = PrepareOptions {
        image_size: 0,
        ..PrepareOptions::default()
    };
    assert!(error_text(prepare_fashion_mnist(&source, &out, &zero)).contains("image_size"));
}

#[test]
fn prepare_source_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let message = error_text(prepare_fashion_mnist(dir.path(), &out, &options(None)));
    assert!(
        message.contains("train-images-idx3-ubyte") && message.contains("fetch_fashion_mnist"),
        "{message}"
    );

    let source = synthetic_source(dir.path());
    std::fs::write(
        source.join("train-labels-idx1-ubyte"),
        idx_labels(&[1, 2, 3]),
    )
    .unwrap();
    let message = error_text(prepare_fashion_mnist(&source, &out, &options(None)));
    assert!(message.contains("3 labels for the 30 images"), "{message}");

    let mut labels = train_labels(30);
    labels[4] = 10;
    std::fs::write(source.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    let message = error_text(prepare_fashion_mnist(&source, &out, &options(None)));
    assert!(message.contains("label 10 of image 4"), "{message}");
    assert!(!out.join("done.json").exists());
}

#[test]
fn caption_jsonl_variants_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("captions.jsonl");
    std::fs::write(
        &path,
        concat!(
            "{\"image\": \"a.png\", \"caption\": \"a photo of a bag.\", \"label\": 8}\n",
            "\n",
            "{\"image\": \"b/c.jpg\", \"text\": \"some text\"}\n",
            "{\"image\": \"d.png\", \"caption\": \"x\", \"label\": null, \"class\": \"bag\"}\n",
        ),
    )
    .unwrap();
    let records = read_caption_jsonl(&path).unwrap();
    let record = |image: &str, caption: &str, label| CaptionRecord {
        image: image.into(),
        caption: caption.into(),
        label,
    };
    assert_eq!(
        records,
        vec![
            record("a.png", "a photo of a bag.", Some(8)),
            record("b/c.jpg", "some text", None),
            record("d.png", "x", None),
        ]
    );

    let bad_lines = [
        ("{\"image\": \"a.png\", \"caption\": ", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{\"caption\": \"x\"}", "\"image\""),
        ("{\"image\": \"a.png\"}", "\"caption\""),
        (
            "{\"image\": \"a.png\", \"caption\": \"x\", \"label\": -1}",
            "label",
        ),
        (
            "{\"image\": \"a.png\", \"caption\": \"x\", \"label\": \"bag\"}",
            "label",
        ),
    ];
    for (line, expected) in bad_lines {
        let text = format!("{{\"image\": \"ok.png\", \"text\": \"fine\"}}\n\n{line}\n");
        std::fs::write(&path, text).unwrap();
        let message = error_text(read_caption_jsonl(&path));
        println!("{message}");
        assert!(message.contains("captions.jsonl:3:"), "{message}");
        assert!(message.contains(expected), "{message}");
    }
    assert!(error_text(read_caption_jsonl(&dir.path().join("none.jsonl"))).contains("none"));
}

#[test]
fn image_folder_is_sorted_like_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for file in [
        "cat/b.png",
        "cat/a.JPG",
        "cat/notes.txt",
        "ant/z/2.png",
        "ant/10.png",
        "ant/2.png",
        "dog/x.webp",
    ] {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("stray.png"), b"").unwrap();

    assert_eq!(
        image_folder_classes(root).unwrap(),
        ["ant", "cat", "dog", "empty"]
    );
    let samples: Vec<(String, usize)> = image_folder(root)
        .unwrap()
        .into_iter()
        .map(|(p, l)| (p.strip_prefix(root).unwrap().display().to_string(), l))
        .collect();
    let expected = [
        ("ant/10.png", 0),
        ("ant/2.png", 0),
        ("ant/z/2.png", 0),
        ("cat/a.JPG", 1),
        ("cat/b.png", 1),
        ("dog/x.webp", 2),
    ];
    let expected: Vec<(String, usize)> = expected.iter().map(|&(p, l)| (p.into(), l)).collect();
    assert_eq!(samples, expected);

    let bare = tempfile::tempdir().unwrap();
    assert!(error_text(image_folder_classes(bare.path())).contains("no class folders"));
    assert!(error_text(image_folder(&root.join("missing"))).contains("missing"));
}

/// The real files (uncompressed copies) when the fetch script has run: the known sizes,
/// first labels and class balance, then a limited prepare. Required under `CI`.
#[test]
fn real_fashion_mnist() {
    let Some(source) = real_source() else { return };
    let (rows, cols, train) = read_idx_images(&source.join("train-images-idx3-ubyte")).unwrap();
    assert_eq!((rows, cols, train.len()), (28, 28, 60_000));
    let labels = read_idx_labels(&source.join("train-labels-idx1-ubyte")).unwrap();
    let test = read_idx_labels(&source.join("t10k-labels-idx1-ubyte")).unwrap();
    assert_eq!((labels.len(), test.len()), (60_000, 10_000));
    assert_eq!(labels[..6], [9, 0, 0, 3, 0, 2]);
    assert_eq!(test[..6], [9, 2, 1, 1, 6, 1]);
    for class in 0..10u8 {
        assert_eq!(labels.iter().filter(|&&l| l == class).count(), 6_000);
        assert_eq!(test.iter().filter(|&&l| l == class).count(), 1_000);
    }
    assert_eq!(train[0].iter().map(|&v| v as u32).sum::<u32>(), 76_247);

    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let done = prepare_fashion_mnist(&source, dir.path(), &options(Some((500, 200)))).unwrap();
    println!("prepared 500 + 200 real images in {:?}", start.elapsed());
    let records = read_caption_jsonl(&done.train.captions_jsonl).unwrap();
    assert_eq!(records.len(), 500);
    assert_eq!(records[0].image, "train/9_ankle_boot/00000.png");
    assert!(records[0].caption.contains("an ankle boot"));
    let first = image::open(dir.path().join(&records[0].image))
        .unwrap()
        .to_rgb8();
    assert!(first
        .pixels()
        .zip(&train[0])
        .all(|(p, &v)| p.0 == [v, v, v]));
    assert_eq!(image_folder(&done.test.images_dir).unwrap().len(), 200);
}

/// The whole set (70,000 PNGs), timed: `cargo test --release -p internvl --test
/// train_datasets -- --ignored --nocapture`.
#[test]
#[ignore = "writes 70,000 PNGs; run by hand to time a full prepare"]
fn real_fashion_mnist_full_prepare() {
    let Some(source) = real_source() else { return };
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let done = prepare_fashion_mnist(&source, dir.path(), &PrepareOptions::default()).unwrap();
    let first = start.elapsed();
    let start = Instant::now();
    prepare_fashion_mnist(&source, dir.path(), &PrepareOptions::default()).unwrap();
    println!(
        "full prepare: {} + {} images in {first:?}; second call {:?}",
        done.train.count,
        done.test.count,
        start.elapsed()
    );
    assert_eq!((done.train.count, done.test.count), (60_000, 10_000));
    assert_eq!(image_folder(&done.train.images_dir).unwrap().len(), 60_000);
}

/// `assets/fashion-mnist` when the fetch script has filled it; `None` (with a note) otherwise,
/// a failure under `CI`.
fn real_source() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/fashion-mnist");
    if dir.join("train-images-idx3-ubyte").is_file() {
        return Some(dir);
    }
    let message = format!(
        "Fashion-MNIST is missing from {}: run scripts/fetch_fashion_mnist.sh (Debian package \
         dataset-fashion-mnist, about 31 MB)",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    None
}
