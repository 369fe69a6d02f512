//! The unit conversion tool: length, mass, volume, temperature, speed and data size.
//!
//! The table is written here rather than taken from a crate: the crates that know units either
//! compute in `f64` (so `1 mi` is not exactly `1.609344 km`) or, like fend, bring a whole
//! language with them. Every factor below is an exact definition (1 in = 0.0254 m, 1 lb =
//! 0.45359237 kg, 1 US gal = 231 in³ = 3.785411784 l) and arithmetic is on exact rationals, so a
//! result is exact whenever its decimal expansion ends; otherwise `value.result` has 20 decimals.

use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{Signed, Zero};
use serde_json::{json, Value};

use super::{Tool, ToolContext, ToolOutput, ToolSpec};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

/// The longest number accepted, in characters.
const MAX_NUMBER_LEN: usize = 40;

/// The largest power-of-ten exponent accepted in a number (`1e30`).
const MAX_EXPONENT: u32 = 30;

/// Decimals kept in `value.result` when the exact result has no finite decimal expansion.
const RESULT_DECIMALS: usize = 20;

/// Decimals (or, for small numbers, significant digits) shown in the sentence.
const DISPLAY_DIGITS: usize = 6;

use Dimension::{Data, Length, Mass, Speed, Temperature, Volume};

/// What a unit measures; only units of one dimension convert into each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Length,
    Mass,
    Volume,
    Temperature,
    Speed,
    Data,
}

impl Dimension {
    /// How errors and `value.dimension` name it.
    fn name(self) -> &'static str {
        match self {
            Dimension::Length => "length",
            Dimension::Mass => "mass",
            Dimension::Volume => "volume",
            Dimension::Temperature => "temperature",
            Dimension::Speed => "speed",
            Dimension::Data => "data size",
        }
    }
}

/// One unit: `base = (value + offset) × factor`, in the dimension's base unit (m, kg, l, K, m/s,
/// bit). Only temperatures have an offset.
struct Unit {
    /// How it is shown (`km`, `°F`, `GiB`).
    symbol: &'static str,
    dimension: Dimension,
    /// Base units per unit, exactly: a decimal or `a/b`.
    factor: &'static str,
    /// Added before scaling, exactly (temperatures only).
    offset: &'static str,
    /// Lower-case spellings it is known by, the symbol's included.
    names: &'static [&'static str],
}

/// A unit without an offset.
const fn unit(
    symbol: &'static str,
    dimension: Dimension,
    factor: &'static str,
    names: &'static [&'static str],
) -> Unit {
    Unit {
        symbol,
        dimension,
        factor,
        offset: "0",
        names,
    }
}

