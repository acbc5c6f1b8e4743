//! Bad input gets a clear error naming the fix, and leaves nothing
//! half-done behind.

mod common;

use common::{CliCluster, TestResult, http_get, pgkeel, text};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_fails_with(out: &std::process::Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected failure: {}", text(out));
    let err = stderr(out);
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr lacks `{needle}`: {}",
            text(out)
        );
    }
}

#[test]
fn missing_postgres_binaries_say_how_to_install() -> TestResult {
    let c = CliCluster::new(3)?;
    let port = c.base_port.to_string();
    let out = c.run_env(
        "up",
        &["--base-port", &port],
        &[("PGKEEL_CLUSTER_BIN_DIR", "/nonexistent/pg/bin")],
    );
    assert_fails_with(
        &out,
        &["initdb", "missing from /nonexistent/pg/bin", "bin_dir"],
    );
    assert!(!c.root.exists(), "nothing may be created");
    Ok(())
}

#[test]
fn busy_port_is_found_before_anything_is_created() -> TestResult {
    // The block was free when picked, but an outgoing connection of a
    // parallel test may take one of its ports (the ephemeral range
    // overlaps): pick again until this test holds the port it makes busy.
    let mut picked = None;
    for _ in 0..20 {
        let c = CliCluster::new(3)?;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", c.base_port + 1)) {
            picked = Some((c, listener));
            break;
        }
    }
    let (c, busy) = picked.ok_or("no free port block to make busy in 20 tries")?;
    let out = c.run("up", &["--base-port", &c.base_port.to_string()]);
    assert_fails_with(
        &out,
        &[
            &format!("port {}", c.base_port + 1),
            "replica1",
            "already in use",
            "--base-port",
        ],
    );
    assert!(!c.root.exists(), "nothing may be created");
    drop(busy);
    Ok(())
}

/// `pgkeel up` run as a child process, killed by PID if the test ends
/// early.
struct UpProcess(Option<std::process::Child>);

