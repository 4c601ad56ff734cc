//! Style control (as in Chatbot Arena): Bradley–Terry with covariates for the difference in length
//! and markdown decoration of the two responses, so the ratings answer "which model is better with
//! style held equal?".

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::bt::sigmoid;
use crate::intervals::z_for_level;
use crate::leaderboard::{LeaderboardOptions, Scaling, ELO_POINTS_PER_UNIT};
use crate::linalg::{Cholesky, Matrix};
use crate::model::{Battle, Interval, StyleFeatures, STYLE_FEATURE_NAMES};

const FEATURES: usize = STYLE_FEATURE_NAMES.len();

/// Measures the style of one response: characters, markdown headers, list items and bold spans,
/// ignoring anything inside fenced code blocks (the patterns follow Arena's style-control features).
pub fn style_features(text: &str) -> StyleFeatures {
    let mut features = StyleFeatures {
        length: u32::try_from(text.chars().count()).unwrap_or(u32::MAX),
        ..StyleFeatures::default()
    };
    let mut in_code_block = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        if is_header(line) {
            features.headers += 1;
        }
        if is_list_item(trimmed) {
            features.lists += 1;
        }
        features.bold += count_delimited(line, "**", '*') + count_delimited(line, "__", '_');
    }
    features
}

fn is_header(line: &str) -> bool {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    (1..=6).contains(&hashes) && line[hashes..].starts_with(char::is_whitespace)
}

fn is_list_item(trimmed: &str) -> bool {
    if let Some(rest) = trimmed.strip_prefix(['-', '*', '+']) {
        return rest.starts_with(char::is_whitespace);
    }
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && trimmed[digits..].starts_with(". ")
}

/// Non-overlapping spans `delimiter content delimiter` on one line, where the content is non-empty
/// and free of `marker` (the regex `\*\*[^*\n]+\*\*`).
fn count_delimited(line: &str, delimiter: &str, marker: char) -> u32 {
    let mut count = 0;
    let mut rest = line;
    while let Some(start) = rest.find(delimiter) {
        let after = &rest[start + delimiter.len()..];
        match after.find(marker) {
            Some(end) if end > 0 && after[end..].starts_with(delimiter) => {
                count += 1;
                rest = &after[end + delimiter.len()..];
            }
            _ => rest = &rest[start + marker.len_utf8()..],
        }
    }
    count
}

/// One model's style-controlled rating.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleRating {
    pub model: String,
    pub rating: f64,
    /// Normal interval from the sandwich covariance.
    pub ci: Option<Interval>,
    pub standard_error: Option<f64>,
}

/// The effect of one style covariate: the change in log-odds of winning per standard deviation of
/// the normalised difference `(a − b) / (a + b + 1)` between the two responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleCoefficient {
    pub feature: String,
    pub coefficient: f64,
    pub standard_error: Option<f64>,
    pub ci: Option<Interval>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleControlled {
    pub method: String,
    /// Battles with style features that entered the fit.
    pub n_battles: u64,
    /// Sorted by rating, best first.
    pub models: Vec<StyleRating>,
    pub coefficients: Vec<StyleCoefficient>,
    pub converged: bool,
}

struct Row {
    /// Model indices (u32 keeps a row at 48 bytes: 10M battles are 480 MB of rows).
    a: u32,
    b: u32,
    score: f64,
    covariates: [f64; FEATURES],
}

/// Fits the style-controlled ratings from the battles that carry style features; `None` when there
/// are none.
pub(crate) fn fit_style_controlled(
    battles: &[Battle],
    options: &LeaderboardOptions,
) -> Option<StyleControlled> {
    fit_style(battles, options).map(|fit| fit.report(options))
}

