//! Model files the page hands over as bytes, in `init`'s `models.embedding.files`.
//!
//! The protocol carries JSON only, so the bytes are taken out of the message before it is checked
//! and decoded: `files` is replaced by `provided: true`, and the loader reads the bytes from here.

use js_sys::{ArrayBuffer, Object, Reflect, Uint8Array};
use orion_core::{Error, ModelFile};
use wasm_bindgen::{JsCast, JsValue};

/// The bytes of the embedding model's files, as the page gave them.
#[derive(Debug, Default)]
pub struct ProvidedFiles {
    files: Vec<(ModelFile, Vec<u8>)>,
}

impl ProvidedFiles {
    /// The bytes of `file`, if the page gave them.
    pub fn get(&self, file: ModelFile) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(role, _)| *role == file)
            .map(|(_, bytes)| bytes.as_slice())
    }
}

/// Takes `models.embedding.files` out of an `init` message, if it is one and has them. Returns an
/// error (with the path of the bad value) when `files` is not an object of `ArrayBuffer`s or
/// typed arrays keyed `config`, `tokenizer` and `weights`.
pub fn take(message: &JsValue) -> Result<Option<ProvidedFiles>, Error> {
    let get = |target: &JsValue, key: &str| {
        Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    };
    if !message.is_object() || get(message, "type").as_string().as_deref() != Some("init") {
        return Ok(None);
    }
    let embedding = get(&get(message, "models"), "embedding");
    if !embedding.is_object() {
        return Ok(None);
    }
    let files = get(&embedding, "files");
    if files.is_undefined() {
        return Ok(None);
    }
    let path = "models.embedding.files";
    let Some(object) = files.dyn_ref::<Object>().filter(|_| !files.is_array()) else {
        return Err(Error::invalid(
            path,
            "expected an object {config, tokenizer, weights} of ArrayBuffers",
        ));
    };
    for key in Object::keys(object).iter() {
        let key = key.as_string().unwrap_or_default();
        if !ModelFile::ALL.iter().any(|file| file.role() == key) {
            return Err(Error::invalid(
                format!("{path}.{key}"),
                "unknown file; expected `config`, `tokenizer` and `weights`",
            ));
        }
    }
    let mut provided = ProvidedFiles::default();
    for file in ModelFile::ALL {
        let value = get(&files, file.role());
        let path = format!("{path}.{}", file.role());
        let bytes = if let Some(buffer) = value.dyn_ref::<ArrayBuffer>() {
            Uint8Array::new(buffer).to_vec()
        } else if ArrayBuffer::is_view(&value) {
            // `new Uint8Array(view)` would convert element values; read the view's bytes instead.
            let number = |key: &str| get(&value, key).as_f64().unwrap_or(0.0) as u32;
            Uint8Array::new_with_byte_offset_and_length(
                &get(&value, "buffer"),
                number("byteOffset"),
                number("byteLength"),
            )
            .to_vec()
        } else if value.is_undefined() {
            return Err(Error::invalid(path, "missing file"));
        } else {
            return Err(Error::invalid(
                path,
                "expected an ArrayBuffer or a typed array",
            ));
        };
        provided.files.push((file, bytes));
    }
    // The rest of the message is JSON again; the bytes stay with the loader.
    let _ = Reflect::delete_property(
        embedding.unchecked_ref::<Object>(),
        &JsValue::from_str("files"),
    );
    let _ = Reflect::set(&embedding, &JsValue::from_str("provided"), &JsValue::TRUE);
    Ok(Some(provided))
}
