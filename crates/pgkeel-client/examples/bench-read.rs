//! Overhead of `ReplicatedPool::read()` over a plain deadpool-postgres pool
//! to the same replica: each round runs `--ops` checkouts + `SELECT 1`
//! through each, interleaved (the order alternates per round), and reports
//! microseconds per operation and the ratio, min/median/max over rounds.
//! Run by `bench/client.sh`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use pgkeel_client::{PoolConfig, ReplicatedPool};
use tokio_postgres::NoTls;

#[derive(Debug, Parser)]
struct Args {
    /// URL of the primary.
    #[arg(long)]
    primary: String,
    /// URL of the replica both pools read from.
    #[arg(long)]
    replica: String,
    /// Rounds per contender.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Operations per round.
    #[arg(long, default_value_t = 5000)]
    ops: usize,
    /// Concurrent tasks sharing each pool.
    #[arg(long, default_value_t = 1)]
    tasks: usize,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args = Args::parse();
    let tasks = args.tasks.max(1);
    let per_task = (args.ops / tasks).max(1);

    let mut config = PoolConfig::from_urls([&args.primary, &args.replica])?;
    config.max_connections_per_node = tasks.max(4);
    let replicated = ReplicatedPool::new(config).await?;
    if replicated.status().replicas.len() != 1 {
        return Err(format!("expected one replica, found {:?}", replicated.status()).into());
    }
    let manager = Manager::from_config(
        tokio_postgres::Config::from_str(&args.replica)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let plain = Pool::builder(manager)
        .max_size(tasks.max(4))
        .runtime(Runtime::Tokio1)
        .build()?;

    // Warm both: connections open, statements prepared.
    run_plain(&plain, tasks, 200).await?;
    run_pgkeel(&replicated, tasks, 200).await?;

    let mut plain_us = Vec::new();
    let mut pgkeel_us = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..args.rounds {
        let (p, k) = if round % 2 == 0 {
            let p = run_plain(&plain, tasks, per_task).await?;
            (p, run_pgkeel(&replicated, tasks, per_task).await?)
        } else {
            let k = run_pgkeel(&replicated, tasks, per_task).await?;
            (run_plain(&plain, tasks, per_task).await?, k)
        };
        let ops = (per_task * tasks) as f64;
        let p = p.as_secs_f64() * 1e6 / ops;
        let k = k.as_secs_f64() * 1e6 / ops;
        println!(
            "round {round:2}: plain {p:7.2} us/op  pgkeel {k:7.2} us/op  ratio {:.3}",
            k / p
        );
        plain_us.push(p);
        pgkeel_us.push(k);
        ratios.push(k / p);
    }
    println!();
    println!("ops per round: {}, tasks: {tasks}", per_task * tasks);
    summary("plain deadpool-postgres (us/op)", &mut plain_us);
    summary("pgkeel-client read()   (us/op)", &mut pgkeel_us);
    summary("ratio pgkeel / plain          ", &mut ratios);
    Ok(())
}

fn summary(label: &str, xs: &mut [f64]) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return;
    }
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    println!(
        "{label}: min {:.3}  median {median:.3}  max {:.3}",
        xs[0],
        xs[n - 1]
    );
}

async fn run_plain(pool: &Pool, tasks: usize, ops: usize) -> BenchResult<Duration> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..ops {
                let client = pool.get().await?;
                let stmt = client.prepare_cached("SELECT 1").await?;
                let row = client.query_one(&stmt, &[]).await?;
                let one: i32 = row.get(0);
                if one != 1 {
                    return Err("SELECT 1 did not return 1".into());
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(start.elapsed())
}

async fn run_pgkeel(pool: &ReplicatedPool, tasks: usize, ops: usize) -> BenchResult<Duration> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..ops {
                let mut conn = pool.read().await?;
                let row = conn.query_one("SELECT 1", &[]).await?;
                let one: i32 = row.get(0);
                if one != 1 {
                    return Err("SELECT 1 did not return 1".into());
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(start.elapsed())
}
