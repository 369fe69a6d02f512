//! Broken model files are refused with `ERR_MODEL_LOAD`, never a panic: a panic in the worker's
//! wasm kills the worker.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use orion_core::ErrorCode;
use orion_llm::LocalModel;

/// Loads `bytes`; `Ok(true)` if it loaded, `Ok(false)` if refused with `ERR_MODEL_LOAD`, and
/// `Err` with a description for a panic or any other error.
fn outcome(bytes: &[u8]) -> Result<bool, String> {
    match catch_unwind(AssertUnwindSafe(|| {
        LocalModel::load(bytes, "broken.gguf", &Default::default())
    })) {
        Err(_) => Err("panicked".into()),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) if e.code() == ErrorCode::ModelLoad => Ok(false),
        Ok(Err(e)) => Err(format!("{:?}: {e}", e.code())),
    }
}

#[test]
fn garbage_and_empty_input_are_refused() {
    for bytes in [
        Vec::new(),
        b"GGUF".to_vec(),
        vec![0u8; 4096],
        b"not a model at all, just some text that happens to be here".to_vec(),
        b"GGUF\x63\x00\x00\x00"
            .iter()
            .copied()
            .chain([0u8; 64])
            .collect(),
    ] {
        assert_eq!(outcome(&bytes), Ok(false), "{bytes:?}");
    }
}

#[test]
fn every_truncation_is_refused() -> Result<(), String> {
    let bytes = common::model_bytes()?;
    let len = bytes.len();
    let mut cuts = vec![
        1, 4, 8, 12, 16, 20, 24, 31, 64, 100, 1_000, 10_000, 100_000, 500_000,
    ];
    cuts.extend([
        1_000_000,
        1_500_000,
        2_000_000,
        len / 4,
        len / 2,
        len - 4096,
        len - 1,
    ]);
    let mut failures = Vec::new();
    for cut in cuts {
        match outcome(&bytes[..cut]) {
            Ok(false) => {}
            other => failures.push(format!("cut at {cut}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    Ok(())
}

#[test]
fn corrupted_headers_load_or_are_refused_but_never_panic() -> Result<(), String> {
    let bytes = common::model_bytes()?;
    // The header (metadata and tensor table) is the first ~1.7 MB; every number in it that the
    // reader trusts lives there. A deterministic generator picks the places to corrupt.
    let header = 1_700_000;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    let mut failures = Vec::new();
    let mut places: Vec<usize> = (0..16).chain([16, 20, 24, 28, 32, 40, 48]).collect();
    places.extend((0..40).map(|_| (next() % header as u64) as usize));
    for (i, &at) in places.iter().enumerate() {
        let mut broken = bytes.clone();
        let value = [0x00, 0xFF, 0x7F, 0x80][i % 4];
        if broken[at] == value {
            broken[at] ^= 0x55;
        } else {
            broken[at] = value;
        }
        match outcome(&broken) {
            Ok(true) => {}
            Ok(false) => refused += 1,
            Err(e) => failures.push(format!("byte {at} set to {value:#x}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        refused >= 10,
        "only {refused} of {} corruptions were noticed",
        places.len()
    );
    Ok(())
}

#[test]
fn a_zero_alignment_is_refused_before_candle_divides_by_it() {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};

    let tensor = QTensor::quantize(
        &candle_core::Tensor::zeros((4, 32), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{e}")),
        GgmlDType::Q8_0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file = |alignment: Value| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        gguf_file::write(
            &mut bytes,
            &[
                ("general.architecture", &Value::String("llama".into())),
                (
                    "tokenizer.ggml.tokens",
                    &Value::Array(vec![Value::String("a".into())]),
                ),
                ("general.alignment", &alignment),
            ],
            &[("token_embd.weight", &tensor)],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        bytes.into_inner()
    };
    let reason = |bytes: &[u8]| match LocalModel::load(bytes, "x.gguf", &Default::default()) {
        Err(e) if e.code() == ErrorCode::ModelLoad => e.to_string(),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded"),
    };
    for zero in [Value::U32(0), Value::U8(0), Value::I16(0)] {
        assert_eq!(outcome(&file(zero.clone())), Ok(false), "{zero:?}");
        assert!(reason(&file(zero)).contains("`general.alignment` is 0"));
    }
    // The same file with a sound alignment gets past the header and fails later, on the
    // missing model metadata.
    let sound = reason(&file(Value::U32(32)));
    assert!(!sound.contains("alignment"), "{sound}");
}
