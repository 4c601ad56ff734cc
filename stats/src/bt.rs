//! Maximum-likelihood fits of the Bradley–Terry model (ties as half a win each, as Chatbot Arena
//! does) and of Davidson's extension with an explicit tie parameter, on aggregated pair counts.
//!
//! Both fits use Newton's method with a step-halving line search. The log-likelihood is concave, the
//! parameters are one per model, and a full Newton step from the previous solution converges in a
//! handful of iterations, which is what makes a bootstrap round cost O(pairs + models³) only.
//!
//! Ratings are in natural units (log-odds) and sum to zero; callers rescale them.

use crate::aggregate::PairData;
use crate::linalg::{Cholesky, Matrix};

/// Iteration limits shared by the fits.
const MAX_ITERATIONS: usize = 200;
/// Convergence: the largest Newton step, in natural units (1e-9 is 4e-7 Elo points).
const STEP_TOLERANCE: f64 = 1e-9;

/// `ln σ(x)` without overflow.
#[inline]
pub(crate) fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

#[inline]
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Result of a Bradley–Terry or Davidson fit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fit {
    /// Ratings in natural units, summing to zero.
    pub(crate) theta: Vec<f64>,
    /// Davidson's log tie parameter `ln ν`, for the Davidson fit.
    pub(crate) log_tie_parameter: Option<f64>,
    pub(crate) iterations: usize,
    pub(crate) converged: bool,
}

/// Penalised log-likelihood of Bradley–Terry with ties as half a win.
fn bt_objective(pairs: &[PairData], theta: &[f64], prior: f64) -> f64 {
    let mut total = 0.0;
    for pair in pairs {
        let d = theta[pair.first] - theta[pair.second];
        let first_score = pair.first_wins + 0.5 * pair.ties;
        let second_score = pair.second_wins + 0.5 * pair.ties;
        total += first_score * log_sigmoid(d) + second_score * log_sigmoid(-d);
    }
    total - 0.5 * prior * theta.iter().map(|t| t * t).sum::<f64>()
}

#[inline]
fn add_laplacian_edge(matrix: &mut Matrix, i: usize, j: usize, weight: f64) {
    matrix.add(i, i, weight);
    matrix.add(j, j, weight);
    matrix.add(i, j, -weight);
    matrix.add(j, i, -weight);
}

/// Adds the terms that make a Laplacian-like Hessian invertible without moving the optimum:
/// the prior (if any), `1 1ᵀ / n` (which pins the mean of the ratings, the direction the likelihood
/// does not identify) and a tiny ridge so models without comparisons do not make it singular.
fn regularise(matrix: &mut Matrix, models: usize, prior: f64) {
    let largest_diagonal = (0..matrix.n).map(|i| matrix.get(i, i)).fold(0.0, f64::max);
    for i in 0..models {
        matrix.add(i, i, prior + 1e-10 * (1.0 + largest_diagonal));
        for j in 0..models {
            matrix.add(i, j, 1.0 / models as f64);
        }
    }
}

/// Fits Bradley–Terry with ties counted as half a win to each side, with an optional Gaussian prior
/// of precision `prior` on each rating (0 for plain maximum likelihood). `start` warm-starts it.
pub(crate) fn fit_bradley_terry(
    n: usize,
    pairs: &[PairData],
    prior: f64,
    start: Option<&[f64]>,
) -> Fit {
    let mut theta = start.map_or_else(|| vec![0.0; n], <[f64]>::to_vec);
    center(&mut theta);
    let mut objective = bt_objective(pairs, &theta, prior);
    let mut gradient = vec![0.0; n];
    for iteration in 1..=MAX_ITERATIONS {
        gradient
            .iter_mut()
            .zip(&theta)
            .for_each(|(g, t)| *g = -prior * t);
        let mut hessian = Matrix::zeros(n);
        for pair in pairs {
            let q = sigmoid(theta[pair.first] - theta[pair.second]);
            let total = pair.total();
            let residual = pair.first_wins + 0.5 * pair.ties - total * q;
            gradient[pair.first] += residual;
            gradient[pair.second] -= residual;
            add_laplacian_edge(&mut hessian, pair.first, pair.second, total * q * (1.0 - q));
        }
        regularise(&mut hessian, n, prior);
        let Some(factor) = Cholesky::new(&hessian) else {
            return Fit {
                theta,
                log_tie_parameter: None,
                iterations: iteration,
                converged: false,
            };
        };
        let step = factor.solve(&gradient);
        let (next, next_objective) = line_search(&theta, &step, objective, |candidate| {
            bt_objective(pairs, candidate, prior)
        });
        let largest_step = step.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
        theta = next;
        objective = next_objective;
        if largest_step < STEP_TOLERANCE {
            center(&mut theta);
            return Fit {
                theta,
                log_tie_parameter: None,
                iterations: iteration,
                converged: true,
            };
        }
    }
    center(&mut theta);
    Fit {
        theta,
        log_tie_parameter: None,
        iterations: MAX_ITERATIONS,
        converged: false,
    }
}

