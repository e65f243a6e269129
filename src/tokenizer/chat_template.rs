//! The chat template: the file's `tokenizer.chat_template` (Jinja) rendered with `minijinja` the
//! way transformers' `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, Python
//! string methods, `raise_exception`), over messages shaped as transformers passes them. ChatML is
//! the fallback when the file has no template. Owns rendering only; what the pipeline does with
//! `<|image_pad|>` (expanding it to the image's tokens) is not its business.

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
    /// reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let messages: Vec<serde_json::Value> = messages.iter().map(ChatMessage::to_json).collect();
        let template = self.env.get_template("chat").map_err(template_error)?;
        template
            .render(context! {
                messages => Value::from_serialize(&messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_deref().unwrap_or(""),
                eos_token => self.eos_token.as_deref().unwrap_or(""),
            })
            .map_err(template_error)
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
}
