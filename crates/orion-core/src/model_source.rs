//! Where the models' files come from, and the digests the host vouches for.
//!
//! On the wire `models.embedding` is either a base URL (`"/models/all-MiniLM-L6-v2/"`) or an
//! object: `{url, sha256?}` for files the worker fetches, or `{provided: true, sha256?}` for
//! files the page handed over as bytes (the platform takes them out of the message before it is
//! decoded, since the protocol carries JSON only). `sha256` maps a file's role (`config`,
//! `tokenizer`, `weights`) to its lowercase hex SHA-256; a file with a digest is checked against
//! it before it is used or cached. `models.llm` is one GGUF file: a URL or `{url, sha256?}`
//! ([`LlmSource`]).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// One of the embedding model's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFile {
    /// `config.json`: the architecture.
    Config,
    /// `tokenizer.json`: the vocabulary and rules.
    Tokenizer,
    /// `model.safetensors`: the weights.
    Weights,
}

impl ModelFile {
    /// Every file, in the order they are fetched (smallest first, so a wrong URL fails fast).
    pub const ALL: [ModelFile; 3] = [ModelFile::Config, ModelFile::Tokenizer, ModelFile::Weights];

    /// The file's name under the model's base URL.
    pub fn file_name(self) -> &'static str {
        match self {
            ModelFile::Config => "config.json",
            ModelFile::Tokenizer => "tokenizer.json",
            ModelFile::Weights => "model.safetensors",
        }
    }

    /// The role's name, as used for the keys of `sha256` and of provided files.
    pub fn role(self) -> &'static str {
        match self {
            ModelFile::Config => "config",
            ModelFile::Tokenizer => "tokenizer",
            ModelFile::Weights => "weights",
        }
    }
}

/// A SHA-256 digest, parsed from 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parses 64 hex digits (either case).
    pub fn parse(hex: &str) -> Result<Self, String> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(format!(
                "expected 64 hex digits (a SHA-256), got {} characters",
                hex.chars().count()
            ));
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = hex_value(pair[0]);
            let low = hex_value(pair[1]);
            match (high, low) {
                (Some(high), Some(low)) => *byte = high << 4 | low,
                _ => return Err("expected hex digits only (0-9, a-f)".to_owned()),
            }
        }
        Ok(Self(digest))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        Sha256::parse(&hex).map_err(de::Error::custom)
    }
}

/// The digests the host gave, per file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigests {
    /// `config.json`'s.
    #[serde(default)]
    pub config: Option<Sha256>,
    /// `tokenizer.json`'s.
    #[serde(default)]
    pub tokenizer: Option<Sha256>,
    /// `model.safetensors`'s.
    #[serde(default)]
    pub weights: Option<Sha256>,
}

impl FileDigests {
    /// The digest given for `file`, if any.
    pub fn get(&self, file: ModelFile) -> Option<Sha256> {
        match file {
            ModelFile::Config => self.config,
            ModelFile::Tokenizer => self.tokenizer,
            ModelFile::Weights => self.weights,
        }
    }
}

/// Where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// Under this base URL (absolute; the client resolves relative ones against the page).
    Url(String),
    /// Handed over by the page as bytes; the platform holds them.
    Provided,
}

/// The embedding model's files: where they are and what they must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// Where.
    pub location: ModelLocation,
    /// The expected digests.
    pub sha256: FileDigests,
}

impl ModelSource {
    /// Files fetched from `base_url`, unverified.
    pub fn url(base_url: impl Into<String>) -> Self {
        Self {
            location: ModelLocation::Url(base_url.into()),
            sha256: FileDigests::default(),
        }
    }

    /// How errors name `file`: its URL, or "the provided <role> file".
    pub fn describe(&self, file: ModelFile) -> String {
        match &self.location {
            ModelLocation::Url(base) => {
                format!("{}/{}", base.trim_end_matches('/'), file.file_name())
            }
            ModelLocation::Provided => format!("the provided `{}` file", file.role()),
        }
    }
}

/// The object form, before its fields are checked against each other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceObject {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    provided: bool,
    #[serde(default)]
    sha256: FileDigests,
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = ModelSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base URL, `{url, sha256}` or `{provided: true, sha256}`")
    }

    fn visit_str<E: de::Error>(self, url: &str) -> Result<ModelSource, E> {
        check_url(url).map_err(E::custom)?;
        Ok(ModelSource::url(url))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSource, A::Error> {
        let object = SourceObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let location = match (object.url, object.provided) {
            (Some(url), false) => {
                check_url(&url).map_err(de::Error::custom)?;
                ModelLocation::Url(url)
            }
            (None, true) => ModelLocation::Provided,
            (Some(_), true) => {
                return Err(de::Error::custom(
                    "give either `url` or provided files, not both",
                ))
            }
            (None, false) => {
                return Err(de::Error::custom(
                    "give `url` (the model's base URL) or the files' bytes",
                ))
            }
        };
        Ok(ModelSource {
            location,
            sha256: object.sha256,
        })
    }
}

