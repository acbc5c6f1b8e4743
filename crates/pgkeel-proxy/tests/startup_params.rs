//! A client's startup parameters through the proxy: its
//! `client_encoding`, `application_name`, `options` (`-c name=value`),
//! `DateStyle`, `TimeZone`... are in effect on every server connection it
//! is given, on replicas and the primary alike, while other clients that
//! share those connections keep their own; the login reports them; a bad
//! value is refused at login with the server's SQLSTATE, as PostgreSQL
//! does.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Env, Raw, TestResult, cells, query, texts};
use pgkeel_testkit::TempCluster;
use pgkeel_wire::FrontendMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// Runs `sql`; the ParameterStatus messages of its answer (name NUL
/// value NUL), up to its ReadyForQuery.
async fn read_reports(raw: &mut Raw, sql: &[u8]) -> TestResult<Vec<String>> {
    raw.send(&[FrontendMessage::Query(sql)]).await?;
    let mut reported = Vec::new();
    loop {
        let (tag, frame) = raw.next().await?;
        if tag == b'S' {
            reported.push(String::from_utf8_lossy(&frame[5..]).into_owned());
        }
        if tag == b'Z' {
            return Ok(reported);
        }
    }
}

/// A ParameterStatus value of a login.
fn param<'a>(reported: &'a [(String, String)], name: &str) -> Option<&'a str> {
    reported
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The first row of a simple query, as text.
async fn row(client: &Client, sql: &str) -> TestResult<Vec<String>> {
    let msgs = client.simple_query(sql).await?;
    let row = msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| format!("no row for {sql}"))?;
    Ok((0..row.len())
        .map(|i| row.get(i).unwrap_or("NULL").to_string())
        .collect())
}

