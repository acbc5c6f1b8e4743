//! Table tests with real PostgreSQL syntax.

use pgkeel_sql::{Classifier, FunctionPolicy, StatementKind};

use StatementKind::*;

fn check(cases: &[(&str, StatementKind)]) {
    let c = Classifier::new(FunctionPolicy::with_read_only(["app.lookup"]), 100);
    for (sql, want) in cases {
        assert_eq!(c.classify(sql), *want, "{sql}");
        // Cached answer is the same.
        assert_eq!(c.classify(sql), *want, "{sql} (cached)");
    }
}

#[test]
fn reads() {
    check(&[
        ("SELECT 1", Read),
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
            Read,
        ),
        ("TABLE t", Read),
        ("VALUES (1), (2)", Read),
        (
            "SELECT count(*), now() FROM t JOIN u USING (id) WHERE x IN (SELECT y FROM z)",
            Read,
        ),
        ("WITH c (a) AS (SELECT 1) SELECT a FROM c", Read),
        ("SELECT * FROM t AS x (a, b)", Read),
        ("SELECT app.lookup(1)", Read),
        ("SELECT inet_server_port(), pg_is_in_recovery()", Read),
        ("SHOW work_mem", Read),
        ("EXPLAIN SELECT * FROM t", Read),
        ("COPY t TO STDOUT", Read),
        ("COPY (SELECT 1) TO STDOUT", Read),
        ("SELECT 1; SELECT 2", Read),
        (
            "SELECT CAST(x AS numeric(10,2)), COALESCE(a, b) FROM t",
            Read,
        ),
        ("", Empty),
        ("-- only a comment", Empty),
    ]);
}

#[test]
fn writes() {
    check(&[
        ("INSERT INTO t VALUES (1)", Write),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 3",
            Write,
        ),
        ("DELETE FROM t", Write),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            Write,
        ),
        ("SELECT * FROM t FOR UPDATE", Write),
        ("SELECT * FROM t FOR NO KEY UPDATE", Write),
        ("SELECT * FROM t FOR SHARE", Write),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", Write),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Write),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            Write,
        ),
        (
            "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i",
            Write,
        ),
        ("SELECT * INTO t2 FROM t", Write),
        ("SELECT nextval('s')", Write),
        ("SELECT setval('s', 10)", Write),
        ("SELECT pg_advisory_xact_lock(1)", Write),
        ("SELECT my_function(1)", Write),
        ("SELECT other.lookup(1)", Write),
        ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", Write),
        ("SELECT ARRAY[nextval('s')]", Write),
        ("VACUUM (VERBOSE, ANALYZE) t", Write),
        ("CREATE TABLE t (id int)", Write),
        ("ALTER TABLE t ADD COLUMN x int", Write),
        ("COPY t FROM STDIN", Write),
        ("CALL proc()", Write),
        ("LOCK TABLE t", Write),
        ("NOTIFY ch", Write),
        ("EXPLAIN ANALYZE DELETE FROM t", Write),
        ("SELECT 1; INSERT INTO t VALUES (1)", Write),
        ("SELEC broken", Write),
    ]);
}

#[test]
fn transactions() {
    check(&[
        ("BEGIN", Begin { read_only: false }),
        ("BEGIN READ ONLY", Begin { read_only: true }),
        (
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            Begin { read_only: true },
        ),
        ("BEGIN READ WRITE", Begin { read_only: false }),
        ("COMMIT", TransactionControl),
        ("ROLLBACK", TransactionControl),
        ("SAVEPOINT a", TransactionControl),
        ("RELEASE SAVEPOINT a", TransactionControl),
        ("ROLLBACK TO SAVEPOINT a", TransactionControl),
        ("SET LOCAL work_mem = '64MB'", TransactionControl),
        ("SET TRANSACTION READ ONLY", TransactionControl),
        (
            "BEGIN READ ONLY; SELECT 1; COMMIT",
            Begin { read_only: true },
        ),
        ("BEGIN; SELECT 1", Write),
        ("BEGIN READ ONLY; INSERT INTO t VALUES (1)", Write),
    ]);
}

