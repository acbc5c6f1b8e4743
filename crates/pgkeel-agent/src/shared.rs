//! State shared between the agent's loop, its lease keeper, its fencing
//! watchdog and its REST API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use pgkeel_dcs::{ClusterView, LeaseHandle, MemberState};
use serde::Serialize;

/// What the REST API reports; refreshed every loop.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// This member as published.
    pub member: MemberState,
    /// This agent holds the leader key.
    pub leader: bool,
    /// The last cluster view read from etcd.
    pub view: Option<ClusterView>,
    /// etcd answered the last loop.
    pub dcs_ok: bool,
    /// Last decision, for humans.
    pub last_actions: Vec<String>,
    /// Replica lag behind the primary in bytes, when known.
    pub lag_bytes: Option<u64>,
    /// Seconds since the agent started.
    pub uptime_seconds: f64,
    /// The leader this replica promised not to replace (failsafe: that
    /// leader lost etcd but reaches every member) and the milliseconds the
    /// promise still runs; read when asked, not per loop.
    pub failsafe_promise: Option<(String, u64)>,
}

/// Shared agent state.
pub struct Shared {
    /// Node name.
    pub node: String,
    /// The current lease.
    pub lease: Mutex<Option<LeaseHandle>>,
    /// When the last successful renewal was *sent* (conservative: etcd
    /// restarted the TTL no earlier than that).
    pub renewed_at: Mutex<Option<Instant>>,
    /// This agent believes it holds the leader key.
    pub is_leader: AtomicBool,
    /// The cluster follows another one (a standby cluster): nothing of its
    /// own to back up.
    pub following: AtomicBool,
    /// Lease TTL.
    pub ttl: Duration,
    /// Safety margin: a leader whose lease is older than `ttl - margin`
    /// fences itself.
    pub margin: Duration,
    /// REST snapshot.
    pub snapshot: RwLock<Snapshot>,
    /// Last completed loop.
    pub last_loop: Mutex<Instant>,
    /// Wakes the loop early (REST requests, watch events).
    pub wake: tokio::sync::Notify,
    /// Agent start.
    pub started: Instant,
    /// Leader: until when every other member's failsafe confirmation
    /// covers it (counted from when the confirmations were requested).
    pub failsafe_valid_until: Mutex<Option<Instant>>,
    /// Replica: until when it promised a leader (by name) not to take over.
    pub failsafe_promise: Mutex<Option<(String, Instant)>>,
    /// Leader: what the backup scheduler last saw (for /metrics).
    pub backups: Mutex<Option<BackupsSeen>>,
}

/// The repository as the leader's backup scheduler last read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupsSeen {
    /// Start of the newest backup (seconds since the epoch).
    pub newest_start: Option<i64>,
    /// Start of the newest full backup.
    pub newest_full_start: Option<i64>,
    /// Why the last scheduled backup failed, when it did.
    pub last_error: Option<String>,
}

impl Shared {
    /// New state for `node`.
    pub fn new(node: &str, ttl: Duration, margin: Duration) -> Self {
        Shared {
            node: node.to_string(),
            lease: Mutex::new(None),
            renewed_at: Mutex::new(None),
            is_leader: AtomicBool::new(false),
            following: AtomicBool::new(false),
            ttl,
            margin,
            snapshot: RwLock::new(Snapshot::default()),
            last_loop: Mutex::new(Instant::now()),
            wake: tokio::sync::Notify::new(),
            started: Instant::now(),
            failsafe_valid_until: Mutex::new(None),
            failsafe_promise: Mutex::new(None),
            backups: Mutex::new(None),
        }
    }

    /// The lease, if one is held and was renewed recently enough to act on.
    pub fn valid_lease(&self) -> Option<LeaseHandle> {
        let renewed = self.renewed_at.lock().ok().and_then(|r| *r)?;
        if renewed.elapsed() >= self.ttl.saturating_sub(self.margin) {
            return None;
        }
        self.lease.lock().ok().and_then(|l| *l)
    }

    /// All other members confirmed this node as leader recently enough
    /// (failsafe), so it may run as a primary without a valid lease. It
    /// outlives the leader flag on purpose: the keeper clears that flag the
    /// moment it finds the lease expired (etcd reachable again), and the
    /// members' promises still cover the primary until it holds a new
    /// lease and the key.
    pub fn failsafe_ok(&self) -> bool {
        self.failsafe_valid_until
            .lock()
            .ok()
            .and_then(|u| *u)
            .is_some_and(|until| Instant::now() < until)
    }

    /// The promise in force, if any: the leader and the time it still runs.
    pub fn promise(&self) -> Option<(String, Duration)> {
        let (leader, until) = self.failsafe_promise.lock().ok()?.clone()?;
        let left = until.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some((leader, left))
    }

    /// Replica: a failsafe promise is in force.
    pub fn failsafe_hold(&self) -> bool {
        self.failsafe_promise
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .is_some_and(|(_, until)| Instant::now() < until)
    }

    /// Whether this agent acts as leader.
    pub fn leader(&self) -> bool {
        self.is_leader.load(Ordering::SeqCst)
    }

    /// Records leadership.
    pub fn set_leader(&self, value: bool) {
        self.is_leader.store(value, Ordering::SeqCst);
    }

    /// Whether the cluster follows another (a standby cluster).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failsafe_cover_outlives_the_leader_flag_until_it_expires() {
        let shared = Shared::new(
            "primary",
            Duration::from_secs(3),
            Duration::from_millis(750),
        );
        assert!(!shared.failsafe_ok());
        shared.set_leader(true);
        if let Ok(mut until) = shared.failsafe_valid_until.lock() {
            *until = Some(Instant::now() + Duration::from_millis(200));
        }
        // The keeper found the lease expired: no longer leader, still covered.
        shared.set_leader(false);
        assert!(shared.failsafe_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(!shared.failsafe_ok());
    }
}