/// The regularised negative Hessian of the Bradley–Terry likelihood at `theta`, factorised: the
/// fixed matrix of [`fit_bradley_terry_chord`].
pub(crate) fn bt_hessian_factor(
    n: usize,
    pairs: &[PairData],
    theta: &[f64],
    prior: f64,
) -> Option<Cholesky> {
    let mut hessian = Matrix::zeros(n);
    for pair in pairs {
        let q = sigmoid(theta[pair.first] - theta[pair.second]);
        add_laplacian_edge(
            &mut hessian,
            pair.first,
            pair.second,
            pair.total() * q * (1.0 - q),
        );
    }
    regularise(&mut hessian, n, prior);
    Cholesky::new(&hessian)
}

/// Fits Bradley–Terry to a bootstrap resample by the chord method: Newton steps that reuse the
/// Hessian factorised at the full-data solution `start`. A resample's Hessian differs from it by
/// sampling noise only, so each step gains one to two digits at the cost of O(pairs + models²)
/// instead of a fresh O(models³) factorisation. If the iteration does not converge quickly (a rare
/// model whose resampled votes change a lot), it falls back to the full Newton fit.
pub(crate) fn fit_bradley_terry_chord(
    n: usize,
    pairs: &[PairData],
    prior: f64,
    start: &[f64],
    factor: &Cholesky,
) -> Fit {
    const CHORD_ITERATIONS: usize = 40;
    // 1e-7 natural units is 2e-5 Elo points: far below any bootstrap spread.
    const CHORD_TOLERANCE: f64 = 1e-7;
    let mut theta = start.to_vec();
    let mut gradient = vec![0.0; n];
    for iteration in 1..=CHORD_ITERATIONS {
        gradient
            .iter_mut()
            .zip(&theta)
            .for_each(|(g, t)| *g = -prior * t);
        for pair in pairs {
            let q = sigmoid(theta[pair.first] - theta[pair.second]);
            let residual = pair.first_wins + 0.5 * pair.ties - pair.total() * q;
            gradient[pair.first] += residual;
            gradient[pair.second] -= residual;
        }
        let step = factor.solve(&gradient);
        let mut largest_step: f64 = 0.0;
        for (t, s) in theta.iter_mut().zip(&step) {
            *t += s;
            largest_step = largest_step.max(s.abs());
        }
        if !largest_step.is_finite() || largest_step > 50.0 {
            break;
        }
        if largest_step < CHORD_TOLERANCE {
            center(&mut theta);
            return Fit {
                theta,
                log_tie_parameter: None,
                iterations: iteration,
                converged: true,
            };
        }
    }
    fit_bradley_terry(n, pairs, prior, Some(start))
}