/// Where the local LLM's one GGUF file comes from: on the wire a URL
/// (`"/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"`) or `{url, sha256?}` with the
/// file's lowercase hex SHA-256, checked before the file is used or cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmSource {
    /// The file's URL (absolute; the client resolves relative ones against the page).
    pub url: String,
    /// The digest the host vouches for.
    pub sha256: Option<Sha256>,
}

impl LlmSource {
    /// The file at `url`, unverified.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            sha256: None,
        }
    }

    /// The file's name: the last segment of its URL (progress events and errors use it).
    pub fn file_name(&self) -> &str {
        let path = self.url.split(['?', '#']).next().unwrap_or(&self.url);
        path.rsplit('/')
            .find(|segment| !segment.is_empty())
            .unwrap_or(path)
    }
}

/// The object form of [`LlmSource`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmSourceObject {
    url: String,
    #[serde(default)]
    sha256: Option<Sha256>,
}

impl<'de> Deserialize<'de> for LlmSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LlmSourceVisitor)
    }
}

struct LlmSourceVisitor;

impl<'de> Visitor<'de> for LlmSourceVisitor {
    type Value = LlmSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the GGUF file's URL or `{url, sha256}`")
    }

    fn visit_str<E: de::Error>(self, url: &str) -> Result<LlmSource, E> {
        check_url(url).map_err(E::custom)?;
        Ok(LlmSource::url(url))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LlmSource, A::Error> {
        let object = LlmSourceObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        check_url(&object.url).map_err(de::Error::custom)?;
        Ok(LlmSource {
            url: object.url,
            sha256: object.sha256,
        })
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        Err("the model URL is empty".to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<ModelSource, String> {
        serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn a_string_is_a_base_url() {
        let source = parse(json!("https://example.test/minilm/")).unwrap();
        assert_eq!(source, ModelSource::url("https://example.test/minilm/"));
        assert_eq!(
            source.describe(ModelFile::Weights),
            "https://example.test/minilm/model.safetensors"
        );
    }

    #[test]
    fn digests_parse_in_either_case_and_print_lowercase() {
        let hex = "AB".repeat(32);
        let source = parse(json!({"url": "/m", "sha256": {"weights": hex}})).unwrap();
        let digest = source.sha256.get(ModelFile::Weights).unwrap();
        assert_eq!(digest.to_string(), "ab".repeat(32));
        assert_eq!(source.sha256.get(ModelFile::Config), None);
    }

    #[test]
    fn provided_files_are_named_by_role() {
        let source = parse(json!({"provided": true})).unwrap();
        assert_eq!(source.location, ModelLocation::Provided);
        assert_eq!(
            source.describe(ModelFile::Tokenizer),
            "the provided `tokenizer` file"
        );
    }

    #[test]
    fn an_llm_source_is_a_url_or_an_object() {
        let plain: LlmSource =
            serde_json::from_value(json!("https://x.test/m/a.gguf?v=1")).unwrap();
        assert_eq!(plain, LlmSource::url("https://x.test/m/a.gguf?v=1"));
        assert_eq!(plain.file_name(), "a.gguf");
        let hex = "ab".repeat(32);
        let object: LlmSource =
            serde_json::from_value(json!({"url": "/m/b.gguf", "sha256": hex})).unwrap();
        assert_eq!(object.sha256.map(|d| d.to_string()), Some(hex));
        for bad in [
            json!(""),
            json!({"url": ""}),
            json!({"url": "/m", "sha": 1}),
            json!(3),
        ] {
            assert!(
                serde_json::from_value::<LlmSource>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_sources_are_refused_with_their_path() {
        let cases = [
            (json!(""), "the model URL is empty"),
            (json!({}), "give `url`"),
            (json!({"url": "/m", "provided": true}), "not both"),
            (json!({"url": "/m", "sha": {}}), "unknown field `sha`"),
            (
                json!({"url": "/m", "sha256": {"weights": "abc"}}),
                "sha256.weights: expected 64 hex digits",
            ),
            (
                json!({"url": "/m", "sha256": {"config": "g".repeat(64)}}),
                "sha256.config: expected hex digits only",
            ),
            (
                json!({"url": "/m", "sha256": {"model": "a".repeat(64)}}),
                "unknown field `model`",
            ),
            (json!(42), "expected a base URL"),
        ];
        for (value, expected) in cases {
            let error = parse(value.clone()).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
