//! The proxy's scheduling policy. As an ordinary task, each socket event
//! wakes the proxy at once and its own sends preempt it for the task they
//! woke, so under load it sleeps and wakes once per statement. As a batch
//! task (`SCHED_BATCH`) its wake-ups do not preempt PostgreSQL or the
//! clients: events accumulate and each wake-up serves many. Set through
//! util-linux's `chrt` (the workspace forbids unsafe code, and no safe
//! binding of `sched_setscheduler` exists), before any other thread
//! starts, so every runtime thread inherits it.

use std::process::Command;

/// Makes this process a batch task; a missing or failing `chrt` leaves
/// the default policy and says so.
pub fn use_batch_policy() {
    let pid = std::process::id().to_string();
    match Command::new("chrt")
        .args(["--batch", "--pid", "0", &pid])
        .output()
    {
        Ok(out) if out.status.success() => {
            tracing::info!("running as a batch task (SCHED_BATCH; [proxy] sched_batch)");
        }
        Ok(out) => tracing::warn!(
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "cannot switch to SCHED_BATCH; keeping the default policy (set [proxy] sched_batch = false to skip)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot run chrt (util-linux) to switch to SCHED_BATCH; keeping the default policy (set [proxy] sched_batch = false to skip)"
        ),
    }
}
