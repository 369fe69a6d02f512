use futures_executor::block_on;
use serde_json::json;

use super::*;
use crate::error::ErrorCode;
use crate::testing::{assert_spec_complete, tool_context, CHAT_QUERIES};

fn run(arguments: Value) -> Result<ToolOutput> {
    block_on(UnitConverter::new().run(&arguments, &tool_context(0, chrono_tz::UTC)))
}

/// `value.result` of converting `value` from one unit to another.
fn result(value: &str, from: &str, to: &str) -> String {
    match run(json!({ "value": value, "from": from, "to": to })) {
        Ok(output) => output.value["result"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn spec_is_complete() {
    assert_spec_complete(&UnitConverter::default(), "convert_units");
}

#[test]
fn intent_reads_explicit_conversions() {
    let cases = [
        ("convert 5 km to miles", ("5", "km", "mi")),
        ("how many ounces in 2 pounds", ("2", "lb", "oz")),
        ("100 fahrenheit in celsius", ("100", "°F", "°C")),
        ("60 mph to km/h", ("60", "mph", "km/h")),
        ("2 GiB in MB", ("2", "GiB", "MB")),
        ("What is 3 cups in ml?", ("3", "cup", "ml")),
        ("how many feet are in a mile", ("1", "mi", "ft")),
        ("-40 °F in °C", ("-40", "°F", "°C")),
        ("1,500 m to km", ("1500", "m", "km")),
        ("5km in miles", ("5", "km", "mi")),
        ("convert 1/2 cup to tablespoons", ("1/2", "cup", "tbsp")),
        ("3 in in cm", ("3", "in", "cm")),
        ("12 fl oz to ml", ("12", "fl oz", "ml")),
        ("what's 20 knots in kph", ("20", "kn", "km/h")),
        ("300 kelvin to degrees fahrenheit", ("300", "K", "°F")),
        ("10 stone in kg", ("10", "st", "kg")),
        ("how many bytes are in 1 KiB", ("1", "KiB", "B")),
        ("1 gallon to liters", ("1", "gal", "l")),
        ("How many bytes are in 1 gigabyte?", ("1", "GB", "B")),
        ("Convert 2 liters to US gallons", ("2", "l", "gal")),
        ("how many liters are in 5 u.s. gallons", ("5", "gal", "l")),
        ("4 US quarts in liters", ("4", "qt", "l")),
    ];
    for (query, (value, from, to)) in cases {
        assert_eq!(
            UnitConverter::new().intent(query),
            Some(json!({ "value": value, "from": from, "to": to })),
            "{query}"
        );
    }
}

#[test]
fn intent_ignores_everything_else() {
    let negatives = [
        "What is 12 * 7?",
        "what time is it in Tokyo",
        "how many days until 2026-12-25",
        "I walk 5 km to work",
        "put 2 cups in the bowl",
        "how many miles in a marathon",
        "convert 5 kg to km",
        "convert 5 apples to oranges",
    ];
    for query in CHAT_QUERIES.iter().copied().chain(negatives) {
        assert_eq!(UnitConverter::new().intent(query), None, "{query}");
    }
}

#[test]
fn arguments_accept_incompatible_units_for_run_to_refuse() {
    assert_eq!(
        UnitConverter::new().arguments("convert 5 kg to km"),
        Some(json!({ "value": "5", "from": "kg", "to": "km" }))
    );
}

#[test]
fn conversions_are_exact() {
    // Every unit converts by its own symbol, as `intent` passes them.
    for unit in UNITS {
        assert!(
            !result("1", unit.symbol, unit.symbol).starts_with("error"),
            "{}",
            unit.symbol
        );
    }
    assert_eq!(result("1", "GB", "B"), "1000000000");
    assert_eq!(result("1", "mile", "km"), "1.609344");
    assert_eq!(result("1", "in", "cm"), "2.54");
    assert_eq!(result("2", "pounds", "ounces"), "32");
    assert_eq!(result("1", "lb", "kg"), "0.45359237");
    assert_eq!(result("1", "gallon", "l"), "3.785411784");
    assert_eq!(result("60", "mph", "km/h"), "96.56064");
    assert_eq!(result("2", "GiB", "MB"), "2147.483648");
    assert_eq!(result("1", "KiB", "byte"), "1024");
    assert_eq!(result("1", "byte", "bits"), "8");
    assert_eq!(result("3", "cups", "ml"), "709.7647095");
    assert_eq!(result("1", "mile", "feet"), "5280");
    assert_eq!(result("1", "nmi", "m"), "1852");
    assert_eq!(result("1", "knot", "km/h"), "1.852");
    assert_eq!(result("1", "gal", "fl oz"), "128");
    assert_eq!(result("1", "tbsp", "tsp"), "3");
    assert_eq!(result("1", "m3", "l"), "1000");
    assert_eq!(result("1", "st", "lb"), "14");
    assert_eq!(result("1", "t", "mg"), "1000000000");
    assert_eq!(result("0", "°C", "°F"), "32");
    assert_eq!(result("-40", "°F", "°C"), "-40");
    assert_eq!(result("0", "K", "°C"), "-273.15");
    assert_eq!(result("1.5", "km", "m"), "1500");
    assert_eq!(result("1/2", "cup", "tbsp"), "8");
    assert_eq!(result("1e3", "m", "km"), "1");
    assert_eq!(result("10", "ft/s", "m/s"), "3.048");
}

#[test]
fn inexact_results_keep_twenty_decimals_and_show_six() {
    let output = run(json!({ "value": "5", "from": "km", "to": "miles" }));
    let Ok(output) = output else {
        panic!("{output:?}");
    };
    assert_eq!(output.text, "5 km ≈ 3.106856 mi");
    assert_eq!(
        output.value,
        json!({
            "value": "5",
            "from": "km",
            "to": "mi",
            "dimension": "length",
            "result": "3.10685596118666984809",
            "exact": false,
            "display": "3.106856",
        })
    );
    assert_eq!(
        result("100", "fahrenheit", "celsius"),
        "37.77777777777777777778"
    );
    assert_eq!(result("72", "kg", "lb"), "158.73282877311185812054");
}

#[test]
fn exact_results_say_so_and_small_ones_keep_significant_digits() {
    let output = run(json!({ "value": 1, "from": "mi", "to": "km" }));
    let Ok(output) = output else {
        panic!("{output:?}");
    };
    assert_eq!(output.text, "1 mi = 1.609344 km");
    assert_eq!(output.value["exact"], json!(true));
    let tiny = run(json!({ "value": "1", "from": "mg", "to": "t" }));
    let Ok(tiny) = tiny else {
        panic!("{tiny:?}");
    };
    assert_eq!(tiny.value["result"], json!("0.000000001"));
    assert_eq!(tiny.text, "1 mg = 0.000000001 t");
    let inch = run(json!({ "value": "1", "from": "mm", "to": "in" }));
    let Ok(inch) = inch else {
        panic!("{inch:?}");
    };
    assert_eq!(inch.value["display"], json!("0.03937"));
    assert_eq!(inch.value["exact"], json!(false));
    assert_eq!(result("0.1", "m", "mm"), "100");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let bad = [
        json!({ "value": "5", "from": "kg", "to": "km" }),
        json!({ "value": "5", "from": "furlong", "to": "m" }),
        json!({ "value": "5", "from": "m", "to": "parsec" }),
        json!({ "value": "five", "from": "m", "to": "ft" }),
        json!({ "value": "1/0", "from": "m", "to": "ft" }),
        json!({ "value": "1e999", "from": "m", "to": "ft" }),
        json!({ "value": "1.2.3", "from": "m", "to": "ft" }),
        json!({ "value": "", "from": "m", "to": "ft" }),
        json!({ "value": "-500", "from": "°C", "to": "K" }),
        json!({ "value": true, "from": "m", "to": "ft" }),
        json!({ "value": "1", "to": "ft" }),
        json!({ "value": "1".repeat(60), "from": "m", "to": "ft" }),
    ];
    for arguments in bad {
        let outcome = run(arguments.clone());
        assert!(
            matches!(&outcome, Err(e) if e.code() == ErrorCode::InvalidInput),
            "{arguments}: {outcome:?}"
        );
    }
}
