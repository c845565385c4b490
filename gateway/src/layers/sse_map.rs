//! Rewrites a server-sent-events response body event by event.
//!
//! The policy step (restoring redacted PII) and the limits step (reading the final usage
//! chunk) both look at streamed completions on their way to the client. [`map_events`]
//! splits the body into complete events (`data: ...` blocks ending in a blank line, as the
//! upstream relay and the local backend write them), hands each event's data to an
//! [`EventFilter`], and writes out whatever the filter emits. Nothing is buffered beyond one
//! incomplete event, so streaming latency is unchanged.
//!
//! Blocks that carry more than `data:` lines (`event:`, `id:`, comments) pass through as
//! they are.

use std::collections::VecDeque;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// Sees each event of a stream and decides what the client gets instead.
pub trait EventFilter: Send + 'static {
    /// One event's data (the `data:` lines joined with `\n`, without the prefix). Push the
    /// data of the events to emit instead (none drops the event).
    fn event(&mut self, data: &str, out: &mut Vec<String>);

    /// The stream ended (cleanly or not); push any events still to emit.
    fn end(&mut self, _out: &mut Vec<String>) {}
}

/// `data: <data>\n\n`, one `data:` line per line of `data`.
pub fn event_bytes(data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 8);
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

struct State<S, F> {
    body: S,
    buf: BytesMut,
    filter: F,
    pending: VecDeque<Result<Bytes, axum::Error>>,
    done: bool,
}

impl<S, F: EventFilter> State<S, F> {
    fn block(&mut self, block: &[u8]) {
        let text = String::from_utf8_lossy(block);
        let mut data: Option<String> = None;
        let mut other = false;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            match line.strip_prefix("data:") {
                Some(d) => {
                    let d = d.strip_prefix(' ').unwrap_or(d);
                    match &mut data {
                        Some(acc) => {
                            acc.push('\n');
                            acc.push_str(d);
                        }
                        None => data = Some(d.to_string()),
                    }
                }
                None => other = true,
            }
        }
        match data {
            Some(d) if !other => {
                let mut out = Vec::new();
                self.filter.event(&d, &mut out);
                self.pending.extend(out.iter().map(|d| Ok(event_bytes(d))));
            }
            _ if text.trim().is_empty() => {}
            _ => {
                let mut raw = BytesMut::from(block);
                raw.extend_from_slice(b"\n\n");
                self.pending.push_back(Ok(raw.freeze()));
            }
        }
    }

    /// Emits every complete event in the buffer.
    fn drain_complete(&mut self) {
        while let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block = self.buf.split_to(pos + 2);
            self.block(&block[..pos]);
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if !self.buf.is_empty() {
            let rest = self.buf.split();
            self.block(&rest);
        }
        let mut out = Vec::new();
        self.filter.end(&mut out);
        self.pending.extend(out.iter().map(|d| Ok(event_bytes(d))));
    }
}

/// The body with every event passed through `filter`. Dropping the returned body drops
/// `filter` (and the upstream body), so a filter's `Drop` runs however the stream ends.
pub fn map_events(body: Body, filter: impl EventFilter) -> Body {
    let state = State {
        body: body.into_data_stream(),
        buf: BytesMut::new(),
        filter,
        pending: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            if st.done {
                return None;
            }
            match st.body.next().await {
                Some(Ok(chunk)) => {
                    st.buf.extend_from_slice(&chunk);
                    st.drain_complete();
                }
                Some(Err(e)) => {
                    st.finish();
                    st.pending.push_back(Err(e));
                }
                None => st.finish(),
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    struct Upper(usize);

    impl EventFilter for Upper {
        fn event(&mut self, data: &str, out: &mut Vec<String>) {
            if data != "drop" {
                out.push(data.to_uppercase());
            }
        }
        fn end(&mut self, out: &mut Vec<String>) {
            self.0 += 1;
            out.push(format!("end{}", self.0));
        }
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_mapped_once() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"data: a")),
            Ok(Bytes::from_static(
                b"b\n\ndata: drop\n\nevent: x\ndata: y\n\n",
            )),
            Ok(Bytes::from_static(b"data: c\n\n")),
        ];
        let body = Body::from_stream(futures::stream::iter(chunks));
        let out = map_events(body, Upper(0))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: AB\n\nevent: x\ndata: y\n\ndata: C\n\ndata: end1\n\n"
        );
    }
}
