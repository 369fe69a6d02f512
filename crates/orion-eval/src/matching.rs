//! Whether a tool's answer holds the expected value (the rules are in `tests/eval/README.md`).
//!
//! The answer is read, never compared as a string: the tools may reword their sentences, and a
//! value counts wherever and however it is written.

use crate::dataset::{Category, Value};

/// Relative tolerance of unit conversions: the answer must carry about four significant digits.
const UNITS_RELATIVE: f64 = 1e-4;
/// Relative tolerance of arithmetic and dates: exact, up to how f64 reads a decimal.
const EXACT_RELATIVE: f64 = 1e-9;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A number as written in a text.
#[derive(Debug, Clone, PartialEq)]
struct Number {
    /// Its digits, sign and decimal point, without thousands separators.
    text: String,
    value: f64,
}

/// Whether `response` (to `query`) holds `expected`.
pub fn matches(
    category: Category,
    query: &str,
    response: &str,
    expected: &Value,
    tolerance: Option<f64>,
) -> bool {
    match expected {
        Value::Number(value) => {
            let tolerance = tolerance.unwrap_or_else(|| default_tolerance(category, *value));
            candidates(query, response)
                .iter()
                .any(|n| (n.value - value).abs() <= tolerance)
        }
        Value::Text(text) => {
            if let Some(integer) = big_integer(text) {
                candidates(query, response)
                    .iter()
                    .any(|n| n.text == integer)
            } else if let Some((year, month, day)) = iso_date(text) {
                has_date(response, year, month, day)
            } else if let Some(minutes) = clock_time(text) {
                times(response).contains(&minutes)
            } else {
                words(response)
                    .iter()
                    .any(|word| word.eq_ignore_ascii_case(text))
            }
        }
    }
}

/// The accepted absolute difference for `expected` when the query gives none.
fn default_tolerance(category: Category, expected: f64) -> f64 {
    let relative = if category == Category::Units {
        UNITS_RELATIVE
    } else {
        EXACT_RELATIVE
    };
    relative * expected.abs() + 1e-12
}

/// The response's numbers that the query did not already contain (each of the query's numbers
/// removes one equal number of the response, so that an echoed operand never counts as the
/// answer); all of the response's numbers when that leaves none (the answer is an operand).
fn candidates(query: &str, response: &str) -> Vec<Number> {
    let all = numbers(response);
    let mut rest = all.clone();
    for echoed in numbers(query) {
        if let Some(at) = rest.iter().position(|n| n.value == echoed.value) {
            rest.remove(at);
        }
    }
    if rest.is_empty() {
        all
    } else {
        rest
    }
}

/// The numbers in `text`: an optional sign (`-` or `−`, only where it cannot be a hyphen or a
/// minus between operands, i.e. not after a digit or a letter), digits with optional `,`
/// thousands separators, an optional fraction and an optional exponent (`e6`, `e-3`).
fn numbers(text: &str) -> Vec<Number> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_number =
            |at: usize| chars.get(at).is_some_and(char::is_ascii_digit) && !after_word(&chars, at);
        let signed = matches!(chars[i], '-' | '−')
            && starts_number(i + 1)
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if !signed && !starts_number(i) {
            i += 1;
            continue;
        }
        let mut digits = String::new();
        if signed {
            digits.push('-');
            i += 1;
        }
        while let Some(&c) = chars.get(i) {
            let grouped = c == ','
                && chars
                    .get(i + 1..i + 4)
                    .is_some_and(|g| g.iter().all(char::is_ascii_digit))
                && !chars.get(i + 4).is_some_and(char::is_ascii_digit);
            if c.is_ascii_digit() {
                digits.push(c);
            } else if grouped {
                // A thousands separator: dropped.
            } else if c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                digits.push('.');
            } else {
                break;
            }
            i += 1;
        }
        let exponent_at = |at: usize| {
            let sign = matches!(chars.get(at + 1), Some('-' | '+'));
            let first = at + 1 + usize::from(sign);
            chars
                .get(first)
                .is_some_and(char::is_ascii_digit)
                .then_some(first)
        };
        if matches!(chars.get(i), Some('e' | 'E')) {
            if let Some(first) = exponent_at(i) {
                digits.push('e');
                if chars.get(i + 1) == Some(&'-') {
                    digits.push('-');
                }
                i = first;
                while let Some(c) = chars.get(i).filter(|c| c.is_ascii_digit()) {
                    digits.push(*c);
                    i += 1;
                }
            }
        }
        if let Ok(value) = digits.parse::<f64>() {
            found.push(Number {
                text: digits,
                value,
            });
        }
    }
    found
}

