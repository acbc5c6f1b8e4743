//! One round trip that tells what a node is: primary or standby, writable
//! or not, and how far its WAL goes. Discovery and health checks both use
//! it.

use std::time::Duration;

use pgkeel_core::Lsn;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::{Error, ErrorKind, NodeAddr, Result};

/// The probe. `transaction_read_only` in a fresh session is what libpq's
/// `target_session_attrs=read-write` checks: `on` during recovery and on a
/// primary fenced with `default_transaction_read_only`.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     current_setting('transaction_read_only'), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_flush_lsn()) END";

/// What a probe found out about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// `pg_is_in_recovery()`: a standby.
    pub in_recovery: bool,
    /// New transactions are read-only (standby, or fenced primary).
    pub read_only: bool,
    /// Flush position on a primary, replay position on a standby.
    pub position: Option<Lsn>,
    /// A primary's timeline (from its current WAL file name, right even
    /// just after a promotion).
    pub timeline: Option<u32>,
}

impl Probe {
    /// Accepts writes: not in recovery and not read-only.
    pub fn writable(&self) -> bool {
        !self.in_recovery && !self.read_only
    }
}

/// Opens a session to `addr` within `timeout` (the whole start-up, not just
/// the TCP connect) and drives it in the background.
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    addr: &NodeAddr,
    timeout: Duration,
) -> Result<Client> {
    let attempt = tokio::time::timeout(timeout, pg.connect(NoTls)).await;
    let (client, connection) = match attempt {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            let err = Error::from_pg("connecting", addr, e);
            let kind = if err.kind() == ErrorKind::Auth {
                ErrorKind::Auth
            } else {
                ErrorKind::Connect
            };
            return Err(Error::with_source(kind, err.to_string(), err));
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Connect,
                format!("connecting to {addr} timed out after {timeout:?}"),
            ));
        }
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs the probe on `client` within `timeout`.
pub(crate) async fn probe(client: &Client, addr: &NodeAddr, timeout: Duration) -> Result<Probe> {
    let messages = match tokio::time::timeout(timeout, client.simple_query(PROBE_SQL)).await {
        Ok(Ok(messages)) => messages,
        Ok(Err(e)) => return Err(Error::from_pg("probing", addr, e)),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::ConnectionLost,
                format!("probing {addr} timed out after {timeout:?}"),
            ));
        }
    };
    let row = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let cols = row.map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)]);
    cols.ok_or_else(|| "no row".to_string())
        .and_then(parse_probe)
        .map_err(|why| {
            Error::new(
                ErrorKind::Query,
                format!("unexpected probe answer from {addr}: {why}"),
            )
        })
}

/// Parses the probe's text columns.
pub(crate) fn parse_probe(cols: [Option<&str>; 4]) -> std::result::Result<Probe, String> {
    let in_recovery = match cols[0] {
        Some("t") => true,
        Some("f") => false,
        other => return Err(format!("pg_is_in_recovery() = {other:?}")),
    };
    let read_only = match cols[1] {
        Some("on") => true,
        Some("off") => false,
        other => return Err(format!("transaction_read_only = {other:?}")),
    };
    let position = cols[2]
        .map(|t| t.parse::<Lsn>().map_err(|e| e.to_string()))
        .transpose()?;
    let timeline = cols[3]
        .map(|name| {
            name.get(..8)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("WAL file name {name:?}"))
        })
        .transpose()?;
    Ok(Probe {
        in_recovery,
        read_only,
        position,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_and_standby_answers() {
        let p = parse_probe([
            Some("f"),
            Some("off"),
            Some("0/3000148"),
            Some("000000020000000000000003"),
        ]);
        assert_eq!(
            p,
            Ok(Probe {
                in_recovery: false,
                read_only: false,
                position: Some(Lsn(0x300_0148)),
                timeline: Some(2)
            })
        );
        assert!(p.is_ok_and(|p| p.writable()));
        let s = parse_probe([Some("t"), Some("on"), Some("0/10"), None]);
        assert!(
            s.as_ref()
                .is_ok_and(|s| !s.writable() && s.timeline.is_none())
        );
        let fenced = parse_probe([Some("f"), Some("on"), Some("0/10"), Some("00000001AB")]);
        assert!(fenced.is_ok_and(|p| !p.writable()));
    }

    #[test]
    fn garbage_is_reported() {
        assert!(parse_probe([None, Some("off"), None, None]).is_err());
        assert!(parse_probe([Some("f"), Some("maybe"), None, None]).is_err());
        assert!(parse_probe([Some("f"), Some("off"), Some("x"), None]).is_err());
        assert!(parse_probe([Some("f"), Some("off"), None, Some("zz")]).is_err());
    }
}
