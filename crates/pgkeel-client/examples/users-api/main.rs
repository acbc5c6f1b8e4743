//! The replication guide's FastAPI users service, on pgkeel-client and
//! axum. Against a local pgkeel cluster:
//!
//! ```sh
//! cargo run -p pgkeel-client --example users-api -- --dir ./pgkeel-data
//! curl -si -X POST localhost:8000/users -H 'content-type: application/json' \
//!      -d '{"name": "Ada", "email": "ada@example.com"}'
//! curl -s localhost:8000/users/1
//! ```

mod app;
mod cluster_dir;
mod settings;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use pgkeel_client::ReplicatedPool;

use settings::Args;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("users-api: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = settings::pool_config(&args, |name| std::env::var(name).ok())?;
    let pool = ReplicatedPool::new(config)
        .await
        .map_err(|e| e.to_string())?;
    app::ensure_schema(&pool)
        .await
        .map_err(|e| format!("cannot create the users table: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let status = pool.status();
    eprintln!(
        "users-api: listening on http://{} (primary {}, {} replica(s))",
        args.listen,
        status
            .primary
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into()),
        status.replicas.len()
    );
    axum::serve(listener, app::router(pool))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM, so the service stops cleanly under a
/// terminal and under a process manager.
async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
