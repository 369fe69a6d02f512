use futures_executor::block_on;
use serde_json::json;

use super::*;
use crate::error::ErrorCode;
use crate::testing::{assert_spec_complete, tool_context, CHAT_QUERIES};

/// 2026-11-23T12:05:30Z, a Monday.
const NOW_MS: u64 = 1_795_435_530_000;

fn run_in(arguments: Value, time_zone: Tz) -> Result<ToolOutput> {
    block_on(DateTime::new().run(&arguments, &tool_context(NOW_MS, time_zone)))
}

fn value(arguments: Value) -> Value {
    match run_in(arguments, chrono_tz::UTC) {
        Ok(output) => output.value,
        Err(error) => json!(error.to_string()),
    }
}

fn intent(query: &str) -> Option<Value> {
    DateTime::new().intent(query)
}

#[test]
fn spec_is_complete() {
    assert_spec_complete(&DateTime::default(), "date_time");
}

#[test]
fn intent_reads_explicit_date_questions() {
    let cases = [
        (
            "what time is it in Tokyo",
            json!({"operation": "now", "zone": "tokyo"}),
        ),
        ("What time is it?", json!({"operation": "now"})),
        (
            "what's the time in New York",
            json!({"operation": "now", "zone": "new york"}),
        ),
        (
            "current time in Europe/Paris",
            json!({"operation": "now", "zone": "europe/paris"}),
        ),
        (
            "what time is it now in london",
            json!({"operation": "now", "zone": "london"}),
        ),
        ("what's the date today", json!({"operation": "today"})),
        ("What is today's date?", json!({"operation": "today"})),
        ("what day is it", json!({"operation": "today"})),
        (
            "what day of the week is 2027-01-01",
            json!({"operation": "weekday", "date": "2027-01-01"}),
        ),
        (
            "what day was December 25, 2026",
            json!({"operation": "weekday", "date": "2026-12-25"}),
        ),
        (
            "what weekday is 25 December 2026",
            json!({"operation": "weekday", "date": "2026-12-25"}),
        ),
        (
            "which day of the week is the 4th of July 2030",
            json!({"operation": "weekday", "date": "2030-07-04"}),
        ),
        (
            "how many days until 2026-12-25",
            json!({"operation": "days_between", "to": "2026-12-25"}),
        ),
        (
            "how many days are left until december 25",
            json!({"operation": "days_between", "to": "december 25"}),
        ),
        (
            "days till Dec 25 2026",
            json!({"operation": "days_between", "to": "2026-12-25"}),
        ),
        (
            "how many days since 2026-01-01",
            json!({"operation": "days_between", "from": "2026-01-01", "to": "today"}),
        ),
        (
            "how many days between 2026-01-01 and 2026-03-01",
            json!({"operation": "days_between", "from": "2026-01-01", "to": "2026-03-01"}),
        ),
        (
            "how many days from January 1, 2026 to March 1, 2026",
            json!({"operation": "days_between", "from": "2026-01-01", "to": "2026-03-01"}),
        ),
        (
            "add 45 days to 2026-03-01",
            json!({"operation": "add", "date": "2026-03-01", "amount": 45, "unit": "days"}),
        ),
        (
            "subtract 2 weeks from today",
            json!({"operation": "add", "date": "today", "amount": -2, "unit": "weeks"}),
        ),
        (
            "what date is 3 weeks from today",
            json!({"operation": "add", "date": "today", "amount": 3, "unit": "weeks"}),
        ),
        (
            "what is 2026-03-01 plus 1 month",
            json!({"operation": "add", "date": "2026-03-01", "amount": 1, "unit": "months"}),
        ),
        (
            "10 days before 2026-03-01",
            json!({"operation": "add", "date": "2026-03-01", "amount": -10, "unit": "days"}),
        ),
        (
            "what was the date 100 days ago",
            json!({"operation": "add", "date": "today", "amount": -100, "unit": "days"}),
        ),
        (
            "100 days ago",
            json!({"operation": "add", "date": "today", "amount": -100, "unit": "days"}),
        ),
        (
            "what's the date in 2 years",
            json!({"operation": "add", "date": "today", "amount": 2, "unit": "years"}),
        ),
        (
            "a week from now",
            json!({"operation": "add", "date": "today", "amount": 1, "unit": "weeks"}),
        ),
        (
            "What is the date 10 days from today?",
            json!({"operation": "add", "date": "today", "amount": 10, "unit": "days"}),
        ),
        (
            "What will the date be 2 weeks from today?",
            json!({"operation": "add", "date": "today", "amount": 2, "unit": "weeks"}),
        ),
        (
            "What day of the week is it today?",
            json!({"operation": "weekday", "date": "today"}),
        ),
        (
            "what day of the week is it",
            json!({"operation": "weekday", "date": "today"}),
        ),
        (
            "How many days until Christmas?",
            json!({"operation": "days_between", "to": "december 25"}),
        ),
        (
            "how many days left until New Year’s Eve",
            json!({"operation": "days_between", "to": "december 31"}),
        ),
        (
            "what day of the week is halloween",
            json!({"operation": "weekday", "date": "october 31"}),
        ),
        (
            "How many days ago was 2026-01-01?",
            json!({"operation": "days_between", "from": "2026-01-01", "to": "today"}),
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(intent(query), Some(expected), "{query}");
    }
}

#[test]
fn intent_ignores_everything_else() {
    let negatives = [
        "What is 12 * 7?",
        "convert 5 km to miles",
        "what time is it in my dreams",
        "what day is my dentist appointment",
        "how many days until my birthday",
        "add 3 eggs to the flour",
        "the meeting is 3 days from the launch",
        "what day of the week is 2027-02-30",
        "how many days until 12/25/2026",
        "what time is the meeting",
        "days of our lives",
        "What is the date of the meeting?",
        "what day is the party",
        "what is today's weather",
        "what is the time difference between Tokyo and London",
        "how many days until easter",
        "what day of the week is it in my calendar",
        "how many days ago was my haircut",
    ];
    for query in CHAT_QUERIES.iter().copied().chain(negatives) {
        assert_eq!(intent(query), None, "{query}");
    }
}

#[test]
fn now_is_in_the_asked_zone() {
    assert_eq!(
        value(json!({"operation": "now", "zone": "Tokyo"})),
        json!({
            "operation": "now",
            "zone": "Asia/Tokyo",
            "date": "2026-11-23",
            "time": "21:05",
            "weekday": "Monday",
            "utcOffset": "+09:00",
            "datetime": "2026-11-23T21:05:30+09:00",
        })
    );
    let new_york = run_in(json!({"operation": "now"}), chrono_tz::America::New_York);
    let Ok(new_york) = new_york else {
        panic!("{new_york:?}");
    };
    assert_eq!(new_york.value["time"], json!("07:05"));
    assert_eq!(new_york.value["utcOffset"], json!("-05:00"));
    assert_eq!(
        new_york.text,
        "It is 07:05 on Monday, 23 November 2026 in America/New_York."
    );
    assert_eq!(
        value(json!({"operation": "now", "zone": "america/los_angeles"}))["time"],
        json!("04:05")
    );
    assert_eq!(
        value(json!({"operation": "now", "zone": "UTC"}))["time"],
        json!("12:05")
    );
}

#[test]
fn today_crosses_midnight_with_the_zone() {
    let auckland = run_in(json!({"operation": "today"}), chrono_tz::Pacific::Auckland);
    let Ok(auckland) = auckland else {
        panic!("{auckland:?}");
    };
    assert_eq!(auckland.value["date"], json!("2026-11-24"));
    assert_eq!(auckland.text, "Today is Tuesday, 24 November 2026.");
    assert_eq!(
        value(json!({"operation": "today"}))["date"],
        json!("2026-11-23")
    );
}

#[test]
fn weekdays() {
    assert_eq!(
        value(json!({"operation": "weekday", "date": "2027-01-01"})),
        json!({"operation": "weekday", "date": "2027-01-01", "weekday": "Friday"})
    );
    assert_eq!(
        value(json!({"operation": "weekday", "date": "December 25, 2026"}))["weekday"],
        json!("Friday")
    );
    assert_eq!(
        value(json!({"operation": "weekday", "date": "tomorrow"}))["weekday"],
        json!("Tuesday")
    );
    assert_eq!(
        value(json!({"operation": "weekday", "date": "today"}))["weekday"],
        json!("Monday")
    );
    // A holiday already past this year is next year's.
    assert_eq!(
        value(json!({"operation": "weekday", "date": "halloween"}))["date"],
        json!("2027-10-31")
    );
}

#[test]
fn days_between_dates() {
    let until = run_in(
        json!({"operation": "days_between", "to": "2026-12-25"}),
        chrono_tz::UTC,
    );
    let Ok(until) = until else {
        panic!("{until:?}");
    };
    assert_eq!(until.value["days"], json!(32));
    assert_eq!(until.text, "2026-12-25 is 32 days from today (2026-11-23).");
    assert_eq!(
        value(json!({"operation": "days_between", "to": "december 25"}))["days"],
        json!(32)
    );
    assert_eq!(
        value(json!({"operation": "days_between", "to": "january 1"}))["to"],
        json!("2027-01-01")
    );
    assert_eq!(
        value(json!({"operation": "days_between", "from": "2026-01-01", "to": "2026-03-01"})),
        json!({"operation": "days_between", "from": "2026-01-01", "to": "2026-03-01", "days": 59})
    );
    assert_eq!(
        value(json!({"operation": "days_between", "from": "2026-01-01", "to": "today"}))["days"],
        json!(326)
    );
    assert_eq!(
        value(json!({"operation": "days_between", "to": "2026-11-20"}))["days"],
        json!(-3)
    );
}

#[test]
fn adding_to_dates() {
    let added = run_in(
        json!({"operation": "add", "date": "2026-03-01", "amount": 45, "unit": "days"}),
        chrono_tz::UTC,
    );
    let Ok(added) = added else {
        panic!("{added:?}");
    };
    assert_eq!(added.text, "2026-03-01 + 45 days = 2026-04-15 (Wednesday).");
    assert_eq!(added.value["result"], json!("2026-04-15"));
    let result = |args: Value| value(args)["result"].clone();
    assert_eq!(
        result(json!({"operation": "add", "amount": 3, "unit": "weeks"})),
        json!("2026-12-14")
    );
    assert_eq!(
        result(json!({"operation": "add", "date": "2026-01-31", "amount": 1, "unit": "months"})),
        json!("2026-02-28")
    );
    assert_eq!(
        result(json!({"operation": "add", "date": "2024-02-29", "amount": 1, "unit": "years"})),
        json!("2025-02-28")
    );
    assert_eq!(
        result(json!({"operation": "add", "date": "2026-03-01", "amount": -1, "unit": "days"})),
        json!("2026-02-28")
    );
}

#[test]
fn bad_arguments_are_typed_errors() {
    let bad = [
        json!({}),
        json!({"operation": "yesterday"}),
        json!({"operation": "now", "zone": "Atlantis"}),
        json!({"operation": "now", "zone": 3}),
        json!({"operation": "weekday"}),
        json!({"operation": "weekday", "date": "2027-02-30"}),
        json!({"operation": "weekday", "date": "soon"}),
        json!({"operation": "days_between"}),
        json!({"operation": "add", "amount": 3}),
        json!({"operation": "add", "amount": 3, "unit": "fortnights"}),
        json!({"operation": "add", "unit": "days"}),
        json!({"operation": "add", "amount": 2_000_000, "unit": "days"}),
        json!({"operation": "add", "date": "9999-12-31", "amount": 1_000_000, "unit": "years"}),
    ];
    for arguments in bad {
        let outcome = run_in(arguments.clone(), chrono_tz::UTC);
        assert!(
            matches!(&outcome, Err(e) if e.code() == ErrorCode::InvalidInput),
            "{arguments}: {outcome:?}"
        );
    }
}