/// The fitted style-controlled model: ratings and style coefficients in natural units, with their
/// sandwich covariance, so that contrasts (a pair of models, two groups) get standard errors.
pub(crate) struct StyleFit {
    /// Sorted by name.
    pub(crate) models: Vec<String>,
    /// Ratings of `models` (natural units), then one coefficient per style feature.
    pub(crate) beta: Vec<f64>,
    /// Sandwich covariance of `beta`; `None` when the information matrix was singular.
    pub(crate) covariance: Option<Matrix>,
    pub(crate) n_battles: u64,
    pub(crate) converged: bool,
}

impl StyleFit {
    pub(crate) fn index_of(&self, model: &str) -> Option<usize> {
        self.models
            .binary_search_by(|candidate| candidate.as_str().cmp(model))
            .ok()
    }

    /// The value and standard error (natural units) of `Σ contrast[i] · θᵢ` over the models.
    pub(crate) fn contrast(&self, contrast: &[f64]) -> (f64, Option<f64>) {
        let value = contrast.iter().zip(&self.beta).map(|(c, b)| c * b).sum();
        let standard_error = self.covariance.as_ref().and_then(|c| {
            let mut full = vec![0.0; self.beta.len()];
            full[..contrast.len()].copy_from_slice(contrast);
            let variance = c.quadratic_form(&full);
            (variance.is_finite() && variance >= 0.0).then(|| variance.sqrt())
        });
        (value, standard_error)
    }
}

/// Fits the style-controlled model to the battles that carry style features; `None` when none do.
pub(crate) fn fit_style(battles: &[Battle], options: &LeaderboardOptions) -> Option<StyleFit> {
    let styled = || {
        battles
            .iter()
            .filter(|b| b.style.is_some() && b.model_a != b.model_b)
    };
    // The distinct names first (a set, not a sorted copy of every battle's two names: at 10M
    // battles that copy was 20M strings to allocate, sort and free).
    let mut models: Vec<String> = styled()
        .flat_map(|b| [b.model_a.as_str(), b.model_b.as_str()])
        .collect::<std::collections::HashSet<&str>>()
        .into_iter()
        .map(str::to_string)
        .collect();
    if models.is_empty() {
        return None;
    }
    models.sort();
    let index: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut rows: Vec<Row> = styled()
        .map(|battle| {
            let style = battle.style.expect("filtered on style");
            let (a, b) = (style.a.as_array(), style.b.as_array());
            let mut covariates = [0.0; FEATURES];
            for k in 0..FEATURES {
                // Arena's ratio (a − b) / (a + b + 1): the +1 keeps 0-vs-0 at zero and damps small counts.
                covariates[k] = (a[k] - b[k]) / (a[k] + b[k] + 1.0);
            }
            Row {
                a: index[battle.model_a.as_str()] as u32,
                b: index[battle.model_b.as_str()] as u32,
                score: battle.outcome.score_a(),
                covariates,
            }
        })
        .collect();
    // Standardise each covariate (Arena does too) so coefficients are comparable; a covariate
    // that never varies stays zero and its coefficient is held at zero by the ridge below.
    for k in 0..FEATURES {
        let count = rows.len() as f64;
        let mean = rows.iter().map(|r| r.covariates[k]).sum::<f64>() / count;
        let variance = rows
            .iter()
            .map(|r| (r.covariates[k] - mean).powi(2))
            .sum::<f64>()
            / count;
        let deviation = variance.sqrt();
        for row in &mut rows {
            row.covariates[k] = if deviation > 1e-12 {
                (row.covariates[k] - mean) / deviation
            } else {
                0.0
            };
        }
    }

    let n = models.len();
    let parameters = n + FEATURES;
    let prior = options.prior_strength;
    let mut beta = vec![0.0; parameters];
    // Newton's method with step halving; each pass over the battles gives the objective and its
    // derivatives at once, so an accepted step needs no second pass.
    let mut state = evaluate(&rows, &beta, n, prior);
    let mut converged = false;
    for _ in 0..100 {
        let Some(factor) = Cholesky::new(&state.information) else {
            break;
        };
        let step = factor.solve(&state.gradient);
        let largest = step.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
        let mut scale = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            let candidate: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + scale * s).collect();
            let at_candidate = evaluate(&rows, &candidate, n, prior);
            if at_candidate.objective >= state.objective - 1e-12 * (1.0 + state.objective.abs()) {
                beta = candidate;
                state = at_candidate;
                accepted = true;
                break;
            }
            scale *= 0.5;
        }
        if !accepted || largest < 1e-9 {
            converged = accepted;
            break;
        }
    }
    let information = state.information;

    // Sandwich covariance: A⁻¹ M A⁻¹ with M the sum of squared per-battle scores.
    let score_covariance = sum_matrices(
        parameters,
        over_chunks(&rows, |chunk| {
            let mut partial = Matrix::zeros(parameters);
            for row in chunk {
                let residual = row.score - sigmoid(linear_predictor(row, &beta, n));
                add_outer(&mut partial, row, n, residual * residual);
            }
            partial
        }),
    );
    let covariance = Cholesky::new(&information).map(|factor| {
        let inverse = factor.inverse();
        inverse.multiply(&score_covariance).multiply(&inverse)
    });

    Some(StyleFit {
        models,
        beta,
        covariance,
        n_battles: rows.len() as u64,
        converged,
    })
}