#[test]
fn session_state() {
    check(&[
        ("SET search_path = app", SessionState),
        ("RESET ALL", SessionState),
        ("PREPARE p AS SELECT 1", SessionState),
        ("EXECUTE p", SessionState),
        ("DEALLOCATE p", SessionState),
        ("LISTEN ch", SessionState),
        ("UNLISTEN *", SessionState),
        ("CREATE TEMP TABLE tt (id int)", SessionState),
        ("CREATE TEMPORARY TABLE tt AS SELECT 1", SessionState),
        ("SELECT 1 INTO TEMP tt", SessionState),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", SessionState),
        ("DISCARD ALL", SessionState),
        ("SELECT set_config('a.b', 'c', false)", SessionState),
        ("SELECT pg_advisory_lock(42)", SessionState),
        ("SELECT 1; SET x = 1", SessionState),
        // Objects in the session's own schema are temporary whatever the
        // parser says; temporary sequences and views; DO blocks (their
        // body may set_config or create temporary objects); setseed.
        ("CREATE TABLE pg_temp.t (v int)", SessionState),
        ("CREATE TABLE PG_TEMP.t AS SELECT 1", SessionState),
        ("SELECT 1 INTO pg_temp.t", SessionState),
        ("CREATE TEMP SEQUENCE s", SessionState),
        ("CREATE SEQUENCE pg_temp.s", SessionState),
        ("CREATE TEMP VIEW v AS SELECT 1", SessionState),
        ("CREATE VIEW pg_temp_3.v AS SELECT 1", SessionState),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            SessionState,
        ),
        (
            "DO $$BEGIN PERFORM set_config('work_mem', '3MB', false); END$$",
            SessionState,
        ),
        ("SELECT setseed(0.25)", SessionState),
    ]);
    check(&[
        ("CREATE TABLE pg_temporal_log (v int)", Write),
        ("CREATE TABLE app.t (v int)", Write),
        ("CREATE SEQUENCE s", Write),
        ("CREATE VIEW v AS SELECT 1", Write),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            Write,
        ),
    ]);
    check(&[
        ("DECLARE c CURSOR FOR SELECT 1", Read),
        ("FETCH 10 FROM c", Read),
    ]);
}

#[test]
fn literals_share_a_cache_entry() {
    let c = Classifier::default();
    assert_eq!(c.classify("SELECT * FROM t WHERE id = 1"), Read);
    assert_eq!(c.classify("SELECT * FROM t WHERE id = 2"), Read);
    assert_eq!(c.classify("SELECT * FROM t WHERE name = 'x'"), Read);
    assert_eq!(c.classify("SELECT * FROM t WHERE name = 'y'"), Read);
    assert_eq!(c.cached(), 2);
}

#[test]
fn a_new_function_policy_applies_to_cached_statements() {
    let c = Classifier::new(FunctionPolicy::default(), 100);
    let sql = "SELECT app_lookup(id) FROM t WHERE id = 1";
    assert_eq!(c.classify(sql), Write);
    assert_eq!(c.classify(sql), Write, "cached");
    assert_eq!(c.cached(), 1);
    c.set_policy(FunctionPolicy::with_read_only(["app_lookup"]));
    assert_eq!(c.cached(), 0, "answers under the old list were kept");
    assert_eq!(c.classify(sql), Read);
    assert_eq!(
        c.classify("SELECT app_lookup(id) FROM t WHERE id = 2"),
        Read
    );
    c.set_policy(FunctionPolicy::default());
    assert_eq!(c.classify(sql), Write);
    // Writers stay writers whatever the list says.
    c.set_policy(FunctionPolicy::with_read_only(["nextval"]));
    assert_eq!(c.classify("SELECT nextval('s')"), Write);
}

/// `currval()`/`lastval()` read what the session's last `nextval()` left
/// on its server connection, whatever else the statement does.
#[test]
fn sequence_values() {
    check(&[
        ("SELECT lastval()", SequenceValue { writes: false }),
        ("SELECT LASTVAL()", SequenceValue { writes: false }),
        (
            "SELECT currval('t_id_seq')",
            SequenceValue { writes: false },
        ),
        (
            "SELECT pg_catalog.currval('s'::regclass)",
            SequenceValue { writes: false },
        ),
        (
            "INSERT INTO child (parent_id) VALUES (currval('parent_id_seq'))",
            SequenceValue { writes: true },
        ),
        (
            "SELECT nextval('s'), currval('s')",
            SequenceValue { writes: true },
        ),
        (
            "SELECT currval('s'), nextval('s')",
            SequenceValue { writes: true },
        ),
        (
            "BEGIN; SELECT lastval(); COMMIT",
            SequenceValue { writes: true },
        ),
        (
            "BEGIN READ ONLY; SELECT lastval()",
            SequenceValue { writes: false },
        ),
        // Only the built-ins: a schema's own function of that name is
        // any function.
        ("SELECT app.currval(1)", Write),
        ("SELECT 'lastval()'", Read),
        ("SELECT lastval FROM t", Read),
        // Session state still pins, which keeps the connection anyway.
        (
            "SELECT set_config('a.b', '1', false), lastval()",
            SessionState,
        ),
    ]);
}