/// A tokio-postgres client through the proxy, its configuration adjusted.
async fn client_with(env: &Env, adjust: impl FnOnce(&mut Config)) -> TestResult<Client> {
    let mut config: Config = env.url().parse()?;
    adjust(&mut config);
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A primary and a replica behind a proxy with one server connection per
/// node (so clients take turns on the same ones), after `setup` ran.
async fn one_connection_per_node(setup: &str) -> TestResult<Env> {
    let env = Env::start(1, |c| c.pool_size = 1).await?;
    env.client().await?.batch_execute(setup).await?;
    Ok(env)
}

/// Waits until the replica has what the primary made.
async fn replica_has(env: &Env, sql: &str) -> TestResult {
    let replica = env.cluster.client("replica1").await?;
    let ready = TempCluster::eventually(Duration::from_secs(30), || async {
        replica.simple_query(sql).await.is_ok()
    })
    .await;
    if !ready {
        return Err(format!("the replica never ran {sql}").into());
    }
    Ok(())
}

/// `client_encoding=LATIN1` at startup: the login says LATIN1 and every
/// answer comes in LATIN1, reads on the replica and writes on the primary,
/// across many transactions, while a UTF-8 client takes turns on the same
/// server connections (one per node) and keeps UTF-8.
#[tokio::test]
async fn client_encoding_is_kept_per_client() -> TestResult {
    common::within(180, async {
        let env = one_connection_per_node("CREATE TABLE enc (v text)").await?;
        replica_has(&env, "SELECT 1 FROM enc").await?;
        let utf8 = env.client().await?;
        let (mut latin, reported) = Raw::login_with(&env, &[("client_encoding", "latin1")]).await?;
        assert_eq!(param(&reported, "client_encoding"), Some("LATIN1"));
        assert!(param(&reported, "server_version").is_some(), "{reported:?}");
        let cafe = Some(&b"caf\xe9"[..]);
        for _ in 0..6 {
            let a = query(&mut latin, "SELECT U&'caf\\00E9', pg_is_in_recovery()").await?;
            assert_eq!(cells(&a), [cafe, Some(b"t")], "a read: {a:?}");
            let a = query(
                &mut latin,
                "INSERT INTO enc VALUES (U&'caf\\00E9') RETURNING v, pg_is_in_recovery()",
            )
            .await?;
            assert_eq!(cells(&a), [cafe, Some(b"f")], "a write: {a:?}");
            // Text sent in LATIN1 is read as LATIN1 ('é' is one character).
            let a = query(&mut latin, b"SELECT length('caf\xe9')").await?;
            assert_eq!(a.first.as_deref(), Some("4"), "{a:?}");

            let r = row(
                &utf8,
                "SELECT U&'caf\\00E9', pg_is_in_recovery(), current_setting('client_encoding')",
            )
            .await?;
            assert_eq!(r, ["café", "t", "UTF8"]);
            let r = row(
                &utf8,
                "INSERT INTO enc VALUES ('café') RETURNING v, length(v)",
            )
            .await?;
            assert_eq!(r, ["café", "4"]);
            // The extended protocol, after the LATIN1 client's turn.
            let r = utf8
                .query_one("SELECT $1::text || U&'\\00E9'", &[&"caf"])
                .await?;
            assert_eq!(r.try_get::<_, String>(0)?, "café");
        }
        let a = query(&mut latin, "SHOW client_encoding").await?;
        assert_eq!(a.first.as_deref(), Some("LATIN1"));
        // Counted on the primary: a replica may not have replayed the last
        // insert yet.
        let primary = env.cluster.client("primary").await?;
        let n: i64 = primary
            .query_one("SELECT count(*) FROM enc WHERE v = 'café'", &[])
            .await?
            .get(0);
        assert_eq!(n, 12);
        Ok(())
    })
    .await
}

const SETTINGS: &str = "current_setting('application_name'), \
    current_setting('statement_timeout'), current_setting('search_path')";

/// `application_name` and `options=-c statement_timeout=150ms -c
/// search_path=s1`: in effect on reads and writes (an unqualified table
/// is found in s1, a long statement is cancelled, pg_stat_activity shows
/// the name); a client without them that shares the server connections
/// has the defaults; after a pinned session's `DISCARD ALL`, the
/// connection gets the settings again.
#[tokio::test]
async fn application_name_and_options_follow_the_client() -> TestResult {
    common::within(180, async {
        let env = one_connection_per_node("CREATE SCHEMA s1; CREATE TABLE s1.t (v int)").await?;
        replica_has(&env, "SELECT 1 FROM s1.t").await?;
        let options = "-c statement_timeout=150ms -c search_path=s1";
        let app = client_with(&env, |c| {
            c.application_name("myapp").options(options);
        })
        .await?;
        let plain = env.client().await?;
        let mine = ["myapp", "150ms", "s1"];
        let defaults = ["pgkeel-proxy", "0", "\"$user\", public"];
        for i in 0..4 {
            let read = format!("SELECT {SETTINGS}, pg_is_in_recovery()");
            let write = format!("INSERT INTO t VALUES ({i}) RETURNING {SETTINGS}");
            assert_eq!(row(&app, &read).await?, [&mine[..], &["t"]].concat());
            assert_eq!(row(&app, &write).await?, mine);
            let activity = "SELECT application_name FROM pg_stat_activity \
                            WHERE pid = pg_backend_pid()";
            assert_eq!(row(&app, activity).await?, ["myapp"]);
            assert_eq!(row(&plain, &read).await?, [&defaults[..], &["t"]].concat());
            let write = format!("INSERT INTO s1.t VALUES ({i}) RETURNING {SETTINGS}");
            assert_eq!(row(&plain, &write).await?, defaults);
        }
        let slow = app.simple_query("SELECT pg_sleep(1)").await;
        let code = slow.err().and_then(|e| e.code().cloned());
        assert_eq!(code, Some(SqlState::QUERY_CANCELED));
        plain.simple_query("SELECT pg_sleep(0.3)").await?;
        let count = "BEGIN; SELECT count(*) FROM t; COMMIT";
        assert_eq!(row(&app, count).await?, ["8"]);

        // A pinned session with the same settings, reset on leaving:
        // the next client with them still gets them.
        let pinned = client_with(&env, |c| {
            c.application_name("myapp").options(options);
        })
        .await?;
        pinned
            .batch_execute("SET work_mem = '1MB'; CREATE TEMP TABLE pin_me (v int)")
            .await?;
        drop(pinned);
        let next = client_with(&env, |c| {
            c.application_name("myapp").options(options);
        })
        .await?;
        let write = format!("INSERT INTO t VALUES (0) RETURNING {SETTINGS}");
        assert_eq!(row(&next, &write).await?, mine);
        assert_eq!(row(&app, &write).await?, mine);
        Ok(())
    })
    .await
}

/// TimeZone, DateStyle, IntervalStyle and extra_float_digits given at
/// startup (as JDBC does): the login reports them as the server shows
/// them and they are in effect on reads and writes; another client keeps
/// the server's.
#[tokio::test]
async fn time_zone_and_date_style_are_in_effect() -> TestResult {
    common::within(180, async {
        let env = one_connection_per_node("CREATE TABLE tz (v int)").await?;
        let default_zone = row(&env.cluster.client("primary").await?, "SHOW TimeZone").await?;
        let (mut raw, reported) = Raw::login_with(
            &env,
            &[
                ("TimeZone", "America/New_York"),
                ("DateStyle", "german"),
                ("IntervalStyle", "sql_standard"),
                ("extra_float_digits", "1"),
            ],
        )
        .await?;
        assert_eq!(param(&reported, "TimeZone"), Some("America/New_York"));
        assert_eq!(param(&reported, "DateStyle"), Some("German, DMY"));
        assert_eq!(param(&reported, "IntervalStyle"), Some("sql_standard"));
        let plain = env.client().await?;
        let shown = "current_setting('TimeZone'), current_setting('extra_float_digits'), \
                     '2024-01-02'::date::text, '1 day'::interval::text";
        let mine = ["America/New_York", "1", "02.01.2024", "1 0:00:00"];
        for i in 0..3 {
            let a = query(&mut raw, format!("SELECT {shown}, pg_is_in_recovery()")).await?;
            let text = texts(&a);
            assert_eq!(text, [&mine[..], &["t"]].concat(), "a read: {a:?}");
            let a = query(
                &mut raw,
                format!(
                    "WITH w AS (INSERT INTO tz VALUES ({i}) RETURNING v) SELECT {shown} FROM w"
                ),
            )
            .await?;
            let text = texts(&a);
            assert_eq!(text, mine, "a write: {a:?}");
            let r = row(
                &plain,
                "SELECT current_setting('TimeZone'), '2024-01-02'::date::text",
            )
            .await?;
            assert_eq!(r, [default_zone[0].as_str(), "2024-01-02"]);
        }
        Ok(())
    })
    .await
}

/// Startup parameters of a login.
type Params<'a> = &'a [(&'a str, &'a str)];

/// Bad settings are refused at login, with the server's SQLSTATE (or the
/// proxy's for what it cannot do), and nothing else is disturbed.
#[tokio::test]
async fn bad_settings_are_refused_at_login() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let cases: &[(Params, &str, &str)] = &[
            (&[("client_encoding", "NOPE")], "22023", "client_encoding"),
            (
                &[("options", "-c statement_timeout=banana")],
                "22023",
                "statement_timeout",
            ),
            (&[("nosuch_param", "1")], "42704", "nosuch_param"),
            (&[("options", "-B 10")], "0A000", "-B"),
            (
                &[("options", "-c statement_timeout")],
                "42601",
                "requires a value",
            ),
            (&[("replication", "database")], "0A000", "replication"),
            (&[("is_superuser", "on")], "55P02", "is_superuser"),
        ];
        for (params, code, text) in cases {
            let refused = Raw::login_with(&env, params).await.err();
            let refused = refused.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                refused.contains(code) && refused.contains(text),
                "{params:?}: {refused:?}"
            );
        }
        let (mut ok, reported) = Raw::login_with(&env, &[("application_name", "fine")]).await?;
        assert_eq!(param(&reported, "application_name"), Some("fine"));
        let a = query(&mut ok, "SELECT current_setting('application_name')").await?;
        assert_eq!(a.first.as_deref(), Some("fine"));
        assert_eq!(row(&env.client().await?, "SELECT 1").await?, ["1"]);
        Ok(())
    })
    .await
}

