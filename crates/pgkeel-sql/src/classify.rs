//! The classification rules, on libpg_query's parse tree plus its token
//! stream (function calls are found in the tokens, which covers every
//! place an expression can appear).

use pg_query::protobuf::{self, Token, TransactionStmtKind, VariableSetKind};
use pg_query::{NodeEnum, NodeRef};

use crate::StatementKind;
use crate::functions::{FunctionEffect, FunctionPolicy};

/// `CURSOR_OPT_HOLD` in PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// Classifies one string of statements (see [`crate::Classifier`]).
pub(crate) fn classify(sql: &str, policy: &FunctionPolicy) -> StatementKind {
    // libpg_query's helpers can panic on trees they do not expect; that
    // must cost a routing decision (to the primary), not the connection.
    std::panic::catch_unwind(|| classify_inner(sql, policy)).unwrap_or(StatementKind::Write)
}

fn classify_inner(sql: &str, policy: &FunctionPolicy) -> StatementKind {
    let Ok(parsed) = pg_query::parse(sql) else {
        return StatementKind::Write;
    };
    let mut kinds = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        kinds.push(statement(node));
    }
    let combined = combine(&kinds);
    if matches!(combined, StatementKind::Read | StatementKind::Begin { .. })
        || combined == StatementKind::Empty
    {
        let skip: Vec<&str> = parsed
            .cte_names
            .iter()
            .map(String::as_str)
            .chain(parsed.aliases.keys().map(String::as_str))
            .collect();
        match called_functions(sql, policy, &skip) {
            (FunctionEffect::Session, _) => StatementKind::SessionState,
            (effect, true) => StatementKind::SequenceValue {
                writes: effect == FunctionEffect::Write,
            },
            (FunctionEffect::ReadOnly, false) => combined,
            (_, false) => StatementKind::Write,
        }
    } else if combined == StatementKind::Write || combined == StatementKind::TransactionControl {
        // A session-level function call inside a write still pins, and a
        // write that uses `currval()` must find the session's value.
        match called_functions(sql, policy, &[]) {
            (FunctionEffect::Session, _) => StatementKind::SessionState,
            (_, true) => StatementKind::SequenceValue { writes: true },
            _ => combined,
        }
    } else {
        combined
    }
}

/// Several statements in one string: reads only if all are; any session
/// state pins; `BEGIN READ ONLY` followed by reads stays read-only.
fn combine(kinds: &[StatementKind]) -> StatementKind {
    match kinds {
        [] => StatementKind::Empty,
        [one] => *one,
        many => {
            if many.contains(&StatementKind::SessionState) {
                StatementKind::SessionState
            } else if many
                .iter()
                .all(|k| matches!(k, StatementKind::Read | StatementKind::Empty))
            {
                StatementKind::Read
            } else if many.first() == Some(&StatementKind::Begin { read_only: true })
                && many[1..].iter().all(|k| {
                    matches!(
                        k,
                        StatementKind::Read
                            | StatementKind::Empty
                            | StatementKind::TransactionControl
                    )
                })
            {
                // A whole read-only transaction in one string.
                StatementKind::Begin { read_only: true }
            } else {
                StatementKind::Write
            }
        }
    }
}

/// A temporary relation: `TEMP`/`TEMPORARY`, or created in the
/// session's own schema `pg_temp` (which PostgreSQL resolves only when it
/// runs, so the parser reports it as permanent).
fn is_temp(rel: Option<&protobuf::RangeVar>) -> bool {
    rel.is_some_and(|r| r.relpersistence == "t" || is_temp_schema(&r.schemaname))
}

/// `pg_temp` (any case: an unquoted name is folded) or the explicit
/// `pg_temp_N` of a backend.
fn is_temp_schema(schema: &str) -> bool {
    schema
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("pg_temp"))
}

