//! A private network of Linux network namespaces for multi-host tests:
//! one namespace per node, each with its own address on a bridge that
//! lives in a "switch" namespace of its own, so a test can cut a node off
//! (partition) and reconnect it while every packet stays inside
//! namespaces the test created. The host's own network is never touched.
//!
//! ```text
//!   <prefix>-n1  eth0 10.200.X.1 ──┐
//!   <prefix>-n2  eth0 10.200.X.2 ──┼── p1,p2,p3 ── br0 10.200.X.254   (<prefix>-sw)
//!   <prefix>-n3  eth0 10.200.X.3 ──┘
//! ```
//!
//! Namespace names start with `pgkeel-<pid>-`, so parallel test processes
//! never collide and namespaces left by a killed test run (whose PID is
//! gone) are recognised and deleted by the next lab. Interfaces are created
//! inside the namespaces, so their short fixed names cannot collide either.
//! Dropping the lab deletes every namespace it made (also on panic), which
//! removes their veths and the bridge with them.
//!
//! Needs root and `ip` from iproute2 (`ip netns`). A node is isolated by
//! detaching its port from the bridge: its link stays up (no carrier loss
//! to notice), its packets simply go nowhere, like a silent network
//! failure. `tc netem` would be the other means but is not available
//! everywhere (the kernel module may be missing).
//!
//! A *partial* partition cuts one node from one peer only ([`NetLab::cut`],
//! undone by [`NetLab::mend`]): an `unreachable` route to the peer's
//! address inside the node's namespace, and the reverse route inside the
//! peer's (for the switch, whose address etcd listens on, inside the switch
//! namespace). Node-to-node traffic crosses the bridge at layer 2, so a
//! route in the switch namespace only ever cuts traffic to and from the
//! switch's own address. No iptables needed. Established connections go
//! silent (their retransmissions fail locally) until a timeout notices;
//! new connections fail at once with "no route to host". The routes live
//! in the lab's namespaces and vanish with them.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::Signal;

use crate::stop_pid;

/// Why a lab could not be built or driven; every variant names what was
/// attempted so a failing test says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum NetLabError {
    /// Network namespaces cannot be used here (not root, no iproute2).
    #[error(
        "network namespaces are unavailable: {detail}. These tests need root and `ip netns` \
         (install iproute2: `apt-get install iproute2`)"
    )]
    Unavailable {
        /// What failed.
        detail: String,
    },
    /// An `ip` command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A process could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Entering a namespace from a thread failed.
    #[error("cannot enter network namespace {namespace}: {detail}")]
    Enter {
        /// The namespace.
        namespace: String,
        /// Why.
        detail: String,
    },
    /// Every candidate private subnet is in use on this host.
    #[error("no unused 10.200.X.0/24 subnet on this host (checked `ip -4 route` and `ip -4 addr`)")]
    NoFreeSubnet,
    /// A partial partition between a node and itself: a test bug, since
    /// a node's own address is local and cannot be cut.
    #[error("node {index} cannot be cut off from itself")]
    SelfLink {
        /// The node.
        index: usize,
    },
    /// A node index outside the lab.
    #[error("the lab has {count} nodes; node {index} does not exist")]
    NoNode {
        /// The index asked for.
        index: usize,
        /// Nodes in the lab.
        count: usize,
    },
}

/// Prefix of every namespace a lab creates; followed by the PID.
const PREFIX: &str = "pgkeel-";

/// Host number of the bridge's own address (`10.200.X.254`), where shared
/// services (etcd) listen.
const SWITCH_HOST: u8 = 254;

/// Labs created by this process, to keep names unique within it.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The far end of a partial partition ([`NetLab::cut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Node `i` (0-based) of the lab.
    Node(usize),
    /// The switch namespace's own address, where shared services (etcd)
    /// listen: cutting a node from it cuts the node from etcd alone.
    Switch,
}

/// One node of a lab: a namespace with one address on the bridge.
#[derive(Debug, Clone)]
pub struct LabNode {
    /// Its namespace.
    pub namespace: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its port on the bridge (an interface in the switch namespace).
    port: String,
}

