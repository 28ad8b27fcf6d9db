//! `internvl serve`: an OpenAI-compatible HTTP server for InternVL models.
//!
//! * `POST /v1/chat/completions` (InternVL-Chat): OpenAI messages with text and `image_url`
//!   parts, streaming (SSE) or not, `usage`, log-probabilities.
//! * `POST /v1/embeddings` (InternVL-C/G): text and image inputs, L2-normalised vectors.
//! * `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text).
//!
//! One worker thread owns the model. At most `max_concurrency` requests hold a slot; their
//! decode steps are batched (continuous batching: a request joins the running batch after its
//! prompt has run and leaves it when it ends); more requests wait, and beyond `max_waiting` they
//! are answered 503. SIGINT / SIGTERM stop accepting connections, let the running requests
//! finish, then end the process.

pub mod api;
pub mod metrics;
pub mod worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::StreamExt;
use internvl::models::internvl_cg::Head;
use internvl::processing::tokenizer::Tokenizer;
use internvl::tasks::chat::{Generation, GenerationOptions, TokenLogprob};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use api::{ApiError, ChatRequest, EmbeddingInput, EmbeddingItem, EmbeddingsRequest, Limits, Part};
use metrics::Metrics;
use worker::{Backend, ChatEvent, ChatJob, EmbedInput, EmbedJob, Job};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind (port 0 picks a free one).
    pub addr: SocketAddr,
    /// The id `/v1/models` lists and requests must name.
    pub model_id: String,
    /// Requests admitted to the worker queue at once; more wait.
    pub max_concurrency: usize,
    /// Requests that may wait for admission; more are answered 503.
    pub max_waiting: usize,
    /// Local image files are readable only under this (canonical) directory.
    pub allow_local_files: Option<PathBuf>,
    /// Size limits.
    pub limits: Limits,
}

struct AppState {
    config: ServeConfig,
    chat: bool,
    context_length: usize,
    /// The chat model's tokenizer (token strings and bytes of log-probabilities).
    tokenizer: Option<Tokenizer>,
    jobs: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    metrics: Metrics,
    next_id: AtomicU64,
}

type Shared = Arc<AppState>;

/// Serves `backend` until SIGINT / SIGTERM, then finishes the requests in flight and returns;
/// prints `listening on http://ADDR` on stdout once bound.
pub fn serve(backend: Backend, config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve_async(backend, config))
}

async fn serve_async(backend: Backend, config: ServeConfig) -> anyhow::Result<()> {
    let max_concurrency = config.max_concurrency.max(1);
    let (tx, rx) = mpsc::channel(max_concurrency);
    let chat = matches!(backend, Backend::Chat(_));
    let context_length = backend.context_length();
    let tokenizer = match &backend {
        Backend::Chat(model) => Some(model.tokenizer().clone()),
        Backend::Embed(_) => None,
    };
    let metrics = Metrics::default();
    let stats = metrics.worker.clone();
    let worker = std::thread::Builder::new()
        .name("internvl-model".into())
        .spawn(move || worker::run(backend, rx, max_concurrency, &stats))?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        config,
        chat,
        context_length,
        tokenizer,
        jobs: tx,
        slots: Arc::new(Semaphore::new(max_concurrency)),
        waiting: AtomicUsize::new(0),
        metrics,
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").with_code("not_found")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed for this endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        // Bodies are read (and their limit enforced) by `read_body`.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    say(&format!("listening on http://{addr}"));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // The router (and with it the job queue's sender) is gone: the worker drains and ends.
    tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the model worker panicked"))?;
    say("shut down");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    say("shutting down: finishing the requests in flight");
}

/// A status line on stdout; a closed stdout (the parent stopped reading) is not an error.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Counts requests by endpoint and status and records their latency (to the response head).
async fn observe(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let path = match request.uri().path() {
        p @ ("/v1/chat/completions" | "/v1/embeddings" | "/v1/models" | "/health" | "/metrics") => {
            p.to_string()
        }
        _ => "other".to_string(),
    };
    let start = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .record(&path, response.status().as_u16(), start.elapsed());
    response
}

