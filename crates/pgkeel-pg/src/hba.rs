//! `pg_hba.conf` and `pg_ident.conf`: SCRAM only over TCP, replication only
//! for the replication role from member addresses, no `trust` anywhere.

use std::fmt::Write;
use std::net::IpAddr;

/// Who may connect how.
#[derive(Debug, Clone)]
pub struct HbaInput<'a> {
    /// The superuser role, reachable over the local socket by peer
    /// authentication (mapped from the OS user and root).
    pub superuser: &'a str,
    /// OS users allowed to log in as the superuser over the socket.
    pub local_os_users: &'a [String],
    /// The role standbys stream with.
    pub replication_role: &'a str,
    /// Addresses of every member (replication may come only from these).
    pub member_addresses: &'a [IpAddr],
    /// Networks allowed ordinary connections (SCRAM).
    pub networks: &'a [String],
}

/// Name of the ident map tying OS users to the superuser.
pub const IDENT_MAP: &str = "pgkeel";

/// Renders `pg_hba.conf`. First match wins, so the order is the policy.
pub fn render_hba(input: &HbaInput<'_>) -> String {
    let mut out = String::from(
        "# pg_hba.conf rendered by pgkeel; regenerated on `pgkeel up`.\n\
         # TYPE  DATABASE     USER              ADDRESS                METHOD\n",
    );
    let su = input.superuser;
    let repl = input.replication_role;
    let _ = writeln!(
        out,
        "local   all          {su:<17} {:<22} peer map={IDENT_MAP}",
        ""
    );
    let _ = writeln!(
        out,
        "local   replication  {su:<17} {:<22} peer map={IDENT_MAP}",
        ""
    );
    // Ordinary roles may use the socket with SCRAM (the pooling proxy
    // does: it is cheaper than loopback TCP); the socket directory is
    // private to the OS user, so this opens nothing TCP does not.
    let _ = writeln!(out, "local   all          {repl:<17} {:<22} reject", "");
    let _ = writeln!(
        out,
        "local   all          all               {:<22} scram-sha-256",
        ""
    );
    for addr in input.member_addresses {
        let cidr = host_cidr(*addr);
        let _ = writeln!(
            out,
            "host    replication  {repl:<17} {cidr:<22} scram-sha-256"
        );
    }
    let _ = writeln!(
        out,
        "host    replication  all               all                    reject"
    );
    let _ = writeln!(
        out,
        "host    all          {repl:<17} all                    reject"
    );
    for net in input.networks {
        let _ = writeln!(
            out,
            "host    all          all               {net:<22} scram-sha-256"
        );
    }
    out
}

/// Renders `pg_ident.conf` mapping the allowed OS users to the superuser.
pub fn render_ident(input: &HbaInput<'_>) -> String {
    let mut out = String::from(
        "# pg_ident.conf rendered by pgkeel.\n# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n",
    );
    for user in input.local_os_users {
        let _ = writeln!(out, "{IDENT_MAP}    {user:<16} {}", input.superuser);
    }
    out
}

fn host_cidr(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        let users = vec!["postgres".to_string(), "root".to_string()];
        let addrs = vec![
            "127.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ];
        let nets = vec!["127.0.0.1/32".to_string()];
        render_hba(&HbaInput {
            superuser: "postgres",
            local_os_users: &users,
            replication_role: "replicator",
            member_addresses: &addrs,
            networks: &nets,
        })
    }

    #[test]
    fn no_trust_and_only_scram_over_tcp() {
        let text = sample();
        assert!(!text.contains("trust"));
        assert!(!text.contains("md5"));
        for line in text.lines().filter(|l| l.starts_with("host")) {
            assert!(
                line.ends_with("scram-sha-256") || line.ends_with("reject"),
                "{line}"
            );
        }
    }

    #[test]
    fn local_socket_is_peer_for_the_superuser_and_scram_for_others() {
        let text = sample();
        let local: Vec<&str> = text.lines().filter(|l| l.starts_with("local")).collect();
        assert!(local[0].contains("postgres") && local[0].ends_with("peer map=pgkeel"));
        assert!(local[2].contains("replicator") && local[2].ends_with("reject"));
        assert!(local[3].contains(" all ") && local[3].ends_with("scram-sha-256"));
        assert_eq!(local.len(), 4, "{text}");
    }

    #[test]
    fn replication_only_for_the_role_from_members() {
        let text = sample();
        let repl: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("host    replication") && l.ends_with("scram-sha-256"))
            .collect();
        assert_eq!(repl.len(), 2);
        assert!(repl.iter().all(|l| l.contains("replicator")));
        assert!(repl[1].contains("10.0.0.2/32"));
        // The catch-all reject comes after the allowed members.
        let reject = text.find("host    replication  all").expect("reject line");
        assert!(reject > text.find("10.0.0.2/32").expect("member line"));
    }
}
