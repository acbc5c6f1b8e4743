//! Socket reads without per-connection buffers: a read lands in one
//! scratch buffer per thread and only the bytes received are copied to
//! the connection's own buffer, so an idle client holds no read buffer
//! and a busy one gets a single `read` per wake-up. Works for any
//! `AsyncRead` (plain TCP, TLS).

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Size of the per-thread scratch buffer: the most one read returns.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Reads what the stream has (waiting until it has something) and
/// appends it to `buf`; 0 means end of stream.
pub async fn read_into<S>(stream: &mut S, buf: &mut BytesMut) -> std::io::Result<usize>
where
    S: AsyncRead + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| {
        BUF.with_borrow_mut(|scratch| {
            let mut rb = ReadBuf::new(scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    buf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// The messages of a unit (checked complete when the unit was cut).
pub fn frames(unit: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = unit;
    std::iter::from_fn(move || {
        let (_, len) = pgkeel_wire::split_message(rest, pgkeel_wire::MAX_MESSAGE_LEN)
            .ok()
            .flatten()?;
        let (frame, tail) = rest.split_at(len);
        rest = tail;
        Some(frame)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn appends_what_arrives_and_reports_end_of_stream() -> std::io::Result<()> {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut buf = BytesMut::new();
        a.write_all(b"hello").await?;
        assert_eq!(read_into(&mut b, &mut buf).await?, 5);
        a.write_all(b" world").await?;
        drop(a);
        assert_eq!(read_into(&mut b, &mut buf).await?, 6);
        assert_eq!(&buf[..], b"hello world");
        assert_eq!(read_into(&mut b, &mut buf).await?, 0);
        Ok(())
    }
}
