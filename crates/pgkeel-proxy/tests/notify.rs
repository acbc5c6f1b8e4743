//! LISTEN/NOTIFY through the proxy: in transaction mode LISTEN pins the
//! client to its primary connection, so notifications sent by another
//! client (through the proxy) reach it; in session mode the same holds
//! for the whole session. Both clients keep working afterwards.

mod common;

use std::time::Duration;

use common::{Env, TestResult};
use futures_util::StreamExt;
use pgkeel_proxy::PoolMode;
use tokio_postgres::{AsyncMessage, NoTls};

/// A client whose notifications arrive on a channel.
async fn listening_client(
    url: &str,
) -> TestResult<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
)> {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    Ok((client, rx))
}

async fn notifications_arrive(mode: PoolMode) -> TestResult {
    let env = Env::start(1, |c| c.pool_mode = mode).await?;
    let (listener, mut inbox) = listening_client(&env.url()).await?;
    listener.batch_execute("LISTEN jobs").await?;
    let sender = env.client().await?;
    for i in 0..3 {
        sender
            .batch_execute(&format!("NOTIFY jobs, 'job {i}'"))
            .await?;
        let got = tokio::time::timeout(Duration::from_secs(30), inbox.recv())
            .await
            .map_err(|_| format!("notification {i} never arrived ({mode:?})"))?
            .ok_or("listener connection closed")?;
        assert_eq!(got, ("jobs".to_string(), format!("job {i}")));
    }
    // The listener still runs queries (on its pinned primary connection).
    let row = listener
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?;
    assert!(
        !row.get::<_, bool>(0),
        "a pinned LISTEN session moved off the primary"
    );
    // The sender's reads still split to the replica in transaction mode.
    let row = sender.query_one("SELECT pg_is_in_recovery()", &[]).await?;
    assert_eq!(row.get::<_, bool>(0), mode == PoolMode::Transaction);
    Ok(())
}

#[tokio::test]
async fn listen_notify_in_transaction_mode() -> TestResult {
    common::within(180, notifications_arrive(PoolMode::Transaction)).await
}

#[tokio::test]
async fn listen_notify_in_session_mode() -> TestResult {
    common::within(180, notifications_arrive(PoolMode::Session)).await
}