async fn models(State(state): State<Shared>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.model_id,
            "object": "model",
            "created": now(),
            "owned_by": "internvl-rs",
        }],
    }))
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    let waiting = state.waiting.load(Ordering::Relaxed);
    let busy = state.config.max_concurrency.max(1) - state.slots.available_permits();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(busy, waiting),
    )
        .into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Most bytes of an over-limit body that are read (and dropped) before answering 413, so that
/// a client still sending its body gets the answer instead of a reset connection.
const DRAIN_BEYOND_LIMIT: usize = 64 << 20;

/// Reads a request body of at most `limit` bytes; larger ones get 413 (after draining up to
/// [`DRAIN_BEYOND_LIMIT`] more bytes: beyond that the connection is closed).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        total += chunk.len();
        if total <= limit {
            kept.extend_from_slice(&chunk);
        } else if total > limit.saturating_add(DRAIN_BEYOND_LIMIT) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::too_large(format!(
            "the request body is larger than the server's limit of {limit} bytes"
        )));
    }
    Ok(Bytes::from(kept))
}

async fn parse_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(body, state.config.limits.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

fn check_model(state: &AppState, model: &str) -> Result<(), ApiError> {
    if model != state.config.model_id {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist"),
        )
        .with_code("model_not_found"));
    }
    Ok(())
}

/// Waits for a worker slot (the queue), or 503 when too many requests already wait.
async fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    if state.waiting.fetch_add(1, Ordering::SeqCst) >= state.config.max_waiting {
        state.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is overloaded; retry later",
        ));
    }
    let permit = state.slots.clone().acquire_owned().await;
    state.waiting.fetch_sub(1, Ordering::SeqCst);
    permit.map_err(|_| ApiError::internal("the server is shutting down"))
}

/// Sets the cancellation flag when dropped (the client went away or the response ended).
struct CancelGuard(Arc<AtomicBool>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn decode_images(
    state: &Shared,
    urls: Vec<String>,
) -> Result<Vec<image::RgbImage>, ApiError> {
    if urls.len() > state.config.limits.max_images {
        return Err(ApiError::bad_request(format!(
            "{} images exceed the limit of {} per request",
            urls.len(),
            state.config.limits.max_images
        )));
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        urls.iter()
            .map(|u| {
                api::load_image(
                    u,
                    state.config.allow_local_files.as_deref(),
                    &state.config.limits,
                )
            })
            .collect()
    })
    .await
    .map_err(|_| ApiError::internal("image decoding failed"))?
}

fn options(state: &AppState, req: &ChatRequest) -> Result<GenerationOptions, ApiError> {
    if let Some(n) = req.n {
        if n != 1 {
            return Err(ApiError::bad_request("only n = 1 is supported"));
        }
    }
    let limit = state.config.limits.max_tokens;
    let max_tokens = match req.max_completion_tokens.or(req.max_tokens) {
        Some(m) if m < 1 => return Err(ApiError::bad_request("max_tokens must be at least 1")),
        Some(m) if m as u64 > limit as u64 => {
            return Err(ApiError::bad_request(format!(
                "max_tokens {m} exceeds the server's limit of {limit}"
            )))
        }
        Some(m) => m as usize,
        None => 512.min(limit),
    };
    if max_tokens > state.context_length {
        return Err(ApiError::bad_request(format!(
            "max_tokens {max_tokens} exceeds the model's context length of {}",
            state.context_length
        ))
        .with_code("context_length_exceeded"));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request("temperature must be in [0, 2]"));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request("top_p must be in (0, 1]"));
    }
    let stop_strings = match &req.stop {
        None => Vec::new(),
        Some(api::Stop::One(s)) => vec![s.clone()],
        Some(api::Stop::Many(v)) => v.clone(),
    };
    if stop_strings.len() > 4 {
        return Err(ApiError::bad_request("at most 4 stop sequences"));
    }
    let top_logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if !(0..=20).contains(&k) => {
            return Err(ApiError::bad_request("top_logprobs must be in [0, 20]"))
        }
        (false, Some(k)) if k > 0 => {
            return Err(ApiError::bad_request(
                "top_logprobs requires logprobs to be true",
            ))
        }
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, _) => None,
    };
    Ok(GenerationOptions {
        max_new_tokens: max_tokens,
        temperature,
        top_p,
        seed: req.seed.unwrap_or(0) as u64,
        top_logprobs,
        stop_strings,
        ..GenerationOptions::default()
    })
}