/// Whether the digit at `at` continues a word (`log2`, `x86`): not a number of its own.
fn after_word(chars: &[char], at: usize) -> bool {
    at > 0 && chars[at - 1].is_alphabetic()
}

/// `text` as an integer too long for f64 to tell apart from its neighbours (all digits).
fn big_integer(text: &str) -> Option<String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())).then(|| text.to_owned())
}

/// `YYYY-MM-DD`.
fn iso_date(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('-');
    let year = parts.next().filter(|p| p.len() == 4)?.parse().ok()?;
    let month = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
    let day = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
    parts.next().is_none().then_some((year, month, day))
}

/// `HH:MM` as minutes after midnight.
fn clock_time(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u32 = hours.parse().ok()?;
    let minutes: u32 = minutes.parse().ok()?;
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

/// Whether `response` names the date: as `YYYY-MM-DD`, or by its month's name with the day and
/// the year near it (`December 14, 2026`, `14 December 2026`, `Monday, 14th December 2026`).
fn has_date(response: &str, year: u32, month: u32, day: u32) -> bool {
    if response.contains(&format!("{year:04}-{month:02}-{day:02}")) {
        return true;
    }
    let words = words(response);
    let Some(name) = MONTHS.get(month as usize - 1) else {
        return false;
    };
    words.iter().enumerate().any(|(at, word)| {
        if !word.eq_ignore_ascii_case(name) {
            return false;
        }
        let near = &words[at.saturating_sub(2)..(at + 4).min(words.len())];
        let number = |w: &str| {
            w.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<u32>()
                .ok()
        };
        near.iter().any(|w| number(w) == Some(day))
            && near.iter().any(|w| w.parse::<u32>().ok() == Some(year))
    })
}

/// The times of day in `response` (`07:00`, `7:00`, `7:00 pm`, `19:00:05`), as minutes after
/// midnight.
fn times(response: &str) -> Vec<u32> {
    let chars: Vec<char> = response.chars().collect();
    let mut found = Vec::new();
    for (at, c) in chars.iter().enumerate() {
        if *c != ':' || at == 0 {
            continue;
        }
        let mut start = at;
        while start > 0 && chars[start - 1].is_ascii_digit() {
            start -= 1;
        }
        let hours: String = chars[start..at].iter().collect();
        let minutes: String = chars
            .get(at + 1..at + 3)
            .unwrap_or_default()
            .iter()
            .collect();
        let (Ok(mut hours), Ok(minutes)) = (hours.parse::<u32>(), minutes.parse::<u32>()) else {
            continue;
        };
        // Seconds (`19:00:05`) are not a time of their own.
        let seconds = start > 0 && chars[start - 1] == ':';
        if seconds || !minutes_are_two_digits(&chars, at) {
            continue;
        }
        let rest: String = chars
            .get(at + 3..)
            .unwrap_or_default()
            .iter()
            .skip_while(|c| c.is_ascii_digit() || **c == ':')
            .collect::<String>()
            .trim_start()
            .to_lowercase();
        if rest.starts_with("pm") || rest.starts_with("p.m.") {
            if hours < 12 {
                hours += 12;
            }
        } else if (rest.starts_with("am") || rest.starts_with("a.m.")) && hours == 12 {
            hours = 0;
        }
        if hours < 24 && minutes < 60 {
            found.push(hours * 60 + minutes);
        }
    }
    found
}

fn minutes_are_two_digits(chars: &[char], colon: usize) -> bool {
    chars
        .get(colon + 1..colon + 3)
        .is_some_and(|m| m.iter().all(char::is_ascii_digit))
}

/// The words of `text` (letters and digits).
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(category: Category, query: &str, response: &str, expected: f64) -> bool {
        matches(category, query, response, &Value::Number(expected), None)
    }

    fn text(query: &str, response: &str, expected: &str) -> bool {
        matches(
            Category::Dates,
            query,
            response,
            &Value::Text(expected.into()),
            None,
        )
    }

    #[test]
    fn numbers_are_read_with_separators_signs_and_exponents() {
        let values: Vec<f64> = numbers("1,234,567.5 and -40 °F, 2026-12-25, 1.5e-3, log2, x=−3")
            .iter()
            .map(|n| n.value)
            .collect();
        assert_eq!(
            values,
            [1_234_567.5, -40.0, 2026.0, 12.0, 25.0, 1.5e-3, -3.0]
        );
    }

    #[test]
    fn an_echoed_operand_is_not_the_answer() {
        let q = "What is 12 * 7?";
        assert!(number(Category::Arithmetic, q, "12 * 7 = 84", 84.0));
        assert!(!number(Category::Arithmetic, q, "12 * 7 = 85", 12.0));
        // The answer may be an operand when nothing else is there.
        assert!(number(
            Category::Arithmetic,
            "What is 5 * 1?",
            "5 * 1 = 5",
            5.0
        ));
        assert!(number(Category::Arithmetic, "What is 5 * 1?", "5", 5.0));
    }

    #[test]
    fn conversions_need_four_significant_digits_and_arithmetic_is_exact() {
        let q = "Convert 5 km to miles";
        assert!(number(
            Category::Units,
            q,
            "5 km = 3.106856 mi",
            3.106_855_961
        ));
        assert!(number(
            Category::Units,
            q,
            "5 km = 3.1069 mi",
            3.106_855_961
        ));
        assert!(!number(Category::Units, q, "5 km = 3.11 mi", 3.106_855_961));
        assert!(!number(
            Category::Arithmetic,
            "1/3",
            "1/3 ≈ 0.3333",
            1.0 / 3.0
        ));
        assert!(number(
            Category::Arithmetic,
            "0.1 + 0.2",
            "0.1 + 0.2 = 0.3",
            0.3
        ));
    }

    #[test]
    fn big_integers_match_digit_for_digit() {
        let q = "What is 2^64?";
        let expected = Value::Text("18446744073709551616".into());
        let ok = "2^64 = 18446744073709551616";
        let off = "2^64 = 18446744073709551617";
        assert!(matches(Category::Arithmetic, q, ok, &expected, None));
        assert!(!matches(Category::Arithmetic, q, off, &expected, None));
        let grouped = "2^64 = 18,446,744,073,709,551,616";
        assert!(matches(Category::Arithmetic, q, grouped, &expected, None));
    }

    #[test]
    fn dates_times_and_weekdays_match_however_written() {
        assert!(text("", "It is 2026-12-14.", "2026-12-14"));
        assert!(text("", "Monday, 14 December 2026", "2026-12-14"));
        assert!(text("", "December 14th, 2026", "2026-12-14"));
        assert!(!text("", "December 15, 2026", "2026-12-14"));
        assert!(text("", "It is 07:00 on Monday", "07:00"));
        assert!(text("", "It is 7:00 pm", "19:00"));
        assert!(text("", "It is 9:30 p.m. in Mumbai", "21:30"));
        assert!(!text("", "It is 7:00 am", "19:00"));
        assert!(text("", "2027-01-01 is a Friday.", "Friday"));
        assert!(!text("", "2027-01-01 is a Fridayish.", "Friday"));
    }
}