impl StyleFit {
    /// The ratings on the leaderboard's scale with intervals, and the style coefficients.
    fn report(self, options: &LeaderboardOptions) -> StyleControlled {
        let StyleFit {
            models,
            beta,
            covariance,
            n_battles,
            converged,
        } = self;
        let n = models.len();
        let parameters = beta.len();
        let scaling = Scaling::new(&models, options);
        let ratings = scaling.apply(&beta[..n]);
        let z = z_for_level(options.confidence);
        let mut model_rows: Vec<StyleRating> = (0..n)
            .map(|i| {
                let standard_error = covariance.as_ref().and_then(|c| {
                    let mut contrast = vec![0.0; parameters];
                    contrast[..n].copy_from_slice(&scaling.contrast(i, n));
                    let variance = c.quadratic_form(&contrast);
                    (variance >= 0.0).then(|| variance.sqrt() * ELO_POINTS_PER_UNIT)
                });
                StyleRating {
                    model: models[i].clone(),
                    rating: ratings[i],
                    ci: standard_error.map(|se| {
                        Interval::new(ratings[i] - z * se, ratings[i] + z * se, options.confidence)
                    }),
                    standard_error,
                }
            })
            .collect();
        model_rows.sort_by(|x, y| {
            y.rating
                .total_cmp(&x.rating)
                .then_with(|| x.model.cmp(&y.model))
        });
        let coefficients = (0..FEATURES)
            .map(|k| {
                let standard_error = covariance.as_ref().and_then(|c| {
                    let variance = c.get(n + k, n + k);
                    (variance >= 0.0).then(|| variance.sqrt())
                });
                StyleCoefficient {
                    feature: STYLE_FEATURE_NAMES[k].to_string(),
                    coefficient: beta[n + k],
                    standard_error,
                    ci: standard_error.map(|se| {
                        Interval::new(
                            beta[n + k] - z * se,
                            beta[n + k] + z * se,
                            options.confidence,
                        )
                    }),
                }
            })
            .collect();
        StyleControlled {
        method: format!(
            "Bradley-Terry logistic regression with standardised covariates (a-b)/(a+b+1) for {}, ties as half; \
             ratings with style held equal on the leaderboard's scale; {:.0}% intervals from the sandwich covariance",
            STYLE_FEATURE_NAMES.join(", "),
            options.confidence * 100.0
        ),
        n_battles,
        models: model_rows,
        coefficients,
        converged,
    }
    }
}

#[inline]
fn linear_predictor(row: &Row, beta: &[f64], n: usize) -> f64 {
    let mut eta = beta[row.a as usize] - beta[row.b as usize];
    for k in 0..FEATURES {
        eta += beta[n + k] * row.covariates[k];
    }
    eta
}

