//! The annotated default configuration `pgkeel init` writes.

/// A `pgkeel.toml` listing every key with its default and what it does.
/// Loading it yields exactly the built-in defaults (tested), so users can
/// start from it and change only what they need.
pub fn annotated_default() -> &'static str {
    r#"# pgkeel.toml: one PostgreSQL primary with streaming replicas.
# Every key below shows its default. Unknown keys are an error.
# Any key can be overridden from the environment as PGKEEL_<SECTION>_<KEY>,
# e.g. PGKEEL_REPLICATION_MODE=async or PGKEEL_CLUSTER_BASE_PORT=6000
# (PGKEEL_DIR is short for PGKEEL_CLUSTER_DATA_DIR); flags override both.

[cluster]
# PostgreSQL's cluster_name, shown in `ps` and logs; also the namespace of
# this cluster's keys in etcd.
name = "pgkeel"
# Everything pgkeel writes lives here: nodes/<name>/data, logs, secrets/.
data_dir = "./pgkeel-data"
# OS user owning the data and running PostgreSQL (it refuses to run as
# root). Default: "postgres" when pgkeel runs as root, else you.
# os_user = "postgres"
# PostgreSQL's bin directory. Default: found through PATH, `pg_config
# --bindir` or /usr/lib/postgresql/<newest>/bin.
# bin_dir = "/usr/lib/postgresql/15/bin"
# When no [[nodes]] are listed, pgkeel generates `primary`, `replica1`, ...
# on consecutive ports from base_port, all listening on `host`.
# replicas = 2
# base_port = 5432
host = "127.0.0.1"

[replication]
# async : commits never wait for standbys (a primary crash can lose the
#         last commits);
# sync  : FIRST n (...): the first sync_count standbys confirm each commit;
# quorum: ANY n (...): any sync_count standbys confirm each commit.
mode = "quorum"
# Standbys that must confirm each commit (sync/quorum); at most the number
# of replicas.
sync_count = 1
# WAL kept for standbys regardless of slots, so a lagging standby or
# pg_rewind can still find it.
wal_keep_size = "1GB"
# Most WAL a replication slot may hold back. A slot past it is invalidated
# instead of filling the primary's disk.
max_slot_wal_keep_size = "8GB"

[roles]
# Superuser. Default: the OS user's name. Reached over the local socket
# (peer authentication) or over TCP with its generated password.
# superuser = "postgres"
# Role standbys stream WAL with; it can do nothing else.
replication = "replicator"
# Role applications connect as; owns `database`.
app = "app"
database = "app"
# Passwords are generated at bootstrap and kept in <data_dir>/secrets/ with
# mode 0600; `pgkeel url` prints connection URLs carrying them.

[access]
# Networks allowed to connect over TCP (SCRAM-SHA-256 only). Replication
# connections are further limited to the members' own addresses.
networks = ["127.0.0.1/32", "::1/128"]

[tuning]
# Memory one node may use: "auto" divides this machine's memory by the
# nodes running on it; or a size such as "4GB". shared_buffers (25%),
# effective_cache_size (75%), maintenance_work_mem and work_mem follow it.
memory = "auto"
max_connections = 200

[ha]
# Seconds the leader lease lives without renewal: a crashed primary is
# replaced about this long after it died. A primary that cannot renew its
# lease stops accepting writes before it expires.
ttl = 3.0
# Seconds between two runs of each agent's HA loop (a change of the leader
# key wakes the agents at once).
loop_wait = 1.0
# Seconds an etcd request may take before it counts as failed.
retry_timeout = 1.0
# In async mode, a replica more than this many bytes behind never takes
# over automatically.
maximum_lag_on_failover = 16777216
# sync/quorum: with no healthy synchronous standby left, block writes (true)
# rather than let the primary commit alone (false).
strict_sync = false
# Token for the agents' POST endpoints (/switchover, /failover). Empty:
# generated at bootstrap into <data_dir>/secrets/api.token.
api_token = ""

[etcd]
# Client URLs of an existing etcd cluster (3 or 5 members for production).
# Empty: pgkeel runs and supervises one local etcd member itself, on
# client_port (default: first node's port + 3000) and client_port + 1.
endpoints = []
# client_port = 8432
# Keys live under <namespace>/<cluster.name>/, so one etcd serves many
# clusters.
namespace = "/pgkeel"

