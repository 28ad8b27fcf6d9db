//! The model worker: one OS thread owns the model. Chat requests are decoded with continuous
//! batching: a new request's prompt runs (prefill) between decode steps, then joins the rows
//! whose next tokens are computed together in one batched step; a finished or cancelled row
//! leaves at once. Embedding requests run between steps.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use internvl::models::internvl_cg::{l2_normalize, Head};
use internvl::models::{ModelFolder, ModelKind};
use internvl::processing::templates::PromptBuilder;
use internvl::tasks::chat::{
    ChatModel, Generation, GenerationOptions, GenerationState, TokenLogprob,
};
use internvl::tasks::contrastive::{ContrastiveSession, ImagePreprocessor, ImageTransform};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use crate::api::ApiError;

/// A loaded model: a chat model or an InternVL-C/G embedding model.
pub enum Backend {
    /// InternVL-Chat (or a GGUF chat LLM).
    Chat(Box<ChatModel>),
    /// InternVL-C/G with the retrieval image transform (as `internvl embed`).
    Embed(Box<EmbedBackend>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Chat(_) => f.write_str("Backend::Chat"),
            Backend::Embed(_) => f.write_str("Backend::Embed"),
        }
    }
}

/// InternVL-C/G with its image preprocessing.
#[derive(Debug)]
pub struct EmbedBackend {
    session: ContrastiveSession,
    preprocessor: ImagePreprocessor,
    device: Device,
}

impl Backend {
    /// Opens `path`: an InternVL-C/G folder becomes an embedding backend, anything else (an
    /// InternVL-Chat folder, a `.gguf` file) a chat backend.
    pub fn open(
        path: &Path,
        template: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> internvl::Result<Self> {
        if path.is_dir() {
            let folder = ModelFolder::open(path)?;
            if folder.kind() == ModelKind::InternVLCG {
                let session =
                    ContrastiveSession::open(&folder, ImageTransform::Retrieval, dtype, device)?;
                let preprocessor = ImagePreprocessor::new(
                    ImageTransform::Retrieval,
                    session.model().image_size(),
                    folder.preprocessor_config().as_deref(),
                )?;
                return Ok(Backend::Embed(Box::new(EmbedBackend {
                    session,
                    preprocessor,
                    device: device.clone(),
                })));
            }
        }
        Ok(Backend::Chat(Box::new(ChatModel::open(
            path, template, None, dtype, device,
        )?)))
    }

    /// The chat model's context length (0 for embedding models).
    pub fn context_length(&self) -> usize {
        match self {
            Backend::Chat(m) => m.context_length(),
            Backend::Embed(_) => 0,
        }
    }
}

/// What a chat job reports back, in order: `Started`, any `Text`, then `Done` or `Failed`.
#[derive(Debug)]
pub enum ChatEvent {
    /// The prompt was built; generation starts.
    Started {
        /// Prompt tokens.
        prompt_ids: Vec<u32>,
    },
    /// Newly generated text (possibly empty: a token may end mid-character or start a stop
    /// string) and the log-probabilities of the tokens generated since the last event.
    Delta {
        /// Text to append.
        text: String,
        /// One entry per new token, when log-probabilities were requested.
        logprobs: Vec<TokenLogprob>,
    },
    /// Generation finished.
    Done(Box<Generation>),
    /// The job failed.
    Failed(ApiError),
}

/// One chat completion to run.
#[derive(Debug)]
pub struct ChatJob {
    /// System message overriding the template's.
    pub system: Option<String>,
    /// Earlier (user, assistant) turns.
    pub history: Vec<(String, String)>,
    /// The last user message, placeholders included.
    pub question: String,
    /// All images of the conversation, in order.
    pub images: Vec<RgbImage>,
    /// Decoding options.
    pub options: GenerationOptions,
    /// Where events go.
    pub events: mpsc::UnboundedSender<ChatEvent>,
    /// Set when the client went away.
    pub cancel: Arc<AtomicBool>,
}

/// One embedding input.
#[derive(Debug)]
pub enum EmbedInput {
    /// A text.
    Text(String),
    /// A decoded image.
    Image(RgbImage),
}

/// One embeddings request to run.
#[derive(Debug)]
pub struct EmbedJob {
    /// The inputs, in order.
    pub inputs: Vec<EmbedInput>,
    /// The image head.
    pub head: Head,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<EmbedOutput, ApiError>>,
}

/// The result of an embeddings request.
#[derive(Debug)]
pub struct EmbedOutput {
    /// L2-normalised vectors, one per input, in order.
    pub rows: Vec<Vec<f32>>,
    /// Tokens read for the text inputs (images count none).
    pub prompt_tokens: usize,
}

/// A queued job.
#[derive(Debug)]
pub enum Job {
    /// A chat completion.
    Chat(ChatJob),
    /// Embeddings.
    Embed(EmbedJob),
}

/// Counters the worker shares with the server's metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Chat generations cut short by a client disconnect.
    pub cancelled: AtomicU64,
    /// Batched decode steps run.
    pub decode_steps: AtomicU64,
    /// Rows (requests) summed over the decode steps; `/ decode_steps` is the mean batch.
    pub decode_rows: AtomicU64,
}