/// Adds `weight · x xᵀ` for the row's design vector `x = eₐ − e_b ⊕ covariates`.
fn add_outer(matrix: &mut Matrix, row: &Row, n: usize, weight: f64) {
    let (a, b) = (row.a as usize, row.b as usize);
    matrix.add(a, a, weight);
    matrix.add(b, b, weight);
    matrix.add(a, b, -weight);
    matrix.add(b, a, -weight);
    for k in 0..FEATURES {
        let cross = weight * row.covariates[k];
        matrix.add(a, n + k, cross);
        matrix.add(n + k, a, cross);
        matrix.add(b, n + k, -cross);
        matrix.add(n + k, b, -cross);
        for l in 0..FEATURES {
            matrix.add(n + k, n + l, cross * row.covariates[l]);
        }
    }
}

/// Rows per chunk of the passes over all battles.
const CHUNK_ROWS: usize = 1 << 16;

/// Runs `work` on fixed chunks of the rows (in parallel with the `parallel` feature) and returns
/// the chunks' results in order: sums taken in that order are the same on any number of threads.
fn over_chunks<T: Send>(rows: &[Row], work: impl Fn(&[Row]) -> T + Sync + Send) -> Vec<T> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        rows.par_chunks(CHUNK_ROWS).map(work).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        rows.chunks(CHUNK_ROWS).map(work).collect()
    }
}

/// The sum of the matrices, in order.
fn sum_matrices(size: usize, matrices: Vec<Matrix>) -> Matrix {
    let mut total = Matrix::zeros(size);
    for matrix in matrices {
        for (t, m) in total.data.iter_mut().zip(&matrix.data) {
            *t += m;
        }
    }
    total
}

/// The penalised log-likelihood at one point with its gradient and regularised negative Hessian.
struct Evaluation {
    objective: f64,
    gradient: Vec<f64>,
    information: Matrix,
}

/// One pass over the battles: [`Evaluation`] at `beta`. Per battle one `exp` and one `ln_1p` give
/// both log-probabilities and the fitted probability.
fn evaluate(rows: &[Row], beta: &[f64], n: usize, prior: f64) -> Evaluation {
    let parameters = n + FEATURES;
    let partials = over_chunks(rows, |chunk| {
        let mut total = 0.0;
        let mut gradient = vec![0.0; parameters];
        let mut information = Matrix::zeros(parameters);
        for row in chunk {
            let eta = linear_predictor(row, beta, n);
            let e = (-eta.abs()).exp();
            let log_1p = e.ln_1p();
            // log σ(η) and log σ(−η), each min(·, 0) − ln(1 + e^−|η|); σ(η) from the same e.
            let (log_p, log_not_p) = (eta.min(0.0) - log_1p, (-eta).min(0.0) - log_1p);
            total += row.score * log_p + (1.0 - row.score) * log_not_p;
            let q = if eta >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            let residual = row.score - q;
            gradient[row.a as usize] += residual;
            gradient[row.b as usize] -= residual;
            for k in 0..FEATURES {
                gradient[n + k] += residual * row.covariates[k];
            }
            add_outer(&mut information, row, n, q * (1.0 - q));
        }
        (total, (gradient, information))
    });
    let mut objective = 0.0;
    let mut derivative_parts = Vec::with_capacity(partials.len());
    for (total, part) in partials {
        objective += total;
        derivative_parts.push(part);
    }
    objective -= 0.5 * prior * beta[..n].iter().map(|t| t * t).sum::<f64>();
    let (gradient, information) = combine_derivatives(derivative_parts, beta, n, prior);
    Evaluation {
        objective,
        gradient,
        information,
    }
}

