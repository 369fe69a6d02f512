//! Helpers shared by the wasm test files of orion-store (each test file is its own crate and
//! includes this module).

use std::cell::Cell;

use js_sys::Date;
use orion_core::Error;
use orion_store::IdbStore;
use rexie::Rexie;

thread_local! {
    static NEXT: Cell<u32> = const { Cell::new(0) };
}

/// A database name no other test (or earlier run in this profile) uses.
pub fn unique_name(purpose: &str) -> String {
    let n = NEXT.with(|next| {
        next.set(next.get() + 1);
        next.get()
    });
    format!("orion-test-{purpose}-{}-{n}", Date::now())
}

/// A fresh, empty `IdbStore` (reopen its database with `IdbStore::open(&store.name())`).
pub async fn fresh(purpose: &str) -> orion_core::error::Result<IdbStore> {
    let name = unique_name(purpose);
    Rexie::delete(&name)
        .await
        .map_err(|error| Error::Store(format!("deleting `{name}`: {error}")))?;
    IdbStore::open(&name).await
}
