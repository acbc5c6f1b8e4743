//! Overhead of `ReplicatedPool::read()` over a plain deadpool-postgres pool
//! to the same replica. One operation = check a connection out + `SELECT 1`
//! through the prepared-statement cache + return it. Operations of the
//! contenders (plain, pgkeel, and a second plain pool as a control that
//! shows the noise floor) interleave one by one in a random order, each
//! timed on its own, so all see the same machine load; a round is `--ops`
//! of each. Prints microseconds per operation and the per-round ratios,
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

/// Sessions each contender keeps open.
const CONNECTIONS: usize = 4;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args = Args::parse();
    let tasks = args.tasks.max(1);
    let per_task = (args.ops / tasks).max(1);

    let mut config = PoolConfig::from_urls([&args.primary, &args.replica])?;
    config.max_connections_per_node = tasks.max(CONNECTIONS);
    let replicated = ReplicatedPool::new(config).await?;
    if replicated.status().replicas.len() != 1 {
        return Err(format!("expected one replica, found {:?}", replicated.status()).into());
    }
    let plain = plain_pool(&args.replica, tasks)?;
    let control = plain_pool(&args.replica, tasks)?;
    let pools = Contenders {
        plain,
        control,
        replicated,
    };

    // Warm-up: each pool opens CONNECTIONS sessions (a pool hands them out
    // in turn, so no contender depends on one server backend's luck), and
    // prepares its statement.
    {
        let mut held_plain = Vec::new();
        let mut held_control = Vec::new();
        let mut held_pgkeel = Vec::new();
        for _ in 0..CONNECTIONS {
            held_plain.push(pools.plain.get().await?);
            held_control.push(pools.control.get().await?);
            held_pgkeel.push(pools.replicated.read().await?);
        }
    }
    round(&pools, tasks, 200, 0).await?;

    let mut plain_us = Vec::new();
    let mut pgkeel_us = Vec::new();
    let mut ratios = Vec::new();
    let mut control_ratios = Vec::new();
    for r in 0..args.rounds {
        let [p, c, k] = round(&pools, tasks, per_task, r).await?;
        let ops = (per_task * tasks) as f64;
        let [p, c, k] = [p, c, k].map(|d| d.as_secs_f64() * 1e6 / ops);
        if args.verbose {
            println!(
                "round {r:3}: plain {p:7.2}  control {c:7.2}  pgkeel {k:7.2} us/op  ratio {:.3}",
                k / p
            );
        }
        plain_us.push(p);
        pgkeel_us.push(k);
        ratios.push(k / p);
        control_ratios.push(c / p);
    }
    println!(
        "{} rounds of {} operations per contender, {tasks} task(s)",
        args.rounds,
        per_task * tasks
    );
    summary("plain deadpool-postgres (us/op)", &mut plain_us);
    summary("pgkeel-client read()    (us/op)", &mut pgkeel_us);
    summary("ratio pgkeel / plain           ", &mut ratios);
    summary("ratio control / plain (noise)  ", &mut control_ratios);

    // The same without I/O: checkout and return only, the client-side cost.
    let mut plain_ns = Vec::new();
    let mut pgkeel_ns = Vec::new();
    for _ in 0..11 {
        let (p, k) = checkout_only(&pools, 20_000).await?;
        plain_ns.push(p);
        pgkeel_ns.push(k);
    }
    summary("checkout only, plain     (ns)  ", &mut plain_ns);
    summary("checkout only, pgkeel    (ns)  ", &mut pgkeel_ns);
    Ok(())
}

/// Nanoseconds per checkout + return, alternating the two pools.
async fn checkout_only(pools: &Contenders, n: u32) -> BenchResult<(f64, f64)> {
    let mut plain = Duration::ZERO;
    let mut pgkeel = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        drop(pools.plain.get().await?);
        plain += t.elapsed();
        let t = Instant::now();
        drop(pools.replicated.read().await?);
        pgkeel += t.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(n);
    Ok((per(plain), per(pgkeel)))
}

/// The pools compared: `control` is a second plain pool, identical to
/// `plain`, whose ratio to it shows the measurement's noise floor.
struct Contenders {
    plain: Pool,
    control: Pool,
    replicated: ReplicatedPool,
}

fn plain_pool(url: &str, tasks: usize) -> BenchResult<Pool> {
    let manager = Manager::from_config(
        tokio_postgres::Config::from_str(url)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(tasks.max(CONNECTIONS))
        .runtime(Runtime::Tokio1)
        .build()?)
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

/// One round: `tasks` tasks each doing `ops` operations on each pool, the
/// three interleaved one by one in a random order (no contender always
/// follows the same one). Returns the time
/// spent in plain, control and pgkeel.
async fn round(
    pools: &Contenders,
    tasks: usize,
    ops: usize,
    round: usize,
) -> BenchResult<[Duration; 3]> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let plain = pools.plain.clone();
        let control = pools.control.clone();
        let replicated = pools.replicated.clone();
        handles.push(tokio::spawn(async move {
            let mut spent = [Duration::ZERO; 3];
            let mut rng = XorShift::new((round * 7919 + t * 104_729 + 1) as u64);
            for _ in 0..ops {
                for which in rng.permutation() {
                    spent[which] += match which {
                        0 => timed(plain_op(&plain)).await?,
                        1 => timed(plain_op(&control)).await?,
                        _ => timed(pgkeel_op(&replicated)).await?,
                    };
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(spent)
        }));
    }
    let mut total = [Duration::ZERO; 3];
    for h in handles {
        let spent = h.await??;
        for (sum, d) in total.iter_mut().zip(spent) {
            *sum += d;
        }
    }
    Ok(total)
}

/// A tiny deterministic generator for the interleaving order.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One of the six orders of the three contenders.
    fn permutation(&mut self) -> [usize; 3] {
        const ORDERS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        ORDERS[(self.next() % 6) as usize]
    }
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
