//! Free loopback ports for test clusters.
//!
//! Ports are taken from outside the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default). Inside it, a
//! port that is free when a test picks it can be handed to an *outgoing*
//! connection a few seconds later (the tests, the agents and the proxy
//! open thousands), and for 60 s after that connection closes its
//! TIME-WAIT socket keeps the port: a server that binds it then fails with
//! "Address already in use", even with `SO_REUSEADDR`. `pgkeel up` starts
//! the agents some 10-20 s after it checked their API ports, so a test
//! cluster lost an agent that way now and then.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Offsets from a block's first port of the ports `pgkeel up` derives from
/// it: the proxy's client and admin ports (+1000), the agents' API ports
/// (+2000) and the local etcd's two ports (+3000). A block spans
/// `base..=base + LAST_OFFSET + 1`.
const LAST_OFFSET: u16 = 3000;

/// Lowest first port handed out.
const FLOOR: u16 = 10_000;

/// The kernel's default ephemeral range, used when /proc does not tell.
const DEFAULT_EPHEMERAL: (u16, u16) = (32_768, 60_999);

/// The fewest first ports a window must offer to be used.
const MIN_WINDOW: u16 = 2_000;

static NEXT: AtomicU16 = AtomicU16::new(0);
static WINDOW: OnceLock<(u16, u16)> = OnceLock::new();

/// The kernel's ephemeral port range.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// First ports `[low, high)` whose whole block (up to `+LAST_OFFSET + 1`)
/// stays out of the ephemeral range `ephemeral`: the larger of the gaps
/// below and above it, or (no gap large enough) the old fixed window,
/// where the bind probe is the only protection.
fn window_for(ephemeral: (u16, u16)) -> (u16, u16) {
    let reach = LAST_OFFSET + 2;
    let below = (FLOOR, ephemeral.0.saturating_sub(reach));
    let above = (
        ephemeral.1.saturating_add(1).max(FLOOR),
        u16::MAX.saturating_sub(reach),
    );
    let size = |(low, high): (u16, u16)| high.saturating_sub(low);
    let best = if size(below) >= size(above) {
        below
    } else {
        above
    };
    if size(best) >= MIN_WINDOW {
        best
    } else {
        (20_000, 56_000)
    }
}

/// First port of `n` consecutive ports on 127.0.0.1 that are free right
/// now, outside the kernel's ephemeral range (see the module doc). Starts
/// from a point derived from the PID and clock so concurrent test
/// processes spread out, and probes each port (and the ones `pgkeel up`
/// derives from it) by binding it.
pub fn free_port_block(n: u16) -> u16 {
    let (low, high) = *WINDOW.get_or_init(|| window_for(ephemeral_range()));
    let span = high - low;
    if NEXT.load(Ordering::SeqCst) == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = (std::process::id().wrapping_mul(7919) ^ nanos) % u32::from(span);
        let _ = NEXT.compare_exchange(0, low + seed as u16, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let base = NEXT.fetch_add(n + 1, Ordering::SeqCst);
        if base < low || base >= high.saturating_sub(n) {
            NEXT.store(low, Ordering::SeqCst);
            continue;
        }
        let ports = (base..base + n)
            .chain(base + 1000..base + 1002)
            .chain(base + 2000..base + 2000 + n)
            .chain(base + LAST_OFFSET..base + LAST_OFFSET + 2);
        if ports
            .into_iter()
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ephemeral_range_leaves_the_ports_below_it() {
        let (low, high) = window_for(DEFAULT_EPHEMERAL);
        assert_eq!(low, FLOOR);
        assert!(high + LAST_OFFSET + 1 < DEFAULT_EPHEMERAL.0, "{high}");
    }

    #[test]
    fn a_low_ephemeral_range_leaves_the_ports_above_it() {
        let (low, high) = window_for((1024, 40_000));
        assert_eq!(low, 40_001);
        assert!(u32::from(high) + u32::from(LAST_OFFSET) < u32::from(u16::MAX));
    }

    #[test]
    fn an_ephemeral_range_covering_everything_falls_back() {
        assert_eq!(window_for((1024, 65_535)), (20_000, 56_000));
    }

    #[test]
    fn blocks_and_derived_ports_stay_outside_the_ephemeral_range() {
        let (lo, hi) = ephemeral_range();
        let window = window_for((lo, hi));
        if window == (20_000, 56_000) {
            return; // this machine's range leaves no room; nothing to check
        }
        for _ in 0..50 {
            let base = free_port_block(3);
            for p in [base, base + 2, base + 1001, base + 2002, base + 3001] {
                assert!(!(lo..=hi).contains(&p), "{p} is in {lo}-{hi}");
            }
        }
    }
}
