//! The database schema (its history is in the crate docs) and the checks run after opening.

use idb::builder::{DatabaseBuilder, IndexBuilder, ObjectStoreBuilder};
use idb::{Database, KeyPath, TransactionMode};
use orion_core::{Error, Table};

use crate::dom;

/// The current schema version: 1 had the five object stores, 2 added the `by_<field>` indexes.
pub const SCHEMA_VERSION: u32 = 2;

/// The name of the index on `field`.
pub(crate) fn index_name(field: &str) -> String {
    format!("by_{field}")
}

/// The whole current schema. idb's builder compares it with what the database holds inside the
/// upgrade transaction: it creates the missing object stores and indexes, keeps matching ones
/// (and their rows), and deletes stores and indexes the schema does not name.
fn builder(name: &str) -> DatabaseBuilder {
    Table::ALL.iter().fold(
        DatabaseBuilder::new(name).version(SCHEMA_VERSION),
        |db, table| {
            let store = table.indexed_fields().iter().fold(
                ObjectStoreBuilder::new(table.name()).key_path(Some(KeyPath::new_single("id"))),
                |store, field| {
                    // `unique` and `multi_entry` are spelled out: the builder treats an index whose
                    // flags are unset as different from the stored one and would rebuild it.
                    store.add_index(
                        IndexBuilder::new(index_name(field), KeyPath::new_array([*field, "id"]))
                            .unique(false)
                            .multi_entry(false),
                    )
                },
            );
            db.add_object_store(store)
        },
    )
}

/// Opens (creating or upgrading) the database `name` and checks it has what ORION needs.
pub(crate) async fn open(name: &str) -> Result<Database, Error> {
    let database = builder(name)
        .build()
        .await
        .map_err(|error| dom::idb_error(&format!("opening database `{name}`"), error))?;
    if let Err(error) = check(&database) {
        database.close();
        return Err(error);
    }
    Ok(database)
}

/// A database already at this version skips the upgrade, so whatever wrote it is trusted only
/// as far as this goes: every object store and index a call may name must exist, or the calls
/// would fail later with less helpful errors.
fn check(database: &Database) -> Result<(), Error> {
    let stores = database.store_names();
    if let Some(missing) = Table::ALL
        .iter()
        .find(|table| !stores.iter().any(|name| name == table.name()))
    {
        return Err(Error::Store(format!(
            "database `{}` has no object store `{}`",
            database.name(),
            missing.name()
        )));
    }
    let names: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
    let transaction = database
        .transaction(&names, TransactionMode::ReadOnly)
        .map_err(|error| dom::idb_error("checking the schema", error))?;
    for table in Table::ALL {
        let store = transaction
            .object_store(table.name())
            .map_err(|error| dom::idb_error("checking the schema", error))?;
        let indexes = store.index_names();
        for field in table.indexed_fields() {
            let index = index_name(field);
            if !indexes.contains(&index) {
                return Err(Error::Store(format!(
                    "database `{}`: object store `{}` has no index `{index}`",
                    database.name(),
                    table.name()
                )));
            }
        }
    }
    Ok(())
}
