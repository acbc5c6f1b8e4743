//! Asking a running node what it is doing: role, WAL positions, timeline,
//! its standbys (`pg_stat_replication`), its WAL receiver and its slots.
//! Everything the guide's monitoring SQL answers, in one round trip each.

use std::path::Path;
use std::time::Duration;
use tokio_postgres::{Client, NoTls, Row};

use pgkeel_core::Lsn;
use pgkeel_core::status::ArchiveStatus;

use crate::PgError;

/// An open superuser session on one node, over its private Unix socket.
pub struct NodeConn {
    node: String,
    client: Client,
}

/// Opens a session as `user` through the Unix socket in `socket_dir`
/// (peer authentication: no password involved).
pub async fn connect(
    node: &str,
    socket_dir: &Path,
    port: u16,
    user: &str,
) -> Result<NodeConn, PgError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(user)
        .dbname("postgres")
        .application_name("pgkeel")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| PgError::Connect {
            node: node.to_string(),
            port,
            socket_dir: socket_dir.to_path_buf(),
            source,
        })?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; errors
        // surface on the next query through the client.
        let _ = connection.await;
    });
    Ok(NodeConn {
        node: node.to_string(),
        client,
    })
}

/// Opens a session over TCP with a password (another member, possibly on
/// another host).
pub async fn connect_tcp(
    node: &str,
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<NodeConn, PgError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .application_name("pgkeel")
        .connect_timeout(timeout);
    let connect = tokio::time::timeout(timeout, config.connect(NoTls));
    let (client, connection) = match connect.await {
        Ok(result) => result.map_err(|source| PgError::Connect {
            node: node.to_string(),
            port,
            socket_dir: host.into(),
            source,
        })?,
        Err(_) => {
            return Err(PgError::Unexpected {
                node: node.to_string(),
                what: "connection",
                detail: format!(
                    "no answer from {host}:{port} within {} ms",
                    timeout.as_millis()
                ),
            });
        }
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(NodeConn {
        node: node.to_string(),
        client,
    })
}

impl NodeConn {
    /// Node this session belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The underlying client, for queries this module does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn sql_err(
        &self,
        what: &'static str,
    ) -> impl FnOnce(tokio_postgres::Error) -> PgError + '_ {
        move |source| PgError::Sql {
            node: self.node.clone(),
            what,
            source,
        }
    }

    pub(crate) async fn query(&self, what: &'static str, sql: &str) -> Result<Vec<Row>, PgError> {
        self.client
            .query(sql, &[])
            .await
            .map_err(self.sql_err(what))
    }

    fn lsn(&self, what: &'static str, text: Option<String>) -> Result<Option<Lsn>, PgError> {
        text.map(|t| {
            t.parse()
                .map_err(|e: pgkeel_core::lsn::LsnParseError| PgError::Unexpected {
                    node: self.node.clone(),
                    what,
                    detail: e.to_string(),
                })
        })
        .transpose()
    }

    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
        &self,
        what: &'static str,
        row: &'r Row,
        idx: usize,
    ) -> Result<T, PgError> {
        row.try_get(idx).map_err(self.sql_err(what))
    }

    /// Role, WAL positions and timeline of this node.
    pub async fn probe(&self) -> Result<NodeProbe, PgError> {
        const WHAT: &str = "node probe";
        let rows = self
            .query(
                WHAT,
                "SELECT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                        pg_last_wal_receive_lsn()::text,
                        pg_last_wal_replay_lsn()::text,
                        CASE WHEN pg_is_in_recovery()
                             THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                                           (SELECT timeline_id FROM pg_control_checkpoint()))
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
                        END,
                        current_setting('synchronous_standby_names'),
                        current_setting('server_version_num')::int",
            )
            .await?;
        let row = rows.first().ok_or_else(|| PgError::Unexpected {
            node: self.node.clone(),
            what: WHAT,
            detail: "no row".into(),
        })?;
        let timeline: Option<i32> = self.get(WHAT, row, 4)?;
        let version: i32 = self.get(WHAT, row, 6)?;
        Ok(NodeProbe {
            in_recovery: self.get(WHAT, row, 0)?,
            current_lsn: self.lsn(WHAT, self.get(WHAT, row, 1)?)?,
            receive_lsn: self.lsn(WHAT, self.get(WHAT, row, 2)?)?,
            replay_lsn: self.lsn(WHAT, self.get(WHAT, row, 3)?)?,
            timeline: timeline.and_then(|t| u32::try_from(t).ok()),
            synchronous_standby_names: self.get(WHAT, row, 5)?,
            server_version_num: u32::try_from(version).unwrap_or(0),
        })
    }

    /// The primary's view of its standbys.
    pub async fn replication(&self) -> Result<Vec<ReplicationRow>, PgError> {
        const WHAT: &str = "pg_stat_replication query";
        let rows = self
            .query(
                WHAT,
                "SELECT application_name, client_addr::text, state,
                        sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
                        extract(epoch FROM write_lag)::float8,
                        extract(epoch FROM flush_lag)::float8,
                        extract(epoch FROM replay_lag)::float8,
                        sync_state, sync_priority
                   FROM pg_stat_replication ORDER BY application_name",
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicationRow {
                    application_name: self.get(WHAT, r, 0)?,
                    client_addr: self.get(WHAT, r, 1)?,
                    state: self.get(WHAT, r, 2)?,
                    sent_lsn: self.lsn(WHAT, self.get(WHAT, r, 3)?)?,
                    write_lsn: self.lsn(WHAT, self.get(WHAT, r, 4)?)?,
                    flush_lsn: self.lsn(WHAT, self.get(WHAT, r, 5)?)?,
                    replay_lsn: self.lsn(WHAT, self.get(WHAT, r, 6)?)?,
                    write_lag: self.get(WHAT, r, 7)?,
                    flush_lag: self.get(WHAT, r, 8)?,
                    replay_lag: self.get(WHAT, r, 9)?,
                    sync_state: self.get(WHAT, r, 10)?,
                    sync_priority: self.get(WHAT, r, 11)?,
                })
            })
            .collect()
    }

    /// A standby's WAL receiver, if it has one running.
    pub async fn wal_receiver(&self) -> Result<Option<WalReceiverRow>, PgError> {
        const WHAT: &str = "pg_stat_wal_receiver query";
        let rows = self
            .query(
                WHAT,
                "SELECT status, receive_start_lsn::text, receive_start_tli,
                        written_lsn::text, flushed_lsn::text, received_tli,
                        extract(epoch FROM now() - last_msg_receipt_time)::float8,
                        sender_host, sender_port, slot_name
                   FROM pg_stat_wal_receiver",
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let tli: Option<i32> = self.get(WHAT, r, 5)?;
        let start_tli: Option<i32> = self.get(WHAT, r, 2)?;
        let port: Option<i32> = self.get(WHAT, r, 8)?;
        Ok(Some(WalReceiverRow {
            status: self.get(WHAT, r, 0)?,
            receive_start_lsn: self.lsn(WHAT, self.get(WHAT, r, 1)?)?,
            receive_start_tli: start_tli.and_then(|t| u32::try_from(t).ok()),
            written_lsn: self.lsn(WHAT, self.get(WHAT, r, 3)?)?,
            flushed_lsn: self.lsn(WHAT, self.get(WHAT, r, 4)?)?,
            received_tli: tli.and_then(|t| u32::try_from(t).ok()),
            last_msg_age_seconds: self.get(WHAT, r, 6)?,
            sender_host: self.get(WHAT, r, 7)?,
            sender_port: port.and_then(|p| u16::try_from(p).ok()),
            slot_name: self.get(WHAT, r, 9)?,
        }))
    }

    /// The WAL archiver's counters (`pg_stat_archiver`), `None` when
    /// `archive_mode` is off or on a standby (which archives nothing with
    /// `archive_mode = on`).
    pub async fn archiver(&self) -> Result<Option<ArchiveStatus>, PgError> {
        const WHAT: &str = "pg_stat_archiver query";
        let rows = self
            .query(
                WHAT,
                "SELECT archived_count, last_archived_wal,
                        extract(epoch FROM now() - last_archived_time)::float8,
                        failed_count, last_failed_wal,
                        extract(epoch FROM now() - last_failed_time)::float8,
                        coalesce(last_failed_time > last_archived_time
                                 OR (last_failed_time IS NOT NULL AND last_archived_time IS NULL), false)
                   FROM pg_stat_archiver
                  WHERE current_setting('archive_mode') <> 'off' AND NOT pg_is_in_recovery()",
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let archived: i64 = self.get(WHAT, r, 0)?;
        let failed: i64 = self.get(WHAT, r, 3)?;
        Ok(Some(ArchiveStatus {
            archived_count: u64::try_from(archived).unwrap_or(0),
            last_archived_wal: self.get(WHAT, r, 1)?,
            last_archived_age_seconds: self.get(WHAT, r, 2)?,
            failed_count: u64::try_from(failed).unwrap_or(0),
            last_failed_wal: self.get(WHAT, r, 4)?,
            last_failed_age_seconds: self.get(WHAT, r, 5)?,
            failing: self.get(WHAT, r, 6)?,
            // Read from the node's log by the caller, which knows where it is.
            reason: None,
        }))
    }

    /// Replication slots with the WAL each one holds back.
    pub async fn slots(&self) -> Result<Vec<SlotRow>, PgError> {
        const WHAT: &str = "pg_replication_slots query";
        let rows = self
            .query(
                WHAT,
                "SELECT slot_name::text, slot_type, active, restart_lsn::text,
                        CASE WHEN restart_lsn IS NULL THEN NULL ELSE
                          pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                               ELSE pg_current_wal_lsn() END, restart_lsn)::int8 END,
                        wal_status
                   FROM pg_replication_slots ORDER BY slot_name",
            )
            .await?;
        rows.iter()
            .map(|r| {
                let retained: Option<i64> = self.get(WHAT, r, 4)?;
                Ok(SlotRow {
                    name: self.get(WHAT, r, 0)?,
                    slot_type: self.get(WHAT, r, 1)?,
                    active: self.get(WHAT, r, 2)?,
                    restart_lsn: self.lsn(WHAT, self.get(WHAT, r, 3)?)?,
                    retained_bytes: retained.map(|b| u64::try_from(b).unwrap_or(0)),
                    wal_status: self.get(WHAT, r, 5)?,
                })
            })
            .collect()
    }
}

