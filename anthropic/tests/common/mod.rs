//! Helpers shared by the test binaries.

#![allow(dead_code)]

use serde_json::Value;
use slmgate_anthropic::StreamEvent;

/// An OpenAI stream put back together.
#[derive(Debug, Default, PartialEq)]
pub struct Reassembled {
    pub role: Option<String>,
    pub content: String,
    /// (id, name, arguments) by index.
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
}

pub fn reassemble(chunks: &[Value]) -> Reassembled {
    let mut r = Reassembled::default();
    for chunk in chunks {
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            r.usage = Some(u.clone());
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        let delta = &choice["delta"];
        if let Some(role) = delta["role"].as_str() {
            assert!(r.role.is_none(), "role sent twice");
            r.role = Some(role.to_owned());
        }
        if let Some(t) = delta["content"].as_str() {
            r.content.push_str(t);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for call in calls {
                let i = call["index"].as_u64().expect("tool call index") as usize;
                if r.tool_calls.len() <= i {
                    r.tool_calls.resize(i + 1, Default::default());
                }
                let slot = &mut r.tool_calls[i];
                if let Some(id) = call["id"].as_str() {
                    slot.0 = id.to_owned();
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    slot.1.push_str(name);
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    slot.2.push_str(args);
                }
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            assert!(r.finish_reason.is_none(), "finish_reason sent twice");
            r.finish_reason = Some(f.to_owned());
        }
    }
    r
}

/// Checks Anthropic's event grammar: message_start first, deltas only inside their open block,
/// blocks opened in index order and closed once, message_delta then message_stop last.
pub fn check_event_grammar(events: &[StreamEvent]) {
    assert!(
        matches!(events.first(), Some(StreamEvent::MessageStart { .. })),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(StreamEvent::MessageStop)),
        "{events:?}"
    );
    assert!(
        matches!(events[events.len() - 2], StreamEvent::MessageDelta { .. }),
        "message_delta before message_stop"
    );
    let mut open: Option<usize> = None;
    let mut next = 0;
    for e in &events[1..events.len() - 2] {
        match e {
            StreamEvent::ContentBlockStart { index, .. } => {
                assert!(open.is_none(), "a block starts while another is open");
                assert_eq!(*index, next, "blocks start in order");
                open = Some(*index);
                next += 1;
            }
            StreamEvent::ContentBlockDelta { index, .. } => {
                assert_eq!(open, Some(*index), "delta outside its block");
            }
            StreamEvent::ContentBlockStop { index } => {
                assert_eq!(open, Some(*index), "stop of a block not open");
                open = None;
            }
            StreamEvent::Ping => {}
            other => panic!("unexpected event in the middle: {other:?}"),
        }
    }
    assert!(open.is_none(), "a block is left open");
}