impl Drop for UpProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port taken after the preflight checks (as an outgoing connection's
/// ephemeral port can be) does not stop the agent that wanted it for its
/// API: HA comes up, `up` warns naming the port and the log, and the API
/// listens once the port is free.
#[test]
fn agent_whose_api_port_is_taken_runs_and_listens_once_free() -> TestResult {
    let c = CliCluster::new(3)?;
    let root = c.root.display().to_string();
    let port = c.base_port.to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgkeel"))
        .args(["up", "--dir", &root, "--base-port", &port, "--no-proxy"])
        .current_dir(c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut up = UpProcess(Some(child));
    // Past the preflight checks once the first node's directory exists.
    let started = std::time::Instant::now();
    while !c.root.join("nodes").join("primary").exists() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            return Err("`pgkeel up` never created the primary".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let api = c.base_port + 2001;
    let busy = TcpListener::bind(("127.0.0.1", api))?;
    let out = up.0.take().ok_or("no child")?.wait_with_output()?;
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    for needle in [
        "warning: the agent of node `replica1`",
        &format!("cannot listen on 127.0.0.1:{api}"),
        "nodes/replica1/agent.log",
    ] {
        assert!(all.contains(needle), "output lacks `{needle}`: {all}");
    }
    let log = std::fs::read_to_string(c.root.join("nodes/replica1/agent.log"))?;
    assert!(log.contains("HA goes on without the API"), "{log}");
    // The port comes free: the agent's API answers within a few retries
    // (every 2 s; up to 60 s on a loaded machine).
    drop(busy);
    let freed = std::time::Instant::now();
    loop {
        let answer = http_get(api, "/health");
        if let Ok(reply) = &answer
            && reply.contains("replica")
        {
            break;
        }
        if freed.elapsed() > std::time::Duration::from_secs(60) {
            return Err(format!("the agent API never listened on {api}: {answer:?}").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = c.run("down", &[]);
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

#[test]
fn foreign_directory_is_left_alone() -> TestResult {
    let c = CliCluster::new(3)?;
    std::fs::create_dir_all(&c.root)?;
    std::fs::write(c.root.join("precious.txt"), "keep me")?;
    let out = c.run("up", &["--base-port", &c.base_port.to_string()]);
    assert_fails_with(
        &out,
        &["not a pgkeel cluster", "precious.txt", "another --dir"],
    );
    let out = c.run("destroy", &["--yes"]);
    assert_fails_with(&out, &["no pgkeel cluster"]);
    assert_eq!(
        std::fs::read_to_string(c.root.join("precious.txt"))?,
        "keep me"
    );
    Ok(())
}

#[test]
fn missing_os_user_says_how_to_create_it() -> TestResult {
    let c = CliCluster::new(3)?;
    let out = c.run_env(
        "up",
        &["--base-port", &c.base_port.to_string()],
        &[("PGKEEL_CLUSTER_OS_USER", "pgkeel_nobody_here")],
    );
    assert_fails_with(&out, &["pgkeel_nobody_here", "does not exist", "useradd"]);
    assert!(!c.root.exists(), "nothing may be created");
    Ok(())
}

#[test]
fn unreachable_data_dir_is_reported() -> TestResult {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(()); // only root runs PostgreSQL as another user
    }
    let c = CliCluster::new(3)?;
    let locked = c.dir.path().join("locked");
    std::fs::create_dir(&locked)?;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700))?;
    let root = locked.join("cluster");
    let out = pgkeel(
        c.dir.path(),
        &[
            "up",
            "--dir",
            &root.display().to_string(),
            "--base-port",
            &c.base_port.to_string(),
        ],
        &[],
    );
    assert_fails_with(&out, &["cannot reach", "locked", "chmod o+x"]);
    assert!(!root.exists());
    Ok(())
}

#[test]
fn invalid_configurations_are_named() -> TestResult {
    let c = CliCluster::new(3)?;
    let port = c.base_port.to_string();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["--sync-count", "3"],
            vec![],
            vec!["sync_count", "only 2 replicas"],
        ),
        (
            vec![],
            vec![("PGKEEL_REPLICATION_MODE", "semisync")],
            vec!["semisync", "quorum", "PGKEEL_REPLICATION_MODE"],
        ),
        (
            vec!["--mode", "semisync"],
            vec![],
            vec!["semisync", "async, sync, quorum"],
        ),
        (
            vec![],
            vec![("PGKEEL_TUNING_MEMROY", "1GB")],
            vec!["memroy"],
        ),
    ];
    for (args, env, needles) in cases {
        let mut all = vec!["--base-port", port.as_str()];
        all.extend(args);
        let out = c.run_env("up", &all, &env);
        assert_fails_with(&out, &needles);
        assert!(!c.root.exists(), "nothing may be created");
    }

    let files = [
        (
            "[cluster]\nnmae = \"x\"\n",
            vec!["nmae", "line 2", "pgkeel init"],
        ),
        (
            "[[nodes]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 7001\n[[nodes]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 7002\n",
            vec!["`a` is used twice"],
        ),
        (
            "[[nodes]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 7001\n[[nodes]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = 7001\n",
            vec!["both use 127.0.0.1:7001"],
        ),
        (
            "[parameters]\nwal_level = \"minimal\"\n",
            vec!["managed by pgkeel"],
        ),
    ];
    for (content, needles) in files {
        let file = c.dir.path().join("bad.toml");
        std::fs::write(&file, content)?;
        let out = c.run("up", &["--config", &file.display().to_string()]);
        assert_fails_with(&out, &needles);
        assert!(!c.root.exists(), "nothing may be created");
    }
    Ok(())
}

#[tokio::test]
async fn interrupted_and_failed_clones_never_look_healthy() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&["--mode", "async"]);
    let down = c.run("down", &[]);
    assert!(down.status.success(), "{}", text(&down));

    // A clone interrupted halfway: a partial copy and no data directory.
    let node = c.root.join("nodes/replica1");
    std::fs::remove_dir_all(node.join("data"))?;
    std::fs::create_dir_all(node.join("data.partial/base"))?;
    std::fs::write(node.join("data.partial/PG_VERSION"), "15\n")?;

    // Make the next clone fail: the replication password no longer matches
    // the role's (the agent's clone reads it from the secrets).
    let secret = c.root.join("secrets/replication.password");
    let good = std::fs::read_to_string(&secret)?;
    std::fs::write(&secret, "wrong")?;
    let out = c.run("up", &[]);
    assert_fails_with(
        &out,
        &[
            "node `replica1` cannot be brought up",
            "pg_basebackup",
            "password authentication failed",
            "agent.log",
        ],
    );
    assert!(
        !node.join("data").exists(),
        "a failed clone must not leave a data directory"
    );
    let status = c.status()?;
    let replica1 = &status["nodes"][1];
    assert_eq!(replica1["name"], "replica1");
    assert_eq!(replica1["running"], false, "{status}");
    assert!(
        replica1["role"].is_null(),
        "a failed clone must not look like a replica: {status}"
    );

    // Fixed: the agent, still retrying, clones; `up` waits for it.
    std::fs::write(&secret, good)?;
    let out = c.run("up", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cloned replica1"),
        "{}",
        text(&out)
    );
    let status = c.status()?;
    let nodes = status["nodes"].as_array().ok_or("nodes")?;
    assert!(nodes.iter().all(|n| n["running"] == true), "{status}");
    assert_eq!(nodes[1]["wal_receiver"], "streaming", "{status}");
    let slots = status["slots"].as_array().ok_or("slots")?;
    assert!(slots.iter().all(|s| s["active"] == true), "{status}");
    Ok(())
}
