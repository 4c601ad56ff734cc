//! `moat leaderboard`: ratings for a study or an Arena battles file, by category, de-duplicated,
//! reweighted and with style control as asked, and a study's questions (parity per pair).

use std::fmt::Write as _;
use std::path::PathBuf;

use moat_stats::battles::ArenaBattles;
use moat_stats::{
    CategoryRanks, Deduplication, GroupParity, Leaderboard, LeaderboardOptions, StyleComparison,
};
use serde::Serialize;

use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct LeaderboardArgs {
    /// A study; repeat it (or add --battles) for a composite ranking across sources.
    #[arg(long, required_unless_present = "battles")]
    pub study: Vec<String>,
    /// A Chatbot Arena battles file (JSON array or JSONL: model_a, model_b, winner; optionally
    /// conversation_a/_b, conv_metadata, category, language, tstamp); repeatable.
    #[arg(long)]
    pub battles: Vec<PathBuf>,
    /// With several sources: the weight of each source's votes, in the order studies then
    /// battles files (comma-separated; default 1 each).
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<f64>,
    /// Ratings recomputed as votes arrive: `day` (needs vote times) or every N votes.
    #[arg(long)]
    pub history: Option<String>,
    /// The window, in votes, of the top-3 stability count.
    #[arg(long, default_value_t = 1000)]
    pub history_window: u64,
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    #[arg(long)]
    pub csv: bool,
    /// Seed of the bootstrap (same data and seed give the same numbers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap rounds.
    #[arg(long, default_value_t = 1000)]
    pub rounds: usize,
    /// Davidson's tie model instead of ties as half a win.
    #[arg(long)]
    pub davidson: bool,
    /// Count the votes on comparisons where a response names a model or its maker (identity
    /// flags); by default they are left out, as Chatbot Arena drops such battles.
    #[arg(long)]
    pub include_flagged: bool,
    /// Leave out the votes of raters the rigging and carelessness tests flag (votes the crowd
    /// rarely gives, loyalty to one model, one side, too fast); by default they are counted
    /// and listed.
    #[arg(long)]
    pub drop_flagged: bool,
    /// Only the votes of one category: an imported category, or an automatic tag (code, math,
    /// non-english, multi-turn, long-query).
    #[arg(long)]
    pub category: Option<String>,
    /// Print each model's rank in each category (LMArena's rank-by-category view).
    #[arg(long, conflicts_with = "category")]
    pub by_category: bool,
    /// Fit ratings with style (length and markdown) held equal and print them beside the plain
    /// ones with each model's rank change.
    #[arg(long)]
    pub style_control: bool,
    /// De-duplicate prompts as LMArena does (on by default for arena studies and for battles
    /// files with conversations).
    #[arg(long, conflicts_with = "no_dedup")]
    pub dedup: bool,
    /// Keep every vote, however often its prompt was asked.
    #[arg(long)]
    pub no_dedup: bool,
    /// Reweight over-represented pairs of models (each battle weighs 1/max(n, 50), LMArena's 2025
    /// rule), with weighted sandwich intervals.
    #[arg(long)]
    pub reweight: bool,
}

impl LeaderboardArgs {
    fn options(&self) -> LeaderboardOptions {
        LeaderboardOptions {
            style_control: self.style_control,
            reweight_pairs: self.reweight,
            ..crate::analysis::leaderboard_options(
                Some(self.seed),
                Some(self.rounds),
                self.davidson,
            )
        }
    }

