//! [`EnvironmentStore`] for [`SqliteStore`]: registered environments and their restart history.

use mlci_core::{EnvironmentRecord, EnvironmentStore, Restart, StoreError};
use rusqlite::{params, OptionalExtension};

use crate::codec::{self, not_nan};
use crate::{Fault, SqliteStore};

fn decode(name: &str, text: &str) -> Result<EnvironmentRecord, Fault> {
    codec::from_json(text, "record").map_err(|e| e.about(format!("environment {name}")))
}

impl EnvironmentStore for SqliteStore {
    fn put_environment(&self, env: &EnvironmentRecord) -> Result<(), StoreError> {
        let name = &env.spec.name;
        self.write(
            || format!("save environment {name}"),
            |tx| {
                let record = codec::to_json(env, "record")?;
                tx.execute(
                    "INSERT INTO environments (name, state, record, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET state = ?2, record = ?3, updated_at = ?4",
                    params![
                        name,
                        env.state.as_str(),
                        record,
                        not_nan(env.updated_at, "updated_at")?
                    ],
                )?;
                Ok(())
            },
        )
    }

    fn environment(&self, name: &str) -> Result<Option<EnvironmentRecord>, StoreError> {
        self.read(
            || format!("read environment {name}"),
            |tx| {
                let text: Option<String> = tx
                    .query_row("SELECT record FROM environments WHERE name = ?1", [name], |r| {
                        r.get(0)
                    })
                    .optional()?;
                text.map(|t| decode(name, &t)).transpose()
            },
        )
    }

    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        self.read(
            || "list environments".to_owned(),
            |tx| {
                let mut stmt = tx.prepare("SELECT name, record FROM environments ORDER BY name")?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                let mut out = Vec::new();
                for row in rows {
                    let (name, text) = row?;
                    out.push(decode(&name, &text)?);
                }
                Ok(out)
            },
        )
    }

    fn delete_environment(&self, name: &str) -> Result<bool, StoreError> {
        self.write(
            || format!("delete environment {name}"),
            |tx| Ok(tx.execute("DELETE FROM environments WHERE name = ?1", [name])? > 0),
        )
    }

    fn add_restart(&self, restart: &Restart) -> Result<(), StoreError> {
        let name = &restart.environment;
        self.write(
            || format!("record a restart of environment {name}"),
            |tx| {
                let record = codec::to_json(restart, "record")?;
                tx.execute(
                    "INSERT INTO restarts (environment, at, record) VALUES (?1, ?2, ?3)",
                    params![name, not_nan(restart.at, "at")?, record],
                )
                .map_err(|e| {
                    let fault = Fault::from(e);
                    if fault.is_foreign_key() {
                        Fault::Bad(format!("no environment {name} is registered"))
                    } else {
                        fault
                    }
                })?;
                Ok(())
            },
        )
    }

    fn restarts(&self, name: &str) -> Result<Vec<Restart>, StoreError> {
        self.read(
            || format!("read the restart history of environment {name}"),
            |tx| {
                let mut stmt =
                    tx.prepare("SELECT record FROM restarts WHERE environment = ?1 ORDER BY id")?;
                let rows = stmt.query_map([name], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(
                        codec::from_json(&row?, "record")
                            .map_err(|e| e.about(format!("restart of environment {name}")))?,
                    );
                }
                Ok(out)
            },
        )
    }
}