/// A chat request being decoded.
struct Running {
    state: GenerationState,
    events: mpsc::UnboundedSender<ChatEvent>,
    cancel: Arc<AtomicBool>,
    /// Log-probability entries already sent.
    sent_logprobs: usize,
}

/// Runs jobs until the queue closes and every admitted generation has finished; at most
/// `max_batch` chat requests decode together.
pub fn run(backend: Backend, mut jobs: mpsc::Receiver<Job>, max_batch: usize, stats: &WorkerStats) {
    let mut running: Vec<Running> = Vec::new();
    let mut open = true;
    loop {
        if running.is_empty() {
            match jobs.blocking_recv() {
                Some(job) => admit(&backend, job, &mut running),
                None => break,
            }
        }
        while open && running.len() < max_batch.max(1) {
            match jobs.try_recv() {
                Ok(job) => admit(&backend, job, &mut running),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if !running.is_empty() {
            running = decode_round(&backend, running, stats);
        } else if !open {
            break;
        }
    }
}

/// Starts a chat job (prompt + prefill) or runs an embedding job.
fn admit(backend: &Backend, job: Job, running: &mut Vec<Running>) {
    match job {
        Job::Chat(job) => {
            if job.cancel.load(Ordering::Relaxed) {
                return;
            }
            let events = job.events.clone();
            let started = guarded(|| start_chat(backend, job));
            match started {
                Ok(Some(r)) => running.push(r),
                Ok(None) => {}
                Err(e) => {
                    let _ = events.send(ChatEvent::Failed(e));
                }
            }
        }
        Job::Embed(job) => {
            let outcome = guarded(|| run_embed(backend, &job.inputs, job.head));
            let _ = job.reply.send(outcome);
        }
    }
}

/// Runs `f`, turning a panic into a 500.
fn guarded<T>(f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(ApiError::internal("the model worker panicked")))
}

/// One round: every running request chooses its next token (streaming its text); those that go
/// on are fed to the model in one batched step. Returns the requests still running.
fn decode_round(backend: &Backend, running: Vec<Running>, stats: &WorkerStats) -> Vec<Running> {
    let Backend::Chat(model) = backend else {
        return Vec::new();
    };
    let mut next = Vec::with_capacity(running.len());
    let mut tokens = Vec::with_capacity(running.len());
    for mut r in running {
        if r.cancel.load(Ordering::Relaxed) {
            r.state.cancel();
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            let _ = guarded(|| model.finish(r.state, &mut |_| {}).map_err(model_error));
            continue;
        }
        let mut text = String::new();
        let chosen = guarded(|| {
            model
                .choose_next(&mut r.state, &mut |piece| text.push_str(piece))
                .map_err(model_error)
        });
        match chosen {
            Ok(Some(token)) => {
                send_delta(&mut r, text);
                tokens.push(token);
                next.push(r);
            }
            Ok(None) => {
                let finished = guarded(|| {
                    model
                        .finish(r.state, &mut |piece| text.push_str(piece))
                        .map_err(model_error)
                });
                let logprobs = match &finished {
                    Ok(g) => g.logprobs.as_deref().unwrap_or_default(),
                    Err(_) => &[],
                };
                let new = logprobs.get(r.sent_logprobs..).unwrap_or_default().to_vec();
                if !text.is_empty() || !new.is_empty() {
                    let _ = r.events.send(ChatEvent::Delta {
                        text,
                        logprobs: new,
                    });
                }
                let _ = r.events.send(match finished {
                    Ok(g) => ChatEvent::Done(Box::new(g)),
                    Err(e) => ChatEvent::Failed(e),
                });
            }
            Err(e) => {
                let _ = r.events.send(ChatEvent::Failed(e));
            }
        }
    }
    if next.is_empty() {
        return next;
    }
    stats.decode_steps.fetch_add(1, Ordering::Relaxed);
    stats
        .decode_rows
        .fetch_add(next.len() as u64, Ordering::Relaxed);
    let stepped = guarded(|| {
        let mut states: Vec<&mut GenerationState> = next.iter_mut().map(|r| &mut r.state).collect();
        model.decode_step(&mut states, &tokens).map_err(model_error)
    });
    if let Err(e) = stepped {
        for r in &next {
            let _ = r.events.send(ChatEvent::Failed(e.clone()));
        }
        return Vec::new();
    }
    next
}

/// Sends the text and the log-probabilities not sent yet (nothing when both are empty); a
/// closed channel marks the request cancelled.
fn send_delta(r: &mut Running, text: String) {
    let logprobs = r
        .state
        .logprobs()
        .and_then(|l| l.get(r.sent_logprobs..))
        .unwrap_or_default()
        .to_vec();
    r.sent_logprobs += logprobs.len();
    if (!text.is_empty() || !logprobs.is_empty())
        && r.events.send(ChatEvent::Delta { text, logprobs }).is_err()
    {
        r.cancel.store(true, Ordering::Relaxed);
    }
}

fn model_error(e: internvl::Error) -> ApiError {
    match e {
        internvl::Error::InvalidArgument(m) => ApiError::bad_request(m),
        internvl::Error::Image { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

/// Builds the prompt, checks it against the context and runs the prefill; `None` when the
/// client has already gone.
fn start_chat(backend: &Backend, job: ChatJob) -> Result<Option<Running>, ApiError> {
    let Backend::Chat(model) = backend else {
        return Err(ApiError::bad_request(
            "this model serves embeddings, not chat completions",
        ));
    };
    let images = model
        .prepare_decoded_images(&job.images, None)
        .map_err(model_error)?;
    let tiles = images
        .as_ref()
        .map(|i| i.num_patches_list.clone())
        .unwrap_or_default();
    let history = (!job.history.is_empty()).then_some(job.history.as_slice());
    let prompt_ids = match &job.system {
        None => model
            .prompt_ids(&job.question, history, &tiles)
            .map(|p| p.1),
        Some(system) => {
            let base = model.prompts();
            PromptBuilder::new(base.template().name, Some(system), base.num_image_token())
                .and_then(|b| b.chat(&job.question, history, &tiles))
                .and_then(|p| p.input_ids(model.tokenizer()))
        }
    }
    .map_err(model_error)?;
    let context = model.context_length();
    if prompt_ids.len() + job.options.max_new_tokens > context {
        return Err(ApiError::bad_request(format!(
            "this model's maximum context length is {context} tokens; the prompt has {} tokens and max_tokens is {}",
            prompt_ids.len(),
            job.options.max_new_tokens
        ))
        .with_code("context_length_exceeded"));
    }
    let state = model
        .start(&prompt_ids, images.as_ref(), &job.options)
        .map_err(model_error)?;
    if job.events.send(ChatEvent::Started { prompt_ids }).is_err() {
        return Ok(None);
    }
    Ok(Some(Running {
        state,
        events: job.events,
        cancel: job.cancel,
        sent_logprobs: 0,
    }))
}

fn run_embed(
    backend: &Backend,
    inputs: &[EmbedInput],
    head: Head,
) -> Result<EmbedOutput, ApiError> {
    let Backend::Embed(embed) = backend else {
        return Err(ApiError::bad_request(
            "this model serves chat completions, not embeddings (use an InternVL-C/G model)",
        ));
    };
    let texts: Vec<&str> = inputs
        .iter()
        .filter_map(|i| match i {
            EmbedInput::Text(t) => Some(t.as_str()),
            EmbedInput::Image(_) => None,
        })
        .collect();
    let pixels = inputs
        .iter()
        .filter_map(|i| match i {
            EmbedInput::Image(img) => Some(embed.preprocessor.pixels(img)),
            EmbedInput::Text(_) => None,
        })
        .collect::<internvl::Result<Vec<Tensor>>>()
        .map_err(model_error)?;
    let prompt_tokens = if texts.is_empty() {
        0
    } else {
        embed
            .session
            .text_token_counts(&texts)
            .map_err(model_error)?
            .iter()
            .sum()
    };
    let text_rows = if texts.is_empty() {
        Vec::new()
    } else {
        embed
            .session
            .text_embeds_normalized(&texts)
            .and_then(|t| Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?))
            .map_err(model_error)?
    };
    let image_rows = if pixels.is_empty() {
        Vec::new()
    } else {
        let compute = || -> internvl::Result<Vec<Vec<f32>>> {
            let batch = Tensor::stack(&pixels, 0)?.to_device(&embed.device)?;
            let model = embed.session.model();
            let tokens = model.vision_tokens(&batch)?;
            let e = model.image_embeds(&tokens, head)?;
            (0..pixels.len())
                .map(|i| Ok(l2_normalize(&e.get(i)?.to_dtype(DType::F32)?)?.to_vec1::<f32>()?))
                .collect()
        };
        compute().map_err(model_error)?
    };
    let (mut t, mut i) = (text_rows.into_iter(), image_rows.into_iter());
    let rows = inputs
        .iter()
        .map(|input| match input {
            EmbedInput::Text(_) => t.next().expect("one row per text"),
            EmbedInput::Image(_) => i.next().expect("one row per image"),
        })
        .collect();
    Ok(EmbedOutput {
        rows,
        prompt_tokens,
    })
}