/// A function or procedure created in `pg_temp` (first of a qualified
/// name's parts).
fn is_temp_function(name: &[protobuf::Node]) -> bool {
    name.len() > 1
        && matches!(
            name.first().and_then(|n| n.node.as_ref()),
            Some(NodeEnum::String(s)) if is_temp_schema(&s.sval)
        )
}

fn node_kind(node: Option<&protobuf::Node>) -> StatementKind {
    node.and_then(|n| n.node.as_ref())
        .map(statement)
        .unwrap_or(StatementKind::Write)
}

fn begin_read_only(options: &[protobuf::Node]) -> bool {
    let mut read_only = false;
    for opt in options {
        if let Some(NodeEnum::DefElem(d)) = &opt.node
            && d.defname == "transaction_read_only"
        {
            read_only = match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
                Some(NodeEnum::AConst(c)) => match &c.val {
                    Some(protobuf::a_const::Val::Ival(i)) => i.ival != 0,
                    Some(protobuf::a_const::Val::Boolval(b)) => b.boolval,
                    _ => false,
                },
                Some(NodeEnum::Integer(i)) => i.ival != 0,
                Some(NodeEnum::Boolean(b)) => b.boolval,
                _ => false,
            };
        }
    }
    read_only
}

/// One top-level statement.
fn statement(node: &NodeEnum) -> StatementKind {
    match node {
        NodeEnum::SelectStmt(_) => {
            if let Some(k) = select_tree_kind(node) {
                return k;
            }
            StatementKind::Read
        }
        NodeEnum::VariableShowStmt(_) => StatementKind::Read,
        NodeEnum::ExplainStmt(e) => match node_kind(e.query.as_deref()) {
            StatementKind::Read => StatementKind::Read,
            _ => StatementKind::Write,
        },
        NodeEnum::CopyStmt(c) => {
            if c.is_from || c.is_program {
                StatementKind::Write
            } else if let Some(q) = c.query.as_deref() {
                match node_kind(Some(q)) {
                    StatementKind::Read => StatementKind::Read,
                    _ => StatementKind::Write,
                }
            } else {
                StatementKind::Read
            }
        }
        NodeEnum::TransactionStmt(t) => match TransactionStmtKind::try_from(t.kind) {
            Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
                StatementKind::Begin {
                    read_only: begin_read_only(&t.options),
                }
            }
            _ => StatementKind::TransactionControl,
        },
        NodeEnum::VariableSetStmt(v) => {
            let kind = VariableSetKind::try_from(v.kind).ok();
            if v.is_local || (kind == Some(VariableSetKind::VarSetMulti) && v.name == "TRANSACTION")
            {
                // Scoped to the current transaction.
                StatementKind::TransactionControl
            } else {
                StatementKind::SessionState
            }
        }
        NodeEnum::PrepareStmt(_)
        | NodeEnum::ExecuteStmt(_)
        | NodeEnum::DeallocateStmt(_)
        | NodeEnum::ListenStmt(_)
        | NodeEnum::UnlistenStmt(_)
        | NodeEnum::DiscardStmt(_)
        | NodeEnum::LoadStmt(_) => StatementKind::SessionState,
        NodeEnum::DeclareCursorStmt(d) => {
            if d.options & CURSOR_OPT_HOLD != 0 {
                StatementKind::SessionState
            } else {
                match node_kind(d.query.as_deref()) {
                    StatementKind::Read => StatementKind::Read,
                    _ => StatementKind::Write,
                }
            }
        }
        NodeEnum::FetchStmt(_) | NodeEnum::ClosePortalStmt(_) => StatementKind::Read,
        NodeEnum::CreateStmt(c) if is_temp(c.relation.as_ref()) => StatementKind::SessionState,
        NodeEnum::CreateSeqStmt(c) if is_temp(c.sequence.as_ref()) => StatementKind::SessionState,
        NodeEnum::ViewStmt(v) if is_temp(v.view.as_ref()) => StatementKind::SessionState,
        NodeEnum::CreateFunctionStmt(f) if is_temp_function(&f.funcname) => {
            StatementKind::SessionState
        }
        // A DO block may do anything a session can (`set_config(...,
        // false)`, temporary objects, advisory locks) and its body is not
        // looked into: it pins.
        NodeEnum::DoStmt(_) => StatementKind::SessionState,
        NodeEnum::CreateTableAsStmt(c)
            if is_temp(c.into.as_deref().and_then(|i| i.rel.as_ref())) =>
        {
            StatementKind::SessionState
        }
        _ => StatementKind::Write,
    }
}

