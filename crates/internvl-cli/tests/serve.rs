//! `internvl serve` over real HTTP on 127.0.0.1 (ephemeral port) with the fixture models:
//! served output equals the CLI's, streaming, embeddings, errors, and a bounded load test.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

/// A server child process, killed on drop.
struct Server {
    child: Child,
    base: String,
    /// The rest of its stdout.
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(model: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args([
            "serve",
            "--model",
            fixture(model).to_str().unwrap(),
            "--port",
            "0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server {
        child,
        base,
        stdout,
    }
}

/// POSTs a raw body; returns (status, body text).
fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let result = ureq::post(&format!("{}{path}", server.base))
        .set("Content-Type", "application/json")
        .timeout(Duration::from_secs(300))
        .send_string(body);
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn get(server: &Server, path: &str) -> (u16, String) {
    match ureq::get(&format!("{}{path}", server.base)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn data_uri(path: &PathBuf) -> String {
    let bytes = std::fs::read(path).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn chat_images() -> (PathBuf, PathBuf) {
    let inputs = fixture("internvl_chat_qwen2/inputs");
    (
        inputs.join("imgA_300x170.png"),
        inputs.join("imgB_150x150.png"),
    )
}

fn chat_request(stream: bool) -> Value {
    let (a, b) = chat_images();
    json!({
        "model": "model",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_uri(&a)}},
            {"type": "image_url", "image_url": {"url": data_uri(&b)}},
            {"type": "text", "text": "Describe the two images in detail."},
        ]}],
        "max_tokens": 16,
        "temperature": 0,
        "logprobs": true,
        "top_logprobs": 2,
        "stream": stream,
    })
}

fn assert_openai_error(status: u16, body: &str, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON {body}"));
    assert!(v["error"]["message"].is_string(), "{what}: {body}");
    assert!(v["error"]["type"].is_string(), "{what}: {body}");
}

#[test]
fn chat_completions_match_the_cli_and_stream_the_same_text() {
    let (a, b) = chat_images();
    let cli = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args([
            "chat",
            "--model",
            fixture("internvl_chat_qwen2/model").to_str().unwrap(),
            "--image",
            a.to_str().unwrap(),
            "--image",
            b.to_str().unwrap(),
            "--prompt",
            "Image-1: <image>\nImage-2: <image>\nDescribe the two images in detail.",
            "--max-new-tokens",
            "16",
            "--top-logprobs",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();

    let server = start("internvl_chat_qwen2/model", &[]);
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &chat_request(false).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let choice = &doc["choices"][0];
    assert_eq!(doc["object"], "chat.completion");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], cli["text"]);
    assert_eq!(choice["token_ids"], cli["token_ids"]);
    assert_eq!(doc["prompt_token_ids"], cli["prompt_token_ids"]);
    let n = cli["token_ids"].as_array().unwrap().len();
    assert_eq!(doc["usage"]["completion_tokens"], n);
    assert_eq!(
        doc["usage"]["prompt_tokens"],
        cli["prompt_token_ids"].as_array().unwrap().len()
    );
    let lps = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lps.len(), n);
    for (got, want) in lps.iter().zip(cli["logprobs"].as_array().unwrap()) {
        assert_eq!(got["token_id"], want["token_id"]);
        assert!(
            (got["logprob"].as_f64().unwrap() - want["logprob"].as_f64().unwrap()).abs() < 1e-6
        );
        assert_eq!(got["top_logprobs"].as_array().unwrap().len(), 2);
    }
    let reason = choice["finish_reason"].as_str().unwrap();
    assert!(reason == "length" || reason == "stop");

    // Streaming: SSE chunks reassemble to the same text and end with [DONE].
    let response = ureq::post(&format!("{}/v1/chat/completions", server.base))
        .set("Content-Type", "application/json")
        .send_string(&chat_request(true).to_string())
        .unwrap();
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let mut raw = String::new();
    response.into_reader().read_to_string(&mut raw).unwrap();
    let events: Vec<&str> = raw
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data: events"))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let mut text = String::new();
    let mut finish = None;
    let mut streamed_logprobs = Vec::new();
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        if let Some(list) = chunk["choices"][0]["logprobs"]["content"].as_array() {
            streamed_logprobs.extend(list.iter().cloned());
        }
    }
    assert_eq!(text.trim(), cli["text"].as_str().unwrap());
    assert_eq!(finish.as_deref(), Some(reason));
    // Streamed chunks carry the log-probabilities of their tokens: all of them, in order.
    assert_eq!(streamed_logprobs.len(), n);
    for (got, want) in streamed_logprobs.iter().zip(lps) {
        assert_eq!(got["token_id"], want["token_id"]);
        assert_eq!(got["logprob"], want["logprob"]);
        assert_eq!(got["top_logprobs"], want["top_logprobs"]);
    }
    // Each entry's `bytes` are its token's bytes: together (without the stop token) they spell
    // the answer; `token` is their text.
    let tokenizer = internvl::processing::tokenizer::Tokenizer::from_folder(fixture(
        "internvl_chat_qwen2/model",
    ))
    .unwrap();
    let mut spelled = Vec::new();
    for (entry, id) in lps.iter().zip(cli["token_ids"].as_array().unwrap()) {
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(entry["token"], String::from_utf8_lossy(&bytes).as_ref());
        // Special tokens are left out of the answer (`skip_special_tokens`).
        if !tokenizer.is_special_id(id.as_u64().unwrap() as u32) {
            spelled.extend(bytes);
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&spelled).trim(),
        cli["text"].as_str().unwrap()
    );

    // Multi-turn with a system message is accepted and answered.
    let req = json!({
        "model": "model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(&a)}}, {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": "A picture."},
            {"role": "user", "content": "And the colours?"},
        ],
        "max_tokens": 4, "temperature": 0,
    });
    let (status, body) = post(&server, "/v1/chat/completions", &req.to_string());
    assert_eq!(status, 200, "{body}");

    let (status, body) = get(&server, "/v1/models");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"][0]["id"],
        "model"
    );
    assert_eq!(get(&server, "/health").0, 200);
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains("internvl_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("internvl_completion_tokens_total"));
    assert!(metrics.contains("internvl_request_duration_seconds_bucket"));
}

