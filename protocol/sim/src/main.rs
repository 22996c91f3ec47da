//! `chunkcast-sim`: runs the deterministic simulation for one seed or searches many.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use chunkcast_sim::net::Faults;
use chunkcast_sim::{Scenario, run};

/// A deterministic simulation of a chunkcast server and many clients over a faulty network.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The seed of one run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Search seeds A..B (end exclusive); stops at the first failure and prints its replay line.
    #[arg(long, value_name = "A..B", conflicts_with = "seed")]
    seeds: Option<String>,
    /// Client hosts.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Simulated seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Print every event.
    #[arg(long)]
    trace: bool,
    /// A clean network: delay, jitter and bandwidth only (no loss, duplication, corruption or
    /// partitions).
    #[arg(long)]
    clean: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let seeds = match &args.seeds {
        Some(range) => {
            let (a, b) = range
                .split_once("..")
                .ok_or_else(|| anyhow::anyhow!("--seeds wants A..B, got {range:?}"))?;
            a.parse::<u64>()?..b.parse::<u64>()?
        }
        None => args.seed..args.seed + 1,
    };
    let total = Instant::now();
    let mut runs = 0;
    for seed in seeds {
        let mut scenario = Scenario::new(seed, args.clients, args.seconds);
        scenario.trace = args.trace;
        if args.clean {
            scenario.faults = Faults::NONE;
        }
        // Wall time is measured here, outside the simulation, which never reads the clock.
        let started = Instant::now();
        let report = run(&scenario);
        let wall = started.elapsed();
        runs += 1;
        println!("{report}\n  wall time {:.2} s", wall.as_secs_f64());
        if !report.passed() {
            println!("FAILED; replay with:\n{}", scenario.replay_line());
            return Ok(ExitCode::FAILURE);
        }
    }
    if runs > 1 {
        println!(
            "{runs} seeds passed in {:.1} s",
            total.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