/// Sums the chunks' gradients and information matrices in order and adds the prior and the pin.
fn combine_derivatives(
    partials: Vec<(Vec<f64>, Matrix)>,
    beta: &[f64],
    n: usize,
    prior: f64,
) -> (Vec<f64>, Matrix) {
    let parameters = n + FEATURES;
    let mut gradient = vec![0.0; parameters];
    let mut matrices = Vec::with_capacity(partials.len());
    for (partial_gradient, partial_information) in partials {
        for (total, part) in gradient.iter_mut().zip(&partial_gradient) {
            *total += part;
        }
        matrices.push(partial_information);
    }
    let mut information = sum_matrices(parameters, matrices);
    for i in 0..n {
        gradient[i] -= prior * beta[i];
    }
    // The ratings' mean is not identified: pin it with 1 1ᵀ/n, which leaves the optimum alone.
    let largest_diagonal = (0..parameters)
        .map(|i| information.get(i, i))
        .fold(0.0, f64::max);
    for i in 0..parameters {
        information.add(i, i, 1e-10 * (1.0 + largest_diagonal));
    }
    for i in 0..n {
        information.add(i, i, prior);
        for j in 0..n {
            information.add(i, j, 1.0 / n as f64);
        }
    }
    (gradient, information)
}

/// One model in the plain and the style-controlled leaderboards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleComparisonRow {
    pub model: String,
    /// Rank (upper bound) and rating in the plain leaderboard.
    pub rank: usize,
    pub rating: f64,
    /// Rank (upper bound, from the sandwich intervals) and rating with style held equal.
    pub style_rank: usize,
    pub style_rating: f64,
    pub style_ci: Option<Interval>,
    /// `rank − style_rank`: positive when the model moves up once style is held equal.
    pub rank_change: i64,
}

/// Both leaderboards side by side, in the order of the style-controlled one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleComparison {
    pub method: String,
    pub rows: Vec<StyleComparisonRow>,
    pub coefficients: Vec<StyleCoefficient>,
}

/// The plain leaderboard beside its style-controlled ratings; `None` without style control.
pub fn style_comparison(board: &crate::leaderboard::Leaderboard) -> Option<StyleComparison> {
    let style = board.style_control.as_ref()?;
    let rank_of = |i: usize| {
        let upper = style.models[i]
            .ci
            .map_or(style.models[i].rating, |c| c.upper);
        1 + style
            .models
            .iter()
            .enumerate()
            .filter(|&(j, other)| j != i && other.ci.is_some_and(|c| c.lower > upper))
            .count()
    };
    let rows = style
        .models
        .iter()
        .enumerate()
        .filter_map(|(i, styled)| {
            let plain = board.models.iter().find(|m| m.model == styled.model)?;
            let style_rank = rank_of(i);
            Some(StyleComparisonRow {
                model: styled.model.clone(),
                rank: plain.rank_upper_bound,
                rating: plain.rating,
                style_rank,
                style_rating: styled.rating,
                style_ci: styled.ci,
                rank_change: plain.rank_upper_bound as i64 - style_rank as i64,
            })
        })
        .collect();
    Some(StyleComparison {
        method: format!(
            "ranks are rank upper bounds (1 + models whose interval lies wholly above); the \
             style-controlled ones use the sandwich intervals. {}",
            style.method
        ),
        rows,
        coefficients: style.coefficients.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_markdown_like_arena() {
        let text =
            "# Title\n\nSome **bold** and __also__ and ** not**x\n\n- one\n* two\n1. three\n\
                    ```\n# not a header\n- not a list\n```\n####### seven is not a header\n";
        let features = style_features(text);
        assert_eq!(features.headers, 1);
        assert_eq!(features.lists, 3);
        assert_eq!(
            features.bold, 3,
            "the regex \\*\\*[^*\\n]+\\*\\* also matches `** not**`"
        );
        assert_eq!(features.length, text.chars().count() as u32);
    }

    #[test]
    fn empty_text_has_no_features() {
        assert_eq!(style_features(""), StyleFeatures::default());
    }
}
