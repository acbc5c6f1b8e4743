//! systemd units for one host of a multi-host cluster: its agent, its
//! etcd member and a proxy. Pure text.
//!
//! The agent and the etcd supervisor run as root: the agent reads the
//! secrets (0600, root's), writes the password files PostgreSQL reads and
//! owns the data root, and starts PostgreSQL itself as the cluster's OS
//! user (`cluster.os_user`, `postgres`), which never runs as root. The
//! proxy runs as root only to read the secrets, with privileges it cannot
//! raise and a read-only /usr and /etc.

use std::path::Path;

/// The agent's unit name.
pub const AGENT_UNIT: &str = "pgkeel-agent.service";
/// The etcd member's unit name.
pub const ETCD_UNIT: &str = "pgkeel-etcd.service";
/// The proxy's unit name.
pub const PROXY_UNIT: &str = "pgkeel-proxy.service";

/// What the units are written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdSpec {
    /// Cluster name (descriptions only).
    pub cluster: String,
    /// This host's node.
    pub node: String,
    /// Whether this host runs one of the etcd members.
    pub etcd_member: bool,
    /// The `pgkeel` executable on the host (`pgkeel-proxy` beside it).
    pub binary: String,
    /// The configuration file on the host.
    pub config: String,
    /// This node's PostgreSQL data directory on the host.
    pub data_dir: String,
}

/// One unit file: its name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// File name (`pgkeel-agent.service`).
    pub name: &'static str,
    /// Contents.
    pub text: String,
}

/// One word of an `Exec*=` line: bare when it is plain, else double-quoted
/// with `\` and `"` escaped; `%` and `$` doubled so systemd takes them
/// literally.
fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._:=@+-,".contains(c));
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn exec(args: &[&str]) -> String {
    args.iter().map(|a| word(a)).collect::<Vec<_>>().join(" ")
}

/// The units for `spec`: the agent, the etcd member (on member hosts) and
/// the proxy.
pub fn units(spec: &SystemdSpec) -> Vec<Unit> {
    let mut out = vec![];
    let header = |what: &str| {
        format!(
            "# {what} of cluster `{}`, written by `pgkeel export systemd`.\n",
            spec.cluster
        )
    };
    let (after, wants) = if spec.etcd_member {
        (
            format!("network-online.target {ETCD_UNIT}"),
            format!("network-online.target {ETCD_UNIT}"),
        )
    } else {
        (
            "network-online.target".into(),
            "network-online.target".into(),
        )
    };
    let pid_file = Path::new(&spec.data_dir).join("postmaster.pid");
    // Fast shutdown of this node's PostgreSQL, waiting until it is down.
    let stop_pg = format!(
        "f={}; [ -f \"$f\" ] || exit 0; kill -INT \"$(head -n 1 \"$f\")\" 2>/dev/null || exit 0; while [ -f \"$f\" ]; do sleep 0.2; done",
        shell_quote(&pid_file.display().to_string())
    );
    out.push(Unit {
        name: AGENT_UNIT,
        text: format!(
            "{header}\
             [Unit]\n\
             Description=pgkeel agent of node {node}: runs its PostgreSQL, holds or contends for the leader lease, fails over\n\
             After={after}\n\
             Wants={wants}\n\
             \n\
             [Service]\n\
             Type=simple\n\
             # root: the agent reads the secrets and starts PostgreSQL as the\n\
             # cluster's OS user (postgres) itself.\n\
             User=root\n\
             ExecStart={start}\n\
             # PostgreSQL never runs without its agent, which is what fences it: when\n\
             # the agent stops or dies, its PostgreSQL is shut down (fast) before\n\
             # systemd starts the agent again. Only the agent gets SIGTERM (it\n\
             # revokes its lease), PostgreSQL is stopped by the line below.\n\
             KillMode=process\n\
             ExecStopPost=/bin/sh -c {stop}\n\
             Restart=always\n\
             RestartSec=2\n\
             TimeoutStopSec=60\n\
             LimitNOFILE=65536\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            header = header("HA agent"),
            node = spec.node,
            start = exec(&[
                &spec.binary,
                "agent",
                "--config",
                &spec.config,
                "--node",
                &spec.node
            ]),
            stop = word(&stop_pg),
        ),
    });
    if spec.etcd_member {
        out.push(Unit {
            name: ETCD_UNIT,
            text: format!(
                "{header}\
                 [Unit]\n\
                 Description=pgkeel: etcd member on the host of node {node}\n\
                 After=network-online.target\n\
                 Wants=network-online.target\n\
                 # Started by {AGENT_UNIT} too (Wants=), and kept running when the\n\
                 # agent restarts: the other hosts' agents need the quorum.\n\
                 \n\
                 [Service]\n\
                 Type=simple\n\
                 User=root\n\
                 ExecStart={start}\n\
                 Restart=always\n\
                 RestartSec=2\n\
                 TimeoutStopSec=30\n\
                 LimitNOFILE=65536\n\
                 \n\
                 [Install]\n\
                 WantedBy=multi-user.target\n",
                header = header("etcd member"),
                node = spec.node,
                start = exec(&[
                    &spec.binary,
                    "etcd-supervisor",
                    "--config",
                    &spec.config,
                    "--node",
                    &spec.node
                ]),
            ),
        });
    }
    out.push(Unit {
        name: PROXY_UNIT,
        text: format!(
            "{header}\
             [Unit]\n\
             Description=pgkeel proxy: pooling, reads to replicas, writes to the elected primary\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             Type=simple\n\
             # root only to read the secrets (0600); it cannot gain privileges and\n\
             # sees /usr and /etc read-only.\n\
             User=root\n\
             NoNewPrivileges=yes\n\
             ProtectSystem=full\n\
             PrivateTmp=yes\n\
             ExecStart={start}\n\
             # SIGHUP re-reads the [proxy] section and the secrets without dropping clients.\n\
             ExecReload=/bin/kill -HUP $MAINPID\n\
             # Clients get up to 10 s to finish their transactions on stop.\n\
             TimeoutStopSec=20\n\
             Restart=always\n\
             RestartSec=1\n\
             LimitNOFILE=65536\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            header = header("Pooling proxy"),
            start = exec(&[&spec.binary, "proxy", "--config", &spec.config]),
        ),
    });
    out
}

