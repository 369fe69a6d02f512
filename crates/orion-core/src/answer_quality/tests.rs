use proptest::prelude::*;

use super::*;

fn signal(quality: &Quality, name: &str) -> Option<f32> {
    quality
        .signals
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
}

fn text_only<'a>(query: &'a str, answer: &'a str) -> QualityInputs<'a> {
    QualityInputs {
        query,
        answer,
        ..QualityInputs::default()
    }
}

#[test]
fn repeated_text_scores_lower_repetition_than_varied_text() {
    let looped = "the cat sat on the mat the cat sat on the mat the cat sat on the mat";
    let varied = "the cat sat on the mat while the dog slept by the warm kitchen fire";
    let looped = signal(&evaluate(&text_only("", looped)), "repetition").unwrap();
    let varied = signal(&evaluate(&text_only("", varied)), "repetition").unwrap();
    assert!(looped < 0.5, "{looped}");
    assert_eq!(varied, 1.0);
}

#[test]
fn repetition_is_absent_without_a_trigram() {
    let quality = evaluate(&text_only("", "Paris, France"));
    assert_eq!(signal(&quality, "repetition"), None);
}

#[test]
fn covering_the_query_terms_scores_higher_coverage() {
    let query = "What is the capital city of France?";
    let on_topic = "The capital city of France is Paris.";
    let off_topic = "Bananas are rich in potassium.";
    let on = signal(&evaluate(&text_only(query, on_topic)), "coverage").unwrap();
    let off = signal(&evaluate(&text_only(query, off_topic)), "coverage").unwrap();
    assert_eq!(on, 1.0);
    assert_eq!(off, 0.0);
}

#[test]
fn coverage_ignores_stop_words_and_matches_plurals_and_numbers() {
    let terms = key_terms("What are the best cities for cats in 2024?");
    let expected: HashSet<String> = ["best", "city", "cat", "2024"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(terms, expected);
    let quality = evaluate(&text_only(
        "how many legs do spiders have",
        "A spider has eight legs.",
    ));
    // Key terms `many`, `leg`, `spider`: the answer has the last two, in another number.
    let value = signal(&quality, "coverage").unwrap();
    assert!((value - 2.0 / 3.0).abs() < 1e-6, "{value}");
}

#[test]
fn coverage_is_absent_when_the_query_has_no_key_terms() {
    let quality = evaluate(&text_only("what is it?", "It is a thing."));
    assert_eq!(signal(&quality, "coverage"), None);
}

#[test]
fn agreement_of_identical_vectors_is_1_and_of_orthogonal_ones_is_0() {
    let same = vec![
        vec![0.6, 0.8, 0.0],
        vec![0.6, 0.8, 0.0],
        vec![0.6, 0.8, 0.0],
    ];
    let apart = vec![
        vec![1.0, 0.0, 0.0],
        vec![0.0, 1.0, 0.0],
        vec![0.0, 0.0, 1.0],
    ];
    let inputs = |agents| QualityInputs {
        query: "q",
        answer: "an answer of a reasonable length here",
        agent_vectors: agents,
        ..QualityInputs::default()
    };
    let same = signal(&evaluate(&inputs(&same)), "agreement").unwrap();
    let apart = signal(&evaluate(&inputs(&apart)), "agreement").unwrap();
    assert!((same - 1.0).abs() < 1e-6, "{same}");
    assert_eq!(apart, 0.0);
    assert_eq!(
        signal(&evaluate(&inputs(&[vec![1.0, 0.0]])), "agreement"),
        None,
        "one agent cannot agree with itself"
    );
}

#[test]
fn cosines_map_linearly_between_floor_and_ceiling() {
    assert_eq!(map_cosine(COSINE_FLOOR), 0.0);
    assert_eq!(map_cosine(COSINE_CEILING), 1.0);
    assert!((map_cosine(0.5) - 0.5).abs() < 1e-6);
    assert_eq!(map_cosine(-1.0), 0.0);
    assert_eq!(map_cosine(f32::NAN), 0.0);
}

#[test]
fn support_is_the_best_memory_match_and_absent_without_memories() {
    let answer = [1.0, 0.0];
    let memories = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
    let inputs = QualityInputs {
        query: "q",
        answer: "a",
        answer_vector: Some(&answer),
        memory_vectors: &memories,
        ..QualityInputs::default()
    };
    assert_eq!(signal(&evaluate(&inputs), "support"), Some(1.0));
    let without = QualityInputs {
        memory_vectors: &[],
        ..inputs
    };
    assert_eq!(signal(&evaluate(&without), "support"), None);
    let unembedded = QualityInputs {
        answer_vector: None,
        ..inputs
    };
    assert_eq!(signal(&evaluate(&unembedded), "support"), None);
}

#[test]
fn length_curve_penalises_empty_short_and_overlong_answers() {
    assert_eq!(length(""), 0.0);
    assert_eq!(length("   "), 0.0);
    assert!((length("Paris") - 0.2).abs() < 1e-6);
    assert_eq!(length("Paris is the capital of France"), 1.0);
    let long = "word ".repeat(500);
    assert!((length(&long) - 0.5).abs() < 1e-6);
}

#[test]
fn weights_renormalise_over_present_signals() {
    let quality = evaluate(&text_only(
        "capital of France",
        "Paris is the capital of France.",
    ));
    let names: Vec<&str> = quality.signals.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["coverage", "length", "repetition"]);
    let total: f32 = quality.signals.iter().map(|s| s.weight).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    // Coverage 0.20, length 0.15 and repetition 0.20 out of 0.55.
    let coverage = quality.signals[0].weight;
    assert!((coverage - 0.20 / 0.55).abs() < 1e-6, "{coverage}");
    // All three signals are 1, so the renormalised mean is 1 (not 0.55).
    assert!((quality.score - 1.0).abs() < 1e-6, "{}", quality.score);
}