async fn chat_completions(State(state): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_body(&state, body).await?;
    check_model(&state, &req.model)?;
    if !state.chat {
        return Err(ApiError::bad_request(
            "this model serves embeddings, not chat completions",
        ));
    }
    let options = options(&state, &req)?;
    let conv = api::conversation(&req.messages)?;
    let images = decode_images(&state, conv.images.clone()).await?;
    let permit = admit(&state).await?;
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelGuard(cancel.clone());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let want_logprobs = options.top_logprobs.is_some();
    let job = Job::Chat(ChatJob {
        system: conv.system,
        history: conv.history,
        question: conv.question,
        images,
        options,
        events: events_tx,
        cancel,
    });
    state
        .jobs
        .send(job)
        .await
        .map_err(|_| ApiError::internal("the model worker stopped"))?;
    let prompt_ids = match events.recv().await {
        Some(ChatEvent::Started { prompt_ids }) => prompt_ids,
        Some(ChatEvent::Failed(e)) => return Err(e),
        _ => return Err(ApiError::internal("the model worker stopped")),
    };
    let id = format!("chatcmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
    let created = now();
    let model = state.config.model_id.clone();
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.map(|o| o.include_usage).unwrap_or(false);
        let chunk = ChunkMaker { id, created, model };
        let first = chunk.delta(json!({"role": "assistant", "content": ""}), None);
        let state2 = state.clone();
        let tail = futures_util::stream::unfold(Some((events, guard, permit, chunk)), move |st| {
            let state = state2.clone();
            let prompt_len = prompt_ids.len();
            async move {
                let (mut events, guard, permit, chunk) = st?;
                let text = match events.recv().await {
                    Some(ChatEvent::Delta { text, logprobs }) => {
                        let logprobs = want_logprobs.then(|| {
                            json!({"content": logprob_entries(state.tokenizer.as_ref(), &logprobs)})
                        });
                        let out = chunk.delta_with(json!({"content": text}), logprobs, None);
                        return Some((
                            Ok::<_, Infallible>(out),
                            Some((events, guard, permit, chunk)),
                        ));
                    }
                    Some(ChatEvent::Done(g)) => {
                        state.metrics.tokens(prompt_len, g.token_ids.len());
                        let mut out = chunk.delta(json!({}), Some(finish_reason(&g)));
                        if include_usage {
                            let mut u = chunk.base(json!([]));
                            u["usage"] = usage(prompt_len, g.token_ids.len());
                            out.push_str(&format!("data: {u}\n\n"));
                        }
                        out
                    }
                    Some(ChatEvent::Failed(e)) => format!("data: {}\n\n", e.body()),
                    _ => String::new(),
                };
                drop((guard, permit));
                Some((Ok(format!("{text}data: [DONE]\n\n")), None))
            }
        });
        let stream =
            futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(tail);
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(stream))
            .expect("valid response"));
    }
    let generation = loop {
        match events.recv().await {
            Some(ChatEvent::Delta { .. }) => continue,
            Some(ChatEvent::Done(g)) => break g,
            Some(ChatEvent::Failed(e)) => return Err(e),
            _ => return Err(ApiError::internal("the model worker stopped")),
        }
    };
    drop((guard, permit));
    state
        .metrics
        .tokens(prompt_ids.len(), generation.token_ids.len());
    let logprobs = match (&generation.logprobs, want_logprobs) {
        (Some(list), true) => json!({"content": logprob_entries(state.tokenizer.as_ref(), list)}),
        _ => Value::Null,
    };
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": generation.text},
            "logprobs": logprobs,
            "finish_reason": finish_reason(&generation),
            "token_ids": generation.token_ids,
        }],
        "usage": usage(prompt_ids.len(), generation.token_ids.len()),
        "prompt_token_ids": prompt_ids,
    }))
    .into_response())
}

