//! Conversation history for `ask`: the turns of each conversation, compressed past a limit.
//!
//! Each conversation keeps its turns in the worker. What a generation sees is
//! [`Conversations::context`]: the most recent turns that fit the token budget (at most
//! [`HistoryPolicy::max_turns`]), and, once older turns were left out, a one-line summary of
//! them (`Earlier, the user asked about: …`) made from the first words of each earlier question,
//! so a tiny model keeps the thread without reading everything again. The summary is extractive on
//! purpose: summarising with the model would cost a generation on every long conversation.
//! Tokens are estimated at 4 bytes each, which is close for English with a BPE tokenizer.

use std::collections::{HashMap, VecDeque};

use crate::generation::Turn;

/// Conversations the worker keeps at once; the least recently used is dropped past it.
pub const MAX_CONVERSATIONS: usize = 64;
/// Turns kept per conversation (older ones only feed the summary).
const MAX_STORED_TURNS: usize = 200;
/// Words of each earlier question that go into the summary.
const SUMMARY_WORDS: usize = 8;
/// Earlier questions named in the summary (the most recent ones).
const SUMMARY_QUESTIONS: usize = 6;

/// How much history a generation sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// The most turns given verbatim (a turn is one message: user or assistant).
    pub max_turns: usize,
    /// The most estimated tokens of verbatim turns.
    pub max_tokens: usize,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self {
            max_turns: 10,
            max_tokens: 512,
        }
    }
}

/// What a generation is given of its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryContext {
    /// The summary of the turns left out, when some were.
    pub summary: Option<String>,
    /// The recent turns, oldest first.
    pub turns: Vec<Turn>,
}

/// Every conversation's turns.
#[derive(Debug, Default)]
pub struct Conversations {
    turns: HashMap<String, VecDeque<Turn>>,
    /// Conversation ids, least recently used first.
    recency: VecDeque<String>,
}

/// Estimated tokens of `text`.
fn tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

impl Conversations {
    /// Records one exchange of conversation `id`.
    pub fn record(&mut self, id: &str, question: &str, answer: &str) {
        self.touch(id);
        let turns = self.turns.entry(id.to_owned()).or_default();
        turns.push_back(Turn {
            role: "user".into(),
            content: question.to_owned(),
        });
        turns.push_back(Turn {
            role: "assistant".into(),
            content: answer.to_owned(),
        });
        while turns.len() > MAX_STORED_TURNS {
            turns.pop_front();
        }
        while self.recency.len() > MAX_CONVERSATIONS {
            if let Some(oldest) = self.recency.pop_front() {
                self.turns.remove(&oldest);
            }
        }
    }

    /// What a generation in conversation `id` sees under `policy`.
    pub fn context(&self, id: &str, policy: HistoryPolicy) -> HistoryContext {
        let Some(turns) = self.turns.get(id) else {
            return HistoryContext::default();
        };
        let mut kept = 0;
        let mut budget = policy.max_tokens;
        for turn in turns.iter().rev() {
            let cost = tokens(&turn.content);
            if kept == policy.max_turns || cost > budget {
                break;
            }
            budget -= cost;
            kept += 1;
        }
        // Start on a user turn, so the model never sees an answer without its question.
        let mut start = turns.len() - kept;
        if turns.get(start).is_some_and(|turn| turn.role != "user") {
            start += 1;
        }
        let earlier: Vec<String> = turns
            .iter()
            .take(start)
            .filter(|turn| turn.role == "user")
            .map(|turn| {
                turn.content
                    .split_whitespace()
                    .take(SUMMARY_WORDS)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let summary = (!earlier.is_empty()).then(|| {
            let recent = &earlier[earlier.len().saturating_sub(SUMMARY_QUESTIONS)..];
            format!("Earlier, the user asked about: {}.", recent.join("; "))
        });
        HistoryContext {
            summary,
            turns: turns.iter().skip(start).cloned().collect(),
        }
    }

    /// Forgets conversation `id`.
    pub fn forget(&mut self, id: &str) {
        self.turns.remove(id);
        self.recency.retain(|known| known != id);
    }

    fn touch(&mut self, id: &str) {
        self.recency.retain(|known| known != id);
        self.recency.push_back(id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_turns: usize, max_tokens: usize) -> HistoryPolicy {
        HistoryPolicy {
            max_turns,
            max_tokens,
        }
    }

    #[test]
    fn short_conversations_are_given_whole() {
        let mut conversations = Conversations::default();
        conversations.record("c", "What is 2+2?", "4");
        conversations.record("c", "And times 3?", "12");
        let context = conversations.context("c", HistoryPolicy::default());
        assert_eq!(context.summary, None);
        let said: Vec<&str> = context.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(said, ["What is 2+2?", "4", "And times 3?", "12"]);
        assert_eq!(
            conversations.context("other", HistoryPolicy::default()),
            HistoryContext::default()
        );
    }

    #[test]
    fn past_ten_turns_older_ones_are_summarised() {
        let mut conversations = Conversations::default();
        for i in 0..8 {
            conversations.record("c", &format!("question number {i} about topic {i}"), "ok");
        }
        let context = conversations.context("c", HistoryPolicy::default());
        assert_eq!(context.turns.len(), 10);
        assert_eq!(context.turns[0].role, "user");
        assert_eq!(context.turns[0].content, "question number 3 about topic 3");
        let summary = context.summary.expect("older turns were left out");
        assert!(
            summary.contains("question number 0 about topic 0"),
            "{summary}"
        );
        assert!(summary.contains("question number 2"), "{summary}");
        assert!(!summary.contains("question number 3"), "{summary}");
    }

    #[test]
    fn the_token_budget_trims_and_never_starts_on_an_answer() {
        let mut conversations = Conversations::default();
        conversations.record("c", "first question", &"long answer ".repeat(40));
        conversations.record("c", "second question", "short");
        // 40 tokens hold the last exchange but not the long answer before it.
        let context = conversations.context("c", policy(10, 40));
        let said: Vec<&str> = context.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(said, ["second question", "short"]);
        assert_eq!(
            context.summary.as_deref(),
            Some("Earlier, the user asked about: first question.")
        );
    }

    #[test]
    fn the_least_recently_used_conversation_is_dropped_past_the_limit() {
        let mut conversations = Conversations::default();
        for i in 0..=MAX_CONVERSATIONS {
            conversations.record(&format!("c{i}"), "q", "a");
        }
        assert!(conversations
            .context("c0", HistoryPolicy::default())
            .turns
            .is_empty());
        assert_eq!(
            conversations
                .context("c1", HistoryPolicy::default())
                .turns
                .len(),
            2
        );
        conversations.forget("c1");
        assert!(conversations
            .context("c1", HistoryPolicy::default())
            .turns
            .is_empty());
    }
}