    fn deduplicate(&self) -> Option<bool> {
        match (self.dedup, self.no_dedup) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// Reads a battles file: Parquet (by its `PAR1` magic bytes; one row per battle, the same
/// columns as the JSON), else a JSON array or JSON Lines.
pub fn read_battles_any(path: &std::path::Path) -> anyhow::Result<ArenaBattles> {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let is_parquet = std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PAR1";
    if !is_parquet {
        return moat_stats::battles::read_arena_battles_file(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    // Files shaped like LMArena's battles without their texts are read by column; others row by row.
    if let Some(file) = moat_exports::arena_parquet::read_arena_parquet_battles(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    {
        return Ok(file);
    }
    let mut file = ArenaBattles::default();
    let rows = moat_exports::read::open_rows(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for row in rows {
        let (row, object) = row.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        file.push_value(serde_json::Value::Object(object), row as usize)
            .map_err(|e| {
                let field = e.field.map_or(String::new(), |f| format!(", field `{f}`"));
                anyhow::anyhow!("{}: row {row}{field}: {}", path.display(), e.message)
            })?;
    }
    file.finish();
    Ok(file)
}

/// What `--battles --json` prints: the leaderboard's fields, then what was asked beside it.
#[derive(Serialize)]
struct BattlesReport {
    #[serde(flatten)]
    leaderboard: Leaderboard,
    category: Option<String>,
    categories: Vec<moat_stats::categories::CategoryCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ranks_by_category: Option<CategoryRanks>,
    #[serde(skip_serializing_if = "Option::is_none")]
    style_comparison: Option<StyleComparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<moat_stats::History>,
    #[serde(skip)]
    history_text: Option<String>,
}

/// The leaderboard of an Arena battles file, as the arguments ask.
fn battles_report(
    mut file: ArenaBattles,
    args: &LeaderboardArgs,
    options: &LeaderboardOptions,
    history_step: Option<moat_stats::HistoryStep>,
) -> anyhow::Result<BattlesReport> {
    let deduplicate = args.deduplicate().unwrap_or(!file.prompt_keys.is_empty());
    let mut deduplication: Option<Deduplication> = None;
    if deduplicate {
        if file.prompt_keys.is_empty() {
            anyhow::bail!("--dedup needs the prompts: the battles file has no conversation_a");
        }
        let (keep, report) = moat_stats::deduplicate(
            &file.prompt_keys,
            moat_stats::dedup::DEFAULT_PERCENTILE,
            options.seed,
        );
        file.retain(&keep);
        deduplication = Some(report);
    }
    let categories = file.categories.counts();
    if let Some(category) = &args.category {
        let members = file.categories.members_of(category).ok_or_else(|| {
            anyhow::anyhow!(
                "no battles in category {category:?}; the file's categories are {}",
                if categories.is_empty() {
                    "none (it has no category, language or conversation fields)".to_string()
                } else {
                    categories
                        .iter()
                        .map(|c| format!("{} ({})", c.category, c.battles))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        })?;
        let mut keep = vec![false; file.battles.len()];
        for &member in members {
            keep[member as usize] = true;
        }
        file.retain(&keep);
    }
    let mut board = moat_stats::leaderboard(&file.battles, options);
    board.deduplication = deduplication;
    let ranks_by_category = args
        .by_category
        .then(|| moat_stats::category_ranks(&file.battles, &file.categories, &board, options));
    let style_comparison = moat_stats::style_comparison(&board);
    let history = history_step
        .map(|step| {
            let times = (!file.timestamps.is_empty()).then_some(file.timestamps.as_slice());
            moat_stats::history(
                &file.battles,
                times,
                step,
                args.history_window,
                &LeaderboardOptions {
                    bootstrap_rounds: 0,
                    ..options.clone()
                },
            )
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    Ok(BattlesReport {
        leaderboard: board,
        category: args.category.clone(),
        categories,
        ranks_by_category,
        style_comparison,
        history,
        history_text: None,
    })
}

pub async fn run(
    args: LeaderboardArgs,
    database_url: &str,
    connect_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let options = args.options();
    options.validate().map_err(anyhow::Error::msg)?;
    let history_step = args
        .history
        .as_deref()
        .map(moat_stats::HistoryStep::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let sources = args.study.len() + args.battles.len();
    if sources > 1 {
        return run_composite(args, database_url, connect_timeout, &options).await;
    }
    if !args.weights.is_empty() {
        anyhow::bail!("--weights is for several sources (--study and --battles repeated)");
    }
    if let Some(path) = args.battles.first().cloned() {
        if args.drop_flagged {
            anyhow::bail!("--drop-flagged is for studies: a battles file has no raters");
        }
        let report = tokio::task::spawn_blocking(
            move || -> anyhow::Result<(BattlesReport, LeaderboardArgs)> {
                let file = read_battles_any(&path)?;
                let mut report = battles_report(file, &args, &options, history_step)?;
                if let Some(history) = &report.history {
                    report.history_text = Some(render_history(history));
                }
                Ok((report, args))
            },
        )
        .await??;
        let (report, args) = report;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if args.csv {
            print!("{}", moat_stats::to_csv(&report.leaderboard));
        } else {
            print!(
                "{}",
                render_extras(
                    &report.leaderboard,
                    report.style_comparison.as_ref(),
                    report.ranks_by_category.as_ref(),
                    args.category.as_deref(),
                )
            );
            if let Some(text) = &report.history_text {
                print!("\n{text}");
            }
        }
        return Ok(());
    }
    let slug = args
        .study
        .first()
        .cloned()
        .expect("clap requires --study or --battles");
    let store = Store::connect_within(database_url, connect_timeout).await?;
    let backend = crate::service::AppService::new(store, String::new());
    let result = backend
        .analysis_with(
            &slug,
            options,
            args.include_flagged,
            args.drop_flagged,
            crate::analysis::StudyQuery {
                category: args.category.clone(),
                deduplicate: args.deduplicate(),
                history_step: history_step.or(Some(moat_stats::HistoryStep::Day)),
                history_window: args.history_window,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"));
    backend.store.close().await;
    let (_, analysis) = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
        return Ok(());
    }
    if args.csv {
        print!("{}", moat_stats::to_csv(&analysis.leaderboard));
        return Ok(());
    }
    print!(
        "{}",
        render_extras(
            &analysis.leaderboard,
            args.style_control
                .then_some(analysis.style_comparison.as_ref())
                .flatten(),
            args.by_category
                .then_some(analysis.ranks_by_category.as_ref())
                .flatten(),
            args.category.as_deref(),
        )
    );
    if let Some(parity) = &analysis.parity_by_pair {
        print!("\n{}", render_parity(parity));
    }
    if let (Some(history), Some(_)) = (&analysis.history, &args.history) {
        print!("\n{}", render_history(history));
    }
    if let Some(d) = &analysis.distinguishability {
        println!("\nDistinguishability: {}", d.overall.summary);
    }
    println!("\nBias: {}", analysis.bias.summary);
    println!("\nAgreement: {}", analysis.agreement.summary);
    if !analysis.flagged_raters.is_empty() {
        println!(
            "\nFlagged raters ({} votes, {}):",
            analysis.flagged_rater_votes,
            if analysis.flagged_raters_left_out {
                "left out"
            } else {
                "counted; --drop-flagged leaves them out"
            }
        );
        for check in &analysis.flagged_raters {
            for flag in &check.flags {
                println!("  {}: {}", check.rater, flag.reason);
            }
        }
    }
    if analysis.flagged_votes > 0 {
        println!(
            "\nIdentity flags: {} votes on comparisons where a response names a model or its maker {}.",
            analysis.flagged_votes,
            if analysis.flagged_votes_left_out {
                "are left out (--include-flagged counts them)"
            } else {
                "are counted"
            }
        );
    }
    Ok(())
}

/// Names are user data: control characters would break the table (and could drive the terminal).
fn printable(name: &str, width: usize) -> String {
    name.chars()
        .take(width)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The plain table, then de-duplication, reweighting, the style-controlled table and the ranks
/// by category where present.
pub fn render_extras(
    board: &Leaderboard,
    style: Option<&StyleComparison>,
    ranks: Option<&CategoryRanks>,
    category: Option<&str>,
) -> String {
    let mut out = String::new();
    if let Some(category) = category {
        let _ = writeln!(out, "Category: {}\n", printable(category, 64));
    }
    out.push_str(&moat_stats::render_table(board));
    if let Some(d) = &board.deduplication {
        let _ = writeln!(
            out,
            "\nDe-duplication: {} of {} votes left out ({} prompts asked more often than the \
             99.99th percentile, {:.1} times, keep {} each).",
            d.battles_left_out,
            d.battles_with_prompt,
            d.high_frequency_prompts,
            d.cutoff,
            d.cutoff.floor()
        );
    }
    if let Some(r) = &board.reweighting {
        let _ = writeln!(
            out,
            "\nReweighting: {} pairs down-weighted; effective sample {:.0} of {} votes{} ({}).",
            r.pairs_down_weighted,
            r.effective_battles,
            board.n_battles,
            r.largest_change
                .as_ref()
                .map_or(String::new(), |(model, change)| format!(
                    "; largest change against the unweighted fit: {} {change:+.1} points",
                    printable(model, 48)
                )),
            r.method
        );
    }
    if let Some(style) = style {
        out.push('\n');
        out.push_str(&render_style(style));
    }
    if let Some(ranks) = ranks {
        out.push('\n');
        out.push_str(&render_ranks(ranks));
    }
    out
}

/// Both tables side by side: plain rank and rating, style-controlled rank and rating, change.
pub fn render_style(style: &StyleComparison) -> String {
    let width = style
        .rows
        .iter()
        .map(|r| r.model.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    let mut out = String::new();
    let _ = writeln!(out, "With style control (length and markdown held equal):");
    let _ = writeln!(
        out,
        "{:<width$}  {:>4}  {:>7}  {:>8}  {:>9}  {:>17}  {:>6}",
        "Model", "Rank", "Rating", "SC rank", "SC rating", "SC 95% CI", "Change"
    );
    for row in &style.rows {
        let change = match row.rank_change {
            0 => "=".to_string(),
            c if c > 0 => format!("+{c}"),
            c => c.to_string(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>4}  {:>7.1}  {:>8}  {:>9.1}  {:>17}  {:>6}",
            printable(&row.model, width),
            row.rank,
            row.rating,
            row.style_rank,
            row.style_rating,
            row.style_ci.map_or_else(
                || "-".to_string(),
                |c| format!("[{:.1}, {:.1}]", c.lower, c.upper)
            ),
            change
        );
    }
    let coefficients: Vec<String> = style
        .coefficients
        .iter()
        .map(|c| format!("{} {:+.3}", c.feature, c.coefficient))
        .collect();
    let _ = writeln!(
        out,
        "Ranks are rank upper bounds; Change = plain rank - style-controlled rank (+ moves up). \
         Style coefficients (log-odds per SD): {}.",
        coefficients.join(", ")
    );
    out
}

/// Rank (upper bound) of each model in each category.
pub fn render_ranks(ranks: &CategoryRanks) -> String {
    let width = ranks
        .models
        .iter()
        .map(|m| m.model.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    let mut out = String::new();
    let _ = writeln!(out, "Rank by category (rank upper bound; - without votes):");
    let _ = write!(out, "{:<width$}  {:>7}", "Model", "Overall");
    for category in &ranks.categories {
        let name = printable(&category.category, 16);
        let _ = write!(out, "  {:>w$}", name, w = name.chars().count().max(4));
    }
    out.push('\n');
    for model in &ranks.models {
        let _ = write!(
            out,
            "{:<width$}  {:>7}",
            printable(&model.model, width),
            model.overall
        );
        for (rank, category) in model.ranks.iter().zip(&ranks.categories) {
            let w = printable(&category.category, 16).chars().count().max(4);
            let _ = write!(
                out,
                "  {:>w$}",
                rank.map_or_else(|| "-".to_string(), |r| r.to_string())
            );
        }
        out.push('\n');
    }
    let counts: Vec<String> = ranks
        .categories
        .iter()
        .map(|c| format!("{} {}", printable(&c.category, 64), c.battles))
        .collect();
    let _ = writeln!(out, "Votes per category: {}.", counts.join(", "));
    out
}

/// Parity for each open model against each closed model, then pooled, each raw and with style
/// held equal.
pub fn render_parity(parity: &GroupParity) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Parity (TOST against 50% ± 5 points):");
    for pair in &parity.pairs {
        let _ = writeln!(out, "  {}", pair.parity.summary);
        if let Some(style) = &pair.style_controlled {
            let _ = writeln!(out, "    {}", style.summary);
        }
    }
    let _ = writeln!(out, "  Pooled: {}", parity.pooled.summary);
    if let Some(style) = &parity.pooled_style_controlled {
        let _ = writeln!(out, "    {}", style.summary);
    }
    if let Some(longer) = &parity.longer_response_preferred {
        if let Some(share) = longer.estimate {
            let _ = writeln!(
                out,
                "  Raters preferred the longer response in {:.1}% of decided votes between \
                 responses of different lengths (n = {}).",
                share * 100.0,
                longer.n
            );
        }
    }
    out
}

/// The checkpoints (label, votes, the top 3) and the top-3 stability.
pub fn render_history(history: &moat_stats::History) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "History ({}):", history.method);
    let _ = writeln!(
        out,
        "{:>12}  {:>9}  Top 3 (best first)",
        "Checkpoint", "Votes"
    );
    for point in &history.points {
        let top: Vec<String> = point
            .models
            .iter()
            .take(3)
            .map(|m| format!("{} {:.0}", printable(&m.model, 32), m.rating))
            .collect();
        let _ = writeln!(
            out,
            "{:>12}  {:>9}  {}",
            point.label,
            point.votes,
            top.join(", ")
        );
    }
    let _ = writeln!(out, "{}", history.stability.summary);
    out
}

/// One rating vector over several studies and battles files (`--study`/`--battles` repeated),
/// each source weighted by `--weights`.
async fn run_composite(
    args: LeaderboardArgs,
    database_url: &str,
    connect_timeout: std::time::Duration,
    options: &LeaderboardOptions,
) -> anyhow::Result<()> {
    if args.category.is_some()
        || args.by_category
        || args.history.is_some()
        || args.dedup
        || args.drop_flagged
    {
        anyhow::bail!(
            "--category, --by-category, --history, --dedup and --drop-flagged work on one source; \
             a composite ranking takes whole sources"
        );
    }
    let sources = args.study.len() + args.battles.len();
    let weights = if args.weights.is_empty() {
        vec![1.0; sources]
    } else if args.weights.len() == sources {
        args.weights.clone()
    } else {
        anyhow::bail!(
            "--weights has {} values for {sources} sources (studies first, then battles files)",
            args.weights.len()
        );
    };
    moat_stats::composite::validate_weights(&weights).map_err(anyhow::Error::msg)?;
    let mut named: Vec<(String, Vec<moat_stats::Battle>)> = Vec::new();
    if !args.study.is_empty() {
        let store = Store::connect_within(database_url, connect_timeout).await?;
        let backend = crate::service::AppService::new(store, String::new());
        for slug in &args.study {
            let battles = backend
                .study_battles(slug, args.include_flagged)
                .await
                .map_err(|e| anyhow::anyhow!("study {slug}: {e}"));
            match battles {
                Ok(battles) => named.push((format!("study {slug}"), battles)),
                Err(error) => {
                    backend.store.close().await;
                    return Err(error);
                }
            }
        }
        backend.store.close().await;
    }
    for path in &args.battles {
        let owned = path.clone();
        let file = tokio::task::spawn_blocking(move || read_battles_any(&owned)).await??;
        named.push((path.display().to_string(), file.battles));
    }
    let options = options.clone();
    let result = tokio::task::spawn_blocking(move || {
        let sources: Vec<moat_stats::Source<'_>> = named
            .iter()
            .zip(&weights)
            .map(|((name, battles), weight)| moat_stats::Source {
                name: name.clone(),
                battles,
                weight: *weight,
            })
            .collect();
        moat_stats::composite(&sources, &options)
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render_composite(&result));
    }
    Ok(())
}

pub fn render_composite(result: &moat_stats::Composite) -> String {
    let width = result
        .models
        .iter()
        .map(|m| m.model.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>4} {:>4}  {:<width$}  {:>7}  {:>17}",
        "Rank", "UB", "Model", "Rating", "95% CI"
    );
    for (k, _) in result.sources.iter().enumerate() {
        let _ = write!(out, "  {:>8}", format!("votes S{}", k + 1));
    }
    out.push('\n');
    for row in &result.models {
        let interval = row.ci.or(row.ci_sandwich).map_or_else(
            || "-".to_string(),
            |c| format!("[{:.1}, {:.1}]", c.lower, c.upper),
        );
        let _ = write!(
            out,
            "{:>4} {:>4}  {:<width$}  {:>7.1}  {:>17}",
            row.rank,
            row.rank_upper_bound,
            printable(&row.model, width),
            row.rating,
            interval
        );
        for votes in &row.votes_by_source {
            let _ = write!(out, "  {votes:>8}");
        }
        out.push('\n');
    }
    out.push('\n');
    for (k, source) in result.sources.iter().enumerate() {
        let _ = writeln!(
            out,
            "S{}: {} (weight {}, {} votes, {} models)",
            k + 1,
            printable(&source.name, 200),
            source.weight,
            source.battles,
            source.models.len()
        );
    }
    let _ = writeln!(out, "{}", result.method);
    out
}