#[test]
fn all_signals_present_weigh_as_documented() {
    let answer = [1.0, 0.0];
    let agents = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    let memories = vec![vec![1.0, 0.0]];
    let quality = evaluate(&QualityInputs {
        query: "capital of France",
        answer: "Paris is the capital of France.",
        answer_vector: Some(&answer),
        agent_vectors: &agents,
        memory_vectors: &memories,
        exact: false,
    });
    let expected = [
        ("agreement", 0.25),
        ("coverage", 0.20),
        ("support", 0.20),
        ("length", 0.15),
        ("repetition", 0.20),
    ];
    assert_eq!(quality.signals.len(), expected.len());
    for (s, (name, weight)) in quality.signals.iter().zip(expected) {
        assert_eq!(s.name, name);
        assert!(
            (s.weight - weight).abs() < 1e-6,
            "{name} weighs {}",
            s.weight
        );
    }
    // Agreement 0 (orthogonal agents), everything else 1.
    assert!((quality.score - 0.75).abs() < 1e-6, "{}", quality.score);
    assert!(!quality.low);
}

#[test]
fn low_flag_is_set_below_the_threshold() {
    let poor = evaluate(&text_only("capital of France", "Bananas."));
    assert!(poor.score < LOW_QUALITY_THRESHOLD, "{}", poor.score);
    assert!(poor.low);
    let good = evaluate(&text_only(
        "capital of France",
        "Paris is the capital of France.",
    ));
    assert!(!good.low);
    let at = combine(&[("length", LOW_QUALITY_THRESHOLD, 1.0)]);
    assert!(!at.low, "the threshold itself is not low");
    let below = combine(&[("length", LOW_QUALITY_THRESHOLD - 0.01, 1.0)]);
    assert!(below.low);
}

#[test]
fn exact_answers_score_1_with_only_the_exact_signal() {
    let quality = evaluate(&QualityInputs {
        query: "what is 12 * 7",
        answer: "84",
        exact: true,
        ..QualityInputs::default()
    });
    assert_eq!(quality.score, 1.0);
    assert!(!quality.low);
    assert_eq!(quality.signals.len(), 1);
    assert_eq!(quality.signals[0].name, "exact");
    assert_eq!(quality.signals[0].value, 1.0);
    assert_eq!(quality.signals[0].weight, 1.0);
}

#[test]
fn nan_and_empty_inputs_do_not_panic_or_poison_the_score() {
    let nan = [f32::NAN, 1.0];
    let agents = vec![vec![f32::NAN, 0.0], vec![1.0, f32::INFINITY], vec![]];
    let memories = vec![vec![], vec![f32::NAN]];
    let quality = evaluate(&QualityInputs {
        query: "",
        answer: "",
        answer_vector: Some(&nan),
        agent_vectors: &agents,
        memory_vectors: &memories,
        exact: false,
    });
    assert!(quality.score.is_finite());
    assert_eq!(quality.score, 0.0);
    assert!(quality.low);
    assert!(quality.signals.iter().all(|s| s.value.is_finite()));
}

fn vectors() -> impl Strategy<Value = Vec<Vec<f32>>> {
    prop::collection::vec(prop::collection::vec(prop::num::f32::ANY, 0..6), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn score_is_always_finite_and_within_0_and_1(
        query in ".{0,80}",
        answer in ".{0,300}",
        answer_vector in prop::option::of(prop::collection::vec(prop::num::f32::ANY, 0..6)),
        agents in vectors(),
        memories in vectors(),
        exact in any::<bool>(),
    ) {
        let quality = evaluate(&QualityInputs {
            query: &query,
            answer: &answer,
            answer_vector: answer_vector.as_deref(),
            agent_vectors: &agents,
            memory_vectors: &memories,
            exact,
        });
        prop_assert!(quality.score.is_finite());
        prop_assert!((0.0..=1.0).contains(&quality.score), "{}", quality.score);
        prop_assert_eq!(quality.low, quality.score < LOW_QUALITY_THRESHOLD);
        for s in &quality.signals {
            prop_assert!((0.0..=1.0).contains(&s.value), "{} = {}", s.name, s.value);
            prop_assert!((0.0..=1.0).contains(&s.weight), "{} weighs {}", s.name, s.weight);
        }
    }

    #[test]
    fn looping_an_answer_lowers_its_repetition(
        answer in "[a-z]{1,6}( [a-z]{1,6}){3,20}",
    ) {
        let once = signal(&evaluate(&text_only("", &answer)), "repetition").unwrap_or(1.0);
        let looped = format!("{answer} {answer} {answer}");
        let thrice = signal(&evaluate(&text_only("", &looped)), "repetition").unwrap_or(1.0);
        prop_assert!(thrice < once, "{thrice} >= {once}");
    }
}
