//! Overhead of `ReplicatedPool::read()` over a plain deadpool-postgres pool
//! to the same replica. One operation = check a connection out + `SELECT 1`
//! through the prepared-statement cache + return it. Operations of the two
//! contenders alternate one by one (which goes first alternates too), each
//! timed on its own, so both see the same machine load; a round is `--ops`
//! of each. Prints microseconds per operation and the per-round ratio,
//! min/median/max over rounds. Run by `bench/client.sh`.

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
    /// Rounds.
    #[arg(long, default_value_t = 101)]
    rounds: usize,
    /// Operations per contender per round.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Concurrent tasks, each alternating between the two pools.
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// Print every round.
    #[arg(long)]
    verbose: bool,
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

    // Warm-up: connections open, statements prepared.
    round(&plain, &replicated, tasks, 200, 0).await?;

    let mut plain_us = Vec::new();
    let mut pgkeel_us = Vec::new();
    let mut ratios = Vec::new();
    for r in 0..args.rounds {
        let (p, k) = round(&plain, &replicated, tasks, per_task, r).await?;
        let ops = (per_task * tasks) as f64;
        let p = p.as_secs_f64() * 1e6 / ops;
        let k = k.as_secs_f64() * 1e6 / ops;
        if args.verbose {
            println!(
                "round {r:3}: plain {p:7.2} us/op  pgkeel {k:7.2} us/op  ratio {:.3}",
                k / p
            );
        }
        plain_us.push(p);
        pgkeel_us.push(k);
        ratios.push(k / p);
    }
    println!(
        "{} rounds of {} operations per contender, {tasks} task(s)",
        args.rounds,
        per_task * tasks
    );
    summary("plain deadpool-postgres (us/op)", &mut plain_us);
    summary("pgkeel-client read()    (us/op)", &mut pgkeel_us);
    summary("ratio pgkeel / plain           ", &mut ratios);
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

/// One round: `tasks` tasks each doing `ops` operations on each pool,
/// alternating. Returns the summed time spent in each contender.
async fn round(
    plain: &Pool,
    replicated: &ReplicatedPool,
    tasks: usize,
    ops: usize,
    round: usize,
) -> BenchResult<(Duration, Duration)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let plain = plain.clone();
        let replicated = replicated.clone();
        handles.push(tokio::spawn(async move {
            let mut in_plain = Duration::ZERO;
            let mut in_pgkeel = Duration::ZERO;
            for i in 0..ops {
                if (i + t + round).is_multiple_of(2) {
                    in_plain += timed(plain_op(&plain)).await?;
                    in_pgkeel += timed(pgkeel_op(&replicated)).await?;
                } else {
                    in_pgkeel += timed(pgkeel_op(&replicated)).await?;
                    in_plain += timed(plain_op(&plain)).await?;
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((in_plain, in_pgkeel))
        }));
    }
    let mut total = (Duration::ZERO, Duration::ZERO);
    for h in handles {
        let (p, k) = h.await??;
        total.0 += p;
        total.1 += k;
    }
    Ok(total)
}

async fn timed(op: impl Future<Output = BenchResult<()>>) -> BenchResult<Duration> {
    let start = Instant::now();
    op.await?;
    Ok(start.elapsed())
}

async fn plain_op(pool: &Pool) -> BenchResult<()> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached("SELECT 1").await?;
    let row = client.query_one(&stmt, &[]).await?;
    check(row.get(0))
}

async fn pgkeel_op(pool: &ReplicatedPool) -> BenchResult<()> {
    let mut conn = pool.read().await?;
    let row = conn.query_one("SELECT 1", &[]).await?;
    check(row.get(0))
}

fn check(one: i32) -> BenchResult<()> {
    if one == 1 {
        Ok(())
    } else {
        Err("SELECT 1 did not return 1".into())
    }
}