#[test]
fn errors_are_openai_shaped_4xx() {
    let local = fixture("internvl_chat_qwen2/inputs");
    let server = start(
        "internvl_chat_qwen2/model",
        &[
            "--max-body-bytes",
            "200000",
            "--allow-local-files",
            local.to_str().unwrap(),
        ],
    );
    let url = |u: &str| {
        json!({"model": "model", "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": u}}, {"type": "text", "text": "hi"}]}]})
        .to_string()
    };
    let text_req = |extra: Value| {
        let mut v = json!({"model": "model", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("malformed JSON", "{\"model\": ".to_string(), 400),
        (
            "wrong type",
            json!({"model": "model", "messages": "hi"}).to_string(),
            400,
        ),
        (
            "wrong max_tokens type",
            text_req(json!({"max_tokens": "many"})),
            400,
        ),
        (
            "bad base64",
            url("data:image/png;base64,@@@not base64@@@"),
            400,
        ),
        (
            "non-image data",
            url(&format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(b"just some text, not an image")
            )),
            400,
        ),
        (
            "non-image media type",
            url("data:text/plain;base64,aGVsbG8="),
            400,
        ),
        ("remote URL", url("https://example.com/cat.png"), 400),
        (
            "local file outside the allowed dir",
            url("/etc/hostname"),
            400,
        ),
        ("unknown model", text_req(json!({"model": "gpt-4o"})), 404),
        ("n > 1", text_req(json!({"n": 2})), 400),
        (
            "max_tokens over the limit",
            text_req(json!({"max_tokens": 1_000_000})),
            400,
        ),
        ("max_tokens 0", text_req(json!({"max_tokens": 0})), 400),
        (
            "last message not from the user",
            json!({"model": "model", "messages": [{"role": "assistant", "content": "x"}]})
                .to_string(),
            400,
        ),
        (
            "body over the limit",
            text_req(json!({"padding": "x".repeat(300_000)})),
            413,
        ),
        (
            "max_tokens over the context length",
            text_req(json!({"max_tokens": 40_000})),
            400,
        ),
    ];
    for (what, body, expected) in cases {
        let (status, text) = post(&server, "/v1/chat/completions", &body);
        assert_openai_error(status, &text, expected, what);
    }
    // A prompt longer than the model's context (32768 tokens): 400 with OpenAI's code.
    let long = json!({"model": "model", "max_tokens": 2,
        "messages": [{"role": "user", "content": " word".repeat(33_000)}]});
    let (status, text) = post(&server, "/v1/chat/completions", &long.to_string());
    assert_openai_error(status, &text, 400, "prompt over the context length");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{text}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 32768"),
        "{text}"
    );
    // Embeddings on a chat model, unknown endpoint.
    let (status, text) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "model", "input": "x"}).to_string(),
    );
    assert_openai_error(status, &text, 400, "embeddings on a chat model");
    let (status, text) = get(&server, "/v1/nothing");
    assert_openai_error(status, &text, 404, "unknown endpoint");
    // A local file under --allow-local-files works.
    let path = local.join("imgB_150x150.png");
    let (status, text) = post(
        &server,
        "/v1/chat/completions",
        &url(path.to_str().unwrap()),
    );
    assert_eq!(status, 200, "{text}");
    // The server is still healthy after all of that.
    assert_eq!(get(&server, "/health").0, 200);
}

