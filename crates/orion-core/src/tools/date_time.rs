//! The date and time tool: the current date or time (here or in a named place), the day of the
//! week of a date, days between dates, and date arithmetic.
//!
//! Time comes from [`ToolContext::now_ms`] and the user's zone from [`ToolContext::time_zone`]
//! (chrono without its `clock` feature: no wall clock in the core). Arguments:
//!
//! | `operation`    | other fields                                                        |
//! |----------------|---------------------------------------------------------------------|
//! | `now`          | `zone`? (a city such as `Tokyo`, or an IANA zone such as `Asia/Tokyo`) |
//! | `today`        | `zone`?                                                             |
//! | `weekday`      | `date`                                                              |
//! | `days_between` | `to`, `from`? (today when absent)                                   |
//! | `add`          | `amount` (negative subtracts), `unit` (`days`/`weeks`/`months`/`years`), `date`? (today) |
//!
//! Dates are `YYYY-MM-DD`, `December 25, 2026`, `25 December 2026`, `December 25` (its next
//! occurrence), `today`, `tomorrow` or `yesterday`. Month arithmetic clamps to the end of the
//! month (`2026-01-31` + 1 month is `2026-02-28`).

use chrono::{Datelike, Days, Months, NaiveDate, Offset, Timelike, Weekday};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::{Tool, ToolContext, ToolOutput, ToolSpec};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

/// The largest `amount` accepted by `add` (about 2,700 years of days).
const MAX_AMOUNT: i64 = 1_000_000;

/// Common place names and the IANA zones they are in; any IANA name works besides these.
const PLACES: &[(&str, &str)] = &[
    ("utc", "UTC"),
    ("gmt", "UTC"),
    ("tokyo", "Asia/Tokyo"),
    ("japan", "Asia/Tokyo"),
    ("london", "Europe/London"),
    ("new york", "America/New_York"),
    ("new york city", "America/New_York"),
    ("nyc", "America/New_York"),
    ("paris", "Europe/Paris"),
    ("sydney", "Australia/Sydney"),
    ("melbourne", "Australia/Melbourne"),
    ("berlin", "Europe/Berlin"),
    ("los angeles", "America/Los_Angeles"),
    ("san francisco", "America/Los_Angeles"),
    ("seattle", "America/Los_Angeles"),
    ("chicago", "America/Chicago"),
    ("denver", "America/Denver"),
    ("toronto", "America/Toronto"),
    ("vancouver", "America/Vancouver"),
    ("mexico city", "America/Mexico_City"),
    ("sao paulo", "America/Sao_Paulo"),
    ("são paulo", "America/Sao_Paulo"),
    ("madrid", "Europe/Madrid"),
    ("rome", "Europe/Rome"),
    ("amsterdam", "Europe/Amsterdam"),
    ("zurich", "Europe/Zurich"),
    ("moscow", "Europe/Moscow"),
    ("istanbul", "Europe/Istanbul"),
    ("dubai", "Asia/Dubai"),
    ("mumbai", "Asia/Kolkata"),
    ("delhi", "Asia/Kolkata"),
    ("new delhi", "Asia/Kolkata"),
    ("india", "Asia/Kolkata"),
    ("singapore", "Asia/Singapore"),
    ("hong kong", "Asia/Hong_Kong"),
    ("beijing", "Asia/Shanghai"),
    ("shanghai", "Asia/Shanghai"),
    ("china", "Asia/Shanghai"),
    ("seoul", "Asia/Seoul"),
    ("auckland", "Pacific/Auckland"),
    ("cairo", "Africa/Cairo"),
    ("johannesburg", "Africa/Johannesburg"),
];

/// Month names, January first, lower case as queries are compared lower-cased.
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

/// Holidays on a fixed month and day, by the names people use (apostrophes dropped, as
/// [`DateSpec::parse`] compares without them). Movable feasts (Easter, Thanksgiving) are left out
/// rather than guessed.
const HOLIDAYS: &[(&str, u32, u32)] = &[
    ("christmas", 12, 25),
    ("christmas day", 12, 25),
    ("christmas eve", 12, 24),
    ("new year", 1, 1),
    ("new years", 1, 1),
    ("new years day", 1, 1),
    ("new years eve", 12, 31),
    ("halloween", 10, 31),
    ("valentines day", 2, 14),
    ("valentines", 2, 14),
    ("st patricks day", 3, 17),
    ("saint patricks day", 3, 17),
    ("independence day", 7, 4),
    ("the fourth of july", 7, 4),
    ("fourth of july", 7, 4),
];

