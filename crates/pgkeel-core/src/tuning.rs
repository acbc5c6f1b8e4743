//! The guide's performance settings, scaled to the memory a node may use
//! instead of hard-coded for one machine size.

use crate::size::pg_size;

const MB: u64 = 1 << 20;
const GB: u64 = 1 << 30;

/// Performance parameters for a node allowed `memory_bytes` of RAM with
/// `max_connections` client slots. Follows the usual operator rules: 25% of
/// memory for shared buffers, 75% as the planner's cache estimate, 5% for
/// maintenance, and per-query memory sized so every connection can sort at
/// once without swapping.
pub fn performance_parameters(memory_bytes: u64, max_connections: u32) -> Vec<(String, String)> {
    let memory = memory_bytes.max(256 * MB);
    let shared_buffers = round_mb((memory / 4).clamp(128 * MB, 16 * GB));
    let effective_cache = round_mb((memory * 3 / 4).max(shared_buffers));
    let maintenance = round_mb((memory / 20).clamp(64 * MB, 2 * GB));
    let connections = u64::from(max_connections.max(1));
    let work_mem = round_mb(((memory / 4) / (connections * 2)).clamp(4 * MB, GB));
    // wal_buffers: 1/32 of shared_buffers capped at one 16MB segment, as
    // PostgreSQL's own auto-tuning does.
    let wal_buffers = round_mb((shared_buffers / 32).clamp(MB, 16 * MB));
    vec![
        ("shared_buffers".into(), pg_size(shared_buffers)),
        ("effective_cache_size".into(), pg_size(effective_cache)),
        ("maintenance_work_mem".into(), pg_size(maintenance)),
        ("work_mem".into(), pg_size(work_mem)),
        ("wal_buffers".into(), pg_size(wal_buffers)),
        ("checkpoint_completion_target".into(), "0.9".into()),
        ("default_statistics_target".into(), "100".into()),
        ("random_page_cost".into(), "1.1".into()),
        ("effective_io_concurrency".into(), "200".into()),
        ("min_wal_size".into(), "1GB".into()),
        ("max_wal_size".into(), "4GB".into()),
    ]
}

fn round_mb(bytes: u64) -> u64 {
    (bytes / MB).max(1) * MB
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::parse_pg_size;

    fn get(params: &[(String, String)], key: &str) -> u64 {
        let value = params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        parse_pg_size(value).unwrap_or_default()
    }

    #[test]
    fn eight_gigabytes_gets_the_classic_quarter() {
        let p = performance_parameters(8 * GB, 200);
        assert_eq!(get(&p, "shared_buffers"), 2 * GB);
        assert_eq!(get(&p, "effective_cache_size"), 6 * GB);
        assert_eq!(get(&p, "wal_buffers"), 16 * MB);
        assert_eq!(get(&p, "maintenance_work_mem"), 409 * MB);
    }

    #[test]
    fn tiny_machines_keep_sane_floors() {
        let p = performance_parameters(64 * MB, 10_000);
        assert_eq!(get(&p, "shared_buffers"), 128 * MB);
        assert_eq!(get(&p, "work_mem"), 4 * MB);
        assert!(get(&p, "effective_cache_size") >= get(&p, "shared_buffers"));
    }

    #[test]
    fn huge_machines_are_capped() {
        let p = performance_parameters(1 << 40, 100);
        assert_eq!(get(&p, "shared_buffers"), 16 * GB);
        assert_eq!(get(&p, "maintenance_work_mem"), 2 * GB);
    }
}
