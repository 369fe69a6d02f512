//! The chat template from the GGUF metadata (`tokenizer.chat_template`), rendered with
//! minijinja configured the way Hugging Face's `apply_chat_template` configures Jinja
//! (`trim_blocks`, `lstrip_blocks`, a `raise_exception` function).
//!
//! Rendering also keeps apart what came from the template and what came from the messages: the
//! template's control-token strings (`<|im_start|>`) become control tokens, while the same string
//! inside a message stays text, so a message cannot end its own turn.

use minijinja::{Environment, ErrorKind};
use orion_core::Error;
use serde::{Deserialize, Serialize};

use crate::tokenizer::ModelTokenizer;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A turn with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// How much work one rendering may do: a template from a file must not loop for ever.
const FUEL: u64 = 1_000_000;

/// Marks a message's content while rendering. Private-use characters, so no template or message
/// produces them by accident.
const OPEN: char = '\u{F8F0}';
const CLOSE: char = '\u{F8F1}';

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is a [`Error::ModelLoad`] from `source_name`.
    pub fn new(source: &str, source_name: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.add_function("raise_exception", |message: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::ModelLoad {
                source_name: source_name.to_string(),
                reason: format!("the chat template does not compile: {e}"),
            })?;
        Ok(Self { env })
    }

    /// The prompt text for `messages`, ending with the assistant's cue when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        self.render_with(messages, add_generation_prompt)
    }

    /// The prompt as token ids: the template's text with its control tokens, and each message's
    /// content tokenized as plain text.
    pub fn encode(
        &self,
        tokenizer: &ModelTokenizer,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, Error> {
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: m.role.clone(),
                content: format!("{OPEN}{i}{CLOSE}"),
            })
            .collect();
        let rendered = self.render_with(&marked, add_generation_prompt)?;
        let mut ids: Vec<u32> = tokenizer.bos().into_iter().collect();
        let mut rest = rendered.as_str();
        while let Some(start) = rest.find(OPEN) {
            encode_template_text(tokenizer, &rest[..start], &mut ids)?;
            let after = &rest[start + OPEN.len_utf8()..];
            let end = after
                .find(CLOSE)
                .ok_or_else(|| Error::Internal("the chat template cut a message".into()))?;
            let message = after[..end]
                .parse::<usize>()
                .ok()
                .and_then(|i| messages.get(i))
                .ok_or_else(|| Error::Internal("the chat template altered a message".into()))?;
            ids.extend(tokenizer.encode(&message.content)?);
            rest = &after[end + CLOSE.len_utf8()..];
        }
        encode_template_text(tokenizer, rest, &mut ids)?;
        Ok(ids)
    }

    fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Internal(format!("the chat template is gone: {e}")))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
            })
            .map_err(|e| Error::InvalidInput {
                field: "messages".into(),
                reason: format!("the model's chat template refused them: {e}"),
            })
    }
}

/// Appends the ids of template text: control-token strings become their tokens, the rest is
/// plain text.
fn encode_template_text(
    tokenizer: &ModelTokenizer,
    text: &str,
    ids: &mut Vec<u32>,
) -> Result<(), Error> {
    let mut rest = text;
    while !rest.is_empty() {
        let next = tokenizer.find_special(rest);
        match next {
            Some((at, len, id)) => {
                if at > 0 {
                    ids.extend(tokenizer.encode(&rest[..at])?);
                }
                ids.push(id);
                rest = &rest[at + len..];
            }
            None => {
                ids.extend(tokenizer.encode(rest)?);
                break;
            }
        }
    }
    Ok(())
}
