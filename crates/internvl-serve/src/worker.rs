//! The model worker: one OS thread owns the model and runs queued jobs one at a time.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use internvl::models::internvl_cg::{l2_normalize, Head};
use internvl::models::{ModelFolder, ModelKind};
use internvl::processing::templates::PromptBuilder;
use internvl::tasks::chat::{ChatModel, Generation, GenerationOptions};
use internvl::tasks::contrastive::{ContrastiveSession, ImagePreprocessor, ImageTransform};
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
    /// A streamed piece of text.
    Text(String),
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
    /// Where the L2-normalised vectors go (one per input, in order).
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, ApiError>>,
}

/// A queued job.
#[derive(Debug)]
pub enum Job {
    /// A chat completion.
    Chat(ChatJob),
    /// Embeddings.
    Embed(EmbedJob),
}

/// Runs jobs until the queue closes; counts the chat generations cut short by a disconnect in
/// `cancelled`.
pub fn run(backend: Backend, mut jobs: mpsc::Receiver<Job>, cancelled: &AtomicU64) {
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Chat(job) => {
                let events = job.events.clone();
                if job.cancel.load(Ordering::Relaxed) {
                    continue;
                }
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| run_chat(&backend, job)));
                let failure = match outcome {
                    Ok(Ok(was_cancelled)) => {
                        if was_cancelled {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                        None
                    }
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(ApiError::internal("the model worker panicked")),
                };
                if let Some(e) = failure {
                    let _ = events.send(ChatEvent::Failed(e));
                }
            }
            Job::Embed(job) => {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    run_embed(&backend, &job.inputs, job.head)
                }))
                .unwrap_or_else(|_| Err(ApiError::internal("the model worker panicked")));
                let _ = job.reply.send(outcome);
            }
        }
    }
}

fn model_error(e: internvl::Error) -> ApiError {
    match e {
        internvl::Error::InvalidArgument(m) => ApiError::bad_request(m),
        internvl::Error::Image { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

/// Runs one chat job; `Ok(true)` when the client's disconnect cut the generation short.
fn run_chat(backend: &Backend, job: ChatJob) -> Result<bool, ApiError> {
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
    let events = job.events.clone();
    let cancel = job.cancel.clone();
    if events
        .send(ChatEvent::Started {
            prompt_ids: prompt_ids.clone(),
        })
        .is_err()
    {
        return Ok(true);
    }
    let mut on_text = |piece: &str| {
        if events.send(ChatEvent::Text(piece.to_string())).is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let is_cancelled = || job.cancel.load(Ordering::Relaxed);
    let generation = model
        .generate_cancellable(
            &prompt_ids,
            images.as_ref(),
            &job.options,
            &mut on_text,
            &is_cancelled,
        )
        .map_err(model_error)?;
    let was_cancelled = generation.cancelled;
    let _ = job.events.send(ChatEvent::Done(Box::new(generation)));
    Ok(was_cancelled)
}

fn run_embed(
    backend: &Backend,
    inputs: &[EmbedInput],
    head: Head,
) -> Result<Vec<Vec<f32>>, ApiError> {
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
    Ok(inputs
        .iter()
        .map(|input| match input {
            EmbedInput::Text(_) => t.next().expect("one row per text"),
            EmbedInput::Image(_) => i.next().expect("one row per image"),
        })
        .collect())
}