/// Every unit known, by dimension.
const UNITS: &[Unit] = &[
    unit(
        "mm",
        Length,
        "0.001",
        &[
            "mm",
            "millimeter",
            "millimeters",
            "millimetre",
            "millimetres",
        ],
    ),
    unit(
        "cm",
        Length,
        "0.01",
        &[
            "cm",
            "centimeter",
            "centimeters",
            "centimetre",
            "centimetres",
        ],
    ),
    unit(
        "m",
        Length,
        "1",
        &["m", "meter", "meters", "metre", "metres"],
    ),
    unit(
        "km",
        Length,
        "1000",
        &[
            "km",
            "kms",
            "kilometer",
            "kilometers",
            "kilometre",
            "kilometres",
        ],
    ),
    unit("in", Length, "0.0254", &["in", "inch", "inches"]),
    unit("ft", Length, "0.3048", &["ft", "foot", "feet"]),
    unit("yd", Length, "0.9144", &["yd", "yds", "yard", "yards"]),
    unit("mi", Length, "1609.344", &["mi", "mile", "miles"]),
    unit(
        "nmi",
        Length,
        "1852",
        &["nmi", "nautical mile", "nautical miles"],
    ),
    unit(
        "mg",
        Mass,
        "0.000001",
        &[
            "mg",
            "milligram",
            "milligrams",
            "milligramme",
            "milligrammes",
        ],
    ),
    unit(
        "g",
        Mass,
        "0.001",
        &["g", "gram", "grams", "gramme", "grammes"],
    ),
    unit(
        "kg",
        Mass,
        "1",
        &[
            "kg",
            "kgs",
            "kilo",
            "kilos",
            "kilogram",
            "kilograms",
            "kilogramme",
            "kilogrammes",
        ],
    ),
    unit(
        "t",
        Mass,
        "1000",
        &["t", "tonne", "tonnes", "metric ton", "metric tons"],
    ),
    // The avoirdupois ounce is 1/16 lb.
    unit("oz", Mass, "0.028349523125", &["oz", "ounce", "ounces"]),
    unit("lb", Mass, "0.45359237", &["lb", "lbs", "pound", "pounds"]),
    unit("st", Mass, "6.35029318", &["st", "stone", "stones"]),
    unit(
        "ml",
        Volume,
        "0.001",
        &[
            "ml",
            "milliliter",
            "milliliters",
            "millilitre",
            "millilitres",
        ],
    ),
    unit(
        "l",
        Volume,
        "1",
        &["l", "liter", "liters", "litre", "litres"],
    ),
    // US customary: gallon = 231 in³; quart, pint, cup, fl oz, tbsp, tsp are 1/4, 1/8, 1/16,
    // 1/128, 1/256 and 1/768 of it.
    unit(
        "tsp",
        Volume,
        "0.00492892159375",
        &["tsp", "teaspoon", "teaspoons"],
    ),
    unit(
        "tbsp",
        Volume,
        "0.01478676478125",
        &["tbsp", "tablespoon", "tablespoons"],
    ),
    unit("cup", Volume, "0.2365882365", &["cup", "cups"]),
    unit(
        "fl oz",
        Volume,
        "0.0295735295625",
        &["fl oz", "floz", "fl. oz", "fluid ounce", "fluid ounces"],
    ),
    unit("pt", Volume, "0.473176473", &["pt", "pint", "pints"]),
    unit("qt", Volume, "0.946352946", &["qt", "quart", "quarts"]),
    unit("gal", Volume, "3.785411784", &["gal", "gallon", "gallons"]),
    unit(
        "m³",
        Volume,
        "1000",
        &[
            "m3",
            "m³",
            "cubic meter",
            "cubic meters",
            "cubic metre",
            "cubic metres",
        ],
    ),
    Unit {
        symbol: "°C",
        dimension: Temperature,
        factor: "1",
        offset: "273.15",
        names: &[
            "c",
            "°c",
            "celsius",
            "degree celsius",
            "degrees celsius",
            "degrees c",
            "deg c",
            "centigrade",
        ],
    },
    Unit {
        symbol: "°F",
        dimension: Temperature,
        factor: "5/9",
        offset: "459.67",
        names: &[
            "f",
            "°f",
            "fahrenheit",
            "degree fahrenheit",
            "degrees fahrenheit",
            "degrees f",
            "deg f",
        ],
    },
    unit("K", Temperature, "1", &["k", "kelvin", "kelvins"]),
    unit(
        "m/s",
        Speed,
        "1",
        &[
            "m/s",
            "mps",
            "meter per second",
            "meters per second",
            "metre per second",
            "metres per second",
        ],
    ),
    unit(
        "km/h",
        Speed,
        "5/18",
        &[
            "km/h",
            "kph",
            "kmh",
            "km/hr",
            "kmph",
            "kilometer per hour",
            "kilometers per hour",
            "kilometre per hour",
            "kilometres per hour",
        ],
    ),
    unit(
        "mph",
        Speed,
        "0.44704",
        &["mph", "mi/h", "mile per hour", "miles per hour"],
    ),
    unit(
        "kn",
        Speed,
        "463/900",
        &["kn", "kt", "kts", "knot", "knots"],
    ),
    unit(
        "ft/s",
        Speed,
        "0.3048",
        &["ft/s", "fps", "foot per second", "feet per second"],
    ),
    unit("bit", Data, "1", &["bit", "bits"]),
    unit("B", Data, "8", &["byte", "bytes"]),
    unit("KB", Data, "8000", &["kb", "kilobyte", "kilobytes"]),
    unit("MB", Data, "8000000", &["mb", "megabyte", "megabytes"]),
    unit("GB", Data, "8000000000", &["gb", "gigabyte", "gigabytes"]),
    unit(
        "TB",
        Data,
        "8000000000000",
        &["tb", "terabyte", "terabytes"],
    ),
    unit("KiB", Data, "8192", &["kib", "kibibyte", "kibibytes"]),
    unit("MiB", Data, "8388608", &["mib", "mebibyte", "mebibytes"]),
    unit("GiB", Data, "8589934592", &["gib", "gibibyte", "gibibytes"]),
    unit(
        "TiB",
        Data,
        "8796093022208",
        &["tib", "tebibyte", "tebibytes"],
    ),
];

