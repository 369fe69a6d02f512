//! The calculator tool: exact arithmetic on an expression.
//!
//! Evaluation is `fend-core`'s (arbitrary precision, exact rationals: `0.1 + 0.2` is `0.3` and
//! `2^64` is exact), but fend also knows units, dates, variables and random numbers. So the
//! expression is first rewritten from natural phrasing (`times`, `×`, `15% of 80`) and then must
//! pass a whitelist of numbers, operators and common functions; anything else is not arithmetic
//! and is refused. Hostile input is bounded three ways: the length cap, caps on nesting and on
//! tokens (fend's parser recurses, and a wasm stack is small) and a step budget through fend's
//! interrupt hook.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

use super::{Tool, ToolContext, ToolOutput, ToolSpec};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 500;

/// The deepest parenthesis nesting accepted, and the most tokens. fend's parser recurses for
/// every operator and parenthesis (measured, release build: 64 nested parentheses overflow a
/// 512 KiB stack, 250 chained `+` need about 512 KiB); within these caps the worst expression
/// needs under 256 KiB, well inside wasm's 1 MiB stack.
const MAX_DEPTH: usize = 8;
/// See [`MAX_DEPTH`].
const MAX_TOKENS: usize = 48;

/// How many times fend may poll its interrupt before giving up. Ordinary expressions take under
/// 3,000 polls; the worst hostile ones (`9^9^9`, `10^10^10 mod 7`) stop within about 0.1 s
/// (release).
const STEP_BUDGET: u32 = 20_000;

/// The largest factorial operand: beyond it results are thousands of digits nobody asked for.
const MAX_FACTORIAL: u32 = 1000;

/// Functions and constants the expression may use (all of one argument, or none). Not `floor`,
/// `ceil` or `round`: fend 1.5.9 rounds through `f64` and saturates at 2^64, so
/// `floor(1e20/7)` is `14285714285714286592` and `floor(1e30/7)` is `18446744073709551616`.
const FUNCTIONS: &[&str] = &[
    "sqrt", "cbrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "ln",
    "log", "log2", "log10", "exp", "abs", "pi", "e", "mod",
];

/// Leading phrases that ask for a calculation, longest first within a shared start.
const PREFIXES: &[&str] = &[
    "what is the result of",
    "what is the value of",
    "what is",
    "what's",
    "whats",
    "how much is",
    "calculate",
    "compute",
    "evaluate",
    "calc",
    "solve",
];

/// Word operators and their symbols. Spaces around them keep tokens apart.
const WORD_OPERATORS: &[(&str, &str)] = &[
    ("multiplied by", "*"),
    ("divided by", "/"),
    ("to the power of", "^"),
    ("raised to", "^"),
    ("times", "*"),
    ("plus", "+"),
    ("minus", "-"),
    ("over", "/"),
    ("squared", "^2"),
    ("cubed", "^3"),
    ("percent", "%"),
    ("modulo", "mod"),
];

/// Evaluates arithmetic expressions exactly.
#[derive(Debug, Clone)]
pub struct Calculator {
    spec: ToolSpec,
}

impl Calculator {
    /// The calculator, with its spec.
    pub fn new() -> Self {
        let examples = [
            "What is 12 * 7?",
            "calculate (3+4)^2",
            "what's 15% of 80",
            "sqrt(144)",
            "1/3 + 1/6",
            "what is 2^64",
            "how much is 1250 divided by 5",
            "compute 0.1 + 0.2",
        ];
        Calculator {
            spec: ToolSpec {
                name: "calculator".into(),
                description: "Evaluates an arithmetic expression exactly: operations, \
                              percentages, powers, roots and common math functions."
                    .into(),
                examples: examples.iter().map(|e| (*e).to_owned()).collect(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "expression": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_EXPRESSION_LEN,
                            "description": "An arithmetic expression, e.g. `(3+4)^2` or `15% of 80`."
                        }
                    },
                    "required": ["expression"],
                    "additionalProperties": false
                }),
            },
        }
    }
}

