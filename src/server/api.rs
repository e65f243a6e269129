//! OpenAI's request and response shapes, and their translation into the engine's jobs. Every
//! field is checked here, so that a bad request is refused with a 400 naming the field before any
//! model work is queued.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::image::{decode_rgb, ImageInputError, RgbImage};
use crate::pipeline::SamplerKind;
use crate::sampling::SamplingParams;
use crate::tokenizer::{ChatMessage, ContentPart};

use super::engine::{ChatJob, ImageJob};
use super::error::ApiError;

/// Images one request may ask for (OpenAI's own limit for `n`).
pub const MAX_IMAGES_PER_REQUEST: usize = 10;
/// Stop strings one request may give (OpenAI's limit), and their length.
pub const MAX_STOP_STRINGS: usize = 4;
pub const MAX_STOP_BYTES: usize = 256;

/// `POST /v1/chat/completions`.
#[derive(Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    messages: Vec<RequestMessage>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// Not in OpenAI's API; llama-server's extension.
    top_k: Option<usize>,
    seed: Option<u64>,
    stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RequestMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

/// Parses a JSON body into `T`, or a 400 saying where it is wrong.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

impl ChatRequest {
    /// Whether the stream ends with a `usage` chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The engine's job: messages with at most one image (decoded here), sampling settings in
    /// range, the answer length bounded by `context`.
    pub fn into_job(self, max_image_pixels: u64, context: usize) -> Result<ChatJob, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_field("messages", "messages is empty"));
        }
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_field(
                "n",
                format!("n = {n}: this server makes one choice per request"),
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_field(
                "temperature",
                format!("temperature {temperature} is not between 0 and 2"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_field(
                "top_p",
                format!("top_p {top_p} is not in (0, 1]"),
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => context,
            Some(0) => {
                return Err(ApiError::bad_field(
                    "max_tokens",
                    "max_tokens must be at least 1",
                ))
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(context),
        };
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOP_STRINGS || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::bad_field(
                "stop",
                format!("stop takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_BYTES} bytes"),
            ));
        }
        let mut image = None;
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.into_iter().enumerate() {
            let role = match message.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::bad_field(
                        "messages",
                        format!(
                        "messages[{i}].role '{other}' is not system, developer, user or assistant"
                    ),
                    ))
                }
            };
            let content = match message.content {
                None => ChatMessage::text(role, ""),
                Some(Content::Text(text)) => ChatMessage::text(role, text),
                Some(Content::Parts(parts)) => {
                    let mut out = Vec::with_capacity(parts.len());
                    for (j, part) in parts.into_iter().enumerate() {
                        match part {
                            Part::Text { text } => out.push(ContentPart::Text(text)),
                            Part::ImageUrl { image_url } => {
                                if image.is_some() {
                                    return Err(ApiError::bad_field(
                                        "messages",
                                        "this server takes one image per request",
                                    ));
                                }
                                let what = format!("messages[{i}].content[{j}].image_url");
                                image =
                                    Some(data_url_image(&image_url.url, &what, max_image_pixels)?);
                                out.push(ContentPart::Image);
                            }
                        }
                    }
                    ChatMessage::parts(role, out)
                }
            };
            messages.push(content);
        }
        Ok(ChatJob {
            messages,
            image,
            max_tokens,
            sampling: SamplingParams {
                temperature,
                top_k: self.top_k.unwrap_or(0),
                top_p,
                repetition_penalty: 1.0,
                seed: self.seed.unwrap_or_else(crate::rng::random_seed),
            },
            stop,
        })
    }
}

