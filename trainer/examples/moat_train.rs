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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(args) => moat_trainer::run_train(*args),
        Command::Score(args) => moat_trainer::run_score(args),
    }
}
