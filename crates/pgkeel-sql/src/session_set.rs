//! Plain session-level `SET`/`RESET` statements: the ones a pooler can
//! carry from one server connection to the next instead of pinning the
//! client.
//!
//! Frameworks set a few things when they connect (Rails: `client_min_messages`,
//! `standard_conforming_strings`, `intervalstyle`, `timezone`; Django:
//! `timezone`; multi-tenant apps: `app.tenant_id`), and a transaction
//! pooler that pins every such client gives each one a server connection
//! of its own. A statement made only of `SET name = value` / `SET name TO
//! DEFAULT` / `RESET name` (or `SELECT set_config('name', $1, false)`,
//! how a value passed as a parameter is set) changes nothing but those
//! settings, so the
//! proxy can record their values and apply them on whichever connection
//! the client is given next. Settings that are about identity or the
//! current transaction (`role`, `session_authorization`, `transaction_*`),
//! `SET ... FROM CURRENT`, `SET SESSION CHARACTERISTICS` and `RESET ALL`
//! are not plain.

use pg_query::NodeEnum;
use pg_query::protobuf::{SelectStmt, SetOperation, VariableSetKind, a_const};

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
/// is, what only lasts for the current transaction, and `seed` (it seeds
/// the session's random numbers; its value cannot be read back).
const NOT_PLAIN: [&str; 6] = [
    "seed",
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
        let v = match raw.stmt.as_ref().and_then(|s| s.node.as_ref())? {
            NodeEnum::VariableSetStmt(v) => v,
            NodeEnum::SelectStmt(s) => {
                targets.extend(set_config_calls(s)?);
                continue;
            }
            _ => return None,
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

/// What a string made only of session resets undoes (see
/// [`resets_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resets {
    /// Settings go back to the session's start (`RESET ALL`, `DISCARD
    /// ALL`).
    pub settings: bool,
}

/// `Some` when every statement of `sql` (at least one) only removes
/// session state: `DISCARD` (any), `RESET ALL`, `RESET ROLE`, `RESET`/`SET
/// SESSION AUTHORIZATION DEFAULT`, `UNLISTEN`, `CLOSE`, `DEALLOCATE ALL`
/// and `SELECT pg_advisory_unlock_all()`: what client-side pools send when
/// they hand a connection back (asyncpg's reset query, npgsql's `DISCARD
/// ALL`). For a client that holds no other session state (it would have
/// been pinned) only its settings and prepared statements are left to
/// undo, which the proxy does itself, so these need not pin it.
pub fn resets_only(sql: &str) -> Option<Resets> {
    std::panic::catch_unwind(|| resets_only_inner(sql)).unwrap_or(None)
}

fn resets_only_inner(sql: &str) -> Option<Resets> {
    let parsed = pg_query::parse(sql).ok()?;
    let mut resets = Resets { settings: false };
    let mut any = false;
    for raw in &parsed.protobuf.stmts {
        match raw.stmt.as_ref().and_then(|s| s.node.as_ref())? {
            NodeEnum::DiscardStmt(d) => {
                resets.settings |= d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32;
            }
            NodeEnum::VariableSetStmt(v) => {
                let kind = VariableSetKind::try_from(v.kind).ok()?;
                let identity = matches!(v.name.as_str(), "role" | "session_authorization");
                match kind {
                    VariableSetKind::VarResetAll => resets.settings = true,
                    VariableSetKind::VarReset | VariableSetKind::VarSetDefault
                        if identity && !v.is_local => {}
                    _ => return None,
                }
            }
            NodeEnum::UnlistenStmt(_) | NodeEnum::ClosePortalStmt(_) => {}
            NodeEnum::DeallocateStmt(d) if d.isall || d.name.is_empty() => {}
            NodeEnum::SelectStmt(s) if unlocks_all(s) => {}
            _ => return None,
        }
        any = true;
    }
    any.then_some(resets)
}

/// The settings a `SELECT set_config('name', value, false)` (one call or
/// several, nothing else) changes for the session: what an application
/// sends to set a value it passes as a parameter (`SET` takes none), such
/// as a tenant id for row-level security. The value must be a constant or
/// a parameter (perhaps cast): an expression could do more than set.
fn set_config_calls(s: &SelectStmt) -> Option<Vec<SetTarget>> {
    if !bare_select(s) || s.target_list.is_empty() {
        return None;
    }
    let mut targets = Vec::new();
    for target in &s.target_list {
        let Some(NodeEnum::ResTarget(t)) = target.node.as_ref() else {
            return None;
        };
        let Some(NodeEnum::FuncCall(f)) = t.val.as_ref().and_then(|v| v.node.as_ref()) else {
            return None;
        };
        if !calls(f, "set_config") || f.over.is_some() || f.agg_filter.is_some() {
            return None;
        }
        let [name, value, local] = f.args.as_slice() else {
            return None;
        };
        let name = match name.node.as_ref() {
            Some(NodeEnum::AConst(c)) => match c.val.as_ref() {
                Some(a_const::Val::Sval(s)) => s.sval.to_ascii_lowercase(),
                _ => return None,
            },
            _ => return None,
        };
        let session_wide = matches!(
            local.node.as_ref(),
            Some(NodeEnum::AConst(c)) if matches!(c.val.as_ref(), Some(a_const::Val::Boolval(b)) if !b.boolval)
        );
        if !session_wide || !plain_value(value) || NOT_PLAIN.contains(&name.as_str()) {
            return None;
        }
        targets.push(SetTarget { name, reset: false });
    }
    Some(targets)
}

/// A constant, a parameter, or a cast of one.
fn plain_value(node: &pg_query::protobuf::Node) -> bool {
    match node.node.as_ref() {
        Some(NodeEnum::AConst(c)) => !c.isnull,
        Some(NodeEnum::ParamRef(_)) => true,
        Some(NodeEnum::TypeCast(c)) => c.arg.as_deref().is_some_and(plain_value),
        _ => false,
    }
}

/// True when `f` calls `[pg_catalog.]name`.
fn calls(f: &pg_query::protobuf::FuncCall, name: &str) -> bool {
    let parts: Vec<&str> = f
        .funcname
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        [n] | ["pg_catalog", n] => *n == name,
        _ => false,
    }
}

