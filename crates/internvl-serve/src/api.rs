//! OpenAI request shapes, the OpenAI error shape, and turning messages and image URLs into the
//! model's question, history and images.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use image::RgbImage;
use serde::Deserialize;
use serde_json::json;

/// An error answered in OpenAI's JSON shape `{"error": {message, type, param, code}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// An error with the given status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Sets OpenAI's `code`.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": null,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Size limits of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes of a request body (413 beyond).
    pub max_body_bytes: usize,
    /// Most decoded bytes of one image (413 beyond).
    pub max_image_bytes: usize,
    /// Most pixels (width × height) of one image (400 beyond).
    pub max_image_pixels: u64,
    /// Most images in one request (400 beyond).
    pub max_images: usize,
    /// Most `max_tokens` one request may ask for (400 beyond).
    pub max_tokens: usize,
    /// Most inputs of one embeddings request (400 beyond).
    pub max_embedding_inputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_image_bytes: 16 << 20,
            max_image_pixels: 40_000_000,
            max_images: 16,
            max_tokens: 4096,
            max_embedding_inputs: 256,
        }
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    /// Send a last chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions` body (fields the server reads; others are ignored).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model id.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f64>,
    /// Nucleus threshold.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Return log-probabilities.
    pub logprobs: Option<bool>,
    /// Alternatives per token.
    pub top_logprobs: Option<i64>,
    /// Choices (1 only).
    pub n: Option<i64>,
    /// Server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// system, developer, user or assistant.
    pub role: String,
    /// Text or parts.
    pub content: Option<Content>,
}

/// Message content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and image parts.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum Part {
    /// `{"type": "text", "text": ...}`.
    #[serde(rename = "text")]
    Text {
        /// The text.
        text: String,
    },
    /// `{"type": "image_url", "image_url": {"url": ...}}`.
    #[serde(rename = "image_url")]
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
}

/// An image reference.
#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    /// `data:image/...;base64,...`, or a local path / `file://` URL under `--allow-local-files`.
    pub url: String,
}

/// The conversation as the model takes it.
#[derive(Debug, Default)]
pub struct Conversation {
    /// The system message, when one was given.
    pub system: Option<String>,
    /// Earlier (user, assistant) turns, placeholders included.
    pub history: Vec<(String, String)>,
    /// The last user message, placeholders included.
    pub question: String,
    /// Image sources in order of appearance.
    pub images: Vec<String>,
}

fn content_parts(content: &Option<Content>) -> (String, Vec<String>) {
    match content {
        None => (String::new(), Vec::new()),
        Some(Content::Text(t)) => (t.clone(), Vec::new()),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for part in parts {
                match part {
                    Part::Text { text } => texts.push(text.as_str()),
                    Part::ImageUrl { image_url } => images.push(image_url.url.clone()),
                }
            }
            (texts.join("\n"), images)
        }
    }
}

/// Splits OpenAI messages into system message, history pairs and the last question; each user
/// message's images become placeholders before its text (`<image>\n` for one image,
/// `Image-k: <image>\n` lines numbered across the conversation for several) unless its text
/// already holds `<image>` placeholders.
pub fn conversation(messages: &[Message]) -> Result<Conversation, ApiError> {
    let mut conv = Conversation::default();
    let mut turns: Vec<(String, String)> = Vec::new();
    let mut pending_user: Option<String> = None;
    let mut counter = 0usize;
    for m in messages {
        let (text, images) = content_parts(&m.content);
        match m.role.as_str() {
            "system" | "developer" => {
                if !images.is_empty() {
                    return Err(ApiError::bad_request("system messages cannot hold images"));
                }
                conv.system = Some(match conv.system.take() {
                    Some(s) => format!("{s}\n{text}"),
                    None => text,
                });
            }
            "user" => {
                if pending_user.is_some() {
                    return Err(ApiError::bad_request(
                        "two user messages in a row: user and assistant messages must alternate",
                    ));
                }
                let mut question = String::new();
                if !images.is_empty() && !text.contains("<image>") {
                    if images.len() == 1 {
                        question.push_str("<image>\n");
                        counter += 1;
                    } else {
                        for _ in &images {
                            counter += 1;
                            question.push_str(&format!("Image-{counter}: <image>\n"));
                        }
                    }
                } else {
                    counter += images.len();
                }
                question.push_str(&text);
                conv.images.extend(images);
                pending_user = Some(question);
            }
            "assistant" => {
                if !images.is_empty() {
                    return Err(ApiError::bad_request(
                        "assistant messages cannot hold images",
                    ));
                }
                let Some(user) = pending_user.take() else {
                    return Err(ApiError::bad_request(
                        "an assistant message must follow a user message",
                    ));
                };
                turns.push((user, text));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported message role `{other}` (system, developer, user, assistant)"
                )))
            }
        }
    }
    let Some(question) = pending_user else {
        return Err(ApiError::bad_request(
            "the last message must be a user message",
        ));
    };
    conv.history = turns;
    conv.question = question;
    Ok(conv)
}

