//! The proxy's leader follower against a real etcd, through its JSON
//! gateway: a vacant key, the key taken and changed (seen through the
//! watch, not the once-a-second re-read), deleted, and etcd gone.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pgkeel_proxy::Backend;
use pgkeel_proxy::etcd::http::post;
use pgkeel_proxy::leader::{LeaderSource, follow_leader};
use pgkeel_proxy::topology::{Leader, Topology};
use pgkeel_testkit::{TempEtcd, TestResult, free_port_block};

const NODES: [&str; 2] = ["primary", "replica1"];

/// Bound of the test's own etcd requests and of the follower's: generous,
/// as etcd (which syncs each write to disk) can be slow on a loaded
/// machine, and a follower's request timing out reads as etcd gone.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a state the follower must reach may take (it is usually a
/// matter of milliseconds).
const SETTLE: Duration = Duration::from_secs(30);

/// How soon after etcd acknowledged a change the follower must have it to
/// count as seen through the watch: well under the 1 s re-read.
const PROMPT: Duration = Duration::from_millis(400);

async fn request(endpoint: &str, path: &str, key: &str, value: Option<&str>) -> TestResult<()> {
    let json = match value {
        Some(v) => format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            B64.encode(key),
            B64.encode(v)
        ),
        None => format!(r#"{{"key":"{}"}}"#, B64.encode(key)),
    };
    let plain = pgkeel_proxy::etcd::access::Connector::new(&Default::default())?;
    post(&plain, endpoint, path, &json, None, ETCD_TIMEOUT)
        .await?
        .read_all()
        .await?;
    Ok(())
}

async fn put(etcd: &TempEtcd, key: &str, value: &str) -> TestResult<()> {
    request(&etcd.endpoint, "/v3/kv/put", key, Some(value)).await
}

async fn delete(etcd: &TempEtcd, key: &str) -> TestResult<()> {
    request(&etcd.endpoint, "/v3/kv/deleterange", key, None).await
}

/// Retries `attempt` for up to `within`; the time it took.
async fn eventually<F, Fut>(what: &str, within: Duration, mut attempt: F) -> TestResult<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !attempt().await {
        if start.elapsed() > within {
            return Err(format!("{what}: not within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(start.elapsed())
}

async fn leader_is(topology: &Topology, want: Leader, within: Duration) -> TestResult<Duration> {
    eventually(&format!("leader {want:?}"), within, || async {
        topology.leader() == want
    })
    .await
}

#[tokio::test]
async fn the_leader_key_is_followed_through_the_json_gateway() -> TestResult<()> {
    let mut etcd = TempEtcd::start()?;
    let source = LeaderSource {
        endpoints: vec![etcd.endpoint.clone()],
        namespace: "/pgkeel/".into(),
        cluster: "test".into(),
        timeout: ETCD_TIMEOUT,
        access: Default::default(),
    };
    let key = source.key();
    assert_eq!(key, "/pgkeel/test/leader");
    // A freshly started etcd may still be electing itself.
    eventually("etcd to accept writes", Duration::from_secs(60), || async {
        put(&etcd, "/pgkeel/test/other", "x").await.is_ok()
    })
    .await?;
    let backends = NODES
        .iter()
        .map(|name| Backend {
            name: name.to_string(),
            addr: ([127, 0, 0, 1], 9).into(),
            socket: None,
        })
        .collect();
    let topology = Arc::new(Topology::new(backends));
    let follower = tokio::spawn(follow_leader(topology.clone(), source));

    // No key: failover under way, no primary.
    leader_is(&topology, Leader::Vacant, SETTLE).await?;
    put(&etcd, &key, "primary").await?;
    leader_is(&topology, Leader::Node(0), SETTLE).await?;

    // Changes arrive through the watch: each is seen far sooner than the
    // 1 s re-read would. Timed from etcd's answer to the put (a loaded
    // machine's disk can make the put itself slow), over ten changes of
    // which one may be late (a stall of the test process): through the
    // re-read alone, nine of ten would be seen this soon by chance in
    // fewer than one run in five hundred (five of five: one in a hundred).
    let mut late = vec![];
    for (i, name) in ["replica1", "primary"]
        .into_iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        put(&etcd, &key, name).await?;
        let took = leader_is(
            &topology,
            Leader::Node(usize::from(name == "replica1")),
            SETTLE,
        )
        .await?;
        if took >= PROMPT {
            late.push((i, took));
        }
    }
    assert!(
        late.len() <= 1,
        "changes seen late (after {PROMPT:?}): {late:?}"
    );

    // Deleted (or its lease expired): vacant at once (four of five).
    let mut late = vec![];
    for i in 0..5 {
        put(&etcd, &key, "primary").await?;
        leader_is(&topology, Leader::Node(0), SETTLE).await?;
        delete(&etcd, &key).await?;
        let took = leader_is(&topology, Leader::Vacant, SETTLE).await?;
        if took >= PROMPT {
            late.push((i, took));
        }
    }
    assert!(
        late.len() <= 1,
        "deletions seen late (after {PROMPT:?}): {late:?}"
    );
    // A holder that is not one of our backends: nothing may be written.
    put(&etcd, &key, "primary").await?;
    leader_is(&topology, Leader::Node(0), SETTLE).await?;
    put(&etcd, &key, "elsewhere").await?;
    leader_is(&topology, Leader::Vacant, SETTLE).await?;
    put(&etcd, &key, "primary").await?;
    leader_is(&topology, Leader::Node(0), SETTLE).await?;

    // etcd gone: unknown, the health checks alone decide.
    etcd.stop();
    leader_is(&topology, Leader::Unknown, SETTLE).await?;
    follower.abort();
    Ok(())
}

#[tokio::test]
async fn an_unreachable_etcd_means_an_unknown_leader() -> TestResult<()> {
    // A port nothing listens on (outside the range the kernel hands to
    // outgoing connections, so nothing takes it meanwhile).
    let port = free_port_block(1);
    let source = LeaderSource {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        namespace: "/pgkeel".into(),
        cluster: "test".into(),
        timeout: Duration::from_millis(300),
        access: Default::default(),
    };
    let topology = Arc::new(Topology::new(vec![Backend {
        name: "primary".into(),
        addr: ([127, 0, 0, 1], 9).into(),
        socket: None,
    }]));
    topology.set_leader(Some("primary"), true);
    let follower = tokio::spawn(follow_leader(topology.clone(), source));
    leader_is(&topology, Leader::Unknown, SETTLE).await?;
    follower.abort();
    Ok(())
}