impl Default for Calculator {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for Calculator {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn intent(&self, query: &str) -> Option<Value> {
        let text = strip_prefix_and_punctuation(query)?;
        let expression = arithmetic(&text).ok()?;
        is_calculation(&expression).then(|| json!({ "expression": expression }))
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        _context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        Box::pin(async move { evaluate_arguments(arguments) })
    }
}

/// Reads `expression` from the arguments and evaluates it.
fn evaluate_arguments(arguments: &Value) -> Result<ToolOutput> {
    let raw = arguments
        .get("expression")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_input("expression", "a string is required"))?;
    if raw.len() > MAX_EXPRESSION_LEN {
        return Err(Error::invalid_input(
            "expression",
            format!("longer than {MAX_EXPRESSION_LEN} bytes"),
        ));
    }
    let text = strip_prefix_and_punctuation(raw)
        .ok_or_else(|| Error::invalid_input("expression", "the expression is empty"))?;
    let expression =
        arithmetic(&text).map_err(|reason| Error::invalid_input("expression", reason))?;
    let (result, exact) = evaluate(&expression)?;
    let text = if exact {
        format!("{expression} = {result}")
    } else {
        format!("{expression} ≈ {result}")
    };
    Ok(ToolOutput {
        text,
        value: json!({ "expression": expression, "result": result, "exact": exact }),
    })
}

/// Counts fend's interrupt polls and stops it past [`STEP_BUDGET`]. An atomic because fend asks
/// for `Sync`; the count is a step budget, not a clock, so it is deterministic and works in wasm.
struct Budget(AtomicU32);

impl fend_core::Interrupt for Budget {
    fn should_interrupt(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) >= STEP_BUDGET
    }
}

/// Evaluates a whitelisted expression: the result, and whether it is exact.
fn evaluate(expression: &str) -> Result<(String, bool)> {
    let mut context = fend_core::Context::new();
    let budget = Budget(AtomicU32::new(0));
    let result = fend_core::evaluate_with_interrupt(expression, &mut context, &budget).map_err(
        |message| {
            let reason = if message.contains("interrupted") {
                "too costly to compute".to_owned()
            } else {
                message
            };
            Error::invalid_input("expression", reason)
        },
    )?;
    if result.output_is_empty() {
        return Err(Error::invalid_input(
            "expression",
            "not an arithmetic expression",
        ));
    }
    let output = result.get_main_result().trim();
    let (number, exact) = match output.strip_prefix("approx. ") {
        Some(rest) => (rest.trim(), false),
        None => (output, true),
    };
    if !is_number(number) {
        return Err(Error::invalid_input(
            "expression",
            format!("the result `{number}` is not a real number"),
        ));
    }
    Ok((number.to_owned(), exact))
}

/// Whether fend's output is a plain number (optionally a percentage).
fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let digits = digits.strip_suffix('%').unwrap_or(digits);
    !digits.is_empty()
        && digits.chars().any(|c| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Lower-cases `query`, drops a leading request phrase and trailing `?`/`.`; `None` when nothing
/// is left.
fn strip_prefix_and_punctuation(query: &str) -> Option<String> {
    let lowered = query.trim().to_lowercase();
    let mut text = lowered.trim_end_matches(['?', '.', ' ', '=']).trim();
    for prefix in PREFIXES {
        if let Some(rest) = text.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with(' ') {
                text = rest.trim_start();
                break;
            }
        }
    }
    (!text.is_empty()).then(|| text.to_owned())
}

/// One lexical piece of an expression.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A number as written, thousands separators removed.
    Number(String),
    /// A whitelisted function, constant or `mod`.
    Name(String),
    /// An operator or parenthesis.
    Symbol(char),
}

/// Rewrites natural phrasing into an expression fend reads and checks it is only arithmetic.
/// The result is the canonical spelling (`12 * 7`); the error says what is not arithmetic.
fn arithmetic(text: &str) -> std::result::Result<String, String> {
    let mut spaced = format!(" {} ", text.replace(['×', '✕', '·'], "*"));
    spaced = spaced.replace('÷', "/").replace('−', "-").replace('∗', "*");
    for (word, symbol) in WORD_OPERATORS {
        spaced = replace_word(&spaced, word, symbol);
    }
    spaced = replace_square_root(&spaced);
    let tokens = tokenize(&spaced)?;
    check_structure(&tokens)?;
    Ok(render(&tokens))
}