/// Takes the Newton step, halving it until the objective does not decrease.
fn line_search(
    current: &[f64],
    step: &[f64],
    objective: f64,
    evaluate: impl Fn(&[f64]) -> f64,
) -> (Vec<f64>, f64) {
    let mut scale = 1.0;
    let mut candidate = vec![0.0; current.len()];
    for _ in 0..40 {
        for ((c, x), s) in candidate.iter_mut().zip(current).zip(step) {
            *c = x + scale * s;
        }
        let value = evaluate(&candidate);
        // A tolerance relative to the objective's size absorbs rounding near the optimum.
        if value >= objective - 1e-12 * (1.0 + objective.abs()) {
            return (candidate, value);
        }
        scale *= 0.5;
    }
    (current.to_vec(), objective)
}

fn center(theta: &mut [f64]) {
    if theta.is_empty() {
        return;
    }
    let mean = theta.iter().sum::<f64>() / theta.len() as f64;
    theta.iter_mut().for_each(|t| *t -= mean);
}

/// Per-pair quantities of Davidson's model, computed stably: with `x = d/2`,
/// `Z = eˣ + e⁻ˣ + ν`, returns (`ln Z`, `sinh(x)/Z`, `cosh(x)/Z`, `ν/Z`).
#[inline]
fn davidson_terms(d: f64, log_tie: f64) -> (f64, f64, f64, f64) {
    let x = 0.5 * d;
    let largest = x.abs().max(log_tie);
    let e_plus = (x - largest).exp();
    let e_minus = (-x - largest).exp();
    let e_tie = (log_tie - largest).exp();
    let z = e_plus + e_minus + e_tie;
    (
        largest + z.ln(),
        0.5 * (e_plus - e_minus) / z,
        0.5 * (e_plus + e_minus) / z,
        e_tie / z,
    )
}

fn davidson_objective(pairs: &[PairData], theta: &[f64], log_tie: f64, prior: f64) -> f64 {
    let mut total = 0.0;
    for pair in pairs {
        let d = theta[pair.first] - theta[pair.second];
        let (log_z, ..) = davidson_terms(d, log_tie);
        total += 0.5 * d * (pair.first_wins - pair.second_wins) + pair.ties * log_tie
            - pair.total() * log_z;
    }
    total - 0.5 * prior * theta.iter().map(|t| t * t).sum::<f64>()
}

/// The negative Hessian of Davidson's log-likelihood over `(θ₁…θₙ, ln ν)`.
pub(crate) fn davidson_information(
    n: usize,
    pairs: &[PairData],
    theta: &[f64],
    log_tie: f64,
) -> Matrix {
    davidson_derivatives(n, pairs, theta, log_tie).1
}

fn davidson_derivatives(
    n: usize,
    pairs: &[PairData],
    theta: &[f64],
    log_tie: f64,
) -> (Vec<f64>, Matrix) {
    let mut gradient = vec![0.0; n + 1];
    let mut information = Matrix::zeros(n + 1);
    for pair in pairs {
        let d = theta[pair.first] - theta[pair.second];
        let (_, sinh_over_z, cosh_over_z, tie_probability) = davidson_terms(d, log_tie);
        let total = pair.total();
        let g_d = 0.5 * (pair.first_wins - pair.second_wins) - total * sinh_over_z;
        gradient[pair.first] += g_d;
        gradient[pair.second] -= g_d;
        gradient[n] += pair.ties - total * tie_probability;
        // d²lnZ/dd² = cosh/(2Z) - (sinh/Z)², d²lnZ/dd dlnν = -(sinh/Z)(ν/Z), d²lnZ/dlnν² = t(1-t).
        let h_dd = total * (0.5 * cosh_over_z - sinh_over_z * sinh_over_z);
        let h_dt = -total * sinh_over_z * tie_probability;
        let h_tt = total * tie_probability * (1.0 - tie_probability);
        add_laplacian_edge(&mut information, pair.first, pair.second, h_dd);
        information.add(pair.first, n, h_dt);
        information.add(n, pair.first, h_dt);
        information.add(pair.second, n, -h_dt);
        information.add(n, pair.second, -h_dt);
        information.add(n, n, h_tt);
    }
    (gradient, information)
}