/// Answers date and time questions exactly, from the runtime's clock.
#[derive(Debug, Clone)]
pub struct DateTime {
    spec: ToolSpec,
}

impl DateTime {
    /// The date and time tool, with its spec.
    pub fn new() -> Self {
        let examples = [
            "what time is it in Tokyo",
            "what's the date today",
            "what day of the week is 2027-01-01",
            "how many days until 2026-12-25",
            "how many days between 2026-01-01 and 2026-03-01",
            "add 45 days to 2026-03-01",
            "what date is 3 weeks from today",
            "what time is it",
        ];
        DateTime {
            spec: ToolSpec {
                name: "date_time".into(),
                description: "Tells the current date or time anywhere, the day of the week of a \
                              date, the days between dates, and adds days, weeks or months to a \
                              date."
                    .into(),
                examples: examples.iter().map(|e| (*e).to_owned()).collect(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "operation": {
                            "enum": ["now", "today", "weekday", "days_between", "add"]
                        },
                        "zone": {
                            "type": "string",
                            "maxLength": 64,
                            "description": "A city (`Tokyo`) or IANA zone (`Asia/Tokyo`); the user's zone when absent."
                        },
                        "date": {
                            "type": "string",
                            "maxLength": 64,
                            "description": "`YYYY-MM-DD`, `December 25, 2026`, `today`…; today when absent."
                        },
                        "from": { "type": "string", "maxLength": 64 },
                        "to": { "type": "string", "maxLength": 64 },
                        "amount": {
                            "type": "integer",
                            "minimum": -MAX_AMOUNT,
                            "maximum": MAX_AMOUNT
                        },
                        "unit": { "enum": ["days", "weeks", "months", "years"] }
                    },
                    "required": ["operation"],
                    "additionalProperties": false
                }),
            },
        }
    }
}