/// Replaces `word` where it stands as a whole word.
fn replace_word(text: &str, word: &str, symbol: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let bounded = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        out.push_str(&rest[..at]);
        if bounded(before) && bounded(after) {
            out.push(' ');
            out.push_str(symbol);
            out.push(' ');
        } else {
            out.push_str(word);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// `square root of 144` → `sqrt 144` (fend applies a function to the next operand).
fn replace_square_root(text: &str) -> String {
    text.replace("the square root of", " sqrt ")
        .replace("square root of", " sqrt ")
        .replace("the cube root of", " cbrt ")
        .replace("cube root of", " cbrt ")
}

/// Splits an expression into tokens; an error names the first thing that is not arithmetic.
fn tokenize(text: &str) -> std::result::Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let (number, next) = read_number(&chars, i)?;
            tokens.push(Token::Number(number));
            i = next;
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while chars.get(i).is_some_and(char::is_ascii_alphabetic) {
                i += 1;
            }
            let mut word: String = chars.get(start..i).unwrap_or_default().iter().collect();
            // `log2` and `log10` are the only names with digits.
            if word == "log" {
                for base in ["10", "2"] {
                    let after: String = chars.get(i..).unwrap_or_default().iter().take(3).collect();
                    if after.starts_with(base)
                        && !after[base.len()..].starts_with(|c: char| c.is_ascii_digit())
                    {
                        word.push_str(base);
                        i += base.len();
                        break;
                    }
                }
            }
            // `0x10` is hexadecimal, not zero times ten.
            let hexadecimal = tokens.last() == Some(&Token::Number("0".into()))
                && start.checked_sub(1).and_then(|p| chars.get(p)) == Some(&'0');
            let previous_is_number = !hexadecimal
                && matches!(
                    tokens.last(),
                    Some(Token::Number(_)) | Some(Token::Symbol(')'))
                );
            let next_starts_operand = chars
                .get(i..)
                .unwrap_or_default()
                .iter()
                .find(|c| !c.is_whitespace())
                .is_some_and(|c| c.is_ascii_digit() || *c == '(' || *c == '.');
            // `2/3 of 90`: a fraction of something is a product.
            let after_fraction = matches!(
                tokens.as_slice(),
                [.., Token::Number(_), Token::Symbol('/'), Token::Number(_)]
            );
            if (word == "x" && previous_is_number || word == "of" && after_fraction)
                && next_starts_operand
            {
                tokens.push(Token::Symbol('*'));
            } else if FUNCTIONS.contains(&word.as_str())
                || (word == "of" && tokens.last() == Some(&Token::Symbol('%')))
            {
                tokens.push(Token::Name(word));
            } else {
                return Err(format!("`{word}` is not part of arithmetic"));
            }
        } else if "+-*/^()%!".contains(c) {
            tokens.push(Token::Symbol(c));
            i += 1;
        } else {
            return Err(format!("`{c}` is not part of arithmetic"));
        }
    }
    Ok(tokens)
}

/// Reads a number at `start`: digits with optional `,` thousands groups, a fraction and an
/// exponent (`1.5e3`). Returns it without separators, and the index after it.
fn read_number(chars: &[char], start: usize) -> std::result::Result<(String, usize), String> {
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut number = String::new();
    let mut i = start;
    while digit_at(i) {
        number.push(chars.get(i).copied().unwrap_or('0'));
        i += 1;
        // A comma followed by exactly three digits is a thousands separator.
        if chars.get(i) == Some(&',') && (1..=3).all(|k| digit_at(i + k)) && !digit_at(i + 4) {
            i += 1;
        }
    }
    if chars.get(i) == Some(&'.') {
        number.push('.');
        i += 1;
        while digit_at(i) {
            number.push(chars.get(i).copied().unwrap_or('0'));
            i += 1;
        }
    }
    if chars.get(i) == Some(&'e') {
        let sign = matches!(chars.get(i + 1), Some('+') | Some('-'));
        let first = if sign { i + 2 } else { i + 1 };
        if digit_at(first) {
            number.push('e');
            if sign {
                number.push(chars.get(i + 1).copied().unwrap_or('+'));
            }
            i = first;
            while digit_at(i) {
                number.push(chars.get(i).copied().unwrap_or('0'));
                i += 1;
            }
        }
    }
    if chars.get(i) == Some(&',') && digit_at(i + 1) {
        return Err("`,` is not a thousands separator here".into());
    }
    Ok((number, i))
}

