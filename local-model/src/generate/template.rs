//! Chat templates: the model's Jinja template (`tokenizer.chat_template`) rendered with
//! minijinja, the way Hugging Face's `apply_chat_template` does it.
//!
//! The template sees `messages` (a list of `{role, content}` maps), `add_generation_prompt`
//! (always true here: we render prompts for a new assistant turn), `bos_token`, `eos_token`, and
//! the functions `raise_exception(msg)` and `strftime_now(fmt)` (UTC). Python string methods used by
//! real templates (`.strip()`, `.startswith()`, …) come from `minijinja-contrib`'s pycompat
//! layer. Blocks are trimmed like Jinja2 with `trim_blocks` and `lstrip_blocks`, which is
//! what `transformers` uses.
//!
//! When a GGUF has no template, [`CHATML_TEMPLATE`] is used.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::error::LocalModelError;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The ChatML template used when neither the configuration nor the model provides one.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'a str,
    content: &'a str,
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)` for templates' "Today is …" lines: the current UTC date and time,
/// with the common `%d %m %Y %y %b %B %H %M %S %%` codes (others are copied verbatim).
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&fmt, secs)
}

fn strftime(fmt: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (unix_secs / 86_400) as i64;
    let tod = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` and `eos_token` are the texts of the model's BOS and EOS
    /// tokens (empty when the model has none).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, LocalModelError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| LocalModelError::Template(format!("compiling chat template: {e:#}")))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            source: source.to_string(),
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` followed by the prompt for the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, LocalModelError> {
        self.render_with_thinking(messages, None)
    }

    /// Whether the template reads an `enable_thinking` switch (Qwen3 and other hybrid
    /// reasoning models): with `enable_thinking = false` Qwen3's template ends the prompt with
    /// an empty `<think>\n\n</think>\n\n` block, so the model answers at once; left undefined
    /// (what [`ChatTemplate::render`] does), the model opens its answer with its reasoning.
    pub fn has_thinking_switch(&self) -> bool {
        self.source.contains("enable_thinking")
    }

    /// [`ChatTemplate::render`] with `enable_thinking` defined as given (`None` leaves it
    /// undefined, which is what `transformers` does when the caller does not pass it).
    pub fn render_with_thinking(
        &self,
        messages: &[ChatMessage],
        enable_thinking: Option<bool>,
    ) -> Result<String, LocalModelError> {
        let msgs: Vec<Msg<'_>> = messages
            .iter()
            .map(|m| Msg {
                role: &m.role,
                content: &m.content,
            })
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| LocalModelError::Template(format!("{e:#}")))?;
        let base = context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        let ctx = match enable_thinking {
            Some(on) => context! { enable_thinking => on, ..base },
            None => base,
        };
        tmpl.render(ctx)
            .map_err(|e| LocalModelError::Template(format!("rendering chat template: {e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::strftime;

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-02-29 13:05:09 UTC
        assert_eq!(
            strftime("%d %b %Y, %B %m/%y %H:%M:%S %% %q", 1_709_211_909),
            "29 Feb 2024, February 02/24 13:05:09 % %q"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    }
}
