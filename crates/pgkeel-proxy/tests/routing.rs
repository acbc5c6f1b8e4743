//! Where statements really run through the proxy: reads on replicas,
//! writes and transactions on the primary, stickiness, prepared
//! statements in transaction mode, COPY both ways, cancel, session pins
//! and the 25006 retry.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Env, TestResult};
use pgkeel_testkit::TempCluster;
use tokio_postgres::SimpleQueryMessage;

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// The node a read ran on, through `client`.
async fn read_port(client: &tokio_postgres::Client) -> TestResult<u16> {
    let msgs = client
        .simple_query("SELECT current_setting('port')")
        .await?;
    Ok(first_value(&msgs).ok_or("no row")?.parse()?)
}

#[tokio::test]
async fn sticky_reads_stay_on_one_replica_per_client_and_move_when_it_stops() -> TestResult {
    common::within(180, sticky_body()).await
}

async fn sticky_body() -> TestResult {
    // The default choice.
    let env = Env::start(2, |_| {}).await?;
    let replicas = [env.node_port("replica1")?, env.node_port("replica2")?];
    let mut clients = Vec::new();
    let mut homes = Vec::new();
    for _ in 0..4 {
        let client = env.client().await?;
        let home = read_port(&client).await?;
        for _ in 0..5 {
            assert_eq!(read_port(&client).await?, home, "a client's reads stay put");
        }
        clients.push(client);
        homes.push(home);
    }
    for r in replicas {
        let n = homes.iter().filter(|&&h| h == r).count();
        assert_eq!(n, 2, "clients spread evenly: {homes:?} over {replicas:?}");
    }

    // The first client's replica stops: its next read runs on the other
    // one, without an error (the pooled connections the server closed are
    // not handed out, the refused connection marks the node down), and
    // it stays there.
    let gone = homes[0];
    let name = if gone == replicas[0] {
        "replica1"
    } else {
        "replica2"
    };
    env.cluster.stop_node(name).await?;
    let other = if gone == replicas[0] {
        replicas[1]
    } else {
        replicas[0]
    };
    for client in &clients {
        assert_eq!(read_port(client).await?, other);
    }
    for _ in 0..3 {
        assert_eq!(read_port(&clients[0]).await?, other);
    }

    // Pooled connections whose backends were terminated while idle (a
    // DBA, idle_session_timeout) are not handed out: reads go on without
    // an error on the same, healthy replica.
    let killed = env.terminate_pooled(other).await?;
    assert!(killed > 0, "the proxy keeps pooled connections on {other}");
    for client in &clients {
        assert_eq!(read_port(client).await?, other);
    }
    Ok(())
}

#[tokio::test]
async fn a_read_whose_replica_connection_breaks_runs_again_on_the_primary() -> TestResult {
    common::within(180, lost_read_body()).await
}

async fn lost_read_body() -> TestResult {
    // pg_sleep is not on the built-in read-only list.
    let env = Env::start(1, |c| c.read_only_functions = vec!["pg_sleep".into()]).await?;
    let (replica, primary) = (env.node_port("replica1")?, env.node_port("primary")?);
    let client = env.client().await?;
    assert_eq!(read_port(&client).await?, replica);
    let (su, su_password) = env.superuser()?;
    let dba = pgkeel_testkit::connect_url(&env.url_as(replica, &su, &su_password)).await?;
    // Long enough to be seen running and terminated on a loaded machine
    // (it runs again in full on the primary).
    let slow = tokio::spawn(async move {
        client
            .simple_query("SELECT current_setting('port'), pg_sleep(5)")
            .await
            .map(|m| first_value(&m))
    });
    const RUNNING: &str = "FROM pg_stat_activity WHERE application_name = 'pgkeel-proxy' \
        AND state = 'active' AND query LIKE '%pg_sleep(5)%'";
    let running = pgkeel_testkit::TempCluster::eventually(Duration::from_secs(30), || async {
        dba.query_one(&format!("SELECT count(*) = 1 {RUNNING}"), &[])
            .await
            .is_ok_and(|r| r.get::<_, bool>(0))
    })
    .await;
    assert!(running, "the read runs on the replica");
    dba.batch_execute(&format!("SELECT pg_terminate_backend(pid) {RUNNING}"))
        .await?;
    // The client sees no error: the read ran again on the primary.
    let port = slow.await??;
    assert_eq!(port, Some(primary.to_string()));
    Ok(())
}

