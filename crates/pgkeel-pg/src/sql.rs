//! Administrative statements pgkeel issues at bootstrap. All idempotent, so
//! an interrupted `pgkeel up` can simply run again.

use crate::PgError;
use crate::probe::NodeConn;

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a literal for SQL.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl NodeConn {
    /// Creates a login role with `password` unless it exists (pgkeel created
    /// it with the same stored password, and re-setting it would only churn
    /// the verifier's salt). Only a SCRAM
    /// verifier computed here crosses the wire, so the clear-text password
    /// never reaches the server, its logs or `pg_stat_activity`.
    pub async fn ensure_login_role(
        &self,
        name: &str,
        password: &str,
        attributes: &str,
    ) -> Result<(), PgError> {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let exists = !self
            .client()
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(self.sql_err("role lookup"))?
            .is_empty();
        if exists {
            return Ok(());
        }
        let sql = format!(
            "CREATE ROLE {} WITH LOGIN {attributes} PASSWORD {}",
            ident(name),
            literal(&verifier)
        );
        self.client()
            .batch_execute(&sql)
            .await
            .map_err(self.sql_err("role creation"))
    }

    /// Sets `name`'s password (a SCRAM verifier computed here, as for
    /// creation): `pgkeel secrets rotate`.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), PgError> {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let sql = format!("ALTER ROLE {} PASSWORD {}", ident(name), literal(&verifier));
        self.client()
            .batch_execute(&sql)
            .await
            .map_err(self.sql_err("password change"))
    }

    /// Creates `database` owned by `owner` unless it exists.
    pub async fn ensure_database(&self, database: &str, owner: &str) -> Result<(), PgError> {
        let exists = !self
            .client()
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .map_err(self.sql_err("database lookup"))?
            .is_empty();
        if !exists {
            let sql = format!("CREATE DATABASE {} OWNER {}", ident(database), ident(owner));
            self.client()
                .batch_execute(&sql)
                .await
                .map_err(self.sql_err("database creation"))?;
        }
        Ok(())
    }

    /// Creates a physical slot that reserves WAL immediately, unless it
    /// exists.
    pub async fn ensure_physical_slot(&self, slot: &str) -> Result<(), PgError> {
        self.client()
            .query(
                "SELECT pg_create_physical_replication_slot($1, true)
                  WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .map(drop)
            .map_err(self.sql_err("slot creation"))
    }

    /// Drops an inactive slot.
    pub async fn drop_slot(&self, slot: &str) -> Result<(), PgError> {
        self.client()
            .query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await
            .map(drop)
            .map_err(self.sql_err("slot removal"))
    }

    /// Makes the server re-read its configuration files.
    pub async fn reload(&self) -> Result<(), PgError> {
        self.client()
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(self.sql_err("configuration reload"))
    }

    /// Current value of a setting.
    pub async fn setting(&self, name: &str) -> Result<String, PgError> {
        let row = self
            .client()
            .query_one("SELECT current_setting($1)", &[&name])
            .await
            .map_err(self.sql_err("setting lookup"))?;
        row.try_get(0).map_err(self.sql_err("setting lookup"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
