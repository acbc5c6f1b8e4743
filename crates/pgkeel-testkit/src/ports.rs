//! Free loopback ports for test clusters.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT: AtomicU16 = AtomicU16::new(0);

/// First port of `n` consecutive ports on 127.0.0.1 that are free right
/// now. Starts from a point derived from the PID and clock so concurrent
/// test processes spread out, and probes each port by binding it.
pub fn free_port_block(n: u16) -> u16 {
    const LOW: u16 = 20_000;
    const SPAN: u16 = 36_000;
    if NEXT.load(Ordering::SeqCst) == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = (std::process::id().wrapping_mul(7919) ^ nanos) % u32::from(SPAN);
        let _ = NEXT.compare_exchange(0, LOW + seed as u16, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let base = NEXT.fetch_add(n + 1, Ordering::SeqCst);
        let base = if base >= LOW + SPAN - n - 1 {
            NEXT.store(LOW, Ordering::SeqCst);
            continue;
        } else {
            base
        };
        // The PostgreSQL ports, the proxy's client and admin ports
        // (+1000), the agents' API ports (+2000) and the local etcd's two
        // ports (+3000) that `pgkeel up` derives from them.
        let ports = (base..base + n)
            .chain(base + 1000..base + 1002)
            .chain(base + 2000..base + 2000 + n)
            .chain(base + 3000..base + 3002);
        if base < 60_000 - 3002
            && ports
                .into_iter()
                .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
}