/// A setting the primary takes but a replica refuses
/// (`transaction_read_only=off`: a standby is read-only): the client's
/// read runs on the primary instead of failing or running without the
/// setting, and so do its later reads (the replica is not asked again);
/// other clients' reads stay on the replica.
#[tokio::test]
async fn a_setting_a_replica_refuses_moves_the_reads_to_the_primary() -> TestResult {
    common::within(120, async {
        let env = one_connection_per_node("CREATE TABLE ro (v int)").await?;
        let (mut raw, _) =
            Raw::login_with(&env, &[("options", "-c transaction_read_only=off")]).await?;
        for _ in 0..2 {
            let a = query(
                &mut raw,
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
            )
            .await?;
            assert_eq!(texts(&a), ["f", "off"], "{a:?}");
            assert_eq!((a.errors.len(), a.status), (0, Some('I')), "{a:?}");
            let a = query(
                &mut raw,
                "INSERT INTO ro VALUES (1) RETURNING pg_is_in_recovery()",
            )
            .await?;
            assert_eq!(cells(&a), [Some(&b"f"[..])], "{a:?}");
            let plain = env.client().await?;
            assert_eq!(row(&plain, "SELECT pg_is_in_recovery()").await?, ["t"]);
        }
        // Pipelined reads and a write: all answered, in order.
        let read = FrontendMessage::Query(b"SELECT pg_is_in_recovery()");
        let write =
            FrontendMessage::Query(b"INSERT INTO ro VALUES (2) RETURNING pg_is_in_recovery()");
        raw.send(&[read.clone(), read.clone(), read, write]).await?;
        for _ in 0..4 {
            let a = raw.until_ready().await?;
            assert_eq!(cells(&a), [Some(&b"f"[..])], "{a:?}");
        }
        let metrics = &env.proxy.as_ref().ok_or("proxy")?.shared().metrics;
        assert_eq!(metrics.settings_failed.load(Ordering::Relaxed), 1);
        Ok(())
    })
    .await
}