impl Default for DateTime {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for DateTime {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn intent(&self, query: &str) -> Option<Value> {
        let text = normalize(query);
        clock_intent(&text)
            .or_else(|| weekday_intent(&text))
            .or_else(|| days_between_intent(&text))
            .or_else(|| add_intent(&text))
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        Box::pin(async move { run(arguments, context) })
    }
}

/// Lower case, one space between words, `what's` spelled out, no trailing punctuation.
fn normalize(query: &str) -> String {
    let lowered = query.to_lowercase().replace(['’', '‘'], "'");
    let words: Vec<&str> = lowered.split_whitespace().collect();
    let joined = words.join(" ");
    let text = joined.trim_end_matches(['?', '.', '!', ' ']);
    let text = text
        .strip_prefix("what's ")
        .or_else(|| text.strip_prefix("whats "))
        .map_or_else(|| text.to_owned(), |rest| format!("what is {rest}"));
    text.replace("today's", "today").replace("todays", "today")
}

/// `what time is it [in Tokyo]`, `what's the date today`: `now` or `today`.
fn clock_intent(text: &str) -> Option<Value> {
    const TIME: &[&str] = &[
        "what time is it right now",
        "what time is it now",
        "what time is it",
        "what is the current time",
        "what is the time now",
        "what is the time",
        "current time",
        "time now",
        "local time",
    ];
    const DATE: &[&str] = &[
        "what is the date today",
        "what is the date",
        "what is today date",
        "what is the current date",
        "what date is it today",
        "what date is it",
        "what day is it today",
        "what day is it",
        "what is today",
        "today date",
        "current date",
    ];
    for (operation, phrases) in [("now", TIME), ("today", DATE)] {
        for phrase in phrases {
            let Some(rest) = text.strip_prefix(phrase) else {
                continue;
            };
            let rest = rest
                .strip_suffix(" right now")
                .or_else(|| rest.strip_suffix(" now"))
                .or_else(|| rest.strip_suffix(" today"))
                .unwrap_or(rest);
            if rest.is_empty() {
                return Some(json!({ "operation": operation }));
            }
            let place = rest.strip_prefix(" in ")?;
            zone(place)?;
            return Some(json!({ "operation": operation, "zone": place }));
        }
    }
    None
}

/// `what day of the week is 2027-01-01`: `weekday`.
fn weekday_intent(text: &str) -> Option<Value> {
    const PHRASES: &[&str] = &[
        "what day of the week is",
        "what day of the week was",
        "what day of the week will",
        "which day of the week is",
        "which day of the week was",
        "what weekday is",
        "what weekday was",
        "what day is",
        "what day was",
        "what day will",
        "day of the week for",
        "day of week for",
    ];
    let rest = PHRASES
        .iter()
        .find_map(|phrase| text.strip_prefix(phrase)?.strip_prefix(' '))?;
    let rest = rest
        .strip_suffix(" be")
        .or_else(|| rest.strip_suffix(" fall on"))
        .unwrap_or(rest);
    // `what day of the week is it [today]` asks about today.
    let rest = match rest.strip_prefix("it") {
        Some("" | " today" | " now") => "today",
        _ => rest,
    };
    let date = DateSpec::parse(rest)?;
    Some(json!({ "operation": "weekday", "date": date.argument() }))
}

/// `how many days until 2026-12-25`, `… between A and B`, `… since A`: `days_between`.
fn days_between_intent(text: &str) -> Option<Value> {
    let rest = ["how many days", "number of days", "how long", "days"]
        .iter()
        .find_map(|p| text.strip_prefix(p)?.strip_prefix(' '))?;
    let rest = [
        "are there ",
        "are left ",
        "left ",
        "remain ",
        "remaining ",
        "is it ",
    ]
    .iter()
    .find_map(|p| rest.strip_prefix(p))
    .unwrap_or(rest);
    if let Some(to) = ["until ", "till ", "til ", "to ", "before ", "left until "]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
    {
        let to = DateSpec::parse(to)?;
        return Some(json!({ "operation": "days_between", "to": to.argument() }));
    }
    // `… ago was 2026-01-01` counts like `since`: a positive number of days up to today.
    if let Some(since) = [
        "since ",
        "has it been since ",
        "have passed since ",
        "ago was ",
    ]
    .iter()
    .find_map(|p| rest.strip_prefix(p))
    {
        let from = DateSpec::parse(since)?;
        return Some(
            json!({ "operation": "days_between", "from": from.argument(), "to": "today" }),
        );
    }
    let (separator, pair) = if let Some(pair) = rest.strip_prefix("between ") {
        (" and ", pair)
    } else {
        (" to ", rest.strip_prefix("from ")?)
    };
    let (from, to) = pair
        .split_once(separator)
        .or_else(|| pair.split_once(" until "))?;
    let (from, to) = (DateSpec::parse(from)?, DateSpec::parse(to)?);
    Some(json!({ "operation": "days_between", "from": from.argument(), "to": to.argument() }))
}

/// `add 45 days to 2026-03-01`, `what date is 3 weeks from today`, `2026-03-01 minus 2 months`,
/// `10 days ago`: `add`.
fn add_intent(text: &str) -> Option<Value> {
    let add = |date: DateSpec, amount: i64, unit: &str| {
        Some(json!({ "operation": "add", "date": date.argument(), "amount": amount, "unit": unit }))
    };
    for (verb, joint, sign) in [("add ", " to ", 1), ("subtract ", " from ", -1)] {
        if let Some(rest) = text.strip_prefix(verb) {
            let (span, date) = rest.split_once(joint)?;
            let (amount, unit) = span_of_time(span)?;
            return add(DateSpec::parse(date)?, sign * amount, unit);
        }
    }
    let rest = [
        "what is the date in ",
        "what date is it in ",
        "what date will it be in ",
        "what day will it be in ",
    ]
    .iter()
    .find_map(|p| text.strip_prefix(p));
    if let Some(span) = rest {
        let (amount, unit) = span_of_time(span)?;
        return add(DateSpec::Relative(0), amount, unit);
    }
    let rest = [
        "what date is ",
        "what day is ",
        "what is the date ",
        "what will the date be ",
        "what will be the date ",
        "what is ",
        "what date was ",
        "what day was ",
        "what was the date ",
    ]
    .iter()
    .find_map(|p| text.strip_prefix(p))
    .unwrap_or(text);
    if let Some(span) = rest.strip_suffix(" ago") {
        let (amount, unit) = span_of_time(span)?;
        return add(DateSpec::Relative(0), -amount, unit);
    }
    // `3 weeks from today` puts the span first; `2026-03-01 plus 45 days` puts it last.
    for (joint, sign, span_first) in [
        (" from ", 1, true),
        (" after ", 1, true),
        (" before ", -1, true),
        (" plus ", 1, false),
        (" + ", 1, false),
        (" minus ", -1, false),
        (" - ", -1, false),
    ] {
        let Some((left, right)) = rest.split_once(joint) else {
            continue;
        };
        let (span, date) = if span_first {
            (left, right)
        } else {
            (right, left)
        };
        let date = if date == "now" { "today" } else { date };
        let (amount, unit) = span_of_time(span)?;
        return add(DateSpec::parse(date)?, sign * amount, unit);
    }
    None
}

/// `45 days`, `a week`, `2 months`: the amount and the canonical unit.
fn span_of_time(text: &str) -> Option<(i64, &'static str)> {
    let (amount, unit) = text.trim().split_once(' ')?;
    let amount = match amount {
        "a" | "an" | "one" => 1,
        digits if digits.chars().all(|c| c.is_ascii_digit()) && digits.len() <= 7 => {
            digits.parse().ok()?
        }
        _ => return None,
    };
    let unit = match unit {
        "day" | "days" => "days",
        "week" | "weeks" => "weeks",
        "month" | "months" => "months",
        "year" | "years" => "years",
        _ => return None,
    };
    (amount <= MAX_AMOUNT).then_some((amount, unit))
}

/// A date as written: absolute, relative to today, or a month and day whose year is the next
/// occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateSpec {
    /// A calendar date.
    Absolute(NaiveDate),
    /// Today plus this many days (`tomorrow` is 1).
    Relative(i64),
    /// A month (1-12) and day, on or after today.
    MonthDay(u32, u32),
}

