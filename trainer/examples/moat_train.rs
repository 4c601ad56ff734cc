//! A stand-alone front end for trying the trainer: `cargo run -p moat-trainer --release --example
//! moat_train -- train --data FILE --out DIR` (the `moat` binary offers the same commands).

use clap::{Parser, Subcommand};
use moat_trainer::{ScoreArgs, TrainArgs};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a reward model.
    Train(Box<TrainArgs>),
    /// Score pairs with a trained model.
    Score(ScoreArgs),
    /// Evaluate a trained model on a benchmark file (RewardBench v1/v2, TRL, HH-RLHF).
    RmEval(moat_trainer::RmEvalArgs),
    /// The active-sampling simulation (`moat bench active`).
    BenchActive(moat_trainer::cli::ActiveBenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(args) => moat_trainer::run_train(*args),
        Command::Score(args) => moat_trainer::run_score(args),
        Command::RmEval(args) => moat_trainer::run_rm_eval(args),
        Command::BenchActive(args) => {
            let json = args.json;
            let report = moat_trainer::cli::run_active_bench(args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}