#[tokio::test]
async fn routes_reads_writes_and_transactions() -> TestResult {
    common::within(240, routing_body()).await
}

async fn routing_body() -> TestResult {
    let mut env = Env::start(2, |c| {
        c.read_only_functions = vec!["bump".into()];
        c.replica_choice = pgkeel_proxy::ReplicaChoice::RoundRobin;
    })
    .await?;
    let primary_port = env.node_port("primary")?;
    let replica_ports: HashSet<u16> =
        [env.node_port("replica1")?, env.node_port("replica2")?].into();
    let client = env.client().await?;

    // Simple protocol: reads spread over the replicas.
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let msgs = client
            .simple_query("SELECT current_setting('port')::int, pg_is_in_recovery()")
            .await?;
        let row = msgs.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((r.get(0).map(str::to_string), r.get(1).map(str::to_string)))
            }
            _ => None,
        });
        let (port, recovery) = row.ok_or("no row")?;
        let port: u16 = port.ok_or("null port")?.parse()?;
        assert!(replica_ports.contains(&port), "read ran on {port}");
        assert_eq!(recovery.as_deref(), Some("t"));
        seen.insert(port);
    }
    assert_eq!(seen, replica_ports, "round-robin uses both replicas");

    // Writes and DDL go to the primary.
    client
        .batch_execute("CREATE TABLE t (id serial PRIMARY KEY, v int)")
        .await?;
    let row = client
        .query_one(
            "INSERT INTO t (v) VALUES (1) RETURNING current_setting('port')::int",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::from(primary_port));
    let locked = client
        .simple_query("SELECT current_setting('port')::int FROM t FOR UPDATE")
        .await?;
    assert_eq!(first_value(&locked), Some(primary_port.to_string()));

    // Extended protocol: a read on a replica, a sequence call on the primary.
    let row = client
        .query_one(
            "SELECT current_setting('port')::int, $1::int + 1",
            &[&41i32],
        )
        .await?;
    assert!(replica_ports.contains(&(row.get::<_, i32>(0) as u16)));
    assert_eq!(row.get::<_, i32>(1), 42);
    let row = client
        .query_one(
            "SELECT current_setting('port')::int, nextval('t_id_seq')",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::from(primary_port));

    // A transaction stays on one node; plain BEGIN is the primary.
    let mut c2 = env.client().await?;
    let tx = c2.transaction().await?;
    let a: i32 = tx
        .query_one("SELECT current_setting('port')::int", &[])
        .await?
        .get(0);
    tx.execute("INSERT INTO t (v) VALUES (2)", &[]).await?;
    let b: i32 = tx
        .query_one("SELECT current_setting('port')::int", &[])
        .await?
        .get(0);
    let count: i64 = tx.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    tx.commit().await?;
    assert_eq!((a, b), (i32::from(primary_port), i32::from(primary_port)));
    assert_eq!(count, 2, "the transaction sees its own write");

    // BEGIN READ ONLY may run on a replica, and stays there.
    let msgs = client
        .simple_query("BEGIN READ ONLY; SELECT current_setting('port')::int;")
        .await?;
    let ro_port: u16 = first_value(&msgs).ok_or("no row")?.parse()?;
    let again = client
        .simple_query("SELECT current_setting('port')::int")
        .await?;
    client.simple_query("COMMIT").await?;
    assert!(replica_ports.contains(&ro_port));
    assert_eq!(first_value(&again), Some(ro_port.to_string()));

    // Named prepared statements survive transaction pooling: used many
    // times, from two clients, on whichever replica serves each run.
    let stmt = client
        .prepare("SELECT current_setting('port')::int, $1::int * 2")
        .await?;
    let other = env.client().await?;
    let stmt2 = other
        .prepare("SELECT current_setting('port')::int, $1::int * 2")
        .await?;
    let mut ports = HashSet::new();
    for i in 0..10i32 {
        let r = client.query_one(&stmt, &[&i]).await?;
        assert_eq!(r.get::<_, i32>(1), i * 2);
        ports.insert(r.get::<_, i32>(0) as u16);
        let r = other.query_one(&stmt2, &[&(i + 1)]).await?;
        assert_eq!(r.get::<_, i32>(1), (i + 1) * 2);
        ports.insert(r.get::<_, i32>(0) as u16);
    }
    assert_eq!(ports, replica_ports, "prepared reads ran on both replicas");
    let insert = client
        .prepare("INSERT INTO t (v) VALUES ($1) RETURNING current_setting('port')::int")
        .await?;
    for v in 0..3i32 {
        let r = client.query_one(&insert, &[&v]).await?;
        assert_eq!(r.get::<_, i32>(0), i32::from(primary_port));
    }
    drop(stmt);

    // COPY in (primary) and out (a replica, once it has replayed).
    let sink = client.copy_in("COPY t (v) FROM STDIN").await?;
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from_static(b"10\n11\n12\n"))
        .await?;
    let copied = sink.finish().await?;
    assert_eq!(copied, 3);
    let ok = TempCluster::eventually(Duration::from_secs(20), || async {
        let Ok(stream) = client.copy_out("COPY t TO STDOUT").await else {
            return false;
        };
        use futures_util::TryStreamExt;
        let chunks: Vec<bytes::Bytes> = match stream.try_collect().await {
            Ok(c) => c,
            Err(_) => return false,
        };
        let lines: usize = chunks
            .iter()
            .map(|c| c.iter().filter(|b| **b == b'\n').count())
            .sum();
        lines == 8
    })
    .await;
    assert!(ok, "COPY TO through the proxy returned every row");

    // Cancel reaches the server running the query.
    let sleeper = env.client().await?;
    let token = sleeper.cancel_token();
    let running = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(60)").await });
    // A cancel that arrives before the statement runs is ignored: sent
    // every 200 ms until the statement ends (for up to 20 s).
    let start = std::time::Instant::now();
    while !running.is_finished() && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !running.is_finished() {
            token.cancel_query(tokio_postgres::NoTls).await?;
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(20), running).await??;
    let err = outcome.err().ok_or("pg_sleep(60) was not cancelled")?;
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("57014"),
        "{err}"
    );

    // A function on the read-only list that writes: the replica refuses
    // it (25006), the proxy retries on the primary.
    client
        .batch_execute("CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'INSERT INTO t (v) VALUES (99) RETURNING current_setting(''port'')::int'")
        .await?;
    // Reads go to replicas: wait until both have replayed the function.
    for replica in ["replica1", "replica2"] {
        let direct = env.cluster.client(replica).await?;
        let replayed = TempCluster::eventually(Duration::from_secs(20), || async {
            direct
                .query_one("SELECT count(*) FROM pg_proc WHERE proname = 'bump'", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        })
        .await;
        assert!(replayed, "{replica} never replayed CREATE FUNCTION");
    }
    let retries_before = env
        .proxy
        .as_ref()
        .ok_or("proxy")?
        .shared()
        .metrics
        .retries_on_primary
        .load(Ordering::Relaxed);
    let r = client.query_one("SELECT bump()", &[]).await?;
    assert_eq!(r.get::<_, i32>(0), i32::from(primary_port));
    let retries_after = env
        .proxy
        .as_ref()
        .ok_or("proxy")?
        .shared()
        .metrics
        .retries_on_primary
        .load(Ordering::Relaxed);
    assert_eq!(retries_after, retries_before + 1);

    // A plain SET follows the client to every connection it is given.
    client
        .batch_execute("SET application_name = 'pinned'")
        .await?;
    for _ in 0..4 {
        let msgs = client
            .simple_query(
                "SELECT current_setting('application_name'), current_setting('port')::int",
            )
            .await?;
        assert_eq!(first_value(&msgs).as_deref(), Some("pinned"));
    }

    env.stop_proxy().await;
    Ok(())
}