/// What `probe()` learns.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeProbe {
    /// Standby (in recovery) or primary.
    pub in_recovery: bool,
    /// Primary only: current WAL write position.
    pub current_lsn: Option<Lsn>,
    /// Standby: last WAL received and flushed.
    pub receive_lsn: Option<Lsn>,
    /// Standby: last WAL replayed.
    pub replay_lsn: Option<Lsn>,
    /// Timeline (primary: of its current WAL; standby: being received).
    pub timeline: Option<u32>,
    /// `synchronous_standby_names` in effect.
    pub synchronous_standby_names: String,
    /// e.g. 150018.
    pub server_version_num: u32,
}

/// One row of the primary's `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplicationRow {
    /// The standby's `application_name` (pgkeel: its node name).
    pub application_name: String,
    /// Its address.
    pub client_addr: Option<String>,
    /// `startup`, `catchup`, `streaming`, ...
    pub state: Option<String>,
    /// WAL sent.
    pub sent_lsn: Option<Lsn>,
    /// WAL written by the standby.
    pub write_lsn: Option<Lsn>,
    /// WAL flushed by the standby.
    pub flush_lsn: Option<Lsn>,
    /// WAL replayed by the standby.
    pub replay_lsn: Option<Lsn>,
    /// Seconds.
    pub write_lag: Option<f64>,
    /// Seconds.
    pub flush_lag: Option<f64>,
    /// Seconds.
    pub replay_lag: Option<f64>,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: Option<String>,
    /// Priority in `FIRST n` mode.
    pub sync_priority: Option<i32>,
}

