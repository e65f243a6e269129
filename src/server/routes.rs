//! The HTTP side: binding, routes, authentication, body limits, streaming and shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;
use tokio::sync::mpsc;

use crate::backend::Backend;

use super::admission::{Admission, Cancel, Ticket};
use super::api::{self, ChatRequest, ImagesRequest};
use super::engine::{ChatJob, Engine, ImageJob, JobError};
use super::error::ApiError;
use super::page::PAGE;

/// How the server listens and what it allows.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    /// Requests computed at once.
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused with 503.
    pub queue: usize,
    /// When set, every `/v1/` request needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// The longest a request may wait and run.
    pub timeout: Duration,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// The largest image a chat message may hold, in pixels.
    pub max_image_pixels: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {address}: {cause}")]
    Bind {
        address: String,
        cause: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

struct Shared<B: Backend + 'static> {
    engine: Engine<B>,
    admission: Admission,
    options: ServerOptions,
}

type AppState<B> = State<Arc<Shared<B>>>;

/// Serves `engine` until SIGTERM or SIGINT, then stops accepting, lets running requests finish
/// (waiting ones are refused) and returns. `ready` hears the bound address (port 0 picks one).
pub fn serve<B: Backend + Send + Sync + 'static>(
    engine: Engine<B>,
    options: ServerOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(options.parallel.max(1) + 4)
        .thread_name("latte-serve")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let address = format!("{}:{}", options.host, options.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|cause| ServeError::Bind {
                address: address.clone(),
                cause,
            })?;
        let bound = listener.local_addr().map_err(|cause| ServeError::Bind {
            address: address.clone(),
            cause,
        })?;
        let shared = Arc::new(Shared {
            admission: Admission::new(options.parallel, options.queue, options.timeout),
            engine,
            options,
        });
        let app = router(shared.clone());
        ready(bound);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown(shared))
            .await
            .map_err(ServeError::Serve)
    })
}

fn router<B: Backend + Send + Sync + 'static>(shared: Arc<Shared<B>>) -> Router {
    let max_body = shared.options.max_body;
    Router::new()
        .route("/", get(page))
        .route("/health", get(health::<B>))
        .route("/v1/models", get(models::<B>))
        .route("/v1/models/{id}", get(model::<B>))
        .route("/v1/chat/completions", post(chat::<B>))
        .route("/v1/images/generations", post(images::<B>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}

/// Waits for SIGTERM or SIGINT; then no slot is handed out again.
async fn shutdown<B: Backend + 'static>(shared: Arc<Shared<B>>) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!(
        "latte serve: shutting down; finishing {} request(s)",
        shared.admission.admitted()
    );
    shared.admission.close();
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint", "not_found")
}

async fn health<B: Backend + 'static>(State(shared): AppState<B>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "requests": shared.admission.admitted()}))
}

impl<B: Backend + 'static> Shared<B> {
    /// `--api-key`: the bearer token must match (compared in constant time).
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.options.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let (a, b) = (given.as_bytes(), key.as_bytes());
        let differ =
            a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
        if differ {
            return Err(ApiError::unauthorized());
        }
        Ok(())
    }

    fn model_entry(&self) -> serde_json::Value {
        json!({"id": self.engine.id(), "object": "model", "created": 0, "owned_by": "latte"})
    }

    /// A request naming another model is refused; one naming none gets this one.
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(name) if name != self.engine.id() => Err(ApiError::not_found(
                format!(
                    "model '{name}' is not served here; this server has '{}'",
                    self.engine.id()
                ),
                "model_not_found",
            )),
            _ => Ok(()),
        }
    }

    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "the request body is over the server's limit of {} bytes (--max-body)",
                    self.options.max_body
                ))
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })
    }
}

async fn models<B: Backend + 'static>(
    State(shared): AppState<B>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    shared.authorize(&headers)?;
    Ok(Json(
        json!({"object": "list", "data": [shared.model_entry()]}),
    ))
}

async fn model<B: Backend + 'static>(
    State(shared): AppState<B>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    shared.authorize(&headers)?;
    shared.check_model(Some(&id))?;
    Ok(Json(shared.model_entry()))
}

/// What the model work sends back while it runs.
enum Message {
    Text(String),
    Step(usize, usize),
    Done(Result<serde_json::Value, JobError>),
}