/// A set of namespaces joined by a bridge; see the module documentation.
/// Deleted on drop.
#[derive(Debug)]
pub struct NetLab {
    switch: String,
    subnet: u8,
    nodes: Vec<LabNode>,
    /// Namespaces made so far (deleted on drop, in reverse order).
    made: Vec<String>,
}

impl NetLab {
    /// Builds a lab of `nodes` nodes (at most 250) on an unused
    /// `10.200.X.0/24`. Fails with [`NetLabError::Unavailable`] when
    /// namespaces cannot be created here.
    pub fn new(nodes: usize) -> Result<Self, NetLabError> {
        check_available()?;
        remove_leftovers();
        let subnet = pick_subnet()?;
        let seq = SEQUENCE.fetch_add(1, Ordering::SeqCst);
        let base = format!("{PREFIX}{}-{seq}", std::process::id());
        let mut lab = NetLab {
            switch: format!("{base}-sw"),
            subnet,
            nodes: vec![],
            made: vec![],
        };
        // Any failure below drops `lab`, deleting what was made so far.
        lab.add_namespace(&lab.switch.clone())?;
        let sw = lab.switch.clone();
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{}/24", lab.switch_addr()),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..nodes.min(250) {
            let namespace = format!("{base}-n{}", i + 1);
            let addr = Ipv4Addr::new(10, 200, subnet, i as u8 + 1);
            let port = format!("p{}", i + 1);
            lab.add_namespace(&namespace)?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &namespace,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            lab.nodes.push(LabNode {
                namespace,
                addr,
                port,
            });
        }
        Ok(lab)
    }

    /// Creates a namespace with `lo` up and records it for deletion.
    fn add_namespace(&mut self, name: &str) -> Result<(), NetLabError> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    /// Node `index` (0-based).
    pub fn node(&self, index: usize) -> Result<&LabNode, NetLabError> {
        self.nodes.get(index).ok_or(NetLabError::NoNode {
            index,
            count: self.nodes.len(),
        })
    }

    /// The switch namespace: it holds the bridge and reaches every
    /// connected node; run shared services (etcd) and observers here.
    pub fn switch_namespace(&self) -> &str {
        &self.switch
    }

    /// The bridge's address, where services in the switch namespace listen.
    pub fn switch_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.subnet, SWITCH_HOST)
    }

    /// The lab's subnet in CIDR notation (for `pg_hba`-style allow lists).
    pub fn subnet_cidr(&self) -> String {
        format!("10.200.{}.0/24", self.subnet)
    }

    /// Cuts node `index` off from the bridge: it reaches neither the switch
    /// nor any other node, and nobody reaches it. Its link stays up, so
    /// nothing in the node notices except timeouts, as with a real
    /// partition. Idempotent.
    pub fn isolate(&self, index: usize) -> Result<(), NetLabError> {
        let node = self.node(index)?;
        ip(&["-n", &self.switch, "link", "set", &node.port, "nomaster"])
    }

    /// Reconnects node `index` to the bridge. Idempotent.
    pub fn heal(&self, index: usize) -> Result<(), NetLabError> {
        let node = self.node(index)?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &node.port,
            "master",
            "br0",
        ])?;
        ip(&["-n", &self.switch, "link", "set", &node.port, "up"])
    }

    /// Cuts node `index` off from `peer` only, both ways, leaving every
    /// other path up: e.g. a primary cut off from etcd that still reaches
    /// its replicas, which a whole-node [`isolate`](Self::isolate) cannot
    /// express. See the module documentation for how. Idempotent.
    pub fn cut(&self, index: usize, peer: Peer) -> Result<(), NetLabError> {
        for (namespace, to) in self.link(index, peer)? {
            ip(&[
                "-n",
                &namespace,
                "route",
                "replace",
                "unreachable",
                &format!("{to}/32"),
            ])?;
        }
        Ok(())
    }

    /// Undoes [`cut`](Self::cut) between node `index` and `peer`.
    /// Idempotent: a link that is not cut is left as it is.
    pub fn mend(&self, index: usize, peer: Peer) -> Result<(), NetLabError> {
        for (namespace, to) in self.link(index, peer)? {
            let prefix = format!("{to}/32");
            let route = ip_output(&["-n", &namespace, "route", "show", "exact", &prefix]);
            if route.contains("unreachable") {
                ip(&["-n", &namespace, "route", "del", "unreachable", &prefix])?;
            }
        }
        Ok(())
    }

    /// Both directions of the link between node `index` and `peer`: each
    /// namespace with the address it must stop reaching.
    fn link(&self, index: usize, peer: Peer) -> Result<[(String, Ipv4Addr); 2], NetLabError> {
        let node = self.node(index)?;
        let (namespace, addr) = match peer {
            Peer::Switch => (self.switch.clone(), self.switch_addr()),
            Peer::Node(other) => {
                let other = self.node(other)?;
                if other.addr == node.addr {
                    return Err(NetLabError::SelfLink { index });
                }
                (other.namespace.clone(), other.addr)
            }
        };
        Ok([(node.namespace.clone(), addr), (namespace, node.addr)])
    }

    /// A scratch namespace (deleted when the returned guard drops) in which
    /// every node address is local, on `lo`: for steps that must run all
    /// nodes on one host, such as bootstrapping a cluster before its nodes
    /// move into their own namespaces.
    pub fn all_in_one(&self) -> Result<Namespace, NetLabError> {
        let name = format!("{}-all", self.switch.trim_end_matches("-sw"));
        ip(&["netns", "add", &name])?;
        let ns = Namespace { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        for node in &self.nodes {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/32", node.addr),
                "dev",
                "lo",
            ])?;
        }
        Ok(ns)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// A namespace deleted when dropped.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// `ip netns exec <namespace> <program>`: a command that runs `program` in
