//! Reading a GGUF file held in memory: candle parses it; this module turns every failure into
//! [`Error::ModelLoad`] and checks what candle trusts (tensor shapes and extents) before any
//! tensor is allocated from the header's numbers.

use std::io::Cursor;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use orion_core::Error;

/// A parsed GGUF file: its header and the bytes its tensors are read from.
pub struct Gguf<'a> {
    content: Content,
    bytes: &'a [u8],
    source_name: String,
}

impl<'a> Gguf<'a> {
    /// Parses the header of `bytes`. `source_name` (a URL or file name) goes into errors.
    pub fn parse(bytes: &'a [u8], source_name: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::ModelLoad {
            source_name: source_name.to_string(),
            reason,
        };
        if declares_zero_alignment(bytes) {
            return Err(fail("`general.alignment` is 0".into()));
        }
        let content = Content::read(&mut Cursor::new(bytes))
            .map_err(|e| fail(format!("not a readable GGUF file: {e}")))?;
        let gguf = Self {
            content,
            bytes,
            source_name: source_name.to_string(),
        };
        gguf.check_tensors()?;
        Ok(gguf)
    }

    /// A [`Error::ModelLoad`] about this file.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::ModelLoad {
            source_name: self.source_name.clone(),
            reason: reason.into(),
        }
    }

    fn check_tensors(&self) -> Result<(), Error> {
        let data_len = self.bytes.len() as u64;
        if self.content.tensor_data_offset > data_len {
            return Err(self.error("the tensor data starts past the end of the file"));
        }
        for (name, info) in &self.content.tensor_infos {
            let elements = info
                .shape
                .dims()
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| self.error(format!("tensor `{name}` has an impossible shape")))?;
            let block = info.ggml_dtype.block_size();
            if block == 0 || elements % block != 0 {
                return Err(self.error(format!(
                    "tensor `{name}` has {elements} elements, not a multiple of its block size {block}"
                )));
            }
            let bytes = (elements / block) as u64 * info.ggml_dtype.type_size() as u64;
            let end = self
                .content
                .tensor_data_offset
                .checked_add(info.offset)
                .and_then(|start| start.checked_add(bytes));
            if end.is_none_or(|end| end > data_len) {
                return Err(self.error(format!("tensor `{name}` runs past the end of the file")));
            }
        }
        Ok(())
    }

    /// A metadata value, or a [`Error::ModelLoad`] naming the missing key.
    pub fn value(&self, key: &str) -> Result<&Value, Error> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.error(format!("the metadata has no `{key}`")))
    }

    /// An optional metadata value.
    pub fn optional(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A metadata string.
    pub fn string(&self, key: &str) -> Result<&str, Error> {
        self.value(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|_| self.error(format!("`{key}` is not a string")))
    }

    /// A metadata unsigned integer of any width.
    pub fn unsigned(&self, key: &str) -> Result<u64, Error> {
        as_unsigned(self.value(key)?).ok_or_else(|| self.error(format!("`{key}` is not a count")))
    }

    /// A metadata float.
    pub fn float(&self, key: &str) -> Result<f32, Error> {
        match self.value(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            _ => Err(self.error(format!("`{key}` is not a number"))),
        }
    }

    /// A metadata array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, Error> {
        self.array(key, "a string", |v| v.to_string().ok().map(String::as_str))
    }

    /// A metadata array of integers.
    pub fn integers(&self, key: &str) -> Result<Vec<i64>, Error> {
        self.array(key, "an integer", as_signed)
    }

    /// A metadata array whose every item `read` accepts; `what` names the item type in errors.
    fn array<'v, T>(
        &'v self,
        key: &str,
        what: &str,
        read: impl Fn(&'v Value) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        let items = self
            .value(key)?
            .to_vec()
            .map_err(|_| self.error(format!("`{key}` is not an array")))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| read(v).ok_or_else(|| self.error(format!("`{key}[{i}]` is not {what}"))))
            .collect()
    }

    /// Reads tensor `name` onto the CPU.
    pub fn tensor(&self, name: &str) -> Result<QTensor, Error> {
        self.content
            .tensor(&mut Cursor::new(self.bytes), name, &Device::Cpu)
            .map_err(|e| self.error(format!("tensor `{name}`: {e}")))
    }

    /// Whether the file has tensor `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

/// Whether the header sets `general.alignment` to 0. candle 0.11's reader divides by that value
/// without checking it, so such a file would panic inside candle, and a panic aborts the worker;
/// candle reads the whole header in one call, so this walks the key-value pairs first. It only
/// looks: anything else wrong with the header is left to candle's checks (hence `false`).
fn declares_zero_alignment(bytes: &[u8]) -> bool {
    let mut header = Header {
        rest: bytes,
        wide: true,
    };
    let found = (|| {
        if header.take(4)? != b"GGUF" {
            return None;
        }
        let version = header.u32()?;
        header.wide = version >= 2;
        let _tensors = header.length()?;
        for _ in 0..header.length()? {
            let key = header
                .length()
                .and_then(|n| header.take(usize::try_from(n).ok()?))?;
            let kind = header.u32()?;
            if key == b"general.alignment" {
                // The integer types candle reads the value as (others fall back to its default).
                let size = match kind {
                    0 | 1 => 1,
                    2 | 3 => 2,
                    4 | 5 => 4,
                    _ => return Some(false),
                };
                return Some(header.take(size)?.iter().all(|&b| b == 0));
            }
            header.skip(kind, 0)?;
        }
        Some(false)
    })();
    found.unwrap_or(false)
}

/// A cursor over a GGUF header (version 1 writes lengths as u32, later versions as u64).
struct Header<'a> {
    rest: &'a [u8],
    wide: bool,
}

impl<'a> Header<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn length(&mut self) -> Option<u64> {
        if self.wide {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        } else {
            self.u32().map(u64::from)
        }
    }

    /// Skips a value of GGUF type `kind`; arrays nest at most as deep as candle allows.
    fn skip(&mut self, kind: u32, depth: usize) -> Option<()> {
        let fixed = |kind: u32| match kind {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match kind {
            8 => {
                let n = self.length()?;
                self.take(usize::try_from(n).ok()?)?;
            }
            9 if depth < 64 => {
                let item = self.u32()?;
                let n = self.length()?;
                match fixed(item) {
                    Some(size) => {
                        self.take(usize::try_from(n.checked_mul(size)?).ok()?)?;
                    }
                    None => {
                        for _ in 0..n {
                            self.skip(item, depth + 1)?;
                        }
                    }
                }
            }
            _ => {
                self.take(usize::try_from(fixed(kind)?).ok()?)?;
            }
        }
        Some(())
    }
}

fn as_unsigned(value: &Value) -> Option<u64> {
    match *value {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => Some(v),
        Value::I8(v) => u64::try_from(v).ok(),
        Value::I16(v) => u64::try_from(v).ok(),
        Value::I32(v) => u64::try_from(v).ok(),
        Value::I64(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

fn as_signed(value: &Value) -> Option<i64> {
    match *value {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => i64::try_from(v).ok(),
        Value::I8(v) => Some(v.into()),
        Value::I16(v) => Some(v.into()),
        Value::I32(v) => Some(v.into()),
        Value::I64(v) => Some(v),
        _ => None,
    }
}
