//! The chat template: the file's `tokenizer.chat_template` (Jinja) rendered with `minijinja` the
//! way transformers' `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, Python
//! string methods, `raise_exception`), over messages shaped as transformers passes them. ChatML is
//! the fallback when the file has no template. Owns rendering only; what the pipeline does with
//! `<|image_pad|>` (expanding it to the image's tokens) is not its business.

use std::cell::Cell;
use std::fmt::Write as _;

use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde_json::json;

use super::error::TokenizerError;
use crate::model::ModelFile;

/// ChatML, with Qwen2-VL's markers for image parts and no default system message.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n\
{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}\
{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>\
{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Template operations a render may spend (minijinja's fuel): far beyond any real chat, and it
/// stops a hostile template that loops forever.
const TEMPLATE_FUEL: u64 = 2_000_000;

/// The most text one render may write, and separately the most its `{{ … }}` expressions may
/// emit (into the prompt or into a captured `{% set x %}…{% endset %}` block). Fuel counts
/// operations, not bytes: without these a template that prints a long string in a loop fills
/// memory. A longer prompt could not be encoded anyway ([`super::MAX_INPUT_BYTES`]). Not bounded
/// by this: strings built inside expressions (`ns.s ~ ns.s` in a loop) before anything is
/// emitted; minijinja has no hook for its operators.
pub const MAX_RENDERED_BYTES: usize = super::MAX_INPUT_BYTES;

thread_local! {
    /// Bytes the `{{ … }}` expressions of the render running on this thread have emitted;
    /// `usize::MAX` once that went over [`MAX_RENDERED_BYTES`]. `render` resets it.
    static EMITTED: Cell<usize> = const { Cell::new(0) };
}

/// Counts the bytes a value formats to, stopping (with an error) past `max`.
struct Measure {
    len: usize,
    max: usize,
}

impl std::fmt::Write for Measure {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.len = self.len.saturating_add(s.len());
        if self.len > self.max {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

/// minijinja's formatter, with every emitted value counted against [`MAX_RENDERED_BYTES`].
fn bounded_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> Result<(), Error> {
    let emitted = EMITTED.get();
    let left = MAX_RENDERED_BYTES.saturating_sub(emitted);
    let len = match value.as_str() {
        Some(s) => s.len(),
        None => {
            let mut measure = Measure { len: 0, max: left };
            let _ = write!(measure, "{value}");
            measure.len
        }
    };
    if len > left {
        EMITTED.set(usize::MAX);
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the rendered prompt is longer than {MAX_RENDERED_BYTES} bytes"),
        ));
    }
    EMITTED.set(emitted + len);
    minijinja::escape_formatter(out, state, value)
}

/// The rendered prompt, refusing to grow past `max` bytes.
struct BoundedOutput {
    bytes: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + data.len() > self.max {
            self.overflowed = true;
            return Err(std::io::Error::other("the rendered prompt is too long"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    /// An image; the template writes its placeholder (`<|vision_start|><|image_pad|><|vision_end|>`).
    Image,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageContent {
    /// A plain string (`"content": "..."`).
    Text(String),
    /// A list of parts (`"content": [{"type": "image"}, {"type": "text", "text": "..."}]`).
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: MessageContent,
}

impl ChatMessage {
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: MessageContent::Text(text.into()),
        }
    }

    pub fn parts(role: impl Into<String>, parts: Vec<ContentPart>) -> Self {
        ChatMessage {
            role: role.into(),
            content: MessageContent::Parts(parts),
        }
    }

    /// How many `ContentPart::Image` the message holds.
    pub fn image_parts(&self) -> usize {
        match &self.content {
            MessageContent::Text(_) => 0,
            MessageContent::Parts(parts) => parts
                .iter()
                .filter(|p| matches!(p, ContentPart::Image))
                .count(),
        }
    }

    /// The message as transformers hands it to the template.
    fn to_json(&self) -> serde_json::Value {
        let content = match &self.content {
            MessageContent::Text(text) => json!(text),
            MessageContent::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text(text) => json!({"type": "text", "text": text}),
                    ContentPart::Image => json!({"type": "image"}),
                })
                .collect(),
        };
        json!({"role": self.role, "content": content})
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    is_fallback: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("is_fallback", &self.is_fallback)
            .finish_non_exhaustive()
    }
}

fn template_error(e: Error) -> TokenizerError {
    // minijinja's display names the line; its detailed form adds the source excerpt.
    TokenizerError::Template(format!("{e:#}"))
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` / `eos_token` are the texts templates may refer to.
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, TokenizerError> {
        let mut env = Environment::new();
        // transformers compiles chat templates with these two on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_formatter(bounded_formatter);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(template_error)?;
        Ok(ChatTemplate {
            env,
            is_fallback: false,
            bos_token,
            eos_token,
        })
    }

    /// ChatML (see [`CHATML_TEMPLATE`]).
    pub fn chatml() -> ChatTemplate {
        // The constant compiles (a unit test renders it); should it not, the error is a bug here.
        let mut template = ChatTemplate::new(CHATML_TEMPLATE, None, Some("<|im_end|>".into()))
            .unwrap_or_else(|e| unreachable!("the built-in ChatML template does not compile: {e}"));
        template.is_fallback = true;
        template
    }

    /// The file's `tokenizer.chat_template`, or ChatML when the file has none.
    pub fn from_model_file(file: &ModelFile) -> Result<ChatTemplate, TokenizerError> {
        if file.get("tokenizer.chat_template").is_none() {
            return Ok(ChatTemplate::chatml());
        }
        let source = file.str("tokenizer.chat_template")?;
        if source.trim().is_empty() {
            // An empty template renders every conversation as nothing: the model would answer
            // an empty prompt.
            return Err(TokenizerError::Template(format!(
                "{}: tokenizer.chat_template is empty (remove the key to use ChatML)",
                file.name()
            )));
        }
        let token = |key: &str| -> Option<String> {
            let id = file.get(key)?.as_u64()?;
            let tokens = file.str_array("tokenizer.ggml.tokens").ok()?;
            tokens.get(usize::try_from(id).ok()?).cloned()
        };
        ChatTemplate::new(
            source,
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        )
    }

    /// Whether this is the ChatML fallback rather than the file's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends where the assistant's
    /// reply begins. A prompt over [`MAX_RENDERED_BYTES`] is refused
    /// ([`TokenizerError::TemplateOutputTooLong`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let messages: Vec<serde_json::Value> = messages.iter().map(ChatMessage::to_json).collect();
        let template = self.env.get_template("chat").map_err(template_error)?;
        let mut output = BoundedOutput {
            bytes: Vec::new(),
            max: MAX_RENDERED_BYTES,
            overflowed: false,
        };
        EMITTED.set(0);
        let rendered = template.render_captured_to(
            context! {
                messages => Value::from_serialize(&messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_deref().unwrap_or(""),
                eos_token => self.eos_token.as_deref().unwrap_or(""),
            },
            &mut output,
        );
        let emitted_too_much = EMITTED.replace(0) == usize::MAX;
        if output.overflowed || emitted_too_much {
            return Err(TokenizerError::TemplateOutputTooLong {
                max: MAX_RENDERED_BYTES,
            });
        }
        rendered.map_err(template_error)?;
        // Only whole `&str`s are written.
        String::from_utf8(output.bytes)
            .map_err(|e| TokenizerError::Template(format!("rendered text is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_text_and_image_parts() {
        let template = ChatTemplate::chatml();
        let text = template
            .render(
                &[ChatMessage::parts(
                    "user",
                    vec![ContentPart::Image, ContentPart::Text("hi".into())],
                )],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    /// Found reviewing the `tokenizer_template` fuzz target (the first template below ran its
    /// binary out of memory, `fuzz/findings/tokenizer_template_render_5gb.bin`): fuel bounds
    /// operations, not bytes, so printing a 100 MB string 50 times asked for 5 GB.
    #[test]
    fn long_output_is_refused_not_allocated() {
        let hi = [ChatMessage::text("user", "hi")];
        for source in [
            // Printed straight into the prompt.
            "{% set s = 'x' * 100000000 %}{% for i in range(50) %}{{ s }}{% endfor %}",
            // Captured in a block, never printed.
            "{% set s = 'x' * 1000000 %}{% set big %}{% for i in range(5000) %}{{ s }}{% endfor %}{% endset %}ok",
            // A sequence's display, printed.
            "{% set s = 'x' * 1000000 %}{{ [s, s, s, s, s] }}",
            // Raw text in a loop (no expression at all).
            concat!("{% for i in range(100000) %}", "..........", "..........", "..........", "..........", "..........", "..........", "..........", "..........", "..........", "..........", "{% endfor %}"),
        ] {
            let template = ChatTemplate::new(source, None, None).unwrap();
            let err = template.render(&hi, true).unwrap_err();
            assert!(
                matches!(err, TokenizerError::TemplateOutputTooLong { max: MAX_RENDERED_BYTES }),
                "{source}: {err}"
            );
        }
        // Right at the bound renders, and the count starts again for the next render.
        let source = format!("{{{{ 'x' * {MAX_RENDERED_BYTES} }}}}");
        let template = ChatTemplate::new(&source, None, None).unwrap();
        for _ in 0..2 {
            assert_eq!(
                template.render(&hi, true).unwrap().len(),
                MAX_RENDERED_BYTES
            );
        }
    }
}
