//! What the generator promises beyond matching the reference: seeds, stop strings, streaming,
//! cancellation, the conversation cache and batched generation.

mod common;

use common::{block_on, Recorder};
use orion_core::generation::{FinishReason, GenerateRequest, Silent, Turn};
use orion_core::{Error, ErrorCode, Generator};
use orion_llm::{LocalGenerator, WeightFormat};

fn generator() -> Result<LocalGenerator, Error> {
    common::generator(WeightFormat::Q8_0)
}

const FRANCE: &str = "What is the capital of France? Answer in one sentence.";

fn sampled(prompt: &str, seed: u64) -> GenerateRequest {
    GenerateRequest {
        temperature: 0.9,
        top_p: Some(0.95),
        seed,
        max_tokens: 24,
        ..GenerateRequest::new(prompt)
    }
}

#[test]
fn a_prompt_read_in_one_pass_or_in_pieces_gives_the_same_next_token() -> Result<(), Error> {
    for format in [WeightFormat::AsStored, WeightFormat::Q8_0] {
        let generator = common::generator(format)?;
        let (difference, same_pick) = common::one_pass_against_pieces(generator.model())?;
        assert!(
            difference < 1e-3,
            "{format:?}: relative difference {difference}"
        );
        assert!(same_pick, "{format:?}");
    }
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_text_and_another_seed_another() -> Result<(), Error> {
    let generator = generator()?;
    let prompt = "Invent a name for a cat.";
    let a = block_on(generator.generate(&sampled(prompt, 7), &Silent))?;
    let b = block_on(generator.generate(&sampled(prompt, 7), &Silent))?;
    assert_eq!(a.text, b.text);
    let others: Vec<String> = (8..12)
        .map(|seed| block_on(generator.generate(&sampled(prompt, seed), &Silent)).map(|g| g.text))
        .collect::<Result<_, _>>()?;
    assert!(others.iter().any(|t| *t != a.text), "{a:?} {others:?}");
    Ok(())
}

#[test]
fn streamed_pieces_make_the_text_and_stop_strings_end_it() -> Result<(), Error> {
    let generator = generator()?;
    let recorder = Recorder::default();
    let full = block_on(generator.generate(&GenerateRequest::new(FRANCE), &recorder))?;
    assert_eq!(full.text, "The capital of France is Paris.");
    assert_eq!(full.finish, FinishReason::EndOfTurn);
    assert_eq!(recorder.text(0), full.text);
    assert!(recorder.count(0) > 3, "{:?}", recorder.pieces);

    let recorder = Recorder::default();
    let request = GenerateRequest {
        stop: vec![" Paris".into(), "nowhere".into()],
        ..GenerateRequest::new(FRANCE)
    };
    let stopped = block_on(generator.generate(&request, &recorder))?;
    assert_eq!(stopped.text, "The capital of France is");
    assert_eq!(stopped.finish, FinishReason::Stop);
    // Nothing of the stop string was streamed before it was recognised.
    assert_eq!(recorder.text(0), stopped.text);
    Ok(())
}

#[test]
fn max_tokens_and_cancellation_end_generation_early() -> Result<(), Error> {
    let generator = generator()?;
    let request = GenerateRequest {
        max_tokens: 5,
        ..GenerateRequest::new("Write a long story about a dragon.")
    };
    let short = block_on(generator.generate(&request, &Silent))?;
    assert_eq!((short.tokens, short.finish), (5, FinishReason::Length));

    let recorder = Recorder::default();
    recorder.cancel_at.set(Some((0, 2)));
    let request = GenerateRequest {
        max_tokens: 200,
        ..GenerateRequest::new("Write a long story about a dragon.")
    };
    let cancelled = block_on(generator.generate(&request, &recorder))?;
    assert_eq!(cancelled.finish, FinishReason::Cancelled);
    assert!(cancelled.tokens < 10, "{cancelled:?}");
    assert_eq!(recorder.text(0), cancelled.text);
    Ok(())
}

#[test]
fn a_conversation_reuses_its_cache_and_answers_as_if_fresh() -> Result<(), Error> {
    let generator = generator()?;
    let first = GenerateRequest {
        conversation_id: Some("c1".into()),
        ..GenerateRequest::new(FRANCE)
    };
    let answer = block_on(generator.generate(&first, &Silent))?;
    assert_eq!(answer.cached_tokens, 0);
    let history = vec![
        Turn {
            role: "user".into(),
            content: FRANCE.into(),
        },
        Turn {
            role: "assistant".into(),
            content: answer.text.clone(),
        },
    ];
    let second = GenerateRequest {
        conversation_id: Some("c1".into()),
        history: history.clone(),
        ..GenerateRequest::new("And of Germany?")
    };
    let cached = block_on(generator.generate(&second, &Silent))?;
    let fresh = block_on(generator.generate(
        &GenerateRequest {
            conversation_id: None,
            ..second.clone()
        },
        &Silent,
    ))?;
    assert!(cached.cached_tokens >= answer.prompt_tokens, "{cached:?}");
    assert_eq!(fresh.cached_tokens, 0);
    assert_eq!(cached.text, fresh.text);
    assert!(cached.text.contains("Berlin"), "{cached:?}");
    Ok(())
}

#[test]
fn generate_many_gives_what_one_at_a_time_gives() -> Result<(), Error> {
    let generator = generator()?;
    let requests: Vec<GenerateRequest> = [
        FRANCE,
        "List three primary colors.",
        "Write a haiku about the sea.",
    ]
    .iter()
    .map(|p| GenerateRequest {
        max_tokens: 12,
        ..GenerateRequest::new(*p)
    })
    .collect();
    let recorder = Recorder::default();
    let together = block_on(generator.generate_many(&requests, &recorder));
    for (i, (request, result)) in requests.iter().zip(&together).enumerate() {
        let alone = block_on(generator.generate(request, &Silent))?;
        let result = result.as_ref().map_err(Clone::clone)?;
        assert_eq!(result.text, alone.text, "request {i}");
        assert_eq!(recorder.text(i), result.text);
    }
    Ok(())
}

#[test]
fn bad_requests_are_refused_before_any_work() -> Result<(), Error> {
    let generator = generator()?;
    let too_long = GenerateRequest {
        max_tokens: 4000,
        ..GenerateRequest::new("x ".repeat(20_000))
    };
    let errors = [
        block_on(generator.generate(&GenerateRequest::new(" "), &Silent)),
        block_on(generator.generate(
            &GenerateRequest {
                top_k: Some(0),
                ..GenerateRequest::new("Hi")
            },
            &Silent,
        )),
        block_on(generator.generate(&too_long, &Silent)),
    ];
    for error in errors {
        assert_eq!(
            error.map_err(|e| e.code()).err(),
            Some(ErrorCode::InvalidInput)
        );
    }
    // One bad request in a batch fails alone.
    let batch = [
        GenerateRequest::new(" "),
        GenerateRequest {
            max_tokens: 3,
            ..GenerateRequest::new("Hi")
        },
    ];
    let results = block_on(generator.generate_many(&batch, &Silent));
    assert!(matches!(results[0], Err(Error::InvalidInput { .. })));
    assert_eq!(results[1].as_ref().map(|g| g.tokens).ok(), Some(3));
    Ok(())
}

#[test]
fn repetition_penalty_makes_the_model_repeat_itself_less() -> Result<(), Error> {
    let generator = generator()?;
    let request = GenerateRequest {
        max_tokens: 48,
        ..GenerateRequest::new("Repeat the word 'hello' as many times as you can.")
    };
    let distinct_share = |penalty: f32| -> Result<f64, Error> {
        let mut decoding = [generator.start(&GenerateRequest {
            repetition_penalty: penalty,
            ..request.clone()
        })?];
        while !decoding[0].finished() {
            generator.step(&mut decoding, &Silent)?;
        }
        let ids = decoding[0].generated();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        Ok(distinct.len() as f64 / ids.len().max(1) as f64)
    };
    let plain = distinct_share(1.0)?;
    let penalised = distinct_share(1.8)?;
    assert!(
        penalised > plain,
        "distinct share {penalised} with the penalty, {plain} without"
    );
    Ok(())
}