/// Converts quantities between units exactly.
#[derive(Debug, Clone)]
pub struct UnitConverter {
    spec: ToolSpec,
}

impl UnitConverter {
    /// The unit converter, with its spec.
    pub fn new() -> Self {
        let examples = [
            "convert 5 km to miles",
            "how many ounces in 2 pounds",
            "100 fahrenheit in celsius",
            "60 mph to km/h",
            "2 GiB in MB",
            "what is 3 cups in ml",
            "how many feet are in a mile",
            "72 kg in pounds",
        ];
        UnitConverter {
            spec: ToolSpec {
                name: "convert_units".into(),
                description: "Converts a quantity between units of length, mass, volume, \
                              temperature, speed or data size."
                    .into(),
                examples: examples.iter().map(|e| (*e).to_owned()).collect(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "value": {
                            "type": ["string", "number"],
                            "description": "The quantity, e.g. `5`, `-40`, `1.5` or `1/2`."
                        },
                        "from": { "type": "string", "minLength": 1, "maxLength": 40 },
                        "to": { "type": "string", "minLength": 1, "maxLength": 40 }
                    },
                    "required": ["value", "from", "to"],
                    "additionalProperties": false
                }),
            },
        }
    }
}

impl Default for UnitConverter {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for UnitConverter {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn intent(&self, query: &str) -> Option<Value> {
        let (value, from, to) = read_query(query)?;
        (from.dimension == to.dimension).then(|| arguments_json(&value, from, to))
    }

    /// Like [`Tool::intent`], but also when the dimensions differ: once chosen, the tool says
    /// why `kg` does not convert to `km`.
    fn arguments(&self, query: &str) -> Option<Value> {
        let (value, from, to) = read_query(query)?;
        Some(arguments_json(&value, from, to))
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        _context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        Box::pin(async move { convert_arguments(arguments) })
    }
}

/// The arguments for `run`, units by their symbols.
fn arguments_json(value: &str, from: &Unit, to: &Unit) -> Value {
    json!({ "value": value, "from": from.symbol, "to": to.symbol })
}

/// `convert 5 km to miles`, `how many ounces in 2 pounds`, `what is 100 °F in celsius`: the
/// number as written and the two units.
fn read_query(query: &str) -> Option<(String, &'static Unit, &'static Unit)> {
    let lowered = query.to_lowercase();
    let words: Vec<&str> = lowered.split_whitespace().collect();
    let joined = words.join(" ");
    let text = joined.trim_end_matches(['?', '.', '!', ' ']);
    let text = text
        .strip_prefix("what's ")
        .or_else(|| text.strip_prefix("whats "))
        .map_or_else(|| text.to_owned(), |rest| format!("what is {rest}"));
    let text = ["please convert ", "convert ", "what is ", "how much is "]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(&text);
    if let Some(rest) = text.strip_prefix("how many ") {
        // `how many ounces [are] [there] in 2 pounds`
        return splits(rest, &[" are there in ", " are in ", " is in ", " in "]).find_map(
            |(to, quantity)| {
                let to = find_unit(to)?;
                let (value, from) = read_quantity(quantity)?;
                Some((value, from, to))
            },
        );
    }
    let found = splits(text, &[" to ", " in ", " into ", " as ", " in terms of "]).find_map(
        |(quantity, to)| {
            let (value, from) = read_quantity(quantity)?;
            Some((value, from, find_unit(to)?))
        },
    );
    found
}

/// Every way to cut `text` in two at one of `separators`, left to right (overlapping ones too:
/// `3 in in cm`).
fn splits<'a>(
    text: &'a str,
    separators: &'a [&'a str],
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    separators.iter().flat_map(move |separator| {
        text.char_indices().filter_map(move |(at, _)| {
            let rest = text.get(at..)?.strip_prefix(separator)?;
            Some((text.get(..at)?, rest))
        })
    })
}