fn base64_engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// Reads an image source: a `data:` URI (base64), or a local path / `file://` URL when
/// `local_root` allows it; remote URLs are refused. Checks the byte and pixel limits and
/// decodes to RGB (the bytes decide the format).
pub fn load_image(
    url: &str,
    local_root: Option<&Path>,
    limits: &Limits,
) -> Result<RgbImage, ApiError> {
    let bytes = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| ApiError::bad_request("malformed data URI: no `,`"))?;
        let mut meta_parts = meta.split(';');
        let media = meta_parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if !media.starts_with("image/") {
            return Err(ApiError::bad_request(format!(
                "data URI media type `{media}` is not an image type"
            )));
        }
        if !meta_parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
            return Err(ApiError::bad_request(
                "data URIs must be base64-encoded (`;base64,`)",
            ));
        }
        let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if data.len() / 4 * 3 > limits.max_image_bytes + 3 {
            return Err(ApiError::too_large(format!(
                "an image is larger than the limit of {} bytes",
                limits.max_image_bytes
            )));
        }
        base64_engine()
            .decode(data.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("invalid base64 in data URI: {e}")))?
    } else if url.starts_with("http://") || url.starts_with("https://") {
        return Err(ApiError::bad_request(
            "remote image URLs are not fetched: send the image as a data: URI",
        ));
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let root = local_root.ok_or_else(|| {
            ApiError::bad_request(
                "local image paths are refused (start the server with --allow-local-files DIR)",
            )
        })?;
        let resolved = std::fs::canonicalize(PathBuf::from(path))
            .map_err(|_| ApiError::bad_request(format!("no readable image file `{path}`")))?;
        if !resolved.starts_with(root) {
            return Err(ApiError::bad_request(format!(
                "`{path}` is outside the directory allowed by --allow-local-files"
            )));
        }
        let size = std::fs::metadata(&resolved).map(|m| m.len()).unwrap_or(0);
        if size > limits.max_image_bytes as u64 {
            return Err(ApiError::too_large(format!(
                "an image is larger than the limit of {} bytes",
                limits.max_image_bytes
            )));
        }
        std::fs::read(&resolved)
            .map_err(|_| ApiError::bad_request(format!("no readable image file `{path}`")))?
    };
    if bytes.len() > limits.max_image_bytes {
        return Err(ApiError::too_large(format!(
            "an image is larger than the limit of {} bytes",
            limits.max_image_bytes
        )));
    }
    if let Ok((w, h)) = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|_| ())
        .and_then(|r| r.into_dimensions().map_err(|_| ()))
    {
        if w as u64 * h as u64 > limits.max_image_pixels {
            return Err(ApiError::bad_request(format!(
                "an image of {w}x{h} pixels exceeds the limit of {} pixels",
                limits.max_image_pixels
            )));
        }
    }
    let origin = if url.starts_with("data:") {
        "data URI"
    } else {
        url
    };
    internvl::processing::image::decode_rgb(&bytes, origin)
        .map_err(|e| ApiError::bad_request(format!("not a decodable image: {e}")))
}

/// `POST /v1/embeddings` body. `input` is a string, a list of strings, or (this server's
/// extension) a list mixing strings and `{"type": "text", "text": ...}` /
/// `{"type": "image_url", "image_url": {"url": "data:image/...;base64,..."}}` items; `head`
/// (extension) picks the image head, `c` (default) or `g`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model id.
    pub model: String,
    /// The inputs.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// Image head: `c` or `g`.
    pub head: Option<String>,
}

/// `input` of an embeddings request.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several items.
    Many(Vec<EmbeddingItem>),
}

/// One item of an embeddings `input` list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingItem {
    /// A text.
    Text(String),
    /// A typed part (text or image).
    Part(Part),
}
