//! Write throughput of the streaming writers over 1,000,000 generated records (prompts ~300
//! characters, responses ~1,000 characters each), with the peak resident memory of each run.
//!
//! ```text
//! cargo run -p moat-exports --release --example bench_write [-- --rows N] [--out DIR]
//! ```
//!
//! Each format runs in its own child process so its peak RSS (`VmHWM`) is its own. Records come from
//! a pool of 1,024 generated records, re-stamped per row with a fresh vote id, prompt id, time and
//! a number at the start of the prompt and of both responses (so every text value is distinct), so the
//! figures measure the writers, not a generator or a database (`generate-only` times the re-stamping). Output goes to a byte-counting
//! sink unless `--out DIR` asks for files.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use moat_exports::table::ParquetCompression;
use moat_exports::{
    writer_for, Choice, Container, ExportOptions, Format, Message, Openness, VoteRecord,
};

const POOL: usize = 1024;

/// A deterministic xorshift generator (no dependency, same text every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// About `length` characters of prose-like text: words drawn with a skewed (roughly Zipf-like)
    /// frequency from a fixed vocabulary of 4,096 pseudo-words, so compressors see text about as
    /// redundant as English, with some non-ASCII and characters JSON must escape (quotes,
    /// newlines), as model output has. The first `STAMP` characters are ASCII, which each row
    /// overwrites with its own number.
    fn text(&mut self, vocabulary: &[String], length: usize) -> String {
        let mut text = String::with_capacity(length + 16);
        while text.len() < length {
            let (a, b) = (self.next() % 4096, self.next() % 4096);
            let word = &vocabulary[(a * b / 4096) as usize];
            if text.len() <= STAMP && !word.is_ascii() {
                continue;
            }
            text.push_str(word);
            text.push(match self.next() % 23 {
                0 if text.len() > STAMP => '\n',
                1 => ',',
                2 => '.',
                _ => ' ',
            });
        }
        text
    }

    fn vocabulary(&mut self) -> Vec<String> {
        const SPECIAL: [&str; 6] = ["naïve", "\"quoted\"", "café", "e.g.", "→", "don't"];
        (0..4096)
            .map(|index| {
                if index % 97 == 5 {
                    return SPECIAL[index % SPECIAL.len()].to_string();
                }
                let length = 1 + (self.next() % 4 + self.next() % 5) as usize;
                (0..length)
                    .map(|_| (b'a' + (self.next() % 26) as u8) as char)
                    .collect()
            })
            .collect()
    }
}

/// Every row's texts start with its own number, so no two rows repeat a value (as in a real study,
/// where a dictionary encoding would gain nothing on the long text columns).
const STAMP: usize = 12;

fn stamp(text: &mut String, row: u64) {
    let mut digits = [b'0'; STAMP];
    let mut value = row;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    text.replace_range(..STAMP, std::str::from_utf8(&digits).expect("ASCII digits"));
}

fn pool() -> Vec<VoteRecord> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocabulary = rng.vocabulary();
    let choices = [
        Choice::Left,
        Choice::Right,
        Choice::Left,
        Choice::Right,
        Choice::Tie,
        Choice::BothBad,
    ];
    (0..POOL)
        .map(|index| VoteRecord {
            vote_id: index as i64,
            study: "bench".to_string(),
            prompt_id: format!("p{index}"),
            conversation: vec![Message::new("user", rng.text(&vocabulary, 300))],
            category: Some("general".to_string()),
            language: Some("en".to_string()),
            left_model: "llama-3.1-70b-instruct".to_string(),
            left_openness: Openness::Open,
            left_response: rng.text(&vocabulary, 1000),
            right_model: "gpt-4o".to_string(),
            right_openness: Openness::Closed,
            right_response: rng.text(&vocabulary, 1000),
            choice: choices[index % choices.len()],
            rater: format!("rater-{:04}", index % 500),
            created_ms: 1_714_521_600_000,
            source_guess: (index % 2 == 0).then(|| "open".to_string()),
            source_confidence: (index % 2 == 0).then_some(3),
            rationale: None,
            time_on_page_ms: Some(12_345),
            assignment_kind: "regular".to_string(),
            completion_code: None,
            left_history: Vec::new(),
            right_history: Vec::new(),
        })
        .collect()
}

