//! Benchmark: one Bradley–Terry fit plus a multinomial bootstrap on synthetic Arena-like battles,
//! optionally compared with FastChat's `compute_bt` + `compute_bootstrap_bt` (see bench/run.sh).
//!
//! ```text
//! cargo run -p moat-stats --release --example bench_bt -- --battles 1000000 --models 120 --rounds 100
//!     [--seed N] [--write FILE] [--read FILE] [--fastchat RESULTS.json]
//! ```
//! `--write` stores the generated battles (Arena JSON Lines) and exits (with `--style`, each line
//! also carries Arena's `conv_metadata` style counts, drawn so that longer answers win more);
//! `--read` benchmarks a file; `--fastchat` compares with the ratings and intervals the Python
//! script wrote. `--end-to-end FILE` times what `moat leaderboard --battles FILE --style-control`
//! does, once: reading the file with its metadata, the leaderboard with bootstrap and the
//! style-controlled fit, and reports the peak resident memory of the process; with `--json FILE`
//! it also writes the timings, the peak memory and both tables' ratings there, for
//! bench/fastchat_end_to_end.py to compare with FastChat's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use moat_stats::battles::{read_battles_file, write_battles_jsonl};
use moat_stats::simulate::{simulate, SimulationConfig};
use moat_stats::{leaderboard, AggregatedBattles, Leaderboard, LeaderboardOptions};