impl DateSpec {
    /// Reads `2026-12-25`, `December 25, 2026`, `25th of December 2026`, `December 25`, `today`,
    /// `tomorrow`, `yesterday` or a fixed-date holiday (`Christmas`, [`HOLIDAYS`]); `None` for
    /// anything else (numeric `12/25/2026` is ambiguous).
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_lowercase();
        match text.as_str() {
            "today" | "now" => return Some(DateSpec::Relative(0)),
            "tomorrow" => return Some(DateSpec::Relative(1)),
            "yesterday" => return Some(DateSpec::Relative(-1)),
            _ => {}
        }
        let unquoted = text.replace(['\'', '.'], "");
        if let Some((_, month, day)) = HOLIDAYS.iter().find(|(name, ..)| *name == unquoted) {
            return Some(DateSpec::MonthDay(*month, *day));
        }
        if let Some(date) = parse_iso(&text) {
            return Some(DateSpec::Absolute(date));
        }
        let words: Vec<&str> = text
            .split([' ', ','])
            .filter(|w| !w.is_empty() && *w != "the" && *w != "of")
            .collect();
        let (month, day, year) = match words.as_slice() {
            [first, second] => match (month_number(first), month_number(second)) {
                (Some(m), None) => (m, day_number(second)?, None),
                (None, Some(m)) => (m, day_number(first)?, None),
                _ => return None,
            },
            [first, second, year] => {
                let year = year_number(year)?;
                match (month_number(first), month_number(second)) {
                    (Some(m), None) => (m, day_number(second)?, Some(year)),
                    (None, Some(m)) => (m, day_number(first)?, Some(year)),
                    _ => return None,
                }
            }
            _ => return None,
        };
        match year {
            Some(year) => NaiveDate::from_ymd_opt(year, month, day).map(DateSpec::Absolute),
            // Any leap year accepts every real month and day.
            None => {
                NaiveDate::from_ymd_opt(2000, month, day).map(|_| DateSpec::MonthDay(month, day))
            }
        }
    }

    /// How the date is passed as an argument: ISO when absolute, else words [`DateSpec::parse`]
    /// reads back.
    fn argument(self) -> String {
        match self {
            DateSpec::Absolute(date) => iso(date),
            DateSpec::Relative(1) => "tomorrow".into(),
            DateSpec::Relative(-1) => "yesterday".into(),
            DateSpec::Relative(_) => "today".into(),
            DateSpec::MonthDay(month, day) => {
                let index = (month as usize).checked_sub(1);
                let name = index
                    .and_then(|i| MONTHS.get(i))
                    .copied()
                    .unwrap_or_default();
                format!("{name} {day}")
            }
        }
    }

    /// The calendar date, given today's.
    fn resolve(self, today: NaiveDate) -> Option<NaiveDate> {
        match self {
            DateSpec::Absolute(date) => Some(date),
            DateSpec::Relative(days) => add_days(today, days),
            DateSpec::MonthDay(month, day) => (0..=8).find_map(|ahead| {
                NaiveDate::from_ymd_opt(today.year().checked_add(ahead)?, month, day)
                    .filter(|date| *date >= today)
            }),
        }
    }
}