/// A standby's `pg_stat_wal_receiver`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WalReceiverRow {
    /// `streaming`, `waiting`, ...
    pub status: String,
    /// Where streaming (re)started.
    pub receive_start_lsn: Option<Lsn>,
    /// Timeline streaming (re)started on.
    pub receive_start_tli: Option<u32>,
    /// Written to disk.
    pub written_lsn: Option<Lsn>,
    /// Flushed to disk.
    pub flushed_lsn: Option<Lsn>,
    /// Timeline being received.
    pub received_tli: Option<u32>,
    /// Seconds since the last message from the primary.
    pub last_msg_age_seconds: Option<f64>,
    /// Upstream host.
    pub sender_host: Option<String>,
    /// Upstream port.
    pub sender_port: Option<u16>,
    /// Slot in use.
    pub slot_name: Option<String>,
}

/// One replication slot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotRow {
    /// Name.
    pub name: String,
    /// `physical` / `logical`.
    pub slot_type: String,
    /// In use by a WAL sender.
    pub active: bool,
    /// Oldest WAL it keeps.
    pub restart_lsn: Option<Lsn>,
    /// Bytes of WAL it keeps.
    pub retained_bytes: Option<u64>,
    /// `reserved` / `extended` / `unreserved` / `lost`.
    pub wal_status: Option<String>,
}