/// Runs `work` on a blocking thread once a slot is free, sending its messages to the returned
/// receiver. The work sees its request cancelled when the receiver is dropped (the client left).
async fn start<B, W>(
    shared: Arc<Shared<B>>,
    ticket: Ticket,
    work: W,
) -> Result<mpsc::Receiver<Message>, ApiError>
where
    B: Backend + Send + Sync + 'static,
    W: FnOnce(&Engine<B>, &Cancel, &mpsc::Sender<Message>) -> Result<serde_json::Value, JobError>
        + Send
        + 'static,
{
    let guard = ticket.cancel.on_drop();
    let permit = ticket.slot().await?;
    guard.disarm();
    let (sender, receiver) = mpsc::channel(64);
    tokio::task::spawn_blocking(move || {
        let _held = (permit, &ticket);
        let result = work(&shared.engine, &ticket.cancel, &sender);
        let _ = sender.blocking_send(Message::Done(result));
    });
    Ok(receiver)
}

/// Sends from model work; a closed channel means the client is gone.
fn send(sender: &mpsc::Sender<Message>, cancel: &Cancel, message: Message) -> ControlFlow<()> {
    if sender.blocking_send(message).is_err() {
        cancel.client_gone();
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// Whether anyone still waits for the answer: the handler drops the receiver when its client
/// disconnects.
fn still_wanted(sender: &mpsc::Sender<Message>, cancel: &Cancel) -> ControlFlow<()> {
    if sender.is_closed() {
        cancel.client_gone();
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// The work's first message. It decides the status: an error before any output keeps its own.
async fn first_message(
    receiver: &mut mpsc::Receiver<Message>,
    timeout: &ApiError,
) -> Result<Message, ApiError> {
    match receiver.recv().await {
        None => Err(ApiError::internal("the model work ended without an answer")),
        Some(Message::Done(Err(e))) => Err(job_error(e, timeout.clone())),
        Some(message) => Ok(message),
    }
}

/// The result of work that streams nothing: its one message is the last.
fn only_result(message: Message) -> Result<serde_json::Value, ApiError> {
    match message {
        Message::Done(Ok(result)) => Ok(result),
        _ => Err(ApiError::internal("unexpected message from the model work")),
    }
}

fn job_error(error: JobError, cancel_error: ApiError) -> ApiError {
    match error {
        JobError::Api(e) => e,
        JobError::Cancelled => cancel_error,
    }
}

async fn chat<B: Backend + Send + Sync + 'static>(
    State(shared): AppState<B>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    shared.authorize(&headers)?;
    let body = shared.body(body)?;
    let request: ChatRequest = api::parse(&body)?;
    shared.check_model(request.model.as_deref())?;
    let (stream, include_usage) = (request.stream, request.include_usage());
    let job: ChatJob = request.into_job(
        shared.options.max_image_pixels,
        shared.engine.context_length(),
    )?;
    let ticket = shared.admission.admit()?;
    let timeout = ticket.cancel.error();
    let id = api::completion_id();
    let created = api::now();
    let model = shared.engine.id().to_string();
    let mut receiver = start(shared.clone(), ticket, move |engine, cancel, sender| {
        let outcome = engine.chat(job, cancel, &mut |text| {
            if stream {
                send(sender, cancel, Message::Text(text.to_string()))
            } else {
                still_wanted(sender, cancel)
            }
        })?;
        Ok(json!({
            "text": outcome.text,
            "finish": outcome.finish.as_str(),
            "usage": api::usage(outcome.prompt_tokens, outcome.completion_tokens),
        }))
    })
    .await?;

    let first = first_message(&mut receiver, &timeout).await?;
    if !stream {
        let done = only_result(first)?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": done["text"]},
                "logprobs": null,
                "finish_reason": done["finish"],
            }],
            "usage": done["usage"],
        }))
        .into_response());
    }

    let chunks = ChatChunks {
        id,
        created,
        model,
        include_usage,
        timeout,
    };
    let opening = chunks.chunk(json!({"role": "assistant", "content": ""}), None);
    Ok(sse(opening, first, receiver, move |message| {
        chunks.render(message)
    }))
}

/// A streamed chat completion's chunks, in OpenAI's format.
struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    timeout: ApiError,
}

impl ChatChunks {
    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> Vec<String> {
        let mut chunk = api::chunk(&self.id, self.created, &self.model, delta, finish);
        if self.include_usage {
            chunk["usage"] = serde_json::Value::Null;
        }
        vec![chunk.to_string()]
    }

