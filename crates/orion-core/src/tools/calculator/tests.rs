use futures_executor::block_on;
use serde_json::json;

use super::*;
use crate::error::ErrorCode;
use crate::testing::{assert_spec_complete, tool_context, CHAT_QUERIES};

fn run(expression: &str) -> Result<ToolOutput> {
    block_on(Calculator::new().run(
        &json!({ "expression": expression }),
        &tool_context(0, chrono_tz::UTC),
    ))
}

fn result(expression: &str) -> String {
    match run(expression) {
        Ok(output) => output.value["result"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Err(error) => format!("error: {error}"),
    }
}

fn expression(query: &str) -> Option<String> {
    Calculator::new()
        .intent(query)
        .and_then(|args| args["expression"].as_str().map(str::to_owned))
}

#[test]
fn spec_is_complete() {
    let calculator = Calculator::default();
    assert_spec_complete(&calculator, "calculator");
    assert_eq!(
        calculator.spec().parameters["required"],
        json!(["expression"])
    );
}

#[test]
fn intent_reads_explicit_calculations() {
    let cases = [
        ("What is 12 * 7?", "12 * 7"),
        ("calculate (3+4)^2", "(3 + 4)^2"),
        ("what's 15% of 80", "15% of 80"),
        ("sqrt(144)", "sqrt(144)"),
        ("1/3 + 1/6", "1/3 + 1/6"),
        ("what is 6 times 7", "6 * 7"),
        ("What is 100 divided by 8?", "100/8"),
        ("how much is 3 × 4", "3 * 4"),
        ("9 ÷ 3", "9/3"),
        ("what is 3 x 4", "3 * 4"),
        ("compute 10 minus 4 plus 1", "10 - 4 + 1"),
        ("what is 5 squared", "5^2"),
        ("what is the square root of 81", "sqrt 81"),
        ("calculate 1,250 * 3", "1250 * 3"),
        ("what is 2 to the power of 10", "2^10"),
        ("10 mod 3", "10 mod 3"),
        ("5!", "5!"),
        ("What is 2/3 of 90?", "2/3 * 90"),
        ("what is -5 + 2?", "-5 + 2"),
        ("log10(1000)", "log10(1000)"),
        ("what is 20 percent of 50", "20% of 50"),
    ];
    for (query, expected) in cases {
        assert_eq!(expression(query).as_deref(), Some(expected), "{query}");
    }
}

#[test]
fn intent_ignores_questions_that_are_not_arithmetic() {
    let negatives = [
        "how many days until 2026-12-25",
        "what day of the week is 2027-01-01",
        "convert 5 km to miles",
        "2 GiB in MB",
        "2026-12-25",
        "12/25/2026",
        "what is 5",
        "what is pi",
        "what is 42?",
        "roll d6",
        "a = 3",
        "5 of 10",
        "2/3 of the cake",
        "",
        "   ",
        "hello",
        "what is 3 apples + 2 apples",
        "10 km + 5 km",
    ];
    for query in CHAT_QUERIES.iter().copied().chain(negatives) {
        assert_eq!(expression(query), None, "{query}");
    }
}

#[test]
fn results_are_exact() {
    assert_eq!(result("12 * 7"), "84");
    assert_eq!(result("0.1 + 0.2"), "0.3");
    assert_eq!(result("1/3 + 1/6"), "0.5");
    assert_eq!(result("2^64"), "18446744073709551616");
    assert_eq!(result("(3+4)^2"), "49");
    assert_eq!(result("15% of 80"), "12");
    assert_eq!(result("sqrt(144)"), "12");
    assert_eq!(result("10 mod 3"), "1");
    assert_eq!(result("5!"), "120");
    assert_eq!(result("2/3 of 90"), "60");
    assert_eq!(result("3/4 of 10"), "7.5");
    assert_eq!(result("-5 + 2"), "-3");
    assert_eq!(result("1,000 + 2"), "1002");
    assert_eq!(result("what is 6 times 7?"), "42");
    assert_eq!(result("2^-3"), "0.125");
    assert_eq!(
        result("2^-64"),
        "0.0000000000000000000542101086242752217003726400434970855712890625"
    );
    assert_eq!(result("1/3 * 3"), "1");
    assert_eq!(result("7 / 2"), "3.5");
    assert_eq!(result("2(3+4)"), "14");
    assert_eq!(result(".5 + .25"), "0.75");
    assert_eq!(result("50% of 30%"), "15%");
    assert_eq!(result("100!").len(), 158);
    assert_eq!(result("1000!").len(), 2568);
    assert_eq!(result("2^10000").len(), 3011);
    assert_eq!(result("10^100 + 0.5").len(), 103);
    assert_eq!(result("(10^30+1) mod 10^29"), "1");
    assert_eq!(result("sqrt(10^40)"), "100000000000000000000");
    assert_eq!(result("1e-20 + 1"), "1.00000000000000000001");
}

#[test]
fn output_has_a_sentence_and_data() {
    let output = run("12*7");
    let Ok(output) = output else {
        panic!("{output:?}");
    };
    assert_eq!(output.text, "12 * 7 = 84");
    assert_eq!(
        output.value,
        json!({ "expression": "12 * 7", "result": "84", "exact": true })
    );
}

#[test]
fn inexact_results_say_so() {
    let output = run("1/3");
    let Ok(output) = output else {
        panic!("{output:?}");
    };
    assert_eq!(output.value["exact"], json!(false));
    assert_eq!(output.value["result"], json!("0.3333333333"));
    assert_eq!(output.text, "1/3 ≈ 0.3333333333");
    assert_eq!(result("sqrt(2)"), "1.4142135624");
}

#[test]
fn bad_input_is_a_typed_error() {
    for bad in [
        "10/0",
        "1 +",
        "(1 + 2",
        "1 + 2)",
        "5 km to miles",
        "today",
        "a = 3",
        "roll d6",
        "print(1)",
        "",
        "2,50 + 1",
        "1000000!",
        "(1+2)!",
        "3.5!",
        "sqrt(-1)",
        "0^0",
        "5 mod 0",
        "0x10",
        "floor(1e30/7)",
        "round(2.5)",
        "asin(2)",
        "1e99999999999999999999",
    ] {
        let outcome = run(bad);
        assert!(
            matches!(&outcome, Err(e) if e.code() == ErrorCode::InvalidInput),
            "{bad}: {outcome:?}"
        );
    }
    let missing = block_on(Calculator::new().run(&json!({}), &tool_context(0, chrono_tz::UTC)));
    assert!(matches!(missing, Err(e) if e.code() == ErrorCode::InvalidInput));
}

#[test]
fn hostile_input_stops() {
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let long = "1+".repeat(300) + "1";
    let many = "1+".repeat(30) + "1";
    let nested = format!("{}1{}", "(".repeat(9), ")".repeat(9));
    for hostile in [
        "9^9^9",
        "2^2^30",
        "10^10^10 mod 7",
        "0.1^100000",
        deep.as_str(),
        long.as_str(),
        many.as_str(),
        nested.as_str(),
    ] {
        let outcome = run(hostile);
        assert!(
            matches!(&outcome, Err(e) if e.code() == ErrorCode::InvalidInput),
            "{hostile}: {outcome:?}"
        );
    }
}
