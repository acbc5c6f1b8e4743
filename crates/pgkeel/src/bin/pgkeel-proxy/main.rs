//! `pgkeel-proxy`: the pooling proxy as an executable of its own, which
//! `pgkeel proxy` (and so `pgkeel up`) runs. It links only what the proxy
//! needs (no clap, tables, agents or gRPC), so the pages of code a running
//! proxy keeps resident are a fraction of the full `pgkeel` binary's.

mod args;
mod sched;
mod serve;

use std::io::IsTerminal;

use anyhow::{Context, Result};

use args::Parsed;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = match args::parse(std::env::args().skip(1))? {
        Parsed::Run(args) => args,
        Parsed::Print(text) => {
            print!("{text}");
            return Ok(());
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let source = args.source.as_ref().context("no cluster given")?;
    let section = source.load()?.0.proxy;
    let threads = args.threads.unwrap_or(section.threads);
    if section.sched_batch {
        sched::use_batch_policy();
    }
    // One runtime for everything; by default one thread (like PgBouncer):
    // no work stealing or cross-thread wake-ups on the per-query path, at
    // most one core, and one malloc arena.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve::serve(&args))
}
