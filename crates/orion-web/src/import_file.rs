//! A backup file the page hands over as bytes, in `backups_import`'s `bytes`.
//!
//! `orion.backups.import(blob)` reads the `Blob` into an `ArrayBuffer` and transfers it with the
//! message: no copy of the file as a string in the page, in the message or in the worker's heap.
//! The buffer is taken out of the message before it is checked and decoded (the protocol carries
//! JSON only), copied into wasm memory once, checked to be UTF-8, and becomes the request's
//! `text` (moved, not copied: see `BackupText`'s deserializer).

use js_sys::{ArrayBuffer, Object, Reflect, Uint8Array};
use orion_core::backup_file::BackupLimits;
use orion_core::Error;
use wasm_bindgen::{JsCast, JsValue};

/// Takes `bytes` out of a `backups_import` message, if it is one and has them: the file's text.
/// A `bytes` that is not an `ArrayBuffer`, or comes with a `text`, is `ERR_INVALID_MESSAGE`; a
/// file over the largest document or not UTF-8 is `ERR_BACKUP_INVALID` (nothing is written).
pub fn take(message: &JsValue) -> Result<Option<String>, Error> {
    let get =
        |key: &str| Reflect::get(message, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED);
    if !message.is_object() || get("type").as_string().as_deref() != Some("backups_import") {
        return Ok(None);
    }
    let bytes = get("bytes");
    if bytes.is_undefined() {
        return Ok(None);
    }
    let Some(buffer) = bytes.dyn_ref::<ArrayBuffer>() else {
        return Err(Error::invalid("bytes", "expected an ArrayBuffer"));
    };
    if !get("text").is_undefined() {
        return Err(Error::invalid("text", "give `text` or `bytes`, not both"));
    }
    let limit = BackupLimits::default().max_document_bytes;
    let length = buffer.byte_length() as usize;
    if length > limit {
        return Err(Error::backup_invalid(
            ".",
            format!("the file is {length} bytes; at most {limit}"),
        ));
    }
    let text = String::from_utf8(Uint8Array::new(buffer).to_vec()).map_err(|error| {
        Error::backup_invalid(
            ".",
            format!(
                "the file is not UTF-8 text (at byte {})",
                error.utf8_error().valid_up_to()
            ),
        )
    })?;
    // The rest of the message is JSON again; the text joins it once decoded.
    let _ = Reflect::delete_property(
        message.unchecked_ref::<Object>(),
        &JsValue::from_str("bytes"),
    );
    Ok(Some(text))
}
