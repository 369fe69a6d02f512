//! Rows to JS objects and back.
//!
//! Writing goes through serde-wasm-bindgen's JSON-compatible serializer. Reading does not: it
//! reads whatever other code may have stored, and serde-wasm-bindgen would quietly turn a `Date`
//! or a `Map` into `{}` and `NaN` into `null`; a value that is not JSON must be an error naming
//! the row instead. So records are walked here, strictly.

use js_sys::{Array, Float32Array, Object, Reflect, Uint8Array};
use orion_core::{Error, Fields, Row};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use wasm_bindgen::{JsCast, JsValue};

/// Deeper nesting than this is refused: structured clones may be cyclic, and JSON this deep is
/// not something ORION writes.
const MAX_DEPTH: usize = 64;

/// 2^53 - 1: larger integers do not survive a JS number.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// `row` as the object IndexedDB stores: `{id, ...fields, ...vectors, ...bytes}`, vectors as
/// `Float32Array`s and bytes as `Uint8Array`s. Fails (before anything is written) on what a JS
/// object cannot hold exactly: integers beyond 2^53 and two fields of one name.
pub(crate) fn to_js(row: &Row) -> Result<JsValue, Error> {
    let object = Object::new();
    set_fields(
        &object,
        &row.id,
        row.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value)),
    )?;
    let clash = |name: &str| {
        Error::Internal(format!(
            "row `{}`: `{name}` names two fields (or a field and the id)",
            row.id
        ))
    };
    for (name, vector) in &row.vectors {
        if name == "id" || row.fields.contains_key(name) {
            return Err(clash(name));
        }
        set(
            &object,
            name,
            &Float32Array::from(vector.as_slice()),
            &row.id,
        )?;
    }
    for (name, bytes) in &row.bytes {
        if name == "id" || row.fields.contains_key(name) || row.vectors.contains_key(name) {
            return Err(clash(name));
        }
        set(&object, name, &Uint8Array::from(bytes.as_slice()), &row.id)?;
    }
    set(&object, "id", &JsValue::from_str(&row.id), &row.id)?;
    Ok(object.into())
}

/// The fields a guarded write merges into row `id`, as a JS object (without the id), failing as
/// [`to_js`] does.
pub(crate) fn fields_to_js(id: &str, fields: &Fields) -> Result<JsValue, Error> {
    let object = Object::new();
    set_fields(
        &object,
        id,
        fields.iter().map(|(name, value)| (name.as_ref(), value)),
    )?;
    Ok(object.into())
}

/// Sets JSON `fields` of row `id` on `object`, skipping an `id` field (`Row::id` is the key; an
/// `id` field is ignored, as the contract says).
fn set_fields<'a>(
    object: &Object,
    id: &str,
    fields: impl Iterator<Item = (&'a str, &'a Value)>,
) -> Result<(), Error> {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    for (name, value) in fields {
        if name == "id" {
            continue;
        }
        let value = value.serialize(&serializer).map_err(|error| {
            Error::Store(format!(
                "row `{id}`: field `{name}` cannot be stored: {error}"
            ))
        })?;
        set(object, name, &value, id)?;
    }
    Ok(())
}

fn set(object: &Object, name: &str, value: &JsValue, id: &str) -> Result<(), Error> {
    Reflect::set(object, &JsValue::from_str(name), value)
        .map(drop)
        .map_err(|_| Error::Store(format!("row `{id}`: could not set `{name}`")))
}

/// A stored record as a [`Row`]: `Float32Array` properties become vectors, `Uint8Array` ones
/// bytes, the rest must be JSON.
/// `table` names where the record was found, for the error.
pub(crate) fn from_js(table: &str, record: &JsValue) -> Result<Row, Error> {
    from_js_fields(table, record, None)
}

