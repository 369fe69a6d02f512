//! Checks that wasm memory can hold a model before loading it.
//!
//! Rust's allocator aborts the instance when memory cannot grow, which would kill the worker in
//! the middle of a model load, and again on every restart. A fallible reservation of what the load
//! will need turns that into an error the runtime answers by falling back to micro. The
//! reservation is freed at once: wasm memory never shrinks, so the allocator hands the same pages
//! to the load.

/// Memory a MiniLM load needs beyond its weights file: the per-tensor copies made while loading and
/// the activations of a batch of 32 texts of 256 tokens.
pub const WORKING_MEMORY: usize = 160 << 20;

/// Fails unless `bytes` more can be allocated now.
pub fn ensure(bytes: usize) -> Result<(), String> {
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| {
        format!(
            "not enough memory: loading the model needs about {} MB more than the worker can get",
            bytes >> 20
        )
    })
}