/// A PNG whose header claims `width`x`height` (a decompression bomb's shape; no pixel data).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png.extend(0u32.to_be_bytes());
    png.extend(b"IEND");
    png.extend(crc32(b"IEND").to_be_bytes());
    png
}

#[test]
fn image_limits_are_enforced() {
    let server = start(
        "internvl_chat_qwen2/model",
        &[
            "--max-image-bytes",
            "10000",
            "--max-image-pixels",
            "40000",
            "--max-images",
            "2",
        ],
    );
    let (a, b) = chat_images(); // 300x170 (4.6 kB), 150x150 (17.4 kB)
    let req = |urls: &[String]| {
        let mut content: Vec<Value> = urls
            .iter()
            .map(|u| json!({"type": "image_url", "image_url": {"url": u}}))
            .collect();
        content.push(json!({"type": "text", "text": "hi"}));
        json!({"model": "model", "max_tokens": 2, "messages": [{"role": "user", "content": content}]})
            .to_string()
    };
    let bomb = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png_header_only(100_000, 100_000))
    );
    let cases = [
        (
            "decoded image over --max-image-bytes",
            req(&[data_uri(&b)]),
            413,
        ),
        ("image over --max-image-pixels", req(&[data_uri(&a)]), 400),
        ("10^10-pixel header (decompression bomb)", req(&[bomb]), 400),
        (
            "more images than --max-images",
            req(&[data_uri(&a), data_uri(&a), data_uri(&a)]),
            400,
        ),
    ];
    for (what, body, expected) in cases {
        let (status, text) = post(&server, "/v1/chat/completions", &body);
        assert_openai_error(status, &text, expected, what);
        println!(
            "{what}: {status} {}",
            serde_json::from_str::<Value>(&text).unwrap()["error"]["message"]
        );
    }
    assert_eq!(get(&server, "/health").0, 200);
}

