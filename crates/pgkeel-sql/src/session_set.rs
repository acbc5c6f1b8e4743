//! Plain session-level `SET`/`RESET` statements: the ones a pooler can
//! carry from one server connection to the next instead of pinning the
//! client.
//!
//! Frameworks set a few things when they connect (Rails: `client_min_messages`,
//! `standard_conforming_strings`, `intervalstyle`, `timezone`; Django:
//! `timezone`; multi-tenant apps: `app.tenant_id`), and a transaction
//! pooler that pins every such client gives each one a server connection
//! of its own. A statement made only of `SET name = value` / `SET name TO
//! DEFAULT` / `RESET name` changes nothing but those settings, so the
//! proxy can record their values and apply them on whichever connection
//! the client is given next. Settings that are about identity or the
//! current transaction (`role`, `session_authorization`, `transaction_*`),
//! `SET ... FROM CURRENT`, `SET SESSION CHARACTERISTICS` and `RESET ALL`
//! are not plain.

use pg_query::NodeEnum;
use pg_query::protobuf::VariableSetKind;

/// One setting a plain `SET`/`RESET` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetTarget {
    /// The setting's name, lower-case (`SET TIME ZONE` is `timezone`,
    /// `SET NAMES` `client_encoding`, `SET SCHEMA` `search_path`).
    pub name: String,
    /// Set back to its default (`RESET name`, `SET name TO DEFAULT`): in
    /// PostgreSQL, the value the session started with.
    pub reset: bool,
}

/// Settings a client may not carry between connections by value: who it
/// is, and what only lasts for the current transaction.
const NOT_PLAIN: [&str; 5] = [
    "role",
    "session_authorization",
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
];

/// The settings `sql` changes when it is made only of plain
/// session-level `SET`/`RESET` statements (at least one), in order;
/// `None` for anything else, text the grammar rejects included.
pub fn plain_settings(sql: &str) -> Option<Vec<SetTarget>> {
    // As in the classifier: a panic in libpg_query's helpers costs the
    // answer, not the connection.
    std::panic::catch_unwind(|| plain_settings_inner(sql)).unwrap_or(None)
}

fn plain_settings_inner(sql: &str) -> Option<Vec<SetTarget>> {
    let parsed = pg_query::parse(sql).ok()?;
    let mut targets = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(NodeEnum::VariableSetStmt(v)) = raw.stmt.as_ref().and_then(|s| s.node.as_ref())
        else {
            return None;
        };
        let reset = match VariableSetKind::try_from(v.kind).ok()? {
            VariableSetKind::VarSetValue => false,
            VariableSetKind::VarSetDefault | VariableSetKind::VarReset => true,
            _ => return None,
        };
        let name = v.name.to_ascii_lowercase();
        if v.is_local || name.is_empty() || NOT_PLAIN.contains(&name.as_str()) {
            return None;
        }
        targets.push(SetTarget { name, reset });
    }
    (!targets.is_empty()).then_some(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Option<Vec<(String, bool)>> {
        plain_settings(sql).map(|t| t.into_iter().map(|t| (t.name, t.reset)).collect())
    }

    #[test]
    fn framework_connection_settings_are_plain() {
        let set = |n: &str| (n.to_string(), false);
        assert_eq!(
            names("SET client_min_messages TO 'warning'"),
            Some(vec![set("client_min_messages")])
        );
        assert_eq!(
            names("SET standard_conforming_strings = on; SET intervalstyle = iso_8601"),
            Some(vec![
                set("standard_conforming_strings"),
                set("intervalstyle")
            ])
        );
        assert_eq!(
            names("SET SESSION timezone TO 'UTC'"),
            Some(vec![set("timezone")])
        );
        assert_eq!(
            names("SET TIME ZONE 'Europe/Paris'"),
            Some(vec![set("timezone")])
        );
        assert_eq!(
            names("SET NAMES 'UTF8'"),
            Some(vec![set("client_encoding")])
        );
        assert_eq!(
            names("set app.tenant_id = '42'"),
            Some(vec![set("app.tenant_id")])
        );
        assert_eq!(
            names("SET \"TimeZone\" = 'UTC'"),
            Some(vec![set("timezone")])
        );
        assert_eq!(
            names("RESET work_mem; SET statement_timeout TO DEFAULT"),
            Some(vec![
                ("work_mem".to_string(), true),
                ("statement_timeout".to_string(), true)
            ])
        );
    }

    #[test]
    fn anything_else_is_not() {
        for sql in [
            "",
            "SET LOCAL work_mem = '8MB'",
            "SET ROLE app",
            "RESET ROLE",
            "SET SESSION AUTHORIZATION DEFAULT",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET transaction_read_only = off",
            "RESET ALL",
            "SET work_mem = '8MB'; SELECT 1",
            "SELECT set_config('work_mem', '8MB', false)",
            "SET work_mem =",
            "DISCARD ALL",
        ] {
            assert_eq!(names(sql), None, "{sql}");
        }
    }
}