/// Like [`from_js`], reading only `fields` when given (absent ones stay absent).
pub(crate) fn from_js_fields(
    table: &str,
    record: &JsValue,
    fields: Option<&[&str]>,
) -> Result<Row, Error> {
    let object_prototype = Object::get_prototype_of(&Object::new());
    let object = plain_object(record, &object_prototype).ok_or_else(|| {
        Error::Store(format!(
            "a record in `{table}` is not a plain object: {}",
            describe(record)
        ))
    })?;
    let id = Reflect::get(object, &JsValue::from_str("id"))
        .ok()
        .and_then(|id| id.as_string())
        .ok_or_else(|| Error::Store(format!("a record in `{table}` has no string `id`")))?;
    let malformed = |name: &str, problem: String| {
        Error::Store(format!("row `{id}` in `{table}`: field `{name}` {problem}"))
    };
    let mut row = Row::new(id.clone());
    let names: Vec<String> = match fields {
        Some(fields) => fields.iter().map(|name| (*name).to_owned()).collect(),
        None => Object::keys(object)
            .iter()
            .filter_map(|name| name.as_string())
            .collect(),
    };
    for name in names {
        if name == "id" {
            continue;
        }
        let value = Reflect::get(object, &JsValue::from_str(&name))
            .map_err(|_| malformed(&name, "cannot be read".into()))?;
        if fields.is_some() && value.is_undefined() {
            continue;
        }
        if let Some(vector) = value.dyn_ref::<Float32Array>() {
            row.vectors.insert(name, vector.to_vec());
        } else if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
            row.bytes.insert(name, bytes.to_vec());
        } else {
            let json = to_json(&value, &object_prototype, 0)
                .map_err(|problem| malformed(&name, problem))?;
            row.fields.insert(name, json);
        }
    }
    Ok(row)
}

/// Whether the record's property `name` holds exactly `expected` as JSON (`null` also matches an
/// absent property; a value that is not JSON matches nothing).
pub(crate) fn field_equals(record: &JsValue, name: &str, expected: &Value) -> bool {
    let Ok(value) = Reflect::get(record, &JsValue::from_str(name)) else {
        return false;
    };
    if value.is_undefined() {
        return expected.is_null();
    }
    let object_prototype = Object::get_prototype_of(&Object::new());
    to_json(&value, &object_prototype, 0).is_ok_and(|json| json == *expected)
}

/// `value` if it is a plain object (prototype `Object.prototype` or `null`), not an array, a
/// `Date`, a typed array or any other object with a class.
fn plain_object<'a>(value: &'a JsValue, object_prototype: &Object) -> Option<&'a Object> {
    // Not `dyn_ref::<Object>()`: that is `instanceof Object`, false for a null-prototype object.
    if !value.is_object() || Array::is_array(value) {
        return None;
    }
    let prototype = Object::get_prototype_of(value);
    (prototype.is_null() || Object::is(&prototype, object_prototype))
        .then(|| value.unchecked_ref::<Object>())
}

/// A stored value as JSON, or what is wrong with it.
fn to_json(value: &JsValue, object_prototype: &Object, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
    }
    if value.is_null() {
        return Ok(Value::Null);
    }
    if let Some(flag) = value.as_bool() {
        return Ok(Value::Bool(flag));
    }
    if let Some(text) = value.as_string() {
        return Ok(Value::String(text));
    }
    if let Some(number) = value.as_f64() {
        return json_number(number)
            .map(Value::Number)
            .ok_or_else(|| format!("holds {number}, which is not a JSON number"));
    }
    if Array::is_array(value) {
        let array: &Array = value.unchecked_ref();
        // `Array::iter` would read holes as `undefined`, which the match below refuses.
        return array
            .iter()
            .map(|item| to_json(&item, object_prototype, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(object) = plain_object(value, object_prototype) {
        let mut map = Map::new();
        for key in Object::keys(object).iter() {
            let Some(key) = key.as_string() else {
                continue;
            };
            let item = Reflect::get(object, &JsValue::from_str(&key))
                .map_err(|_| format!("has a property `{key}` that cannot be read"))?;
            map.insert(key, to_json(&item, object_prototype, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    Err(format!("holds {}, which is not JSON", describe(value)))
}

/// A JS number as JSON: integers within 2^53 as integers (which is how `serde_json` reads the
/// same number from text), others as floats; `NaN` and infinities are not JSON.
fn json_number(number: f64) -> Option<Number> {
    if number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER {
        // The range check makes both casts exact.
        return Some(if number >= 0.0 {
            Number::from(number as u64)
        } else {
            Number::from(number as i64)
        });
    }
    Number::from_f64(number)
}

/// What a JS value is, for an error message (its constructor's name, or its `typeof`).
fn describe(value: &JsValue) -> String {
    if value.is_undefined() {
        return "undefined".into();
    }
    if value.is_object() {
        // Read defensively: a null-prototype object has no `constructor`.
        let name = Reflect::get(value, &JsValue::from_str("constructor"))
            .and_then(|constructor| Reflect::get(&constructor, &JsValue::from_str("name")))
            .ok()
            .and_then(|name| name.as_string())
            .filter(|name| !name.is_empty());
        return match name {
            Some(name) => format!("an instance of {name}"),
            None => "an object".into(),
        };
    }
    format!(
        "a value of type {}",
        value.js_typeof().as_string().unwrap_or_default()
    )
}