/// Walks a SELECT tree (set operations, subqueries, CTEs): `Some(kind)`
/// when something in it is not a plain read.
fn select_tree_kind(node: &NodeEnum) -> Option<StatementKind> {
    let mut verdict = None;
    for (n, _, _, _) in node.nodes() {
        match n {
            NodeRef::SelectStmt(s) => {
                if let Some(into) = s.into_clause.as_deref() {
                    return Some(if is_temp(into.rel.as_ref()) {
                        StatementKind::SessionState
                    } else {
                        StatementKind::Write
                    });
                }
                if !s.locking_clause.is_empty() {
                    verdict = Some(StatementKind::Write);
                }
            }
            NodeRef::InsertStmt(_)
            | NodeRef::UpdateStmt(_)
            | NodeRef::DeleteStmt(_)
            | NodeRef::MergeStmt(_) => verdict = Some(StatementKind::Write),
            NodeRef::CommonTableExpr(c) => {
                if let Some(q) = c.ctequery.as_deref().and_then(|q| q.node.as_ref())
                    && !matches!(q, NodeEnum::SelectStmt(_))
                {
                    verdict = Some(StatementKind::Write);
                } else if let Some(q) = c.ctequery.as_deref().and_then(|q| q.node.as_ref())
                    && let Some(k) = select_tree_kind(q)
                {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    verdict
}

fn unquote(ident: &str) -> String {
    if let Some(inner) = ident.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        inner.replace("\"\"", "\"")
    } else {
        ident.to_ascii_lowercase()
    }
}

/// The strongest effect among the function calls in `sql`: an identifier
/// followed by `(` (optionally schema-qualified), except CTE names and
/// aliases with column lists.
fn called_functions(sql: &str, policy: &FunctionPolicy, skip: &[&str]) -> (FunctionEffect, bool) {
    let Ok(scan) = pg_query::scan(sql) else {
        return (FunctionEffect::Write, false);
    };
    let tokens = &scan.tokens;
    let text = |t: &protobuf::ScanToken| -> &str {
        let start = usize::try_from(t.start).unwrap_or(0);
        let end = usize::try_from(t.end).unwrap_or(0);
        sql.get(start..end).unwrap_or("")
    };
    // Only plain identifiers: keywords followed by `(` are syntax (VALUES,
    // ROW, IN, COALESCE...) or built-ins that do not write.
    let is_name = |t: &protobuf::ScanToken| t.token == Token::Ident as i32;
    let mut worst = FunctionEffect::ReadOnly;
    let mut sequence = false;
    for i in 0..tokens.len() {
        let t = &tokens[i];
        if !is_name(t) || tokens.get(i + 1).map(|n| n.token) != Some(Token::Ascii40 as i32) {
            continue;
        }
        let name = unquote(text(t));
        let schema = if i >= 2 && tokens[i - 1].token == Token::Ascii46 as i32 {
            unquote(text(&tokens[i - 2]))
        } else {
            String::new()
        };
        if schema.is_empty() && skip.contains(&name.as_str()) {
            continue;
        }
        match policy.effect(&schema, &name) {
            FunctionEffect::Session => return (FunctionEffect::Session, sequence),
            FunctionEffect::SequenceValue => sequence = true,
            FunctionEffect::Write => worst = FunctionEffect::Write,
            FunctionEffect::ReadOnly => {}
        }
    }
    (worst, sequence)
}
