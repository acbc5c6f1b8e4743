//! Which functions a read may call. Volatility is not in the grammar, so
//! the rule is an allow-list: built-in functions known not to write, plus
//! whatever the operator adds. Functions that change state are named
//! explicitly so an allow-list entry can never make them reads.

use std::collections::HashSet;

/// Built-ins that neither write nor need the primary (pg_catalog).
const READ_ONLY_BUILTINS: &[&str] = &[
    // aggregates and window functions
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "variance",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // math
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sqrt",
    "power",
    "mod",
    "ln",
    "log",
    "exp",
    "sign",
    "random",
    "div",
    "width_bucket",
    // strings
    "length",
    "char_length",
    "octet_length",
    "lower",
    "upper",
    "initcap",
    "concat",
    "concat_ws",
    "replace",
    "split_part",
    "left",
    "right",
    "lpad",
    "rpad",
    "ltrim",
    "rtrim",
    "btrim",
    "strpos",
    "substr",
    "reverse",
    "repeat",
    "md5",
    "format",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "quote_ident",
    "quote_literal",
    "encode",
    "decode",
    "starts_with",
    "string_to_array",
    "array_to_string",
    // dates
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "date_trunc",
    "date_part",
    "age",
    "make_date",
    "make_interval",
    "make_timestamp",
    "timeofday",
    "to_json",
    "to_jsonb",
    // json and arrays
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "jsonb_set",
    "jsonb_pretty",
    "json_array_length",
    "jsonb_array_length",
    "json_each",
    "jsonb_each",
    "jsonb_array_elements",
    "json_array_elements",
    "jsonb_path_query",
    "row_to_json",
    "array_length",
    "array_position",
    "cardinality",
    "unnest",
    "generate_series",
    "array_append",
    "array_cat",
    "array_remove",
    // system information
    "current_setting",
    "current_database",
    "current_schema",
    "version",
    "pg_is_in_recovery",
    "inet_server_port",
    "inet_server_addr",
    "inet_client_addr",
    "inet_client_port",
    "pg_backend_pid",
    "pg_postmaster_start_time",
    "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_wal_lsn_diff",
    "pg_database_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_size_pretty",
    "pg_typeof",
    "has_table_privilege",
    "has_schema_privilege",
    "pg_get_viewdef",
    "pg_get_indexdef",
    "obj_description",
    "col_description",
    "format_type",
    "pg_table_is_visible",
    "gen_random_uuid",
    "txid_current_snapshot",
    "pg_current_snapshot",
];

/// Functions that write, take locks or change session state: always the
/// primary, whatever the allow-list says.
const WRITERS: &[&str] = &[
    "nextval",
    "setval",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "txid_current",
    "pg_current_xact_id",
    "lo_create",
    "lo_import",
    "lo_unlink",
    "lo_put",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_notify",
];

/// Functions whose effect outlives the transaction: they pin the session.
const SESSION: &[&str] = &[
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    // The session's random() sequence.
    "setseed",
];

/// Functions that read the values of the session's last `nextval()`
/// calls: those live on the server connection that ran them.
const SEQUENCE_VALUES: &[&str] = &["currval", "lastval"];

/// What a function call means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionEffect {
    /// On the allow-list: fine on a replica.
    ReadOnly,
    /// Writes, or unknown: primary.
    Write,
    /// Reads the session's sequence values (`currval`, `lastval`):
    /// primary, on the connection of the session's last write.
    SequenceValue,
    /// Changes session state: primary, and pins the session.
    Session,
}

/// The read-only allow-list. Names are lower case; an unqualified entry
/// matches calls without a schema or in `pg_catalog`, a qualified one
/// (`app.lookup`) only that schema.
#[derive(Debug, Clone)]
pub struct FunctionPolicy {
    read_only: HashSet<String>,
}

impl Default for FunctionPolicy {
    fn default() -> Self {
        FunctionPolicy {
            read_only: READ_ONLY_BUILTINS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl FunctionPolicy {
    /// The built-in list plus `extra` (the configurable part).
    pub fn with_read_only<I, S>(extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut p = Self::default();
        p.read_only
            .extend(extra.into_iter().map(|s| s.as_ref().to_ascii_lowercase()));
        p
    }

    /// The effect of calling `schema.name` (`schema` empty when
    /// unqualified). Names compare as PostgreSQL folds unquoted
    /// identifiers: the caller passes them folded.
    pub fn effect(&self, schema: &str, name: &str) -> FunctionEffect {
        let builtin = schema.is_empty() || schema == "pg_catalog";
        if builtin && SESSION.contains(&name) {
            return FunctionEffect::Session;
        }
        if builtin && WRITERS.contains(&name) {
            return FunctionEffect::Write;
        }
        if builtin && SEQUENCE_VALUES.contains(&name) {
            return FunctionEffect::SequenceValue;
        }
        let listed = if builtin {
            self.read_only.contains(name)
        } else {
            self.read_only.contains(&format!("{schema}.{name}"))
        };
        if listed {
            FunctionEffect::ReadOnly
        } else {
            FunctionEffect::Write
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_beat_the_allow_list() {
        let p = FunctionPolicy::with_read_only(["nextval", "App.Lookup"]);
        assert_eq!(p.effect("", "nextval"), FunctionEffect::Write);
        assert_eq!(p.effect("", "lastval"), FunctionEffect::SequenceValue);
        assert_eq!(
            p.effect("pg_catalog", "currval"),
            FunctionEffect::SequenceValue
        );
        assert_eq!(p.effect("app", "currval"), FunctionEffect::Write);
        assert_eq!(p.effect("", "now"), FunctionEffect::ReadOnly);
        assert_eq!(p.effect("pg_catalog", "count"), FunctionEffect::ReadOnly);
        assert_eq!(p.effect("app", "lookup"), FunctionEffect::ReadOnly);
        assert_eq!(p.effect("", "lookup"), FunctionEffect::Write);
        assert_eq!(p.effect("other", "count"), FunctionEffect::Write);
        assert_eq!(p.effect("", "set_config"), FunctionEffect::Session);
    }
}
