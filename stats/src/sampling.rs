//! Exact binomial sampling, the inner loop of the multinomial bootstrap.
//!
//! A bootstrap round draws one binomial per (pair, outcome) cell, so this is where the time goes.
//! `rand_distr`'s BTPE sampler recomputes a dozen constants (with logarithms) per draw and its
//! inversion branch evaluates `q^n` with `powi` for `n` near a million; Hörmann's BTRS accepts about
//! nine draws in ten with two uniforms and a few multiplications, which halves the bootstrap's time.
//! Both methods here are exact: the tests compare their output with the binomial distribution.

use rand::distributions::Open01;
use rand::Rng;

/// One draw from Binomial(`n`, `p`).
pub(crate) fn binomial(n: u64, p: f64, rng: &mut impl Rng) -> u64 {
    if n == 0 || p <= 0.0 || p.is_nan() {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(n, 1.0 - p, rng);
    }
    let count = n as f64;
    if count * p >= 10.0 {
        transformed_rejection(count, p, rng)
    } else {
        geometric_strides(count, p, rng)
    }
}

/// Counts successes by summing geometric gaps between them until they pass `count` (expected
/// `count · p + 1` iterations, used when that is below 11).
fn geometric_strides(count: f64, p: f64, rng: &mut impl Rng) -> u64 {
    let log_q = (-p).ln_1p();
    let mut successes = 0;
    let mut position = 0.0;
    loop {
        // P(ceil(ln U / ln q) > k) = P(U < q^k) = q^k: the gap to the next success.
        let u: f64 = rng.sample(Open01);
        position += (u.ln() / log_q).ceil();
        if position > count {
            return successes;
        }
        successes += 1;
    }
}

/// BTRS, transformed rejection with squeeze (W. Hörmann, "The generation of binomial random
/// variates", J. Statist. Comput. Simul. 46, 1993), for `p ≤ 0.5` and `count · p ≥ 10`.
fn transformed_rejection(count: f64, p: f64, rng: &mut impl Rng) -> u64 {
    let spq = (count * p * (1.0 - p)).sqrt();
    let b = 1.15 + 2.53 * spq;
    let a = -0.0873 + 0.0248 * b + 0.01 * p;
    let c = count * p + 0.5;
    let v_r = 0.92 - 4.2 / b;
    let r = p / (1.0 - p);
    let alpha = (2.83 + 5.1 / b) * spq;
    let mode = ((count + 1.0) * p).floor();
    loop {
        let u = rng.gen::<f64>() - 0.5;
        let v = rng.gen::<f64>();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + c).floor();
        if k < 0.0 || k > count {
            continue;
        }
        // The squeeze: inside this region the hat lies below the density, accept at once.
        if us >= 0.07 && v <= v_r {
            return k as u64;
        }
        let v = (v * alpha / (a / (us * us) + b)).ln();
        // ln(f(k) / f(mode)) through Stirling's formula with its tail correction.
        let bound = (mode + 0.5) * ((mode + 1.0) / (r * (count - mode + 1.0))).ln()
            + (count + 1.0) * ((count - mode + 1.0) / (count - k + 1.0)).ln()
            + (k + 0.5) * (r * (count - k + 1.0) / (k + 1.0)).ln()
            + stirling_tail(mode)
            + stirling_tail(count - mode)
            - stirling_tail(k)
            - stirling_tail(count - k);
        if v <= bound {
            return k as u64;
        }
    }
}