/// `YYYY-MM-DD` (also `YYYY/MM/DD`).
fn parse_iso(text: &str) -> Option<NaiveDate> {
    let mut parts = text.split(['-', '/']);
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || !(1..=2).contains(&month.len()) {
        return None;
    }
    NaiveDate::from_ymd_opt(year_number(year)?, month.parse().ok()?, day_number(day)?)
}

/// `december`, `dec`, `sept` → 1-12.
fn month_number(word: &str) -> Option<u32> {
    let word = word.trim_end_matches('.');
    if word.len() < 3 {
        return None;
    }
    let index = MONTHS
        .iter()
        .position(|m| *m == word || (word.len() <= 4 && m.starts_with(word)))?;
    u32::try_from(index + 1).ok()
}

/// `25`, `25th`, `1st` → the day number.
fn day_number(word: &str) -> Option<u32> {
    let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = word.strip_prefix(digits).unwrap_or_default();
    if !matches!(suffix, "" | "st" | "nd" | "rd" | "th") || digits.is_empty() || digits.len() > 2 {
        return None;
    }
    digits.parse().ok()
}

/// A four-digit year.
fn year_number(word: &str) -> Option<i32> {
    (word.len() == 4 && word.chars().all(|c| c.is_ascii_digit()))
        .then(|| word.parse().ok())
        .flatten()
}

/// The zone for a place name (`Tokyo`, `new york`) or an IANA name (`Asia/Tokyo`).
fn zone(name: &str) -> Option<Tz> {
    let key = name.trim().trim_start_matches("the ").to_lowercase();
    if let Some((_, iana)) = PLACES.iter().find(|(place, _)| *place == key) {
        return iana.parse().ok();
    }
    let trimmed = name.trim();
    if !trimmed.contains('/') {
        return None;
    }
    trimmed
        .parse()
        .ok()
        .or_else(|| title_case(trimmed).parse().ok())
}

/// `america/new_york` → `America/New_York`.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut start = true;
    for c in name.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = matches!(c, '/' | '_' | '-');
    }
    out
}

