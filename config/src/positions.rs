//! Where each node of a YAML document starts, by path, so that errors found after parsing
//! (unknown keys, wrong types, bad references) can point at a line and column.
//!
//! `serde_norway` reports positions only for syntax errors; the positions of every key and
//! item come from a second, event-level pass with `yaml-rust2`'s parser.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Renders a path as `models[1].backend` (empty path = `<root>`).
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    if out.is_empty() {
        out.push_str("<root>");
    }
    out
}

/// Line and column (both 1-based) of every key and item.
#[derive(Debug, Default)]
pub struct Positions {
    map: HashMap<Vec<Seg>, (usize, usize)>,
}

impl Positions {
    /// Indexes `src`. A document that does not scan yields an empty index (the syntax error
    /// is reported by the real parser).
    pub fn index(src: &str) -> Self {
        let mut rx = Receiver::default();
        let mut parser = Parser::new_from_str(src);
        let _ = parser.load(&mut rx, false);
        Positions { map: rx.map }
    }

    /// The position of `path`, or of its closest indexed ancestor.
    pub fn find(&self, path: &[Seg]) -> Option<(usize, usize)> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.map.get(&path[..n]).copied())
    }
}

enum Frame {
    Map { key: Option<String>, first: bool },
    Seq { next: usize },
}

#[derive(Default)]
struct Receiver {
    map: HashMap<Vec<Seg>, (usize, usize)>,
    stack: Vec<Frame>,
    path: Vec<Seg>,
}

impl Receiver {
    fn pos(m: &Marker) -> (usize, usize) {
        (m.line(), m.col() + 1)
    }

    /// Called for every node start; returns true when the node is a mapping key.
    fn enter_node(&mut self, mark: &Marker) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map { key: None, .. }) => true,
            Some(Frame::Map { key: Some(k), .. }) => {
                let k = k.clone();
                self.path.push(Seg::Key(k));
                false
            }
            Some(Frame::Seq { next }) => {
                let i = *next;
                *next += 1;
                self.path.push(Seg::Index(i));
                self.map.insert(self.path.clone(), Self::pos(mark));
                false
            }
            None => {
                self.map.entry(Vec::new()).or_insert(Self::pos(mark));
                false
            }
        }
    }

    /// Called when a value node is complete.
    fn leave_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => {
                *key = None;
                self.path.pop();
            }
            Some(Frame::Seq { .. }) => {
                self.path.pop();
            }
            None => {}
        }
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, ..) => {
                if self.enter_node(&mark) {
                    let mut p = self.path.clone();
                    p.push(Seg::Key(s.clone()));
                    self.map.insert(p, Self::pos(&mark));
                    if let Some(Frame::Map { key, first }) = self.stack.last_mut() {
                        *key = Some(s);
                        // A block mapping's start event is reported late: an item that is
                        // a mapping starts at its first key.
                        if std::mem::take(first) && matches!(self.path.last(), Some(Seg::Index(_)))
                        {
                            self.map.insert(self.path.clone(), Self::pos(&mark));
                        }
                    }
                } else {
                    self.leave_value();
                }
            }
            Event::Alias(_) => {
                if self.enter_node(&mark) {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("*alias".into());
                    }
                } else {
                    self.leave_value();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // Complex keys are not used by the schema; treat them as values.
                let _ = self.enter_node(&mark);
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        key: None,
                        first: true,
                    }
                } else {
                    Frame::Seq { next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_items() {
        let src = "a: 1\nlist:\n  - name: x\n    kind: y\n  - name: z\nc:\n  d: [1, 2]\n";
        let p = Positions::index(src);
        let k = |s: &str| Seg::Key(s.into());
        assert_eq!(p.find(&[k("a")]), Some((1, 1)));
        assert_eq!(p.find(&[k("list")]), Some((2, 1)));
        assert_eq!(p.find(&[k("list"), Seg::Index(0)]), Some((3, 5)));
        assert_eq!(p.find(&[k("list"), Seg::Index(0), k("kind")]), Some((4, 5)));
        assert_eq!(p.find(&[k("list"), Seg::Index(1), k("name")]), Some((5, 5)));
        assert_eq!(p.find(&[k("c"), k("d")]), Some((7, 3)));
        // Unknown paths fall back to the closest ancestor.
        assert_eq!(p.find(&[k("c"), k("d"), k("nope")]), Some((7, 3)));
        assert_eq!(
            render(&[k("list"), Seg::Index(1), k("name")]),
            "list[1].name"
        );
    }
}
