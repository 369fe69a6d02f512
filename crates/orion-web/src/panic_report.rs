//! Tells the page that the worker is dying.
//!
//! A panic in wasm aborts (a trap): the instance can run no more code afterwards, so the message to
//! the page must be posted from the panic hook itself, before the trap. Written by hand because
//! `console_error_panic_hook` only logs; it does not reach the page.

use js_sys::Function;
use orion_core::protocol::Outgoing;
use orion_core::PROTOCOL_VERSION;

/// Installs the hook; `post` is where crash reports go. Later calls replace the target.
pub fn install(post: Function) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string();
        web_sys::console::error_1(&format!("ORION worker panicked: {message}").into());
        let crashed = Outgoing::Crashed {
            v: PROTOCOL_VERSION,
            message,
        };
        // If this fails, the page still sees the worker's error event.
        crate::post_message(&post, &crashed);
    }));
}