struct Arguments {
    battles: usize,
    models: usize,
    rounds: usize,
    seed: u64,
    write: Option<PathBuf>,
    read: Option<PathBuf>,
    fastchat: Option<PathBuf>,
    style: bool,
    end_to_end: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn parse_arguments() -> Arguments {
    let mut arguments = Arguments {
        battles: 1_000_000,
        models: 120,
        rounds: 100,
        seed: 1,
        write: None,
        read: None,
        fastchat: None,
        style: false,
        end_to_end: None,
        json: None,
    };
    let mut iterator = std::env::args().skip(1);
    while let Some(flag) = iterator.next() {
        let mut value = || {
            iterator
                .next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--battles" => arguments.battles = value().parse().expect("--battles N"),
            "--models" => arguments.models = value().parse().expect("--models N"),
            "--rounds" => arguments.rounds = value().parse().expect("--rounds N"),
            "--seed" => arguments.seed = value().parse().expect("--seed N"),
            "--write" => arguments.write = Some(value().into()),
            "--read" => arguments.read = Some(value().into()),
            "--fastchat" => arguments.fastchat = Some(value().into()),
            "--style" => arguments.style = true,
            "--end-to-end" => arguments.end_to_end = Some(value().into()),
            "--json" => arguments.json = Some(value().into()),
            other => panic!("unknown argument {other}"),
        }
    }
    arguments
}

/// Best of `repeats` wall-clock timings, in seconds, and the last result.
fn time<T>(repeats: usize, mut work: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut result = None;
    for _ in 0..repeats {
        let start = Instant::now();
        let value = work();
        best = best.min(start.elapsed().as_secs_f64());
        result = Some(value);
    }
    (best, result.expect("at least one repeat"))
}

fn main() {
    let arguments = parse_arguments();
    let config = SimulationConfig {
        models: arguments.models,
        battles: arguments.battles,
        tie_rate: 0.3,
        popularity_skew: 1.0,
        rating_sd: 100.0,
        seed: arguments.seed,
    };
    if let Some(path) = &arguments.end_to_end {
        end_to_end(path, &arguments);
        return;
    }
    if let Some(path) = &arguments.write {
        let simulation = simulate(&config);
        let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
        if arguments.style {
            write_with_style(&simulation.battles, file, arguments.seed);
        } else {
            write_battles_jsonl(&simulation.battles, file).expect("write battles");
        }
        eprintln!(
            "wrote {} battles to {}",
            simulation.battles.len(),
            path.display()
        );
        return;
    }
    let battles = match &arguments.read {
        Some(path) => {
            let start = Instant::now();
            let battles = read_battles_file(path).expect("read battles");
            println!(
                "read {} battles from {} in {:.3} s (not counted below)",
                battles.len(),
                path.display(),
                start.elapsed().as_secs_f64()
            );
            battles
        }
        None => simulate(&config).battles,
    };

    let threads = rayon::current_num_threads();
    let aggregated = AggregatedBattles::from_battles(&battles);
    println!(
        "{} battles, {} models, {} pairs with votes, {} rayon threads",
        battles.len(),
        aggregated.models.len(),
        aggregated.pairs.len(),
        threads
    );
    let (aggregate_seconds, _) = time(5, || AggregatedBattles::from_battles(&battles));
    let fit_only = LeaderboardOptions {
        bootstrap_rounds: 0,
        seed: arguments.seed,
        ..LeaderboardOptions::default()
    };
    let (fit_seconds, _) = time(5, || {
        moat_stats::leaderboard_from_counts(&aggregated, &fit_only)
    });
    let (no_bootstrap_seconds, _) = time(5, || leaderboard(&battles, &fit_only));
    let with_bootstrap = LeaderboardOptions {
        bootstrap_rounds: arguments.rounds,
        ..fit_only.clone()
    };
    let (total_seconds, board) = time(5, || leaderboard(&battles, &with_bootstrap));
    println!(
        "aggregate battles into pair counts : {:>9.1} ms",
        aggregate_seconds * 1e3
    );
    println!(
        "fit + sandwich CI (from counts)     : {:>9.1} ms",
        fit_seconds * 1e3
    );
    println!(
        "full leaderboard, no bootstrap      : {:>9.1} ms",
        no_bootstrap_seconds * 1e3
    );
    println!(
        "full leaderboard, {} rounds        : {:>9.1} ms  (aggregation, online Elo, fit, bootstrap, sandwich, win matrix)",
        arguments.rounds,
        total_seconds * 1e3
    );

    if let Some(path) = &arguments.fastchat {
        compare(&board, path, total_seconds, &battles, &with_bootstrap);
    }
}

fn compare(
    board: &Leaderboard,
    path: &PathBuf,
    our_seconds: f64,
    battles: &[moat_stats::Battle],
    options: &LeaderboardOptions,
) {
    let text = std::fs::read_to_string(path).expect("read FastChat results");
    let results: serde_json::Value = serde_json::from_str(&text).expect("FastChat results JSON");
    let map = |key: &str| -> BTreeMap<String, f64> {
        serde_json::from_value(results[key].clone()).expect("a model -> number map")
    };
    let (ratings, lower, upper) = (map("rating"), map("lower"), map("upper"));
    let tight = map("rating_tight");
    let fastchat_fit = results["seconds_fit"].as_f64().expect("seconds_fit");
    let fastchat_bootstrap = results["seconds_bootstrap"]
        .as_f64()
        .expect("seconds_bootstrap");
    let fastchat_total = fastchat_fit + fastchat_bootstrap;

    let mut largest_rating_gap: f64 = 0.0;
    let mut largest_tight_gap: f64 = 0.0;
    let mut relative_gaps = Vec::new();
    for row in &board.models {
        let reference = ratings[&row.model];
        largest_rating_gap = largest_rating_gap.max((row.rating - reference).abs());
        largest_tight_gap = largest_tight_gap.max((row.rating - tight[&row.model]).abs());
        let ci = row.ci.expect("bootstrap ran");
        // Compare the distances of the bounds from the point estimate (the half-widths).
        relative_gaps.push(
            ((reference - lower[&row.model]) - (row.rating - ci.lower)).abs()
                / (reference - lower[&row.model]),
        );
        relative_gaps.push(
            ((upper[&row.model] - reference) - (ci.upper - row.rating)).abs()
                / (upper[&row.model] - reference),
        );
    }
    // Bootstrap noise floor: the same comparison between two of our own runs with different seeds.
    let other = leaderboard(
        battles,
        &LeaderboardOptions {
            seed: options.seed + 1000,
            ..options.clone()
        },
    );
    let mut noise_gaps = Vec::new();
    for (row, other_row) in board.models.iter().zip(&other.models) {
        let (a, b) = (row.ci.expect("ci"), other_row.ci.expect("ci"));
        noise_gaps
            .push(((row.rating - a.lower) - (row.rating - b.lower)).abs() / (row.rating - b.lower));
        noise_gaps
            .push(((a.upper - row.rating) - (b.upper - row.rating)).abs() / (b.upper - row.rating));
    }
    let mean_width = |widths: &mut dyn Iterator<Item = f64>| {
        let all: Vec<f64> = widths.collect();
        all.iter().sum::<f64>() / all.len() as f64
    };
    let our_width = mean_width(&mut board.models.iter().map(|r| r.ci.expect("ci").width()));
    let fastchat_width = mean_width(
        &mut board
            .models
            .iter()
            .map(|r| upper[&r.model] - lower[&r.model]),
    );

    println!();
    println!(
        "FastChat compute_bt                 : {:>9.1} ms",
        fastchat_fit * 1e3
    );
    println!(
        "FastChat compute_bootstrap_bt       : {:>9.1} ms",
        fastchat_bootstrap * 1e3
    );
    println!(
        "speed-up (FastChat fit+bootstrap / ours full leaderboard): {:.0}x",
        fastchat_total / our_seconds
    );
    println!("largest rating difference           : {largest_rating_gap:.4} points (vs FastChat compute_bt)");
    println!(
        "                                      {largest_tight_gap:.4} points (vs the same loss minimised to tight tolerance)"
    );
    println!(
        "CI half-width relative difference   : median {:.1}%, 90th pct {:.1}%, max {:.1}%, within 10%: {:.0}% of bounds",
        percentile(&mut relative_gaps, 0.5) * 100.0,
        percentile(&mut relative_gaps, 0.9) * 100.0,
        percentile(&mut relative_gaps, 1.0) * 100.0,
        relative_gaps.iter().filter(|g| **g <= 0.1).count() as f64 * 100.0 / relative_gaps.len() as f64
    );
    println!(
        "  noise floor (ours, seed vs seed+1000): median {:.1}%, 90th pct {:.1}%",
        percentile(&mut noise_gaps, 0.5) * 100.0,
        percentile(&mut noise_gaps, 0.9) * 100.0
    );
    println!(
        "mean 95% CI width                   : ours {our_width:.2} points, FastChat {fastchat_width:.2} points ({:+.1}%)",
        (our_width / fastchat_width - 1.0) * 100.0
    );
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    moat_stats::intervals::quantile_sorted(values, p)
}

/// Arena JSON Lines with `conv_metadata`: answer lengths drawn around 400 tokens, and the winner's
/// answer made longer in 60% of decided battles, so style control has something to find.
fn write_with_style(battles: &[moat_stats::Battle], mut out: impl std::io::Write, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5717e);
    for battle in battles {
        let (mut a, mut b): (u32, u32) = (rng.gen_range(50..800), rng.gen_range(50..800));
        let longer_wins = rng.gen_bool(0.6);
        let swap = match battle.outcome {
            moat_stats::Outcome::AWins => (a < b) == longer_wins,
            moat_stats::Outcome::BWins => (a > b) == longer_wins,
            _ => false,
        };
        if swap {
            std::mem::swap(&mut a, &mut b);
        }
        let record = serde_json::json!({
            "model_a": battle.model_a,
            "model_b": battle.model_b,
            "winner": moat_stats::battles::winner_label(battle.outcome),
            "conv_metadata": {
                "sum_assistant_a_tokens": a,
                "sum_assistant_b_tokens": b,
                "header_count_a": {"h1": rng.gen_range(0..3), "h2": 0},
                "header_count_b": {"h1": rng.gen_range(0..3), "h2": 0},
                "list_count_a": {"ordered": rng.gen_range(0..6), "unordered": 0},
                "list_count_b": {"ordered": rng.gen_range(0..6), "unordered": 0},
                "bold_count_a": {"**": rng.gen_range(0..4), "__": 0},
                "bold_count_b": {"**": rng.gen_range(0..4), "__": 0}
            }
        });
        serde_json::to_writer(&mut out, &record).expect("write battle");
        out.write_all(b"\n").expect("write battle");
    }
}

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// Once, as `moat leaderboard --battles FILE --style-control --rounds N` computes it.
fn end_to_end(path: &std::path::Path, arguments: &Arguments) {
    let start = Instant::now();
    let file = moat_stats::battles::read_arena_battles_file(path).expect("read battles");
    let read_seconds = start.elapsed().as_secs_f64();
    let options = LeaderboardOptions {
        bootstrap_rounds: arguments.rounds,
        seed: arguments.seed,
        style_control: true,
        ..LeaderboardOptions::default()
    };
    let board = leaderboard(&file.battles, &options);
    let total_seconds = start.elapsed().as_secs_f64();
    let styled = board.style_control.as_ref().map_or(0, |s| s.n_battles);
    println!(
        "end to end: {} battles ({} with style features), {} models, {} rounds",
        file.battles.len(),
        styled,
        board.models.len(),
        arguments.rounds
    );
    println!("read (with metadata)                : {read_seconds:>9.2} s");
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
    if let Some(out) = &arguments.json {
        let ratings: BTreeMap<&str, f64> = board
            .models
            .iter()
            .map(|row| (row.model.as_str(), row.rating))
            .collect();
        let style_ratings: BTreeMap<&str, f64> = board
            .style_control
            .iter()
            .flat_map(|style| &style.models)
            .map(|row| (row.model.as_str(), row.rating))
            .collect();
        let record = serde_json::json!({
            "battles": file.battles.len(),
            "rounds": arguments.rounds,
            "seconds_read": read_seconds,
            "seconds_total": total_seconds,
            "peak_memory_bytes": peak,
            "rating": ratings,
            "style_rating": style_ratings,
        });
        std::fs::write(out, record.to_string()).expect("write --json file");
    }
}