struct SharedCounting(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Write for SharedCounting {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// User + system CPU seconds of this process so far, from `/proc/self/stat` (in clock ticks, which
/// are 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 overall.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|kib| kib.parse().ok())
                })
        })
        .unwrap_or(0)
}

/// One measured run in this process; prints one tab-separated result line.
fn run_one(case: &str, rows: u64, out: Option<PathBuf>) -> io::Result<()> {
    let (format, container, compression) = match case {
        "trl-jsonl" => (Format::Trl, Container::Jsonl, ParquetCompression::Snappy),
        "trl-parquet" => (Format::Trl, Container::Parquet, ParquetCompression::Snappy),
        "trl-parquet-zstd" => (Format::Trl, Container::Parquet, ParquetCompression::Zstd),
        "votes-jsonl" => (Format::Votes, Container::Jsonl, ParquetCompression::Snappy),
        "votes-parquet" => (
            Format::Votes,
            Container::Parquet,
            ParquetCompression::Snappy,
        ),
        "votes-parquet-zstd" => (Format::Votes, Container::Parquet, ParquetCompression::Zstd),
        "votes-csv" => (Format::Votes, Container::Csv, ParquetCompression::Snappy),
        "generate-only" => (Format::Votes, Container::Jsonl, ParquetCompression::Snappy),
        _ => return Err(io::Error::other(format!("unknown case {case}"))),
    };
    let mut pool = pool();
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink: Box<dyn Write + Send> = match &out {
        Some(directory) => Box::new(std::fs::File::create(
            directory.join(format!("{case}.{}", container.extension())),
        )?),
        None => Box::new(SharedCounting(bytes.clone())),
    };
    let options = ExportOptions {
        container,
        conversational: false,
        compression,
    };
    let mut writer = writer_for(format, &options, sink)?;
    let mut prompt_id = String::new();
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    for row in 0..rows {
        let record = &mut pool[(row as usize) % POOL];
        record.vote_id = row as i64 + 1;
        prompt_id.clear();
        let _ = write!(prompt_id, "p{}", row / 3);
        record.prompt_id.clone_from(&prompt_id);
        record.created_ms = 1_714_521_600_000 + row as i64 * 250;
        stamp(&mut record.conversation[0].content, row);
        stamp(&mut record.left_response, row);
        stamp(&mut record.right_response, row);
        if case == "generate-only" {
            std::hint::black_box(&*record);
        } else {
            writer.write_record(record)?;
        }
    }
    let summary = writer.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let written = match &out {
        Some(directory) => {
            std::fs::metadata(directory.join(format!("{case}.{}", container.extension())))?.len()
        }
        None => bytes.load(std::sync::atomic::Ordering::Relaxed),
    };
    println!(
        "{case}\t{rows}\t{}\t{seconds:.2}\t{cpu:.2}\t{:.0}\t{:.1}\t{:.1}",
        summary.rows_written,
        rows as f64 / seconds,
        written as f64 / 1e6,
        peak_rss_kib() as f64 / 1024.0
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut rows: u64 = 1_000_000;
    let mut out: Option<PathBuf> = None;
    let mut case: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => rows = args.next().and_then(|n| n.parse().ok()).expect("--rows N"),
            "--out" => out = args.next().map(PathBuf::from),
            "--case" => case = args.next(),
            other => {
                eprintln!("unexpected argument {other}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(case) = case {
        return match run_one(&case, rows, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{case}: {error}");
                ExitCode::FAILURE
            }
        };
    }
    println!(
        "case\trecords\trows_written\tseconds\tcpu_seconds\trecords_per_s\toutput_MB\tpeak_rss_MiB"
    );
    let exe = std::env::current_exe().expect("own path");
    for case in [
        "generate-only",
        "trl-jsonl",
        "votes-jsonl",
        "votes-csv",
        "trl-parquet",
        "trl-parquet-zstd",
        "votes-parquet",
        "votes-parquet-zstd",
    ] {
        let mut command = Command::new(&exe);
        command.args(["--case", case, "--rows", &rows.to_string()]);
        if let Some(directory) = &out {
            command.arg("--out").arg(directory);
        }
        match command.status() {
            Ok(status) if status.success() => {}
            other => {
                eprintln!("{case}: {other:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