/// `5 km`, `5km`, `-40 °f`, `1,000 ft`, `1/2 cup`, `a pound`: the number and the unit.
fn read_quantity(text: &str) -> Option<(String, &'static Unit)> {
    let text = text.trim();
    let (number, unit) = if let Some(rest) = ["a ", "an ", "one "]
        .iter()
        .find_map(|a| text.strip_prefix(a))
    {
        ("1".to_owned(), rest)
    } else {
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '+' | '/')))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(end);
        (number.replace(',', ""), unit)
    };
    parse_number(&number)?;
    Some((number, find_unit(unit)?))
}

/// The unit whose symbol is exactly `name` (`B`, which lower-cased would be ambiguous with
/// bits), else the unit called `name` (any case, `°` and spaces tolerated). A `US` qualifier is
/// accepted (`US gallons`): the volumes are the US customary ones.
fn find_unit(name: &str) -> Option<&'static Unit> {
    if let Some(unit) = UNITS.iter().find(|unit| unit.symbol == name.trim()) {
        return Some(unit);
    }
    let name = name.trim().to_lowercase();
    let name = ["us ", "u.s. "]
        .iter()
        .find_map(|q| name.strip_prefix(q))
        .unwrap_or(&name)
        .replace("° ", "°");
    UNITS
        .iter()
        .find(|unit| unit.names.contains(&name.as_str()))
}

/// Reads the arguments and converts.
fn convert_arguments(arguments: &Value) -> Result<ToolOutput> {
    let value_text = match arguments.get("value") {
        Some(Value::String(text)) => text.trim().replace(',', ""),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err(Error::invalid_input("value", "a number is required")),
    };
    let value = parse_number(&value_text)
        .ok_or_else(|| Error::invalid_input("value", format!("`{value_text}` is not a number")))?;
    let unit_at = |field: &str| -> Result<&'static Unit> {
        let name = arguments
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_input(field, "a unit is required"))?;
        find_unit(name).ok_or_else(|| Error::invalid_input(field, format!("unknown unit `{name}`")))
    };
    let (from, to) = (unit_at("from")?, unit_at("to")?);
    if from.dimension != to.dimension {
        return Err(Error::invalid_input(
            "to",
            format!(
                "cannot convert {} ({}) to {} ({})",
                from.dimension.name(),
                from.symbol,
                to.dimension.name(),
                to.symbol
            ),
        ));
    }
    let result = convert(&value, from, to)?;
    let (full, exact) = full_decimal(&result);
    let shown = display_decimal(&result);
    let value_shown = display_decimal(&value);
    let approx = if shown == full { "=" } else { "≈" };
    Ok(ToolOutput {
        text: format!(
            "{value_shown} {} {approx} {shown} {}",
            from.symbol, to.symbol
        ),
        value: json!({
            "value": value_text,
            "from": from.symbol,
            "to": to.symbol,
            "dimension": from.dimension.name(),
            "result": full,
            "exact": exact,
            "display": shown,
        }),
    })
}

/// `value` in `from`, in `to`, exactly.
fn convert(value: &BigRational, from: &Unit, to: &Unit) -> Result<BigRational> {
    let table = |text: &str| {
        parse_number(text).ok_or_else(|| Error::Internal(format!("bad unit table entry `{text}`")))
    };
    let base = (value + table(from.offset)?) * table(from.factor)?;
    if from.dimension == Temperature && base.is_negative() {
        return Err(Error::invalid_input("value", "below absolute zero"));
    }
    let factor = table(to.factor)?;
    if factor.is_zero() {
        return Err(Error::Internal(format!(
            "unit `{}` has a zero factor",
            to.symbol
        )));
    }
    Ok(base / factor - table(to.offset)?)
}

