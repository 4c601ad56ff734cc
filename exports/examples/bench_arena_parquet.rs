//! `moat leaderboard --battles FILE.parquet --style-control` end to end, as the server runs it:
//! the columnar Arena Parquet reader (`moat_exports::arena_parquet`) into `moat_stats` battles,
//! then the leaderboard with a bootstrap and style control; times and peak memory (VmHWM).
//!
//! ```text
//! cargo run -p moat-exports --release --example bench_arena_parquet -- FILE.parquet [ROUNDS] [--json OUT]
//! ```

use std::time::Instant;

use moat_exports::arena_parquet::read_arena_parquet_battles;
use moat_stats::{leaderboard, LeaderboardOptions};

fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let path = std::path::PathBuf::from(arguments.first().expect("usage: FILE.parquet [ROUNDS]"));
    let rounds: usize = arguments
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .map_or(100, |r| r.parse().expect("ROUNDS is a number"));
    let json = arguments
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| arguments.get(i + 1));
    let start = Instant::now();
    let file = read_arena_parquet_battles(&path)
        .expect("read the Parquet file")
        .expect("the file needs the row reader (it has columns the columnar one skips)");
    let read_seconds = start.elapsed().as_secs_f64();
    let options = LeaderboardOptions {
        bootstrap_rounds: rounds,
        style_control: true,
        ..LeaderboardOptions::default()
    };
    let board = leaderboard(&file.battles, &options);
    let total_seconds = start.elapsed().as_secs_f64();
    println!(
        "end to end (Parquet): {} battles, {} models, {rounds} rounds",
        file.battles.len(),
        board.models.len()
    );
    println!("read (columnar, with metadata)      : {read_seconds:>9.2} s");
    println!(
        "leaderboard + bootstrap + style     : {:>9.2} s",
        total_seconds - read_seconds
    );
    println!("total                               : {total_seconds:>9.2} s");
    let peak = peak_memory();
    if let Some(bytes) = peak {
        println!(
            "peak resident memory                : {:>9.2} GB",
            bytes as f64 / 1e9
        );
    }
    if let Some(out) = json {
        let ratings: std::collections::BTreeMap<&str, f64> = board
            .models
            .iter()
            .map(|row| (row.model.as_str(), row.rating))
            .collect();
        let style_ratings: std::collections::BTreeMap<&str, f64> = board
            .style_control
            .iter()
            .flat_map(|style| &style.models)
            .map(|row| (row.model.as_str(), row.rating))
            .collect();
        let record = serde_json::json!({
            "battles": file.battles.len(),
            "seconds_total": total_seconds,
            "peak_memory_bytes": peak,
            "rating": ratings,
            "style_rating": style_ratings,
        });
        std::fs::write(out, record.to_string()).expect("write --json file");
    }
}