/// Fits Davidson's tie model: `P(i beats j) ∝ πᵢ`, `P(tie) ∝ ν √(πᵢ πⱼ)`. Without any ties the tie
/// parameter is not identified and the plain Bradley–Terry fit is returned with `ln ν = -∞`.
pub(crate) fn fit_davidson(
    n: usize,
    pairs: &[PairData],
    prior: f64,
    start: Option<(&[f64], f64)>,
) -> Fit {
    let total: f64 = pairs.iter().map(PairData::total).sum();
    let ties: f64 = pairs.iter().map(|p| p.ties).sum();
    if ties <= 0.0 || total <= 0.0 {
        let mut fit = fit_bradley_terry(n, pairs, prior, start.map(|s| s.0));
        fit.log_tie_parameter = Some(f64::NEG_INFINITY);
        return fit;
    }
    let (mut theta, mut log_tie) = match start {
        Some((theta, log_tie)) if log_tie.is_finite() => (theta.to_vec(), log_tie),
        _ => {
            // At equal ratings P(tie) = ν / (2 + ν).
            let tie_share = (ties / total).min(0.999);
            (vec![0.0; n], (2.0 * tie_share / (1.0 - tie_share)).ln())
        }
    };
    center(&mut theta);
    let mut objective = davidson_objective(pairs, &theta, log_tie, prior);
    for iteration in 1..=MAX_ITERATIONS {
        let (mut gradient, mut information) = davidson_derivatives(n, pairs, &theta, log_tie);
        for i in 0..n {
            gradient[i] -= prior * theta[i];
        }
        regularise(&mut information, n, prior);
        information.add(n, n, 1e-12);
        let Some(factor) = Cholesky::new(&information) else {
            break;
        };
        let step = factor.solve(&gradient);
        let mut current = theta.clone();
        current.push(log_tie);
        let (next, next_objective) = line_search(&current, &step, objective, |candidate| {
            davidson_objective(pairs, &candidate[..n], candidate[n], prior)
        });
        let largest_step = step.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
        log_tie = next[n];
        theta.copy_from_slice(&next[..n]);
        objective = next_objective;
        if largest_step < STEP_TOLERANCE {
            center(&mut theta);
            return Fit {
                theta,
                log_tie_parameter: Some(log_tie),
                iterations: iteration,
                converged: true,
            };
        }
    }
    center(&mut theta);
    Fit {
        theta,
        log_tie_parameter: Some(log_tie),
        iterations: MAX_ITERATIONS,
        converged: false,
    }
}

/// Sandwich covariance `H⁻¹ M H⁻¹` of the ratings of a Bradley–Terry fit, with `H` the Fisher
/// information and `M` the empirical covariance of per-battle scores (with battle weights `w`,
/// `pairs` holds the weighted counts and `M` sums `w²` times the squared scores), so it stays honest when ties
/// do not behave like half-wins. Valid for contrasts (vectors summing to zero) such as "this model
/// minus the mean" or "this model minus the anchor".
pub(crate) fn bt_sandwich_covariance(
    n: usize,
    pairs: &[PairData],
    theta: &[f64],
    prior: f64,
    weights: Option<&[f64]>,
) -> Option<Matrix> {
    let mut information = Matrix::zeros(n);
    let mut score_covariance = Matrix::zeros(n);
    for (index, pair) in pairs.iter().enumerate() {
        let q = sigmoid(theta[pair.first] - theta[pair.second]);
        add_laplacian_edge(
            &mut information,
            pair.first,
            pair.second,
            pair.total() * q * (1.0 - q),
        );
        // Per-battle score for the first model is (y - q) with y ∈ {1, ½, 0}.
        let squared_scores = pair.first_wins * (1.0 - q) * (1.0 - q)
            + pair.second_wins * q * q
            + pair.ties * (0.5 - q) * (0.5 - q);
        // With weights the cells already carry one factor w; the scores' covariance needs w².
        let weight = weights.map_or(1.0, |w| w[index]);
        add_laplacian_edge(
            &mut score_covariance,
            pair.first,
            pair.second,
            squared_scores * weight,
        );
    }
    regularise(&mut information, n, prior);
    // For contrasts c (cᵀ1 = 0) the added 1 1ᵀ/n term does not change cᵀ A⁻¹ c, see regularise.
    let fisher = Cholesky::new(&information)?.inverse();
    Some(fisher.multiply(&score_covariance).multiply(&fisher))
}