[proxy]
# `pgkeel up` starts a pooling proxy: reads (outside explicit transactions)
# go to healthy replicas, everything else to the primary, which it follows
# through failovers. Applications connect to it instead of a node.
enabled = true
# Address it listens on ("0.0.0.0" for every interface).
host = "127.0.0.1"
# Client port (default: first node's port + 1000, i.e. 6432) and the HTTP
# admin port serving /metrics and /pools (default: port + 1).
# port = 6432
# admin_port = 6433
# "transaction": a server connection per transaction, reads split to
# replicas; "session": a primary connection per client.
pool_mode = "transaction"
# Server connections per (user, database, node).
pool_size = 20
# Clients connected at once; more are refused (53300).
max_clients = 1000
# Seconds a client waits for a free server connection before an error.
queue_wait = 5.0
# Seconds a client may take from connecting to being logged in (TLS,
# startup, password exchange), like PostgreSQL's authentication_timeout.
login_timeout = 60.0
# Seconds an unused pooled server connection is kept before it is closed
# (pools shrink after a burst), and the age at which a server connection
# is closed once idle (long-lived backends grow; 0: never, for either).
server_idle_timeout = 600.0
server_lifetime = 3600.0
# Seconds a client may stay idle inside a transaction before the proxy
# disconnects it (FATAL 25P03) and its transaction is rolled back: it holds
# a server connection, locks and vacuum's horizon meanwhile (0: never).
idle_transaction_timeout = 0.0
# Replicas further behind than this (WAL) or whose last replayed
# transaction is older than this many seconds take no reads (0: no limit).
max_replica_lag = "16MB"
max_replica_lag_seconds = 10.0
# Among usable replicas: "sticky" (each client keeps one replica while it
# stays usable: monotonic reads; clients spread evenly), "round-robin"
# (statement by statement) or "least-outstanding" (fewest in flight).
replica_choice = "sticky"
# Without a usable replica reads go to the "primary", or fail ("error").
no_replica = "primary"
# Functions a read may call and still go to a replica (built-in read-only
# functions are known already); anything else goes to the primary.
# SIGHUP applies a changed list to the next statement.
read_only_functions = []
# Threads serving clients (1: one event loop, like PgBouncer).
threads = 1
# Run the proxy as a batch task (SCHED_BATCH): its wake-ups do not preempt
# PostgreSQL or the clients, so under load it serves many sockets per
# wake-up (a third less CPU per statement at 32 clients).
sched_batch = true
# Reach nodes on this machine through their Unix socket (SCRAM, like TCP)
# instead of loopback TCP: much less CPU per statement.
server_socket = true
# TLS for clients: a PEM certificate chain and key (unset: TLS declined),
# and whether plaintext logins are still accepted ("allow") or not
# ("require"). The proxy reaches the nodes in plaintext on their network.
# SIGHUP reads the files again (renewed certificates: new connections get
# them; a file that does not load keeps the old one); turning TLS on or off
# and tls_mode need a restart.
# tls_cert = "/etc/pgkeel/proxy.crt"
# tls_key = "/etc/pgkeel/proxy.key"
tls_mode = "allow"
# Let roles other than the application role log in: their stored secret
# is looked up on the primary (as the superuser, cached 30 s) and SCRAM is
# passed through to the nodes.
auth_query = false
# Ask roles whose stored secret is an md5 hash for MD5; otherwise only
# SCRAM-SHA-256 is offered.
allow_md5 = false

# Members. The first is the bootstrap primary. Names are lower-case
# identifiers: each is also the member's replication slot name and its
# application_name. Listing nodes replaces replicas/base_port above.
# [[nodes]]
# name = "pg1"
# host = "10.0.0.11"
# port = 5432
# api_port = 7432        # its agent's REST API (default: port + 2000)
# nofailover = false     # true: never promoted automatically

# Extra postgresql.conf parameters, written after pgkeel's own. Parameters
# replication depends on (port, wal_level, primary_conninfo, ...) are refused.
[parameters]
# log_min_duration_statement = "250ms"
# jit = false
"#
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigSources, load};

    #[test]
    fn template_is_exactly_the_defaults() {
        let parsed: Config = toml::from_str(annotated_default()).expect("template parses");
        assert_eq!(parsed, Config::default());
        let loaded = load(&ConfigSources {
            file: Some(("template".into(), annotated_default().into())),
            ..Default::default()
        })
        .expect("template is valid");
        let defaults = load(&ConfigSources::default()).expect("defaults valid");
        assert_eq!(loaded, defaults);
    }

    #[test]
    fn template_mentions_every_key() {
        let defaults = toml::to_string(&Config::default()).expect("serializable");
        for line in defaults.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    annotated_default().contains(key.trim()),
                    "{key} undocumented"
                );
            }
        }
        for optional in [
            "os_user",
            "bin_dir",
            "replicas",
            "base_port",
            "superuser",
            "client_port",
            "admin_port",
            "tls_cert",
            "tls_key",
            "api_port",
            "nofailover",
        ] {
            assert!(
                annotated_default().contains(optional),
                "{optional} undocumented"
            );
        }
    }
}