/// A setting that was accepted at login but fails later on a server
/// connection (here `role`, after the client's membership is revoked):
/// nothing the client sent runs, not even what follows a leading
/// `ROLLBACK`, which would end the failed settings block and run the rest
/// without the settings; a COPY behind it gets the error instead of
/// hanging; the client keeps its connection and gets the error each time.
#[tokio::test]
async fn units_do_not_run_when_their_settings_fail() -> TestResult {
    common::within(120, async {
        let env = one_connection_per_node("CREATE TABLE held (v int)").await?;
        let admin = env.primary_superuser().await?;
        let role = format!("held_{}", std::process::id());
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role}; GRANT {role} TO {user}; GRANT INSERT ON held TO {role}",
                user = env.user
            ))
            .await?;
        let option = format!("-c role={role}");
        // Checked at login on the primary's connection, which keeps it.
        let (mut raw, _) = Raw::login_with(&env, &[("options", option.as_str())]).await?;
        admin
            .batch_execute(&format!("REVOKE {role} FROM {user}", user = env.user))
            .await?;
        // Another client resets that connection: the next unit must set
        // the role again, and cannot.
        let other = env.client().await?;
        other.batch_execute("DISCARD ALL").await?;
        drop(other);
        replica_has(
            &env,
            &format!(
                "SELECT 1 / (CASE WHEN pg_has_role('{user}', '{role}', 'MEMBER') THEN 0 ELSE 1 END)",
                user = env.user
            ),
        )
        .await?;
        for sql in [
            "ROLLBACK; INSERT INTO held VALUES (1)",
            "COMMIT; INSERT INTO held VALUES (2)",
            "ROLLBACK; COPY held FROM STDIN",
            "SELECT 1",
            "INSERT INTO held VALUES (3)",
        ] {
            let a = query(&mut raw, sql).await?;
            assert_eq!(
                (&a.errors[..], a.status),
                (&["42501".to_string()][..], Some('I')),
                "{sql}: {a:?}"
            );
            assert!(a.row.is_none(), "{sql}: {a:?}");
        }
        // Extended: Parse/Bind/Execute of a ROLLBACK then an INSERT.
        raw.send(&[
            FrontendMessage::Parse {
                name: b"",
                query: b"ROLLBACK",
                param_types: vec![],
            },
            common::bind(""),
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
            FrontendMessage::Parse {
                name: b"",
                query: b"INSERT INTO held VALUES (4)",
                param_types: vec![],
            },
            common::bind(""),
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ])
        .await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.errors, ["42501"], "{a:?}");
        let rows = admin.query_one("SELECT count(*) FROM held", &[]).await?;
        assert_eq!(rows.get::<_, i64>(0), 0, "a statement ran without its settings");
        admin
            .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn settings_accepted_once_are_not_checked_again_at_login() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let checked = |env: &Env| {
            env.proxy
                .as_ref()
                .map(|p| p.shared().metrics.settings_checked.load(Ordering::Relaxed))
        };
        let app = |name: &'static str| {
            move |c: &mut Config| {
                c.application_name(name);
                c.options("-c statement_timeout=150ms");
            }
        };
        for _ in 0..3 {
            let c = client_with(&env, app("cached-app")).await?;
            let r = row(
                &c,
                "SELECT current_setting('application_name'), current_setting('statement_timeout')",
            )
            .await?;
            assert_eq!(r, ["cached-app", "150ms"]);
        }
        assert_eq!(checked(&env), Some(1), "one check for three logins");
        // A value not seen before is checked; a bad one is still refused.
        client_with(&env, app("another-app")).await?;
        assert_eq!(checked(&env), Some(2));
        let bad = client_with(&env, |c| {
            c.options("-c statement_timeout=banana");
        })
        .await
        .err()
        .ok_or("a bad value was accepted")?;
        assert!(format!("{bad:?}").contains("statement_timeout"), "{bad:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn settings_are_checked_on_the_servers_defaults() -> TestResult {
    common::within(120, async {
        // One server connection per node: the second login is checked on
        // the connection the first one left with its settings.
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (_german, reported) = Raw::login_with(&env, &[("DateStyle", "German")]).await?;
        assert_eq!(param(&reported, "DateStyle"), Some("German, DMY"));
        let (mut iso, reported) = Raw::login_with(&env, &[("DateStyle", "ISO")]).await?;
        // As PostgreSQL shows `ISO` set on its default, not over German's
        // day-first order.
        assert_eq!(param(&reported, "DateStyle"), Some("ISO, MDY"));
        let a = query(&mut iso, "SELECT '01/02/2024'::date::text").await?;
        assert_eq!(a.first.as_deref(), Some("2024-01-02"), "{a:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reset_all_returns_to_the_startup_settings() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let c = client_with(&env, |c| {
            c.application_name("resetting-app");
            c.options("-c statement_timeout=150ms");
        })
        .await?;
        let ask =
            "SELECT current_setting('statement_timeout'), current_setting('application_name')";
        // As in PostgreSQL, where startup values are what RESET returns to
        // (an Npgsql or pool reset sends DISCARD ALL).
        for reset in [
            "RESET ALL",
            "DISCARD ALL",
            "SET work_mem = '8MB'; RESET ALL",
        ] {
            c.batch_execute("SET statement_timeout = '7s'").await?;
            assert_eq!(row(&c, ask).await?, ["7s", "resetting-app"]);
            c.batch_execute(reset).await?;
            assert_eq!(
                row(&c, ask).await?,
                ["150ms", "resetting-app"],
                "after {reset}"
            );
        }
        // What the client sets after the reset, a reset rolled back, and
        // words that only look like one, keep what the client made.
        for (then, want) in [
            ("RESET ALL; SET application_name = 'after'", "after"),
            ("BEGIN; RESET ALL; ROLLBACK", "mine"),
            ("SELECT 'reset all'", "mine"),
        ] {
            c.batch_execute("SET application_name = 'mine'").await?;
            c.batch_execute(then).await?;
            assert_eq!(row(&c, ask).await?, ["150ms", want], "after {then}");
        }
        // The client hears of its values coming back (ParameterStatus),
        // after the reset's own reports of the server's defaults, before
        // the reset's ReadyForQuery, as from PostgreSQL; a pinned client
        // (a temporary table) too.
        drop(c);
        let (mut raw, _) = Raw::login_with(&env, &[("application_name", "raw-start")]).await?;
        query(&mut raw, "SET application_name = 'x'").await?;
        let told = read_reports(&mut raw, b"RESET ALL").await?;
        assert_eq!(
            told,
            [
                "application_name\0pgkeel-proxy\0",
                "application_name\0raw-start\0"
            ]
        );
        let ask_name = b"SELECT current_setting('application_name')";
        assert!(read_reports(&mut raw, ask_name).await?.is_empty());
        query(&mut raw, "CREATE TEMP TABLE pinned (v int)").await?;
        query(&mut raw, "SET application_name = 'x'").await?;
        assert_eq!(
            read_reports(&mut raw, b"RESET ALL").await?,
            [
                "application_name\0pgkeel-proxy\0",
                "application_name\0raw-start\0"
            ]
        );
        assert!(read_reports(&mut raw, ask_name).await?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn named_statements_are_not_shared_across_settings_that_change_their_meaning() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        // The same text is another statement when backslashes in literals
        // are escapes: 4 characters with standard_conforming_strings on,
        // 3 with it off.
        let text = "SELECT length('a\\\\b')";
        let plain = env.client().await?;
        let escaping = client_with(&env, |c| {
            c.options("-c standard_conforming_strings=off -c escape_string_warning=off");
        })
        .await?;
        for _ in 0..3 {
            let s = plain.prepare(text).await?;
            assert_eq!(plain.query_one(&s, &[]).await?.get::<_, i32>(0), 4);
            let s = escaping.prepare(text).await?;
            assert_eq!(escaping.query_one(&s, &[]).await?.get::<_, i32>(0), 3);
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn serializable_sessions_read_on_the_primary_instead_of_failing() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        // A hot standby refuses serializable transactions (0A000): the
        // read runs again on the primary.
        let c = client_with(&env, |c| {
            c.options("-c default_transaction_isolation=serializable");
        })
        .await?;
        let r = row(
            &c,
            "SELECT pg_is_in_recovery(), current_setting('transaction_isolation')",
        )
        .await?;
        assert_eq!(r, ["f", "serializable"]);
        let s = c.prepare("SELECT pg_is_in_recovery()").await?;
        assert!(!c.query_one(&s, &[]).await?.get::<_, bool>(0));
        // Its settings say so: the reads went straight to the primary, none
        // was refused by a replica first.
        assert_eq!(env.metrics()?.retries_on_primary.load(Ordering::Relaxed), 0);
        // Pipelined: every read is answered by the primary, in order.
        let (mut raw, _) = Raw::login_with(
            &env,
            &[("options", "-c default_transaction_isolation=serializable")],
        )
        .await?;
        raw.send(&[
            FrontendMessage::Query(b"SELECT 1, pg_is_in_recovery()"),
            FrontendMessage::Query(b"SELECT 2, pg_is_in_recovery()"),
            FrontendMessage::Query(b"SELECT 3, pg_is_in_recovery()"),
        ])
        .await?;
        for n in ["1", "2", "3"] {
            let a = raw.until_ready().await?;
            assert_eq!(
                (texts(&a), a.errors.len()),
                (vec![n.to_string(), "f".into()], 0),
                "{a:?}"
            );
        }
        Ok(())
    })
    .await
}

/// A pinned client's `RESET ALL` is followed by a restore of its startup
/// settings on its own connection; if that fails (here its right to set
/// `log_statement` was revoked since login), the connection, and the
/// session state it held, are gone: the client is told so (FATAL 08006)
/// rather than carrying on without its temporary table.
#[tokio::test]
async fn a_failed_restore_after_reset_all_ends_the_session() -> TestResult {
    common::within(120, async {
        let env = one_connection_per_node("CREATE TABLE kept (v int)").await?;
        let admin = env.primary_superuser().await?;
        let grant = format!("SET ON PARAMETER log_statement TO {}", env.user);
        admin.batch_execute(&format!("GRANT {grant}")).await?;
        let (mut raw, _) = Raw::login_with(&env, &[("options", "-c log_statement=all")]).await?;
        let a = query(&mut raw, "CREATE TEMP TABLE mine (v int)").await?;
        assert!(a.errors.is_empty(), "{a:?}");
        let a = query(&mut raw, "SHOW log_statement").await?;
        assert_eq!(texts(&a), ["all"], "{a:?}");
        admin
            .batch_execute(&format!(
                "REVOKE SET ON PARAMETER log_statement FROM {}",
                env.user
            ))
            .await?;
        raw.send(&[FrontendMessage::Query(b"RESET ALL")]).await?;
        let mut errors = Vec::new();
        // Until the proxy closes the connection: the reset ran, its
        // restore failed, and the session ends there (no ReadyForQuery).
        while let Ok(Some((tag, frame))) = raw.next_within(Duration::from_secs(10)).await {
            assert_ne!(tag, b'Z', "the session went on");
            if tag == b'E' {
                let body = frame.get(5..).unwrap_or_default();
                errors.push(
                    pgkeel_wire::backend::error_code(body)
                        .unwrap_or("?")
                        .to_string(),
                );
            }
        }
        assert_eq!(errors, ["08006"]);
        Ok(())
    })
    .await
}
