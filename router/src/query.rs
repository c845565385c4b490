//! What the router reads of a chat request: the text to classify and the facts the
//! deterministic rules look at.
//!
//! The classified text is the **last user message** (the query being asked now); earlier
//! turns, the system prompt and tools are counted, not embedded. Every message shape OpenAI
//! accepts is read without error: string content, arrays of parts (text, image, audio,
//! file), `null` content with `tool_calls`, `tool` and `function` messages.

use slmgate_openai::chat::ChatRequest;
use slmgate_openai::error::GatewayError;

/// The longest prefix of the query text that is embedded (the embedder reads at most 256
/// tokens; cutting the text first keeps a 100k-character prompt from costing a full
/// tokenization). Features still see the whole text length.
pub const MAX_EMBED_CHARS: usize = 2_000;

/// The router's view of one chat request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// The last user message's text (parts joined by newlines). Empty when there is none.
    pub text: String,
    /// Characters of all message text (system, earlier turns, the query).
    pub total_chars: usize,
    /// Characters of system/developer messages.
    pub system_chars: usize,
    /// User messages in the conversation.
    pub user_turns: usize,
    /// Messages in the conversation.
    pub messages: usize,
    /// The request offers tools/functions or the conversation holds tool calls or results.
    pub has_tools: bool,
    /// The request holds image, audio or file parts.
    pub has_media: bool,
    /// `max_completion_tokens` / `max_tokens`, if given.
    pub max_tokens: Option<usize>,
}

impl Query {
    /// Reads a parsed chat request (its messages through [`ChatRequest::messages`]). Fails
    /// (400) only when `messages` is missing or not a list of message objects.
    pub fn from_chat(req: &ChatRequest) -> Result<Query, GatewayError> {
        let msgs = req.messages()?;
        let mut q = Query {
            messages: msgs.len(),
            ..Query::default()
        };
        for field in ["tools", "functions"] {
            if req
                .raw_field(field)
                .is_some_and(|v| v != "null" && v != "[]")
            {
                q.has_tools = true;
            }
        }
        let mut last_user: Option<String> = None;
        for m in msgs {
            if m.tool_calls || matches!(m.role.as_str(), "tool" | "function") {
                q.has_tools = true;
            }
            if !m.media.is_empty() {
                q.has_media = true;
            }
            let chars = m.text.chars().count();
            q.total_chars += chars;
            match m.role.as_str() {
                "system" | "developer" => q.system_chars += chars,
                "user" => {
                    q.user_turns += 1;
                    last_user = Some(m.text);
                }
                _ => {}
            }
        }
        q.text = last_user.unwrap_or_default();
        q.max_tokens = req
            .field::<usize>("max_completion_tokens")
            .ok()
            .flatten()
            .or(req.field::<usize>("max_tokens").ok().flatten());
        Ok(q)
    }

    /// A query from bare text (one user message), for the CLI and tests.
    pub fn from_text(text: &str) -> Query {
        let chars = text.chars().count();
        Query {
            text: text.to_string(),
            total_chars: chars,
            user_turns: 1,
            messages: 1,
            ..Query::default()
        }
    }

    /// The prefix of the query text that is embedded (at most [`MAX_EMBED_CHARS`]).
    pub fn embed_text(&self) -> &str {
        match self.text.char_indices().nth(MAX_EMBED_CHARS) {
            Some((i, _)) => &self.text[..i],
            None => &self.text,
        }
    }

    /// A quick upper-bound-leaning estimate of the prompt's tokens: ~3.5 characters per
    /// token for English BPE vocabularies, plus a few tokens of chat-template overhead per
    /// message. Used to decide when an exact count is worth making.
    pub fn estimated_tokens(&self) -> usize {
        (self.total_chars * 2).div_ceil(7) + 4 * self.messages + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn q(body: &str) -> Result<Query, GatewayError> {
        let req = ChatRequest::parse(Bytes::from(body.to_string()))?;
        Query::from_chat(&req)
    }

    #[test]
    fn last_user_message_is_the_query() {
        let got = q(r#"{"model":"auto","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":"first"},
            {"role":"assistant","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"second"},{"type":"text","text":"part"}]}]}"#)
        .unwrap();
        assert_eq!(got.text, "second\npart");
        assert_eq!(got.user_turns, 2);
        assert_eq!(got.system_chars, 8);
        assert_eq!(got.messages, 4);
        assert!(!got.has_tools && !got.has_media);
    }

    #[test]
    fn tools_media_and_odd_shapes() {
        let got = q(r#"{"model":"auto","tools":[{"type":"function","function":{"name":"f"}}],
            "messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#)
        .unwrap();
        assert!(got.has_tools && got.has_media);
        assert_eq!(got.text, "");
        let got = q(
            r#"{"model":"auto","messages":[{"role":"user","content":"hi"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},
            {"role":"tool","content":"42","tool_call_id":"1"}]}"#,
        )
        .unwrap();
        assert!(got.has_tools);
        assert_eq!(got.text, "hi");
        // Only a system message: no query text, no error.
        let got = q(r#"{"model":"auto","messages":[{"role":"system","content":"sys"}]}"#).unwrap();
        assert_eq!(got.text, "");
        assert_eq!(got.user_turns, 0);
        assert!(q(r#"{"model":"auto","messages":[{"role":"user","content":5}]}"#).is_err());
    }

    #[test]
    fn embed_text_is_bounded_on_a_char_boundary() {
        let long = "é".repeat(MAX_EMBED_CHARS + 10);
        let query = Query::from_text(&long);
        assert_eq!(query.embed_text().chars().count(), MAX_EMBED_CHARS);
        assert!(query.estimated_tokens() > MAX_EMBED_CHARS / 4);
    }
}