/// `s` as one POSIX shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(member: bool) -> SystemdSpec {
        SystemdSpec {
            cluster: "prod".into(),
            node: "pg2".into(),
            etcd_member: member,
            binary: "/usr/local/bin/pgkeel".into(),
            config: "/etc/pgkeel/pgkeel.toml".into(),
            data_dir: "/var/lib/pgkeel/nodes/pg2/data".into(),
        }
    }

    fn line<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
        text.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    #[test]
    fn member_host_gets_three_units_with_the_agent_after_etcd() {
        let u = units(&spec(true));
        let names: Vec<&str> = u.iter().map(|u| u.name).collect();
        assert_eq!(names, [AGENT_UNIT, ETCD_UNIT, PROXY_UNIT]);
        let agent = &u[0].text;
        assert_eq!(
            line(agent, "ExecStart"),
            ["/usr/local/bin/pgkeel agent --config /etc/pgkeel/pgkeel.toml --node pg2"]
        );
        assert_eq!(
            line(agent, "After"),
            ["network-online.target pgkeel-etcd.service"]
        );
        assert_eq!(
            line(agent, "Wants"),
            ["network-online.target pgkeel-etcd.service"]
        );
        assert_eq!(line(agent, "User"), ["root"]);
        assert_eq!(line(agent, "Restart"), ["always"]);
        assert_eq!(line(agent, "KillMode"), ["process"]);
        let stop = line(agent, "ExecStopPost");
        assert!(
            stop[0].contains("f='/var/lib/pgkeel/nodes/pg2/data/postmaster.pid'"),
            "{stop:?}"
        );
        assert!(stop[0].contains("\\\"$$f\\\""), "{stop:?}");
        let etcd = &u[1].text;
        assert_eq!(
            line(etcd, "ExecStart"),
            ["/usr/local/bin/pgkeel etcd-supervisor --config /etc/pgkeel/pgkeel.toml --node pg2"]
        );
        assert_eq!(line(etcd, "Restart"), ["always"]);
        let proxy = &u[2].text;
        assert_eq!(
            line(proxy, "ExecStart"),
            ["/usr/local/bin/pgkeel proxy --config /etc/pgkeel/pgkeel.toml"]
        );
        assert_eq!(line(proxy, "NoNewPrivileges"), ["yes"]);
    }

    #[test]
    fn host_without_an_etcd_member_gets_no_etcd_unit() {
        let u = units(&spec(false));
        assert!(u.iter().all(|u| u.name != ETCD_UNIT));
        assert_eq!(line(&u[0].text, "Wants"), ["network-online.target"]);
    }

    #[test]
    fn odd_paths_are_quoted_and_escaped() {
        assert_eq!(word("/opt/pg keel/bin"), "\"/opt/pg keel/bin\"");
        assert_eq!(word("50%"), "\"50%%\"");
        assert_eq!(word("a\"b"), "\"a\\\"b\"");
        assert_eq!(word("/usr/bin/x"), "/usr/bin/x");
    }
}