    /// The events for one message, and whether the stream ends with them.
    fn render(&self, message: Message) -> (Vec<String>, bool) {
        match message {
            Message::Text(text) => (self.chunk(json!({"content": text}), None), false),
            Message::Step(..) => (Vec::new(), false),
            Message::Done(Ok(done)) => {
                let finish = done["finish"].as_str().unwrap_or("stop");
                let mut data = self.chunk(json!({}), Some(finish));
                if self.include_usage {
                    data.push(
                        json!({"id": self.id, "object": "chat.completion.chunk",
                               "created": self.created, "model": self.model,
                               "choices": [], "usage": done["usage"]})
                        .to_string(),
                    );
                }
                data.push("[DONE]".into());
                (data, true)
            }
            Message::Done(Err(e)) => (
                vec![job_error(e, self.timeout.clone()).body().to_string()],
                true,
            ),
        }
    }
}

/// Server-sent events: `opening`, then each message rendered, until one ends the stream or the
/// work's channel closes.
fn sse<F>(
    opening: Vec<String>,
    first: Message,
    receiver: mpsc::Receiver<Message>,
    render: F,
) -> Response
where
    F: Fn(Message) -> (Vec<String>, bool) + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let render = Arc::new(render);
    let rest = futures_util::stream::unfold(
        (Some(first), receiver, false),
        move |(pending, mut receiver, finished)| {
            let render = render.clone();
            async move {
                if finished {
                    return None;
                }
                let message = match pending {
                    Some(message) => message,
                    None => receiver.recv().await?,
                };
                let (data, finished) = render(message);
                Some((futures_util::stream::iter(data), (None, receiver, finished)))
            }
        },
    );
    let events = futures_util::stream::iter(opening)
        .chain(rest.flatten())
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Sse::new(events).into_response()
}

async fn images<B: Backend + Send + Sync + 'static>(
    State(shared): AppState<B>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    shared.authorize(&headers)?;
    let body = shared.body(body)?;
    let request: ImagesRequest = api::parse(&body)?;
    shared.check_model(request.model.as_deref())?;
    let Some(size) = shared.engine.image_size() else {
        return Err(ApiError::bad_field(
            "model",
            format!(
                "{}: this model does not generate images",
                shared.engine.id()
            ),
        ));
    };
    let stream = request.stream;
    let job: ImageJob = request.into_job(size)?;
    let ticket = shared.admission.admit()?;
    let timeout = ticket.cancel.error();
    let created = api::now();
    let size_text = format!("{}x{}", size[1], size[0]);
    let mut receiver = start(shared.clone(), ticket, move |engine, cancel, sender| {
        let made = engine.images(&job, cancel, &mut |done, total| {
            let _ = if stream {
                send(sender, cancel, Message::Step(done, total))
            } else {
                still_wanted(sender, cancel)
            };
        })?;
        let data: Vec<serde_json::Value> = made
            .iter()
            .map(|m| {
                json!({
                    "b64_json": base64::engine::general_purpose::STANDARD.encode(&m.png),
                    "revised_prompt": null,
                    "seed": m.seed,
                })
            })
            .collect();
        Ok(json!(data))
    })
    .await?;

    let first = first_message(&mut receiver, &timeout).await?;
    if !stream {
        let data = only_result(first)?;
        return Ok(Json(json!({
            "created": created,
            "data": data,
            "output_format": "png",
            "size": size_text,
        }))
        .into_response());
    }
    // Streamed (an extension, for progress): one event per step, then one per image.
    Ok(sse(
        Vec::new(),
        first,
        receiver,
        move |message| match message {
            Message::Step(step, steps) => (
                vec![
                    json!({"type": "image_generation.progress", "step": step, "steps": steps})
                        .to_string(),
                ],
                false,
            ),
            Message::Text(_) => (Vec::new(), false),
            Message::Done(Ok(data)) => {
                let events = data
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|image| {
                        json!({
                            "type": "image_generation.completed",
                            "b64_json": image["b64_json"],
                            "seed": image["seed"],
                            "created_at": created,
                            "size": size_text,
                            "output_format": "png",
                        })
                        .to_string()
                    })
                    .collect();
                (events, true)
            }
            Message::Done(Err(e)) => (vec![job_error(e, timeout.clone()).body().to_string()], true),
        },
    ))
}