#[test]
fn embeddings_match_internvl_embed() {
    let inputs = fixture("internvl_c_g/inputs");
    let img = inputs.join("img1_83x131.png");
    let cli = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args([
            "embed",
            "--model",
            fixture("internvl_c_g/model").to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--text",
            "a photo of a cat",
            "--text",
            "a diagram",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let server = start("internvl_c_g/model", &[]);
    let req = json!({"model": "model", "input": [
        "a photo of a cat",
        {"type": "image_url", "image_url": {"url": data_uri(&img)}},
        {"type": "text", "text": "a diagram"},
    ]});
    let (status, body) = post(&server, "/v1/embeddings", &req.to_string());
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let row = |i: usize| -> Vec<f64> {
        doc["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let want = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let close = |a: &[f64], b: &[f64]| {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    };
    close(&row(0), &want(&cli["text_embeds"][0]));
    close(&row(1), &want(&cli["image_embeds"][0]));
    close(&row(2), &want(&cli["text_embeds"][1]));
    // usage counts the tokens the model read for the texts (BOS + "summarize:" + text + EOS).
    let tokenizer = internvl::processing::tokenizer::InternVlCgTextTokenizer::from_folder(fixture(
        "internvl_c_g/model",
    ))
    .unwrap();
    let counted: usize = ["a photo of a cat", "a diagram"]
        .iter()
        .map(|t| tokenizer.encode_unpadded(t).unwrap().len())
        .sum();
    assert!(counted > 4);
    assert_eq!(doc["usage"]["prompt_tokens"], counted, "{}", doc["usage"]);
    assert_eq!(doc["usage"]["total_tokens"], counted);
    let norm: f64 = row(1).iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    // One string input, base64 output (what the openai client asks for by default).
    let (status, body) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "model", "input": "a diagram", "encoding_format": "base64"}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(doc["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    close(&floats, &want(&cli["text_embeds"][1]));
    // Errors.
    let (status, text) = post(&server, "/v1/embeddings", &json!({"model": "model", "input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}).to_string());
    assert_openai_error(status, &text, 400, "non-image embedding input");
    let (status, text) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "nope", "input": "x"}).to_string(),
    );
    assert_openai_error(status, &text, 404, "unknown model");
    let (status, text) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "model", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    );
    assert_openai_error(status, &text, 400, "chat on an embedding model");
}

#[test]
fn bounded_load_test_has_no_failures() {
    const REQUESTS: usize = 64;
    let server = start("internvl_chat_qwen2/model", &["--max-concurrency", "4"]);
    let base = server.base.clone();
    let (a, _) = chat_images();
    let image = data_uri(&a);
    let started = Instant::now();
    let handles: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let base = base.clone();
            let image = image.clone();
            std::thread::spawn(move || {
                let content = if i % 2 == 0 {
                    json!([{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": format!("Question {i}?")}])
                } else {
                    json!(format!("Question {i}?"))
                };
                let body = json!({"model": "model", "max_tokens": 4, "temperature": 0,
                    "messages": [{"role": "user", "content": content}]});
                let t = Instant::now();
                let r = ureq::post(&format!("{base}/v1/chat/completions"))
                    .timeout(Duration::from_secs(600))
                    .send_string(&body.to_string());
                let ok = matches!(&r, Ok(resp) if resp.status() == 200);
                (ok, t.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for h in handles {
        let (ok, latency) = h.join().unwrap();
        failures += usize::from(!ok);
        latencies.push(latency.as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "load: {REQUESTS} concurrent chat requests (max_tokens 4), {failures} failures, p50 {:.3}s, p95 {:.3}s, {:.2} req/s",
        pct(0.5),
        pct(0.95),
        REQUESTS as f64 / total
    );
    assert_eq!(failures, 0);
    // Concurrent requests shared decode steps (continuous batching).
    let (_, metrics) = get(&server, "/metrics");
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
            .parse()
            .unwrap()
    };
    let (steps, rows) = (
        counter("internvl_decode_steps_total"),
        counter("internvl_decode_rows_total"),
    );
    println!(
        "load: {steps} decode steps for {rows} request-steps: {:.2} requests per step",
        rows / steps
    );
    assert!(rows / steps > 1.5, "decode steps were not batched");
}

#[test]
fn a_disconnected_stream_cancels_its_generation() {
    let server = start("internvl_chat_qwen2/model", &["--max-concurrency", "1"]);
    let long = json!({"model": "model", "max_tokens": 4000, "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "Write a long story."}]});
    let response = ureq::post(&format!("{}/v1/chat/completions", server.base))
        .send_string(&long.to_string())
        .unwrap();
    let mut reader = BufReader::new(response.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    drop(reader);
    // With one slot, this request waits for the first one: it finishes quickly only when the
    // disconnect cancelled the 4000-token generation (uncancelled, the fixture takes about a
    // second: it stops on its stop token after 844 tokens).
    let started = Instant::now();
    let short = json!({"model": "model", "max_tokens": 2, "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = post(&server, "/v1/chat/completions", &short.to_string());
    assert_eq!(status, 200, "{body}");
    let waited = started.elapsed();
    println!("request after a disconnect answered in {waited:?}");
    // Timing alone is flaky on a loaded 2-core machine: the server counts the cancellation.
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("internvl_cancelled_generations_total 1"),
        "{metrics}"
    );
}

/// Reads one SSE line of a streaming response.
fn next_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn a_full_queue_answers_503() {
    let server = start(
        "internvl_chat_qwen2/model",
        &["--max-concurrency", "1", "--max-waiting", "1"],
    );
    // 1: holds the only slot (a long streamed generation).
    let long = json!({"model": "model", "max_tokens": 4000, "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "Write a long story."}]});
    let response = ureq::post(&format!("{}/v1/chat/completions", server.base))
        .send_string(&long.to_string())
        .unwrap();
    let mut first = BufReader::new(response.into_reader());
    assert!(next_line(&mut first).starts_with("data: "));
    // 2: waits for the slot.
    let base = server.base.clone();
    let waiting = std::thread::spawn(move || {
        let short = json!({"model": "model", "max_tokens": 2, "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}]});
        match ureq::post(&format!("{base}/v1/chat/completions")).send_string(&short.to_string()) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("transport error: {e}"),
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !get(&server, "/metrics")
        .1
        .contains("internvl_requests_waiting 1")
    {
        assert!(Instant::now() < deadline, "the second request never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 3: no room to wait: 503 in OpenAI's shape, at once.
    let short = json!({"model": "model", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = post(&server, "/v1/chat/completions", &short.to_string());
    assert_openai_error(status, &body, 503, "queue full");
    // Releasing the slot lets the waiting request through.
    drop(first);
    assert_eq!(waiting.join().unwrap(), 200);
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_the_requests_in_flight_then_exits() {
    let mut server = start("internvl_chat_qwen2/model", &[]);
    let req = json!({"model": "model", "max_tokens": 200, "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "Write a long story."}]});
    let response = ureq::post(&format!("{}/v1/chat/completions", server.base))
        .send_string(&req.to_string())
        .unwrap();
    let mut stream = BufReader::new(response.into_reader());
    assert!(next_line(&mut stream).starts_with("data: "));
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        next_line(&mut server.stdout).trim(),
        "shutting down: finishing the requests in flight"
    );
    // The request in flight runs to its end.
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    // Then the process ends on its own, successfully, and refuses new connections.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert_eq!(next_line(&mut server.stdout).trim(), "shut down");
    assert!(ureq::get(&format!("{}/health", server.base))
        .call()
        .is_err());
}

#[test]
fn the_official_openai_python_client_works() {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/venvs/openai/bin/python");
    if !python.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the openai client (scripts/setup_openai_client.sh)"
        );
        eprintln!("openai client absent: run scripts/setup_openai_client.sh to include this check");
        return;
    }
    let chat = start("internvl_chat_qwen2/model", &[]);
    let embed = start("internvl_c_g/model", &[]);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/openai_client/check.py");
    let image = fixture("internvl_chat_qwen2/inputs/imgA_300x170.png");
    let out = Command::new(&python)
        .arg(&script)
        .args([&chat.base, &embed.base, image.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("openai client: {report}");
    // The same question through the CLI gives the same greedy answer.
    let cli = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args([
            "chat",
            "--model",
            fixture("internvl_chat_qwen2/model").to_str().unwrap(),
        ])
        .args([
            "--prompt",
            "Hello, who are you?",
            "--max-new-tokens",
            "8",
            "--json",
        ])
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(report["text"], cli["text"]);
    assert_eq!(
        report["streamed"].as_str().unwrap().trim(),
        cli["text"].as_str().unwrap()
    );
    assert_eq!(report["usage"]["completion_tokens"], 8);
    assert_eq!(report["vision_logprobs"], 4);
    assert_eq!(report["unknown_model_error"], "NotFoundError");
    assert_eq!(report["embedding_dims"], json!([48, 48]));
}