/// Runs one operation (see the module docs) at the context's now, in the asked or user's zone.
fn run(arguments: &Value, context: &ToolContext) -> Result<ToolOutput> {
    let operation = string_field(arguments, "operation")?
        .ok_or_else(|| Error::invalid_input("operation", "required"))?;
    let zone = match string_field(arguments, "zone")? {
        Some(name) => zone(name).ok_or_else(|| {
            Error::invalid_input("zone", format!("unknown place or zone `{name}`"))
        })?,
        None => context.time_zone,
    };
    let millis = i64::try_from(context.now_ms)
        .map_err(|_| Error::Internal("the clock is out of range".into()))?;
    let now = chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| Error::Internal("the clock is out of range".into()))?
        .with_timezone(&zone);
    let today = now.date_naive();
    let date = |field: &str| -> Result<Option<NaiveDate>> {
        let Some(text) = string_field(arguments, field)? else {
            return Ok(None);
        };
        let spec = DateSpec::parse(text)
            .ok_or_else(|| Error::invalid_input(field, format!("`{text}` is not a date")))?;
        spec.resolve(today)
            .map(Some)
            .ok_or_else(|| Error::invalid_input(field, "out of the calendar's range"))
    };
    match operation {
        "now" => {
            let offset = now.offset().fix().local_minus_utc();
            let time = format!("{:02}:{:02}", now.hour(), now.minute());
            Ok(ToolOutput {
                text: format!("It is {time} on {} in {}.", long_date(today), zone.name()),
                value: json!({
                    "operation": "now",
                    "zone": zone.name(),
                    "date": iso(today),
                    "time": time,
                    "weekday": weekday_name(today.weekday()),
                    "utcOffset": utc_offset(offset),
                    "datetime": format!("{}T{:02}:{:02}:{:02}{}", iso(today), now.hour(), now.minute(), now.second(), utc_offset(offset)),
                }),
            })
        }
        "today" => Ok(ToolOutput {
            text: format!("Today is {}.", long_date(today)),
            value: json!({
                "operation": "today",
                "zone": zone.name(),
                "date": iso(today),
                "weekday": weekday_name(today.weekday()),
            }),
        }),
        "weekday" => {
            let day = date("date")?.ok_or_else(|| Error::invalid_input("date", "required"))?;
            let name = weekday_name(day.weekday());
            Ok(ToolOutput {
                text: format!("{} is a {name}.", iso(day)),
                value: json!({ "operation": "weekday", "date": iso(day), "weekday": name }),
            })
        }
        "days_between" => {
            let to = date("to")?.ok_or_else(|| Error::invalid_input("to", "required"))?;
            let from = date("from")?.unwrap_or(today);
            let days = to.signed_duration_since(from).num_days();
            let text = if from == today {
                match days {
                    0 => format!("{} is today.", iso(to)),
                    1.. => format!(
                        "{} is {} from today ({}).",
                        iso(to),
                        plural(days, "day"),
                        iso(today)
                    ),
                    _ => format!(
                        "{} was {} ago (today is {}).",
                        iso(to),
                        plural(-days, "day"),
                        iso(today)
                    ),
                }
            } else {
                format!(
                    "There are {} from {} to {}.",
                    plural(days, "day"),
                    iso(from),
                    iso(to)
                )
            };
            Ok(ToolOutput {
                text,
                value: json!({ "operation": "days_between", "from": iso(from), "to": iso(to), "days": days }),
            })
        }
        "add" => {
            let start = date("date")?.unwrap_or(today);
            let amount = arguments
                .get("amount")
                .and_then(Value::as_i64)
                .filter(|a| a.abs() <= MAX_AMOUNT)
                .ok_or_else(|| {
                    Error::invalid_input(
                        "amount",
                        format!("an integer within ±{MAX_AMOUNT} is required"),
                    )
                })?;
            let unit = string_field(arguments, "unit")?
                .ok_or_else(|| Error::invalid_input("unit", "required"))?;
            let result = match unit {
                "days" => add_days(start, amount),
                "weeks" => amount.checked_mul(7).and_then(|days| add_days(start, days)),
                "months" => add_months(start, amount),
                "years" => amount
                    .checked_mul(12)
                    .and_then(|months| add_months(start, months)),
                other => {
                    return Err(Error::invalid_input(
                        "unit",
                        format!("`{other}` is not days, weeks, months or years"),
                    ));
                }
            }
            .ok_or_else(|| {
                Error::invalid_input("amount", "the result is out of the calendar's range")
            })?;
            let singular = unit.trim_end_matches('s');
            let span = plural(amount.abs(), singular);
            let sign = if amount < 0 { '-' } else { '+' };
            let weekday = weekday_name(result.weekday());
            Ok(ToolOutput {
                text: format!(
                    "{} {sign} {span} = {} ({weekday}).",
                    iso(start),
                    iso(result)
                ),
                value: json!({
                    "operation": "add",
                    "date": iso(start),
                    "amount": amount,
                    "unit": unit,
                    "result": iso(result),
                    "weekday": weekday,
                }),
            })
        }
        other => Err(Error::invalid_input(
            "operation",
            format!("`{other}` is not now, today, weekday, days_between or add"),
        )),
    }
}

/// The string at `field`: `None` when absent, an error when not a string.
fn string_field<'a>(arguments: &'a Value, field: &str) -> Result<Option<&'a str>> {
    match arguments.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(Error::invalid_input(field, "must be a string")),
    }
}

/// `date` plus `days` (negative subtracts); `None` past the calendar's range.
fn add_days(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    let magnitude = Days::new(days.unsigned_abs());
    if days >= 0 {
        date.checked_add_days(magnitude)
    } else {
        date.checked_sub_days(magnitude)
    }
}

/// `date` plus `months`, clamped to the month's end; `None` past the calendar's range.
fn add_months(date: NaiveDate, months: i64) -> Option<NaiveDate> {
    let magnitude = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        date.checked_add_months(magnitude)
    } else {
        date.checked_sub_months(magnitude)
    }
}

/// `2026-12-25`.
fn iso(date: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// `Monday, 23 November 2026`.
fn long_date(date: NaiveDate) -> String {
    let month = MONTHS
        .get(date.month0() as usize)
        .copied()
        .unwrap_or_default();
    let mut month = month.to_owned();
    if let Some(first) = month.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    format!(
        "{}, {} {month} {}",
        weekday_name(date.weekday()),
        date.day(),
        date.year()
    )
}

/// `Monday`.
fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// `+09:00`, `-05:00`.
fn utc_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `1 day`, `45 days`.
fn plural(count: i64, unit: &str) -> String {
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

#[cfg(test)]
mod tests;
