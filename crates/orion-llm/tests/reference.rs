//! The tokenizer, the chat template and greedy generation against references made once with
//! llama.cpp, Hugging Face tokenizers and Jinja (`tests/fixtures/README.md` says how).

mod common;

use orion_core::generation::{GenerateRequest, Silent, Turn};
use orion_llm::chat_template::Message;
use orion_llm::{LocalModel, WeightFormat};
use serde::Deserialize;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture<T: for<'de> Deserialize<'de>>(name: &str) -> Result<T, String> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))
}

#[derive(Deserialize)]
struct Cases<T> {
    cases: Vec<T>,
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
    roundtrip: bool,
}

#[derive(Deserialize)]
struct TemplateCase {
    messages: Vec<Message>,
    add_generation_prompt: bool,
    rendered: String,
}

#[derive(Deserialize)]
struct GenerationCase {
    messages: Vec<Message>,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    /// Per step, the reference's five likeliest tokens with their probabilities.
    top5_probs_per_step: Vec<Vec<(u32, f64)>>,
}

/// Below this gap between the probabilities of the two likeliest tokens, two correct
/// implementations may pick differently: llama.cpp keeps its attention cache in f16 and sums in
/// another order. The comparison stops at the first such step.
const NEAR_TIE: f64 = 0.05;

fn model() -> Result<LocalModel, String> {
    let bytes = common::model_bytes()?;
    LocalModel::load(&bytes, "SmolLM2", &Default::default()).map_err(|e| e.to_string())
}

#[test]
fn tokenizer_matches_llama_cpp_and_hugging_face() -> Result<(), String> {
    let model = model()?;
    let tokenizer = model.tokenizer();
    let cases: Cases<TokenizerCase> = fixture("tokenizer_reference.json")?;
    assert!(cases.cases.len() >= 300);
    let mut wrong = Vec::new();
    for case in &cases.cases {
        let ids = tokenizer.encode(&case.text).map_err(|e| e.to_string())?;
        if ids != case.ids {
            wrong.push(format!("{:?}: {ids:?} != {:?}", case.text, case.ids));
        }
        let text = tokenizer.decode(&case.ids).map_err(|e| e.to_string())?;
        assert_eq!(
            text == case.text,
            case.roundtrip,
            "decoding {:?} gave {text:?}",
            case.text
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        cases.cases.len(),
        wrong.join("\n")
    );
    Ok(())
}

#[test]
fn chat_template_renders_like_jinja() -> Result<(), String> {
    let model = model()?;
    let cases: Cases<TemplateCase> = fixture("chat_template_reference.json")?;
    assert!(cases.cases.len() >= 6);
    for case in &cases.cases {
        let rendered = model
            .template()
            .render(&case.messages, case.add_generation_prompt)
            .map_err(|e| e.to_string())?;
        assert_eq!(rendered, case.rendered, "{:?}", case.messages);
    }
    Ok(())
}

fn request_of(messages: &[Message]) -> Result<GenerateRequest, String> {
    let (last, earlier) = messages.split_last().ok_or("an empty conversation")?;
    let (system, turns) = match earlier.split_first() {
        Some((first, rest)) if first.role == "system" => (Some(first.content.clone()), rest),
        _ => (None, earlier),
    };
    Ok(GenerateRequest {
        system,
        history: turns
            .iter()
            .map(|m| Turn {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
        ..GenerateRequest::new(last.content.clone())
    })
}

#[test]
fn greedy_generation_matches_llama_cpp() -> Result<(), String> {
    let generator = common::generator(WeightFormat::AsStored).map_err(|e| e.to_string())?;
    let cases: Cases<GenerationCase> = fixture("generation_reference.json")?;
    let mut compared = 0;
    for case in &cases.cases {
        let mut request = request_of(&case.messages)?;
        let prompt = generator
            .model()
            .prompt_ids(&request)
            .map_err(|e| e.to_string())?;
        assert_eq!(prompt, case.prompt_ids, "prompt of {:?}", case.messages);
        // Compare up to (and including) the first near-tie.
        let steps = case
            .top5_probs_per_step
            .iter()
            .position(|top| match top.as_slice() {
                [(_, a), (_, b), ..] => a - b < NEAR_TIE,
                _ => false,
            })
            .map_or(case.generated_ids.len(), |i| i + 1);
        let expected: Vec<u32> = case.generated_ids.iter().take(steps).copied().collect();
        request.max_tokens = steps as u32;
        let mut decoding = [generator.start(&request).map_err(|e| e.to_string())?];
        while !decoding[0].finished() {
            generator
                .step(&mut decoding, &Silent)
                .map_err(|e| e.to_string())?;
        }
        // The reference lists the end-of-turn token; the decoding stops on it without keeping it.
        let mut got = decoding[0].generated().to_vec();
        if got.len() < expected.len() {
            got.push(2);
        }
        let agree = if steps < case.generated_ids.len() {
            steps - 1
        } else {
            steps
        };
        assert_eq!(got[..agree], expected[..agree], "{:?}", case.messages);
        compared += agree;
    }
    assert!(compared >= 40, "only {compared} tokens compared");
    Ok(())
}