/// A SELECT of a target list alone: no FROM, WHERE, grouping, ordering,
/// limit, locking, WITH, INTO, DISTINCT or set operation.
fn bare_select(s: &SelectStmt) -> bool {
    s.from_clause.is_empty()
        && s.where_clause.is_none()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.window_clause.is_empty()
        && s.values_lists.is_empty()
        && s.sort_clause.is_empty()
        && s.limit_count.is_none()
        && s.limit_offset.is_none()
        && s.locking_clause.is_empty()
        && s.with_clause.is_none()
        && s.into_clause.is_none()
        && s.distinct_clause.is_empty()
        && s.op == SetOperation::SetopNone as i32
}

/// `SELECT [pg_catalog.]pg_advisory_unlock_all()` and nothing else.
fn unlocks_all(s: &SelectStmt) -> bool {
    let [target] = s.target_list.as_slice() else {
        return false;
    };
    let Some(NodeEnum::ResTarget(t)) = target.node.as_ref() else {
        return false;
    };
    let Some(NodeEnum::FuncCall(f)) = t.val.as_ref().and_then(|v| v.node.as_ref()) else {
        return false;
    };
    bare_select(s)
        && calls(f, "pg_advisory_unlock_all")
        && f.args.is_empty()
        && f.over.is_none()
        && f.agg_filter.is_none()
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
            names("SELECT set_config('app.tenant_id', $1, false)"),
            Some(vec![set("app.tenant_id")])
        );
        assert_eq!(
            names(
                "select pg_catalog.set_config('App.A', '1'::text, false), set_config('b', $2::text, false)"
            ),
            Some(vec![set("app.a"), set("b")])
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
    fn pool_resets_only_remove_session_state() {
        let settings = Some(Resets { settings: true });
        let nothing = Some(Resets { settings: false });
        // asyncpg's reset query, npgsql's reset.
        assert_eq!(
            resets_only("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"),
            settings
        );
        assert_eq!(resets_only("DISCARD ALL"), settings);
        assert_eq!(resets_only("discard plans; DISCARD SEQUENCES"), nothing);
        assert_eq!(
            resets_only("RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; DEALLOCATE ALL"),
            nothing
        );
        assert_eq!(
            resets_only("SELECT pg_catalog.pg_advisory_unlock_all()"),
            nothing
        );
        for sql in [
            "",
            "SELECT pg_advisory_unlock_all(), 1",
            "SELECT pg_advisory_unlock_all() FROM t",
            "SELECT pg_advisory_lock(1)",
            "SELECT 1",
            "DEALLOCATE p1",
            "SET ROLE x",
            "RESET work_mem",
            "LISTEN x",
            "DISCARD ALL; SELECT 1",
            "CREATE TEMP TABLE t (v int)",
        ] {
            assert_eq!(resets_only(sql), None, "{sql}");
        }
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
            "SET seed = 0.5",
            "RESET ALL",
            "SET work_mem = '8MB'; SELECT 1",
            "SELECT set_config('work_mem', '8MB', true)",
            "SELECT set_config('work_mem', '8MB', $2)",
            "SELECT set_config($1, '8MB', false)",
            "SELECT set_config('a', pg_advisory_lock(1)::text, false)",
            "SELECT set_config('a', '1', false), 1",
            "SELECT set_config('a', '1', false) FROM t",
            "SELECT set_config('role', 'x', false)",
            "SET work_mem =",
            "DISCARD ALL",
        ] {
            assert_eq!(names(sql), None, "{sql}");
        }
    }
}
