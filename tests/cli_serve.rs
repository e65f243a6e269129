//! `latte serve` on the embedded demo model, driven over loopback with a minimal HTTP/1.1 client
//! (the server's HTTP stack is axum's; this client only writes requests and reads responses):
//! every endpoint, OpenAI's response shapes, streaming, the PNG equal byte for byte to
//! `latte generate`'s, every error status, the queue, cancellation of an abandoned request, the
//! time limit, and SIGTERM finishing what runs. tools/serve_check.py runs the official `openai`
//! client against the same server in CI.

mod common;
mod latte_bin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use latte_bin::{latte, latte_command, png_text};
use serde_json::{json, Value};

/// A running `latte serve`, killed when dropped.
struct Server {
    child: Child,
    address: String,
    /// What it printed before listening.
    startup: Vec<String>,
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut all = vec!["serve", "--port", "0"];
        if !args.contains(&"--device") {
            all.extend(["--device", "cpu"]);
        }
        all.extend_from_slice(args);
        let mut child = latte_command(&all)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (sender, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut startup = Vec::new();
        loop {
            let Ok(line) = log.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let status = child.wait();
                panic!("the server printed no address ({status:?}): {startup:?}");
            };
            if let Some(address) = line.split("listening on http://").nth(1) {
                return Server {
                    child,
                    address: address.trim().to_string(),
                    startup,
                    log,
                };
            }
            startup.push(line);
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
        request(&self.address, method, path, headers, body)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[], body.to_string().as_bytes())
    }

    /// Waits until no request is admitted (finished or cancelled), within `limit`.
    fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let health = self.request("GET", "/health", &[], b"").json();
            if health["requests"] == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` lines of a server-sent event stream.
    fn events(&self) -> Vec<String> {
        String::from_utf8(self.body.clone())
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    /// OpenAI's error object, with the status checked.
    fn error(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"]["type"].is_string(), "{body}");
        body["error"].clone()
    }
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    stream
}

fn write_request(stream: &mut TcpStream, method: &str, path: &str, headers: &[&str], body: &[u8]) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body, and close: not an error here.
    let _ = stream.write_all(body);
}

fn request(address: &str, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
    let mut stream = connect(address);
    write_request(&mut stream, method, path, headers, body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

fn chat(content: Value, extra: Value) -> Value {
    let mut body = json!({
        "model": "latte-demo",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn image_part(png: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}})
}

fn answer(response: &Response) -> String {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

fn streamed_answer(response: &Response) -> String {
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = response.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish.len(), 1, "one chunk ends the choice: {chunks:?}");
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn generated_png(server: &Server, prompt: &str, seed: u64, steps: usize) -> Vec<u8> {
    let response = server.post(
        "/v1/images/generations",
        &json!({"prompt": prompt, "seed": seed, "steps": steps, "size": "64x64",
                "response_format": "b64_json"}),
    );
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    assert!(body["created"].is_u64());
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap()
}

#[test]
fn endpoints_answer_in_openai_shapes() {
    let server = Server::start(&[]);

    let health = server.request("GET", "/health", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let models = server.request("GET", "/v1/models", &[], b"").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "latte-demo");
    assert_eq!(models["data"][0]["object"], "model");
    let one = server.request("GET", "/v1/models/latte-demo", &[], b"");
    assert_eq!(one.json()["id"], "latte-demo");
    let page = server.request("GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("/v1/images/generations"));

    // An image, then a question about it: the demo model names the colour it was asked for.
    let png = generated_png(&server, "a red circle", 0, 10);
    let question = chat(
        json!([image_part(&png), {"type": "text", "text": "What colour is it?"}]),
        json!({}),
    );
    let response = server.post("/v1/chat/completions", &question);
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "latte-demo");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let text = answer(&response);
    assert_eq!(text, "red");
    let usage = &body["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 16,
        "the image's tokens count: {usage}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    // Streamed: the same text, in chunks, then a usage chunk and [DONE].
    let streamed = server.post(
        "/v1/chat/completions",
        &chat(
            json!([image_part(&png), {"type": "text", "text": "What colour is it?"}]),
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(streamed_answer(&streamed), text);
    let events = streamed.events();
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"].as_array().map(Vec::len), Some(0));
    assert_eq!(usage_chunk["usage"], body["usage"]);

    // A longer answer: streamed and whole agree, and max_tokens ends it with "length".
    let shape = chat(
        json!([image_part(&png), {"type": "text", "text": "What shape is it?"}]),
        json!({"max_tokens": 1}),
    );
    let short = server.post("/v1/chat/completions", &shape);
    assert_eq!(short.json()["choices"][0]["finish_reason"], "length");
    assert_eq!(short.json()["usage"]["completion_tokens"], 1);
    let shape = chat(
        json!([image_part(&png), {"type": "text", "text": "What shape is it?"}]),
        json!({}),
    );
    let whole = answer(&server.post("/v1/chat/completions", &shape));
    let mut streaming = shape.clone();
    streaming["stream"] = json!(true);
    assert_eq!(
        streamed_answer(&server.post("/v1/chat/completions", &streaming)),
        whole
    );
    assert!(whole.contains(' '), "a multi-token answer: {whole:?}");
    // A stop string cuts the answer before it, and is not part of it.
    let mut stopped = shape.clone();
    stopped["stop"] = json!([" "]);
    let cut = server.post("/v1/chat/completions", &stopped);
    assert_eq!(answer(&cut), whole.split(' ').next().unwrap());
    assert_eq!(cut.json()["choices"][0]["finish_reason"], "stop");
    stopped["stream"] = json!(true);
    assert_eq!(
        streamed_answer(&server.post("/v1/chat/completions", &stopped)),
        whole.split(' ').next().unwrap()
    );
    // Earlier turns and a system message go through the chat template.
    let turns = json!({"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [image_part(&png), {"type": "text", "text": "What shape is it?"}]},
        {"role": "assistant", "content": whole},
        {"role": "user", "content": "What colour is it?"}],
        "max_tokens": 4, "temperature": 0});
    assert_eq!(server.post("/v1/chat/completions", &turns).status, 200);
    // Sampling with a seed is repeatable.
    let sampled = chat(
        json!("What colour is it?"),
        json!({"temperature": 1.0, "seed": 7, "top_p": 0.9}),
    );
    assert_eq!(
        answer(&server.post("/v1/chat/completions", &sampled)),
        answer(&server.post("/v1/chat/completions", &sampled))
    );
}

/// The PNG's text chunks hold each `(key, value)`.
fn assert_png_text(png: &[u8], expected: &[(&str, &str)]) {
    let text = png_text(png);
    for (key, value) in expected {
        assert!(
            text.contains(&(key.to_string(), value.to_string())),
            "{key}: {text:?}"
        );
    }
}

#[test]
fn images_equal_latte_generate_byte_for_byte() {
    let server = Server::start(&[]);
    let served = generated_png(&server, "a blue square", 5, 6);
    assert_png_text(
        &served,
        &[
            ("prompt", "a blue square"),
            ("seed", "5"),
            ("steps", "6"),
            ("model", "demo (embedded)"),
            ("Software", "latte"),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cli.png");
    let cli = latte(&[
        "generate",
        "-p",
        "a blue square",
        "-s",
        "5",
        "--steps",
        "6",
        "--device",
        "cpu",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(
        served,
        std::fs::read(&out).unwrap(),
        "the server's PNG differs from latte generate's"
    );

    // n images get seeds s, s+1, …; the extension fields reach the sampler.
    let response = server.post(
        "/v1/images/generations",
        &json!({"prompt": "a blue square", "n": 2, "seed": 5, "steps": 3, "cfg_scale": 1.5,
                "sampler": "heun", "negative_prompt": "red"}),
    );
    let body = response.json();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let second = base64::engine::general_purpose::STANDARD
        .decode(data[1]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_png_text(
        &second,
        &[
            ("seed", "6"),
            ("steps", "3"),
            ("guidance", "1.5"),
            ("sampler", "heun"),
            ("negative_prompt", "red"),
        ],
    );

    // Streamed: a progress event per step, then the image.
    let streamed = server.post(
        "/v1/images/generations",
        &json!({"prompt": "a blue square", "seed": 5, "steps": 6, "stream": true}),
    );
    let events: Vec<Value> = streamed
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "image_generation.progress")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "image_generation.completed");
    let streamed_png = base64::engine::general_purpose::STANDARD
        .decode(done["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(streamed_png, served);
}

#[test]
fn errors_have_openai_statuses_and_bodies() {
    let server = Server::start(&[
        "--api-key",
        "sesame",
        "--max-body",
        "64K",
        "--max-image-pixels",
        "1024",
    ]);
    let key = "Authorization: Bearer sesame";
    let post = |path: &str, body: &[u8]| server.request("POST", path, &[key], body);
    let chat_body = chat(json!("What colour is it?"), json!({})).to_string();

    // 401: no key, a wrong key; /health and the page stay open.
    server
        .request("POST", "/v1/chat/completions", &[], chat_body.as_bytes())
        .error(401);
    server
        .request(
            "POST",
            "/v1/chat/completions",
            &["Authorization: Bearer sesamf"],
            chat_body.as_bytes(),
        )
        .error(401);
    server.request("GET", "/v1/models", &[], b"").error(401);
    assert_eq!(server.request("GET", "/health", &[], b"").status, 200);
    assert_eq!(server.request("GET", "/", &[], b"").status, 200);
    assert_eq!(
        post("/v1/chat/completions", chat_body.as_bytes()).status,
        200
    );

    // 400: malformed JSON, a missing field, bad base64, not an image, fields out of range.
    let bad = post("/v1/chat/completions", b"{\"messages\": [").error(400);
    assert_eq!(bad["type"], "invalid_request_error");
    post("/v1/chat/completions", b"{}").error(400);
    let image = |url: &str| {
        chat(
            json!([{"type": "image_url", "image_url": {"url": url}}]),
            json!({}),
        )
        .to_string()
    };
    let e = post(
        "/v1/chat/completions",
        image("data:image/png;base64,@@@").as_bytes(),
    )
    .error(400);
    assert!(e["message"].as_str().unwrap().contains("base64"), "{e}");
    let e = post(
        "/v1/chat/completions",
        image("data:image/png;base64,aGVsbG8gd29ybGQ=").as_bytes(),
    )
    .error(400);
    assert!(e["message"].as_str().unwrap().contains("decode"), "{e}");
    let e = post(
        "/v1/chat/completions",
        image("https://example.com/cat.png").as_bytes(),
    )
    .error(400);
    assert!(
        e["message"].as_str().unwrap().contains("fetches nothing"),
        "{e}"
    );
    for extra in [
        json!({"temperature": 3}),
        json!({"top_p": 0}),
        json!({"max_tokens": 0}),
        json!({"n": 2}),
        json!({"stop": ["a", "b", "c", "d", "e"]}),
    ] {
        let field = extra.as_object().unwrap().keys().next().unwrap().clone();
        let body = chat(json!("hi"), extra).to_string();
        let e = post("/v1/chat/completions", body.as_bytes()).error(400);
        assert_eq!(e["param"], field.as_str(), "{e}");
    }
    let long = chat(json!("star ".repeat(3000)), json!({})).to_string();
    post("/v1/chat/completions", long.as_bytes()).error(400);
    for body in [
        json!({"prompt": "x", "size": "1024x1024"}),
        json!({"prompt": "x", "response_format": "url"}),
        json!({"prompt": "x", "n": 11}),
        json!({"prompt": "x", "n": 0}),
        json!({"prompt": "x", "steps": 1_000_000}),
        json!({"prompt": "x", "cfg_scale": -1}),
        json!({"prompt": "x", "sampler": "dpm"}),
        json!({"prompt": ""}),
    ] {
        post("/v1/images/generations", body.to_string().as_bytes()).error(400);
    }

    // 404: an unknown model, an unknown path.
    let e = post(
        "/v1/chat/completions",
        chat(json!("hi"), json!({"model": "gpt-4o"}))
            .to_string()
            .as_bytes(),
    )
    .error(404);
    assert_eq!(e["code"], "model_not_found");
    server
        .request("GET", "/v1/models/gpt-4o", &[key], b"")
        .error(404);
    server.request("GET", "/etc/passwd", &[key], b"").error(404);
    server
        .request("GET", "/../Cargo.toml", &[key], b"")
        .error(404);

    // 413: a body over --max-body, an image over --max-image-pixels (a 64×64 PNG is 4096 pixels).
    let huge = vec![b' '; 100 * 1024];
    post("/v1/chat/completions", &huge).error(413);
    let png = {
        let unlocked = Server::start(&[]);
        generated_png(&unlocked, "a red circle", 0, 2)
    };
    let big = chat(
        json!([image_part(&png), {"type": "text", "text": "hi"}]),
        json!({}),
    )
    .to_string();
    let e = post("/v1/chat/completions", big.as_bytes()).error(413);
    assert!(e["message"].as_str().unwrap().contains("pixels"), "{e}");
}

/// Reads a streamed response until `until` returns true for an event's data, then returns the
/// still-open connection.
fn stream_until(
    address: &str,
    path: &str,
    body: &Value,
    until: impl Fn(&str) -> bool,
) -> TcpStream {
    let mut stream = connect(address);
    write_request(&mut stream, "POST", path, &[], body.to_string().as_bytes());
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        if let Some(data) = line.trim().strip_prefix("data: ") {
            if until(data) {
                return stream;
            }
        }
    }
}

fn long_generation() -> Value {
    // 10,000 steps of the demo: far longer than any test waits.
    json!({"prompt": "a red circle", "steps": 10000, "stream": true})
}

#[test]
fn the_queue_is_bounded_and_abandoned_requests_are_cancelled() {
    let server = Server::start(&["--parallel", "1", "--queue", "0"]);
    let running = stream_until(
        &server.address,
        "/v1/images/generations",
        &long_generation(),
        |d| d.contains("image_generation.progress"),
    );
    // The one slot is taken and nothing may wait: 503 with Retry-After.
    let busy = server.post("/v1/chat/completions", &chat(json!("hi"), json!({})));
    let e = busy.error(503);
    assert_eq!(e["code"], "queue_full");
    assert_eq!(busy.header("retry-after"), Some("1"));
    // The client goes away: the generation stops at its next step and the slot frees.
    drop(running);
    assert!(
        server.wait_idle(Duration::from_secs(120)),
        "the abandoned generation kept running"
    );
    let after = server.post(
        "/v1/chat/completions",
        &chat(json!("What colour is it?"), json!({})),
    );
    assert!(!answer(&after).is_empty());
}

#[test]
fn an_abandoned_request_that_streams_nothing_is_cancelled_too() {
    let server = Server::start(&[]);
    let mut body = long_generation();
    body["stream"] = json!(false);
    let mut stream = connect(&server.address);
    write_request(
        &mut stream,
        "POST",
        "/v1/images/generations",
        &[],
        body.to_string().as_bytes(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.request("GET", "/health", &[], b"").json()["requests"] != 1 {
        assert!(Instant::now() < deadline, "the request never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stream);
    assert!(
        server.wait_idle(Duration::from_secs(120)),
        "the abandoned generation kept running"
    );
}

#[test]
fn a_request_past_the_timeout_is_stopped() {
    let server = Server::start(&["--timeout", "2"]);
    let mut body = long_generation();
    body["stream"] = json!(false);
    let e = server.post("/v1/images/generations", &body).error(503);
    assert_eq!(e["code"], "timeout");
    assert!(server.wait_idle(Duration::from_secs(60)));
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_running_requests_then_exits_zero() {
    let mut server = Server::start(&[]);
    let stream = stream_until(
        &server.address,
        "/v1/images/generations",
        &json!({"prompt": "a red circle", "steps": 20, "stream": true}),
        |d| d.contains("\"step\":1,"),
    );
    // SAFETY: kill(2) on our own child's pid, which has not been waited for (it is alive).
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let mut rest = String::new();
    let mut reader = BufReader::new(stream);
    let _ = reader.read_to_string(&mut rest);
    assert!(
        rest.contains("image_generation.completed"),
        "the running request did not finish: {rest}"
    );
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    // A new connection is refused once the server is gone.
    assert!(TcpStream::connect(&server.address).is_err());
}

#[test]
fn listening_beyond_loopback_without_a_key_warns() {
    let warning = |server: &Server| {
        server
            .startup
            .iter()
            .any(|l| l.contains("warning: listening on 0.0.0.0 without --api-key"))
    };
    let open = Server::start(&["--host", "0.0.0.0"]);
    assert!(warning(&open), "{:?}", open.startup);
    let port = open.address.rsplit(':').next().unwrap();
    assert_eq!(
        request(&format!("127.0.0.1:{port}"), "GET", "/health", &[], b"").status,
        200
    );
    let keyed = Server::start(&["--host", "0.0.0.0", "--api-key", "k"]);
    assert!(!warning(&keyed), "{:?}", keyed.startup);
    let local = Server::start(&[]);
    assert!(!warning(&local), "{:?}", local.startup);
}

/// The same server on the GPU (lavapipe in CI): the answer about the CPU's image is the CPU's, and
/// images come back (within ±2/255 of the CPU's, as tests/cli_device.rs checks for the CLI).
#[cfg(feature = "wgpu")]
#[test]
fn the_server_runs_on_wgpu() {
    if common::gpu::gpu().is_none() {
        return;
    }
    let cpu = Server::start(&[]);
    let gpu = Server::start(&["--device", "wgpu", "--parallel", "2"]);
    assert!(
        gpu.startup.iter().any(|l| l.contains("on wgpu")),
        "{:?}",
        gpu.startup
    );
    let png = generated_png(&cpu, "a red circle", 0, 6);
    let question = chat(
        json!([image_part(&png), {"type": "text", "text": "What colour is it?"}]),
        json!({}),
    );
    let expected = answer(&cpu.post("/v1/chat/completions", &question));
    // Two at once: on a GPU they take the device in turn.
    let answers: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let body = question.to_string();
                let address = &gpu.address;
                scope.spawn(move || {
                    answer(&request(
                        address,
                        "POST",
                        "/v1/chat/completions",
                        &[],
                        body.as_bytes(),
                    ))
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(answers, [expected.clone(), expected]);
    let made = generated_png(&gpu, "a red circle", 0, 6);
    assert_eq!(&made[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        vec!["serve", "--parallel", "0"],
        vec!["serve", "--max-body", "lots"],
        vec!["serve", "--timeout", "0"],
        vec!["serve", "--api-key", ""],
        vec!["serve", "--port", "0", "--host", "256.0.0.1"],
    ] {
        let out = latte(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("latte: error:"), "{args:?}: {err}");
    }
}
