//! Checks a message from the page before it is copied into wasm memory.
//!
//! The page can post anything the structured-clone algorithm accepts: 50 MB strings, cyclic
//! objects, Maps, Dates, typed arrays. Converting such a value blindly would copy it into wasm
//! memory (which never shrinks) or recurse forever. This walk reads only lengths and keys, bounded
//! in depth and in the number of values, and names the first offending path.

use js_sys::{Array, JsString, Object, Reflect};
use orion_core::protocol::RequestId;
use orion_core::Error;
use wasm_bindgen::{JsCast, JsValue};

/// Bounds on a message from the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest string, in UTF-16 code units.
    pub max_string_len: u32,
    /// Deepest nesting of objects and arrays (a cyclic value exceeds it).
    pub max_depth: u32,
    /// Most values (objects, arrays, keys, scalars) in one message.
    pub max_values: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_string_len: 1 << 20,
            max_depth: 32,
            max_values: 100_000,
        }
    }
}

/// Checks `message` against `limits`: only plain objects, arrays, strings, numbers, booleans,
/// `null` and `undefined`, within the bounds.
pub fn check_message(message: &JsValue, limits: &Limits) -> Result<(), Error> {
    let mut walk = Walk { limits, values: 0 };
    walk.visit(message, &mut String::new(), 0)
}

/// The request id of `message`, if it has a valid one: lets a refused message be answered to the
/// right caller.
pub fn peek_id(message: &JsValue) -> Option<RequestId> {
    if !message.is_object() {
        return None;
    }
    let id = Reflect::get(message, &JsValue::from_str("id"))
        .ok()?
        .as_f64()?;
    let in_range = id.fract() == 0.0 && (0.0..=f64::from(RequestId::MAX)).contains(&id);
    in_range.then_some(id as RequestId)
}

/// Converts a checked message to JSON for the core.
pub fn to_json(message: JsValue) -> Result<serde_json::Value, Error> {
    serde_wasm_bindgen::from_value(message).map_err(|e| Error::invalid(".", e.to_string()))
}

struct Walk<'a> {
    limits: &'a Limits,
    values: u32,
}

impl Walk<'_> {
    fn visit(&mut self, value: &JsValue, path: &mut String, depth: u32) -> Result<(), Error> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(Error::MessageTooLarge {
                path: display(path),
                size: u64::from(self.values),
                limit: u64::from(self.limits.max_values),
            });
        }
        if let Some(s) = value.dyn_ref::<JsString>() {
            let len = s.length();
            if len > self.limits.max_string_len {
                return Err(Error::MessageTooLarge {
                    path: display(path),
                    size: u64::from(len),
                    limit: u64::from(self.limits.max_string_len),
                });
            }
            // Converting to Rust would replace the lone half with U+FFFD and store altered text.
            if !s.is_valid_utf16() {
                return Err(Error::invalid_input(
                    display(path),
                    "contains an unpaired UTF-16 surrogate: not valid Unicode text",
                ));
            }
            return Ok(());
        }
        if value.is_null()
            || value.is_undefined()
            || value.as_f64().is_some()
            || value.as_bool().is_some()
        {
            return Ok(());
        }
        if depth >= self.limits.max_depth {
            return Err(Error::MessageTooLarge {
                path: display(path),
                size: u64::from(depth) + 1,
                limit: u64::from(self.limits.max_depth),
            });
        }
        if Array::is_array(value) {
            let array: &Array = value.unchecked_ref();
            for (i, item) in array.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                self.visit(&item, path, depth + 1)?;
                path.truncate(len);
            }
            return Ok(());
        }
        if is_plain_object(value) {
            let object: &Object = value.unchecked_ref();
            for entry in Object::entries(object).iter() {
                let entry: Array = entry.unchecked_into();
                let key = entry.get(0).as_string().unwrap_or_default();
                if key.len() as u64 > u64::from(self.limits.max_string_len) {
                    return Err(Error::MessageTooLarge {
                        path: display(path),
                        size: key.len() as u64,
                        limit: u64::from(self.limits.max_string_len),
                    });
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                self.visit(&entry.get(1), path, depth + 1)?;
                path.truncate(len);
            }
            return Ok(());
        }
        Err(Error::invalid(
            display(path),
            format!(
                "a {} is not a plain JSON value; send objects, arrays, strings, numbers, booleans or null",
                type_name(value)
            ),
        ))
    }
}

fn is_plain_object(value: &JsValue) -> bool {
    if !value.is_object() {
        return false;
    }
    let proto = Object::get_prototype_of(value);
    proto.is_null() || proto == Object::get_prototype_of(&Object::new())
}

fn type_name(value: &JsValue) -> String {
    if value.is_bigint() {
        return "BigInt".into();
    }
    if value.is_symbol() {
        return "Symbol".into();
    }
    value
        .dyn_ref::<Object>()
        .map(|o| String::from(o.constructor().name()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "value of an unsupported type".into())
}

fn display(path: &str) -> String {
    if path.is_empty() {
        ".".into()
    } else {
        path.to_owned()
    }
}