/// `5`, `-40`, `1.5`, `.5`, `1e3`, `1/2` → an exact rational; `None` for anything else.
fn parse_number(text: &str) -> Option<BigRational> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_NUMBER_LEN {
        return None;
    }
    match text.split_once('/') {
        Some((numerator, denominator)) => {
            let denominator = parse_decimal(denominator)?;
            if denominator.is_zero() {
                return None;
            }
            Some(parse_decimal(numerator)? / denominator)
        }
        None => parse_decimal(text),
    }
}

/// `5`, `-40`, `1.5`, `.5`, `1e3` → an exact rational.
fn parse_decimal(text: &str) -> Option<BigRational> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => {
            let exponent: i32 = exponent.parse().ok()?;
            (exponent.unsigned_abs() <= MAX_EXPONENT).then_some((mantissa, exponent))?
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    let digits: BigInt = format!("0{whole}{fraction}").parse().ok()?;
    let fraction_len = u32::try_from(fraction.len()).ok()?;
    let scale = |power: u32| BigInt::from(10u8).pow(power);
    let mut number = BigRational::new(digits, scale(fraction_len));
    if exponent >= 0 {
        number *= BigRational::from_integer(scale(exponent.unsigned_abs()));
    } else {
        number /= BigRational::from_integer(scale(exponent.unsigned_abs()));
    }
    Some(if negative { -number } else { number })
}

/// The exact decimal expansion when it ends within 40 decimals (`true`), else rounded to
/// [`RESULT_DECIMALS`] (`false`).
fn full_decimal(number: &BigRational) -> (String, bool) {
    let mut denominator = number.denom().clone();
    let mut decimals = 0usize;
    let ten = BigInt::from(10u8);
    while decimals <= 40 {
        if denominator == BigInt::from(1u8) {
            return (round_to(number, decimals), true);
        }
        let (five, two) = (BigInt::from(5u8), BigInt::from(2u8));
        let divisor = if denominator.is_multiple_of(&ten) {
            ten.clone()
        } else if denominator.is_multiple_of(&two) {
            two
        } else if denominator.is_multiple_of(&five) {
            five
        } else {
            break;
        };
        denominator /= divisor;
        decimals += 1;
    }
    (round_to(number, RESULT_DECIMALS), false)
}

/// For the sentence: [`DISPLAY_DIGITS`] decimals, or as many significant digits for numbers
/// that would round to zero.
fn display_decimal(number: &BigRational) -> String {
    if number.is_zero() {
        return "0".into();
    }
    for decimals in DISPLAY_DIGITS..=DISPLAY_DIGITS + 60 {
        let rounded = round_to(number, decimals);
        if rounded.chars().any(|c| matches!(c, '1'..='9')) {
            let significant = if decimals == DISPLAY_DIGITS {
                decimals
            } else {
                decimals + DISPLAY_DIGITS - 1
            };
            return round_to(number, significant);
        }
    }
    round_to(number, DISPLAY_DIGITS)
}

/// `number` rounded half away from zero to `decimals` places, trailing zeros trimmed.
fn round_to(number: &BigRational, decimals: usize) -> String {
    let power = u32::try_from(decimals).unwrap_or(u32::MAX);
    let scaled = number.abs() * BigRational::from_integer(BigInt::from(10u8).pow(power));
    let half = BigRational::new(BigInt::from(1u8), BigInt::from(2u8));
    let digits = (scaled + half).floor().to_integer().to_string();
    let digits = format!("{digits:0>width$}", width = decimals + 1);
    let (whole, fraction) = digits.split_at(digits.len().saturating_sub(decimals));
    let fraction = fraction.trim_end_matches('0');
    let sign = if number.is_negative() && digits.chars().any(|c| matches!(c, '1'..='9')) {
        "-"
    } else {
        ""
    };
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests;
