//! Stop strings over streamed text, for every generator: the local model's decoder and the
//! page's LLM function, which may ignore the `stop` it is given.

/// A generation's text as it grows, cut at the first stop string. What may still turn out to be
/// the start of a stop string is held back from streaming until the text shows it is not.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stop: Vec<String>,
    text: String,
    /// Bytes of `text` already handed out for streaming.
    streamed: usize,
    stopped: bool,
}

impl StopStrings {
    /// Watches for `stop` (empty strings are never matched).
    pub fn new(stop: &[String]) -> Self {
        Self {
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Adds a piece of text; returns what can be streamed now. After a stop string, or once
    /// [`Self::stopped`], nothing more is taken.
    pub fn push(&mut self, piece: &str) -> Option<String> {
        if self.stopped {
            return None;
        }
        self.text.push_str(piece);
        self.advance()
    }

    /// Replaces the whole text so far (a decoder that decodes every token again); returns what
    /// can be streamed now. Text already streamed stays streamed.
    pub fn set(&mut self, text: String) -> Option<String> {
        if self.stopped {
            return None;
        }
        self.text = text;
        self.advance()
    }

    /// No more text is coming: returns what was held back.
    pub fn finish(&mut self) -> Option<String> {
        self.stream_to(self.text.len())
    }

    /// Whether a stop string ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text, without the stop string and what followed it.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn advance(&mut self) -> Option<String> {
        let first = self
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.text.truncate(at);
            self.stopped = true;
            return self.stream_to(at);
        }
        let held = self
            .stop
            .iter()
            .map(|s| partial_suffix(&self.text, s))
            .max()
            .unwrap_or(0);
        self.stream_to(self.text.len() - held)
    }

    fn stream_to(&mut self, upto: usize) -> Option<String> {
        if upto <= self.streamed {
            return None;
        }
        let piece = self.text.get(self.streamed..upto)?.to_owned();
        self.streamed = upto;
        Some(piece)
    }
}

/// The length of the longest proper prefix of `stop` that `text` ends with.
fn partial_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .filter(|&n| stop.is_char_boundary(n))
        .find(|&n| text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(stop: &[&str]) -> StopStrings {
        StopStrings::new(&stop.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn text_that_may_start_a_stop_string_waits_and_the_text_ends_before_it() {
        let mut s = stops(&["\nUser:", "END"]);
        assert_eq!(s.push("Hello"), Some("Hello".into()));
        assert_eq!(s.push(" there\nUs"), Some(" there".into()));
        assert_eq!(s.push("ually"), Some("\nUsually".into()));
        assert_eq!(s.push(" fine.\nUser: more"), Some(" fine.".into()));
        assert!(s.stopped());
        assert_eq!(s.text(), "Hello there\nUsually fine.");
        assert_eq!(s.push("ignored"), None);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn the_earliest_stop_string_wins_and_held_text_comes_out_at_the_end() {
        let mut s = stops(&["b", "a"]);
        assert_eq!(s.push("xxab"), Some("xx".into()));
        assert_eq!(s.text(), "xx");
        let mut s = stops(&["END"]);
        assert_eq!(s.push("the EN"), Some("the ".into()));
        assert_eq!(s.finish(), Some("EN".into()));
        assert_eq!(s.text(), "the EN");
        assert!(!s.stopped());
    }

    #[test]
    fn set_replaces_the_text_and_multibyte_stops_split_on_characters() {
        let mut s = stops(&["é!"]);
        assert_eq!(s.set("caf".into()), Some("caf".into()));
        assert_eq!(s.set("café".into()), None);
        assert_eq!(s.set("café!".into()), None);
        assert!(s.stopped());
        assert_eq!(s.text(), "caf");
        let mut s = stops(&["", "x"]);
        assert_eq!(s.push("ab"), Some("ab".into()));
    }
}