/// `ln k! − [(k + ½) ln(k + 1) − (k + 1) + ½ ln 2π]`: exact values for small `k`, the Stirling
/// series beyond.
fn stirling_tail(k: f64) -> f64 {
    const SMALL: [f64; 10] = [
        0.081_061_466_795_327_2,
        0.041_340_695_955_409_2,
        0.027_677_925_684_998_3,
        0.020_790_672_103_765_09,
        0.016_644_691_189_821_1,
        0.013_876_128_823_070_7,
        0.011_896_709_945_891_7,
        0.010_411_265_261_972_0,
        0.009_255_462_182_712_73,
        0.008_330_563_433_362_87,
    ];
    if k < 10.0 {
        return SMALL[k as usize];
    }
    let square = (k + 1.0) * (k + 1.0);
    (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / 1260.0 / square) / square) / (k + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use statrs::distribution::{Binomial as Exact, ChiSquared, ContinuousCDF, Discrete};
    use statrs::function::gamma::ln_gamma;

    #[test]
    fn stirling_tail_table_is_exact() {
        for k in 0..30 {
            let k = f64::from(k);
            let exact = ln_gamma(k + 1.0)
                - ((k + 0.5) * (k + 1.0).ln() - (k + 1.0)
                    + 0.5 * (2.0 * std::f64::consts::PI).ln());
            // Exact table below 10; beyond, the truncated series is off by at most 3e-11, which
            // moves the acceptance test of BTRS by a relative 3e-11.
            let tolerance = if k < 10.0 { 1e-12 } else { 5e-11 };
            assert!((stirling_tail(k) - exact).abs() < tolerance, "k = {k}");
        }
    }

    /// Pearson's χ² of 100,000 draws against the exact distribution, pooling cells with an
    /// expected count below 5; the seed is fixed, so the test is deterministic.
    fn chi_square_p_value(n: u64, p: f64, seed: u64) -> (f64, f64) {
        let draws = 100_000;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let exact = Exact::new(p, n).unwrap();
        let mean = n as f64 * p;
        let spread = (mean * (1.0 - p)).sqrt();
        let low = (mean - 8.0 * spread - 5.0).max(0.0) as u64;
        let high = ((mean + 8.0 * spread + 5.0) as u64).min(n);
        let mut counts = vec![0u64; (high - low + 3) as usize];
        let mut total = 0.0;
        for _ in 0..draws {
            let x = binomial(n, p, &mut rng);
            total += x as f64;
            let slot = if x < low {
                0
            } else if x > high {
                counts.len() - 1
            } else {
                (x - low + 1) as usize
            };
            counts[slot] += 1;
        }
        let mut chi_square = 0.0;
        let mut cells = 0;
        let (mut pooled_observed, mut pooled_expected) = (0.0, 0.0);
        for value in low..=high {
            pooled_observed += counts[(value - low + 1) as usize] as f64;
            pooled_expected += exact.pmf(value) * draws as f64;
            if pooled_expected >= 5.0 {
                chi_square += (pooled_observed - pooled_expected).powi(2) / pooled_expected;
                cells += 1;
                pooled_observed = 0.0;
                pooled_expected = 0.0;
            }
        }
        let sample_mean = total / draws as f64;
        let p_value = 1.0
            - ChiSquared::new(f64::from(cells - 1))
                .unwrap()
                .cdf(chi_square);
        (
            p_value,
            (sample_mean - mean) / (spread / (draws as f64).sqrt()),
        )
    }

    #[test]
    fn draws_follow_the_binomial_distribution() {
        for (seed, (n, p)) in [
            (1_000_000, 3e-5), // BTRS, bootstrap-like: huge n, mean 30
            (1_000_000, 2e-3), // BTRS, mean 2,000
            (60, 0.3),         // BTRS, small n
            (1_000_000, 5e-6), // geometric strides, mean 5
            (12, 0.4),         // geometric strides, small n
            (40, 0.85),        // p > 1/2 through the complement
        ]
        .into_iter()
        .enumerate()
        {
            let (p_value, mean_z) = chi_square_p_value(n, p, seed as u64);
            assert!(
                p_value > 0.001,
                "n = {n}, p = {p}: chi-square p = {p_value}"
            );
            assert!(
                mean_z.abs() < 4.0,
                "n = {n}, p = {p}: mean off by {mean_z} SE"
            );
        }
    }

    #[test]
    fn edge_cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(binomial(0, 0.5, &mut rng), 0);
        assert_eq!(binomial(10, 0.0, &mut rng), 0);
        assert_eq!(binomial(10, 1.0, &mut rng), 10);
        assert!(binomial(10, 0.999, &mut rng) <= 10);
    }
}
