//! Spare byte buffers, kept per thread. What a unit needs while it is in
//! flight (the bytes for the server, answers held for a retry, answers
//! for the client) is taken from here and given back when the unit is
//! done: a transaction allocates nothing, and an idle client still holds
//! no buffer.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Buffers kept per thread: a few per client in flight at once.
const KEEP: usize = 32;
/// A buffer that grew past this (a large result) is freed, not kept: the
/// spares cost at most `KEEP * KEEP_CAPACITY` bytes per thread.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A thread's spares of one kind.
pub type Spares<T> = LocalKey<RefCell<Vec<T>>>;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A kept item from `spares`, else a new one.
pub fn take_from<T: Default>(spares: &'static Spares<T>) -> T {
    spares
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps `item` (already emptied) in `spares` unless `keep` are kept.
pub fn give_to<T>(spares: &'static Spares<T>, item: T, keep: usize) {
    let _ = spares.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut()
            && s.len() < keep
        {
            s.push(item);
        }
    });
}

/// An empty buffer, with the room of an earlier use when one is kept.
pub fn take() -> Vec<u8> {
    take_from(&SPARE)
}

/// Gives `buf` back for another unit (emptied; freed instead when it is
/// large or enough are kept).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY {
        return;
    }
    buf.clear();
    give_to(&SPARE, buf, KEEP);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let mut b = take();
        b.extend_from_slice(b"answers");
        let at = b.as_ptr();
        give(b);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        assert!(again.capacity() >= 7);
    }

    #[test]
    fn large_buffers_are_freed_and_the_kept_ones_bounded() {
        give(Vec::with_capacity(KEEP_CAPACITY + 1));
        assert_eq!(take().capacity(), 0);
        for _ in 0..KEEP * 2 {
            give(Vec::with_capacity(64));
        }
        let kept = SPARE.with(|s| s.borrow().len());
        assert_eq!(kept, KEEP);
    }
}