/// `namespace`. `ip` replaces itself with the program, so the child's PID
/// is the program's (stop it by that PID).
pub fn command_in(namespace: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", namespace]).arg(program);
    cmd
}

/// Runs `f` on a thread that has entered `namespace`'s network: every
/// socket it opens (and every thread or runtime it starts) lives there.
/// This is how a test in the root namespace talks to services on the lab's
/// network. A panic in `f` is propagated.
pub fn run_in<T, F>(namespace: &str, f: F) -> Result<T, NetLabError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let enter_err = |detail: String| NetLabError::Enter {
        namespace: namespace.to_string(),
        detail,
    };
    let file = File::open(Path::new("/run/netns").join(namespace))
        .map_err(|e| enter_err(e.to_string()))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| enter_err(e.to_string()))?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A long-running process started in a namespace, with its output in a
/// log file; stopped by PID when dropped (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    what: String,
}

impl NsProcess {
    /// Starts `program args...` in `namespace` with stdout and stderr
    /// appended to `log`.
    pub fn spawn(
        namespace: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<Self, NetLabError> {
        let what = format!(
            "ip netns exec {namespace} {} {}",
            program.display(),
            args.join(" ")
        );
        let spawn_err = |source| NetLabError::Spawn {
            command: what.clone(),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let child = command_in(namespace, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        Ok(NsProcess { child, what })
    }

    /// Its PID (the program's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it with `signal` (by PID, escalating to SIGKILL after 10 s)
    /// and reaps it.
    pub fn stop(&mut self, signal: Signal) {
        if self.running() {
            stop_pid(self.child.id(), signal);
        }
        let _ = self.child.wait();
    }

    /// The command line it was started with.
    pub fn describe(&self) -> &str {
        &self.what
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.stop(Signal::SIGTERM);
    }
}

/// Runs `ip args...`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), NetLabError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetLabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetLabError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip args...`'s stdout, or an empty string when it fails.
fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// Fails unless this process can create network namespaces.
fn check_available() -> Result<(), NetLabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(NetLabError::Unavailable {
            detail: "not running as root".into(),
        });
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(NetLabError::Unavailable {
            detail: format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        Err(e) => Err(NetLabError::Unavailable {
            detail: format!("cannot run `ip`: {e}"),
        }),
    }
}

/// Deletes namespaces of earlier labs whose test process is gone (a test
/// killed before its drop ran). Best effort.
fn remove_leftovers() {
    for line in ip_output(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// A third octet X such that `10.200.X.0/24` appears in neither this
/// host's routes nor its addresses, starting from a point derived from the
/// PID and clock so concurrent labs spread out. (Labs live in their own
/// namespaces, so even a clash would not leak; this keeps the addresses
/// unambiguous to whoever reads the logs.)
fn pick_subnet() -> Result<u8, NetLabError> {
    let used = format!(
        "{}\n{}",
        ip_output(&["-4", "route", "show", "table", "all"]),
        ip_output(&["-4", "addr"])
    );
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id() ^ nanos) % 254;
    (0..254u32)
        .map(|i| ((start + i) % 254 + 1) as u8)
        .find(|x| !used.contains(&format!("10.200.{x}.")))
        .ok_or(NetLabError::NoFreeSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    fn lab_or_skip_reason(nodes: usize) -> NetLab {
        match NetLab::new(nodes) {
            Ok(lab) => lab,
            Err(e) => panic!("{e}"),
        }
    }

    /// Connects from `from` to `to:port` with a short timeout.
    fn reaches(from: &str, to: Ipv4Addr, port: u16) -> bool {
        run_in(from, || {
            let addr = SocketAddr::from((to, port));
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_millis(500)))?;
                    let mut buf = [0u8; 2];
                    s.read_exact(&mut buf)?;
                    Ok(&buf == b"ok")
                })
                .unwrap_or(false)
        })
        .expect("enter namespace")
    }

    /// A listener in `namespace` answering "ok" to every connection.
    fn serve(namespace: &str, addr: Ipv4Addr) -> u16 {
        let listener = run_in(namespace, || TcpListener::bind((addr, 0)))
            .expect("enter namespace")
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(b"ok");
            }
        });
        port
    }

    #[test]
    fn nodes_reach_each_other_until_isolated_and_again_once_healed() {
        let lab = lab_or_skip_reason(3);
        let n = lab.nodes().to_vec();
        let port = serve(&n[0].namespace, n[0].addr);
        let sw_port = serve(lab.switch_namespace(), lab.switch_addr());
        assert!(reaches(&n[1].namespace, n[0].addr, port));
        assert!(reaches(&n[0].namespace, lab.switch_addr(), sw_port));
        assert!(reaches(lab.switch_namespace(), n[0].addr, port));

        lab.isolate(0).expect("isolate");
        assert!(!reaches(&n[1].namespace, n[0].addr, port));
        assert!(!reaches(lab.switch_namespace(), n[0].addr, port));
        assert!(!reaches(&n[0].namespace, lab.switch_addr(), sw_port));
        // The others still reach each other and the switch.
        let port2 = serve(&n[2].namespace, n[2].addr);
        assert!(reaches(&n[1].namespace, n[2].addr, port2));
        assert!(reaches(&n[1].namespace, lab.switch_addr(), sw_port));

        lab.heal(0).expect("heal");
        let healed = (0..40).any(|_| {
            reaches(&n[1].namespace, n[0].addr, port) || {
                std::thread::sleep(Duration::from_millis(50));
                false
            }
        });
        assert!(healed, "node 0 unreachable after healing");
        assert!(reaches(&n[0].namespace, lab.switch_addr(), sw_port));
    }

    #[test]
    fn a_cut_separates_one_node_from_one_peer_only_both_ways_until_mended() {
        let lab = lab_or_skip_reason(3);
        let n = lab.nodes().to_vec();
        let port: Vec<u16> = n.iter().map(|x| serve(&x.namespace, x.addr)).collect();
        let sw = lab.switch_namespace().to_string();
        let sw_port = serve(&sw, lab.switch_addr());

        // Node 0 from the switch (etcd) only.
        lab.cut(0, Peer::Switch).expect("cut");
        lab.cut(0, Peer::Switch).expect("cutting twice is harmless");
        assert!(!reaches(&n[0].namespace, lab.switch_addr(), sw_port));
        assert!(!reaches(&sw, n[0].addr, port[0]));
        assert!(reaches(&n[0].namespace, n[1].addr, port[1]));
        assert!(reaches(&n[1].namespace, n[0].addr, port[0]));
        assert!(reaches(&n[1].namespace, lab.switch_addr(), sw_port));
        assert!(reaches(&sw, n[2].addr, port[2]));
        lab.mend(0, Peer::Switch).expect("mend");
        lab.mend(0, Peer::Switch)
            .expect("mending twice is harmless");
        assert!(reaches(&n[0].namespace, lab.switch_addr(), sw_port));
        assert!(reaches(&sw, n[0].addr, port[0]));

        // Node 2 from node 0 only.
        lab.cut(2, Peer::Node(0)).expect("cut");
        assert!(!reaches(&n[2].namespace, n[0].addr, port[0]));
        assert!(!reaches(&n[0].namespace, n[2].addr, port[2]));
        assert!(reaches(&n[2].namespace, n[1].addr, port[1]));
        assert!(reaches(&n[2].namespace, lab.switch_addr(), sw_port));
        assert!(reaches(&n[0].namespace, n[1].addr, port[1]));
        lab.mend(2, Peer::Node(0)).expect("mend");
        assert!(reaches(&n[2].namespace, n[0].addr, port[0]));
        assert!(reaches(&n[0].namespace, n[2].addr, port[2]));

        assert!(matches!(
            lab.cut(1, Peer::Node(1)),
            Err(NetLabError::SelfLink { index: 1 })
        ));
        assert!(matches!(
            lab.cut(0, Peer::Node(7)),
            Err(NetLabError::NoNode { index: 7, .. })
        ));
    }

    #[test]
    fn the_root_namespace_cannot_reach_the_lab() {
        let lab = lab_or_skip_reason(1);
        let n = lab.node(0).expect("node").clone();
        let port = serve(&n.namespace, n.addr);
        let addr = SocketAddr::from((n.addr, port));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err());
    }

    #[test]
    fn all_in_one_holds_every_address_locally() {
        let lab = lab_or_skip_reason(2);
        let all = lab.all_in_one().expect("all in one");
        let n = lab.nodes().to_vec();
        let listener = run_in(all.name(), || TcpListener::bind((n[1].addr, 0)))
            .expect("enter")
            .expect("bind the second node's address");
        drop(listener);
        let name = all.name().to_string();
        drop(all);
        assert!(!ip_output(&["netns", "list"]).contains(&name));
    }

    #[test]
    fn dropping_the_lab_deletes_its_namespaces_also_on_panic() {
        let names = std::panic::catch_unwind(|| {
            let lab = lab_or_skip_reason(2);
            let names: Vec<String> = lab
                .nodes()
                .iter()
                .map(|n| n.namespace.clone())
                .chain([lab.switch_namespace().to_string()])
                .collect();
            std::panic::panic_any(names);
        })
        .expect_err("it panicked")
        .downcast::<Vec<String>>()
        .expect("the names");
        let list = ip_output(&["netns", "list"]);
        for name in names.iter() {
            assert!(!list.contains(name.as_str()), "{name} left behind: {list}");
        }
    }

    #[test]
    fn a_process_runs_inside_its_namespace_and_stops_by_pid() {
        let lab = lab_or_skip_reason(1);
        let dir = crate::TestDir::new().expect("dir");
        let log = dir.path().join("sleep.log");
        let mut p = NsProcess::spawn(
            &lab.node(0).expect("node").namespace,
            Path::new("sleep"),
            &["30"],
            &log,
        )
        .expect("spawn");
        let pid = p.pid();
        let own = std::fs::read_link("/proc/self/ns/net").expect("own ns");
        // `ip` enters the namespace, then execs: poll until it has.
        let moved = (0..100).any(|_| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns link");
            link != own || {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
        });
        assert!(moved, "the process stayed in the root namespace");
        assert!(p.running());
        p.stop(Signal::SIGTERM);
        assert!(!p.running());
    }
}