/// A `data:image/…;base64,…` URL's image. Other URLs are refused: the server fetches nothing.
fn data_url_image(url: &str, what: &str, max_pixels: u64) -> Result<RgbImage, ApiError> {
    let Some(rest) = url.strip_prefix("data:") else {
        let scheme = url.split(':').next().unwrap_or("");
        return Err(ApiError::bad_field(
            "messages",
            format!(
                "{what}: only data: URLs are taken (the server fetches nothing), not '{scheme}:'"
            ),
        ));
    };
    let Some((header, payload)) = rest.split_once(',') else {
        return Err(ApiError::bad_field(
            "messages",
            format!("{what}: a data: URL without a comma"),
        ));
    };
    let Some(media) = header.strip_suffix(";base64") else {
        return Err(ApiError::bad_field(
            "messages",
            format!("{what}: the data: URL is not base64"),
        ));
    };
    if !matches!(
        media,
        "" | "image/png" | "image/jpeg" | "image/jpg" | "image/webp"
    ) {
        return Err(ApiError::bad_field(
            "messages",
            format!("{what}: '{media}' is not image/png, image/jpeg or image/webp"),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ApiError::bad_field("messages", format!("{what}: bad base64: {e}")))?;
    decode_rgb(&bytes, what, max_pixels).map_err(|e| match e {
        ImageInputError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        other => ApiError::bad_field("messages", other.to_string()),
    })
}

/// `POST /v1/images/generations`.
#[derive(Deserialize)]
pub struct ImagesRequest {
    pub model: Option<String>,
    prompt: String,
    n: Option<u64>,
    size: Option<String>,
    response_format: Option<String>,
    seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    // Extensions (stable-diffusion.cpp's names).
    steps: Option<usize>,
    cfg_scale: Option<f32>,
    negative_prompt: Option<String>,
    sampler: Option<String>,
}

impl ImagesRequest {
    /// The engine's job; `size` must be the model's own.
    pub fn into_job(self, image_size: [usize; 2]) -> Result<ImageJob, ApiError> {
        let [height, width] = image_size;
        if let Some(size) = self.size.as_deref().filter(|&s| s != "auto") {
            if size != format!("{width}x{height}") {
                return Err(ApiError::bad_field(
                    "size",
                    format!("size '{size}': this model makes {width}x{height} images only"),
                ));
            }
        }
        match self.response_format.as_deref() {
            None | Some("b64_json") => {}
            Some("url") => {
                return Err(ApiError::bad_field(
                    "response_format",
                    "response_format 'url' needs a place to host files; this server returns b64_json only",
                ))
            }
            Some(other) => {
                return Err(ApiError::bad_field("response_format", format!("response_format '{other}' is not b64_json")))
            }
        }
        let n = self.n.unwrap_or(1);
        if n == 0 || n > MAX_IMAGES_PER_REQUEST as u64 {
            return Err(ApiError::bad_field(
                "n",
                format!("n = {n}: one request makes 1 to {MAX_IMAGES_PER_REQUEST} images"),
            ));
        }
        if self.prompt.trim().is_empty() {
            return Err(ApiError::bad_field("prompt", "the prompt is empty"));
        }
        let sampler = match self.sampler.as_deref() {
            None | Some("euler") => SamplerKind::Euler,
            Some("heun") => SamplerKind::Heun,
            Some(other) => {
                return Err(ApiError::bad_field(
                    "sampler",
                    format!("sampler '{other}' is not euler or heun"),
                ))
            }
        };
        if let Some(s) = self.cfg_scale.filter(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(ApiError::bad_field(
                "cfg_scale",
                format!("cfg_scale {s} must be a finite number ≥ 0"),
            ));
        }
        Ok(ImageJob {
            prompt: self.prompt,
            negative_prompt: self.negative_prompt,
            n: n as usize,
            seed: self.seed,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            sampler,
        })
    }
}

/// Seconds since the Unix epoch, as OpenAI's `created`.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A completion id: unique within the process and across restarts in practice.
pub fn completion_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("chatcmpl-{:x}{n:04x}", crate::rng::random_seed())
}

/// One streamed chunk of a chat completion.
pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::MessageContent;

    fn job(body: Value) -> Result<ChatJob, ApiError> {
        parse::<ChatRequest>(body.to_string().as_bytes())?.into_job(1 << 20, 512)
    }

    fn png_url() -> String {
        let mut bytes = Vec::new();
        let mut encoder = ::png::Encoder::new(&mut bytes, 2, 3);
        encoder.set_color(::png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[200; 18]).unwrap();
        writer.finish().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        format!("data:image/png;base64,{b64}")
    }

    #[test]
    fn messages_become_template_turns_with_one_decoded_image() {
        let job = job(json!({"messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(), "detail": "low"}},
                                         {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": null}],
            "max_tokens": 100000, "stop": "\n"}))
        .unwrap();
        assert_eq!(job.messages[0].role, "system");
        assert_eq!(job.messages[1].image_parts(), 1);
        assert_eq!(job.messages[2].content, MessageContent::Text(String::new()));
        let image = job.image.unwrap();
        assert_eq!((image.width, image.height), (2, 3));
        assert_eq!(job.max_tokens, 512, "bounded by the context");
        assert_eq!(job.stop, ["\n"]);
        // OpenAI's defaults.
        assert_eq!((job.sampling.temperature, job.sampling.top_p), (1.0, 1.0));
    }

    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        let image = |url: &str| json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]});
        let cases = [
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages",
            ),
            (image("data:image/gif;base64,R0lGOD"), "messages"),
            (image("data:image/png,raw"), "messages"),
            (image("data:image/png;base64"), "messages"),
            (image("file:///etc/passwd"), "messages"),
            (
                json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": png_url()}},
                {"type": "image_url", "image_url": {"url": png_url()}}]}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stop": ["x".repeat(300)]}),
                "stop",
            ),
        ];
        for (body, param) in cases {
            let e = job(body.clone())
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param, Some(param), "{body}: {}", e.message);
        }
        // An unknown part type is a JSON error (400 without a field).
        let e = job(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}))
            .err()
            .unwrap();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        // Over the pixel limit: 413.
        let body = image(&png_url()).to_string();
        let e = parse::<ChatRequest>(body.as_bytes())
            .unwrap()
            .into_job(5, 512)
            .err()
            .unwrap();
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn image_requests_take_the_model_size_and_sd_cpp_fields() {
        let request = |body: Value| {
            parse::<ImagesRequest>(body.to_string().as_bytes())
                .unwrap()
                .into_job([64, 32])
        };
        let job = request(
            json!({"prompt": "a cat", "size": "32x64", "n": 3, "sampler": "heun", "steps": 5}),
        )
        .unwrap();
        assert_eq!(
            (job.n, job.sampler, job.steps),
            (3, SamplerKind::Heun, Some(5))
        );
        assert!(request(json!({"prompt": "a cat", "size": "auto"})).is_ok());
        assert_eq!(
            request(json!({"prompt": "a cat", "size": "64x32"}))
                .err()
                .unwrap()
                .param,
            Some("size")
        );
    }
}