/// Sandwich covariance of a Bradley–Terry fit to weighted cells: `cells` holds each cell's raw
/// counts and its weight (several cells may share a pair, one per source), `combined` their
/// weighted sum per pair as fitted. `H` comes from the combined counts, `M` sums `w²` times each
/// cell's squared scores.
pub(crate) fn bt_sandwich_covariance_cells(
    n: usize,
    combined: &[PairData],
    cells: &[(PairData, f64)],
    theta: &[f64],
    prior: f64,
) -> Option<Matrix> {
    let mut information = Matrix::zeros(n);
    for pair in combined {
        let q = sigmoid(theta[pair.first] - theta[pair.second]);
        add_laplacian_edge(
            &mut information,
            pair.first,
            pair.second,
            pair.total() * q * (1.0 - q),
        );
    }
    let mut score_covariance = Matrix::zeros(n);
    for (pair, weight) in cells {
        let q = sigmoid(theta[pair.first] - theta[pair.second]);
        let squared_scores = pair.first_wins * (1.0 - q) * (1.0 - q)
            + pair.second_wins * q * q
            + pair.ties * (0.5 - q) * (0.5 - q);
        add_laplacian_edge(
            &mut score_covariance,
            pair.first,
            pair.second,
            squared_scores * weight * weight,
        );
    }
    regularise(&mut information, n, prior);
    let fisher = Cholesky::new(&information)?.inverse();
    Some(fisher.multiply(&score_covariance).multiply(&fisher))
}

/// Inverse Fisher information of a Davidson fit, restricted to the rating block.
pub(crate) fn davidson_covariance(
    n: usize,
    pairs: &[PairData],
    theta: &[f64],
    log_tie: f64,
    prior: f64,
) -> Option<Matrix> {
    let mut information = davidson_information(n, pairs, theta, log_tie);
    regularise(&mut information, n, prior);
    information.add(n, n, 1e-12);
    let inverse = Cholesky::new(&information)?.inverse();
    let mut block = Matrix::zeros(n);
    for i in 0..n {
        for j in 0..n {
            block.data[i * n + j] = inverse.get(i, j);
        }
    }
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(first: usize, second: usize, w: f64, l: f64, t: f64) -> PairData {
        PairData {
            first,
            second,
            first_wins: w,
            second_wins: l,
            ties: t,
        }
    }

    #[test]
    fn two_models_recover_the_log_odds() {
        // 30 wins, 10 losses: θ₀ - θ₁ = ln 3.
        let fit = fit_bradley_terry(2, &[pair(0, 1, 30.0, 10.0, 0.0)], 0.0, None);
        assert!(fit.converged);
        assert!((fit.theta[0] - fit.theta[1] - 3f64.ln()).abs() < 1e-10);
        assert!(fit.theta.iter().sum::<f64>().abs() < 1e-12);
    }

    #[test]
    fn davidson_two_models_closed_form() {
        // For two models the Davidson MLE is closed form: ratio of wins gives d, ties give ν:
        // e^{d} = W₁/W₂, ν = T / √(W₁ W₂).
        let fit = fit_davidson(2, &[pair(0, 1, 40.0, 10.0, 20.0)], 0.0, None);
        assert!(fit.converged);
        assert!((fit.theta[0] - fit.theta[1] - 4f64.ln()).abs() < 1e-9);
        let nu = fit.log_tie_parameter.unwrap().exp();
        assert!((nu - 20.0 / (400f64).sqrt()).abs() < 1e-9, "{nu}");
    }

    #[test]
    fn separated_data_stays_finite_with_a_prior() {
        let fit = fit_bradley_terry(2, &[pair(0, 1, 5.0, 0.0, 0.0)], 0.01, None);
        assert!(fit.converged);
        assert!(fit.theta.iter().all(|t| t.is_finite() && t.abs() < 10.0));
    }
}