/// Checks size, balance, nesting depth and factorial operands, and that dates are not taken for
/// subtractions (`2026-12-25`).
fn check_structure(tokens: &[Token]) -> std::result::Result<(), String> {
    if tokens.len() > MAX_TOKENS {
        return Err(format!("more than {MAX_TOKENS} numbers and operators"));
    }
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Symbol('(') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} parentheses"));
                }
            }
            Token::Symbol(')') => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced parentheses".to_owned())?;
            }
            Token::Symbol('!') => {
                let operand = i.checked_sub(1).and_then(|p| tokens.get(p));
                let small = match operand {
                    Some(Token::Number(n)) => n.parse::<u32>().is_ok_and(|n| n <= MAX_FACTORIAL),
                    _ => false,
                };
                if !small {
                    return Err(format!(
                        "factorials are of whole numbers up to {MAX_FACTORIAL} only"
                    ));
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    if looks_like_date(tokens) {
        return Err("this looks like a date, not arithmetic".into());
    }
    if tokens.is_empty() {
        return Err("the expression is empty".into());
    }
    Ok(())
}

/// `2026-12-25` or `12/25/2026`: three numbers joined by the same `-` or `/`, the year at an end.
fn looks_like_date(tokens: &[Token]) -> bool {
    tokens.windows(5).any(|w| match w {
        [Token::Number(a), Token::Symbol(s), Token::Number(b), Token::Symbol(t), Token::Number(c)] => {
            let year = |n: &String| n.len() == 4 && !n.contains('.');
            let part = |n: &String| (1..=2).contains(&n.len());
            s == t && (*s == '-' || *s == '/') && ((year(a) && part(b) && part(c)) || (part(a) && part(b) && year(c)))
        }
        _ => false,
    })
}

/// The canonical spelling: binary operators spaced, everything else tight.
fn render(tokens: &[Token]) -> String {
    let mut out = String::new();
    let mut previous: Option<&Token> = None;
    for token in tokens {
        let operand_before = matches!(
            previous,
            Some(Token::Number(_))
                | Some(Token::Symbol(')'))
                | Some(Token::Symbol('%'))
                | Some(Token::Symbol('!'))
        ) || matches!(previous, Some(Token::Name(n)) if n == "pi" || n == "e");
        match token {
            Token::Symbol(c @ ('+' | '-' | '*')) if operand_before => {
                out.push(' ');
                out.push(*c);
                out.push(' ');
            }
            Token::Symbol(c) => out.push(*c),
            Token::Number(n) | Token::Name(n) => {
                let needs_space = matches!(previous, Some(Token::Number(_)) | Some(Token::Name(_)))
                    || matches!(previous, Some(Token::Symbol('%')) if n == "of")
                    || (matches!(previous, Some(Token::Symbol(')'))) && n == "mod");
                if needs_space {
                    out.push(' ');
                }
                out.push_str(n);
            }
        }
        previous = Some(token);
    }
    out
}

/// Whether an expression asks for a computation: a binary operator, a function, a percentage or
/// a factorial. A bare number (`what is 5`) does not.
fn is_calculation(expression: &str) -> bool {
    let Ok(tokens) = tokenize(expression) else {
        return false;
    };
    let has_number = tokens.iter().any(|t| matches!(t, Token::Number(_)));
    let mut operand_before = false;
    let mut operation = false;
    for token in &tokens {
        match token {
            Token::Number(_) | Token::Symbol(')') => operand_before = true,
            Token::Name(n) if n == "pi" || n == "e" => operand_before = true,
            Token::Name(_) => {
                operation = true;
                operand_before = false;
            }
            Token::Symbol('%') | Token::Symbol('!') => operation = true,
            Token::Symbol('(') => operand_before = false,
            Token::Symbol(_) => {
                operation |= operand_before;
                operand_before = false;
            }
        }
    }
    has_number && operation
}

#[cfg(test)]
mod tests;