fn finish_reason(g: &Generation) -> &'static str {
    if g.stopped {
        "stop"
    } else {
        "length"
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// OpenAI's log-probability entries: `token` (the token's text), `bytes` (its raw bytes, which
/// may be part of a character), `logprob`, `top_logprobs`; plus `token_id` (an extension).
fn logprob_entries(tokenizer: Option<&Tokenizer>, list: &[TokenLogprob]) -> Vec<Value> {
    let entry = |id: u32, logprob: f32| {
        let bytes = tokenizer
            .and_then(|t| t.token_bytes(id))
            .unwrap_or_default();
        json!({
            "token": String::from_utf8_lossy(&bytes),
            "token_id": id,
            "logprob": logprob,
            "bytes": bytes,
        })
    };
    list.iter()
        .map(|t| {
            let mut e = entry(t.token_id, t.logprob);
            e["top_logprobs"] = Value::Array(t.top.iter().map(|&(i, l)| entry(i, l)).collect());
            e
        })
        .collect()
}

struct ChunkMaker {
    id: String,
    created: u64,
    model: String,
}

impl ChunkMaker {
    fn base(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn delta(&self, delta: Value, finish: Option<&str>) -> String {
        self.delta_with(delta, None, finish)
    }

    fn delta_with(&self, delta: Value, logprobs: Option<Value>, finish: Option<&str>) -> String {
        let v = self.base(json!([{
            "index": 0,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish,
        }]));
        format!("data: {v}\n\n")
    }
}

async fn embeddings(State(state): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: EmbeddingsRequest = parse_body(&state, body).await?;
    check_model(&state, &req.model)?;
    if state.chat {
        return Err(ApiError::bad_request(
            "this model serves chat completions, not embeddings (use an InternVL-C/G model)",
        ));
    }
    let base64_out = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format `{other}` is not supported (float, base64)"
            )))
        }
    };
    let head: Head = match req.head.as_deref() {
        None => Head::C,
        Some(h) => h
            .parse()
            .map_err(|e| ApiError::bad_request(format!("head: {e}")))?,
    };
    let items: Vec<EmbeddingItem> = match req.input {
        EmbeddingInput::One(s) => vec![EmbeddingItem::Text(s)],
        EmbeddingInput::Many(v) => v,
    };
    if items.is_empty() || items.len() > state.config.limits.max_embedding_inputs {
        return Err(ApiError::bad_request(format!(
            "input must hold 1 to {} items",
            state.config.limits.max_embedding_inputs
        )));
    }
    let mut urls = Vec::new();
    for item in &items {
        if let EmbeddingItem::Part(Part::ImageUrl { image_url }) = item {
            urls.push(image_url.url.clone());
        }
    }
    let mut images = decode_images(&state, urls).await?.into_iter();
    let inputs: Vec<EmbedInput> = items
        .into_iter()
        .map(|item| match item {
            EmbeddingItem::Text(t) | EmbeddingItem::Part(Part::Text { text: t }) => {
                EmbedInput::Text(t)
            }
            EmbeddingItem::Part(Part::ImageUrl { .. }) => {
                EmbedInput::Image(images.next().expect("one image per image item"))
            }
        })
        .collect();
    let permit = admit(&state).await?;
    let (reply, rx) = oneshot::channel();
    state
        .jobs
        .send(Job::Embed(EmbedJob {
            inputs,
            head,
            reply,
        }))
        .await
        .map_err(|_| ApiError::internal("the model worker stopped"))?;
    let output = rx
        .await
        .map_err(|_| ApiError::internal("the model worker stopped"))??;
    drop(permit);
    let data: Vec<Value> = output
        .rows
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64_out {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": state.config.model_id,
        "usage": {"prompt_tokens": output.prompt_tokens, "total_tokens": output.prompt_tokens},
    }))
    .into_response())
}
