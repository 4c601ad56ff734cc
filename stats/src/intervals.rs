//! Interval estimates and exact tests for proportions.

use statrs::distribution::{Beta, Binomial, ContinuousCDF, DiscreteCDF, Normal};

use crate::model::{Interval, Proportion};

/// The standard normal quantile function (−∞ at 0, +∞ at 1, NaN outside; never panics, since
/// levels can come from user options).
pub fn normal_quantile(probability: f64) -> f64 {
    if !(0.0..=1.0).contains(&probability) {
        return f64::NAN;
    }
    if probability == 0.0 {
        return f64::NEG_INFINITY;
    }
    if probability == 1.0 {
        return f64::INFINITY;
    }
    // Normal::new(0, 1) cannot fail.
    Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(probability)
}

/// The standard normal distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    Normal::new(0.0, 1.0).expect("standard normal").cdf(x)
}

/// The two-sided critical value of a normal interval at `level` (1.959964 for 0.95).
pub fn z_for_level(level: f64) -> f64 {
    normal_quantile(0.5 + level / 2.0)
}

/// Wilson score interval for `successes` out of `n` (successes may be fractional when ties count half).
/// Returns `None` when `n` is zero.
pub fn wilson(successes: f64, n: u64, level: f64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let p = (successes / n).clamp(0.0, 1.0);
    let z = z_for_level(level);
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half_width = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Some(Interval::new(
        (centre - half_width).max(0.0),
        (centre + half_width).min(1.0),
        level,
    ))
}

/// Clopper–Pearson ("exact") interval for `successes` out of `n`. Returns `None` when `n` is zero.
pub fn clopper_pearson(successes: u64, n: u64, level: f64) -> Option<Interval> {
    if n == 0 || !(level > 0.0 && level < 1.0) {
        return None;
    }
    let alpha = 1.0 - level;
    let k = successes.min(n) as f64;
    let n_f = n as f64;
    let lower = if successes == 0 {
        0.0
    } else {
        Beta::new(k, n_f - k + 1.0)
            .expect("positive shape parameters")
            .inverse_cdf(alpha / 2.0)
    };
    let upper = if successes >= n {
        1.0
    } else {
        Beta::new(k + 1.0, n_f - k)
            .expect("positive shape parameters")
            .inverse_cdf(1.0 - alpha / 2.0)
    };
    Some(Interval::new(lower, upper, level))
}

/// Exact two-sided binomial test of `successes` out of `n` against probability one half.
/// The null distribution is symmetric, so the p-value is twice the smaller tail, capped at one.
pub fn binomial_test_half(successes: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let distribution = Binomial::new(0.5, n).expect("valid binomial");
    let k = successes.min(n);
    let lower_tail = distribution.cdf(k);
    let upper_tail = if k == 0 {
        1.0
    } else {
        1.0 - distribution.cdf(k - 1)
    };
    (2.0 * lower_tail.min(upper_tail)).min(1.0)
}

/// A proportion with a Wilson interval and, for whole successes, an exact test against one half.
pub fn wilson_proportion(successes: f64, n: u64, level: f64) -> Proportion {
    let whole = successes.fract() == 0.0;
    Proportion {
        successes,
        n,
        estimate: (n > 0).then(|| successes / n as f64),
        interval: wilson(successes, n, level),
        p_value_vs_half: (n > 0 && whole).then(|| binomial_test_half(successes as u64, n)),
        method: "Wilson score interval; exact two-sided binomial test against 50%".to_string(),
    }
}

/// A proportion with a Clopper–Pearson interval and an exact test against one half.
pub fn exact_proportion(successes: u64, n: u64, level: f64) -> Proportion {
    Proportion {
        successes: successes as f64,
        n,
        estimate: (n > 0).then(|| successes as f64 / n as f64),
        interval: clopper_pearson(successes, n, level),
        p_value_vs_half: (n > 0).then(|| binomial_test_half(successes, n)),
        method: "Clopper-Pearson exact interval; exact two-sided binomial test against 50%"
            .to_string(),
    }
}

/// Linear-interpolation quantile of sorted data (numpy's default method), so percentile bootstrap
/// intervals match those of reference implementations written with numpy.
pub fn quantile_sorted(sorted: &[f64], probability: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no data");
    let position = (sorted.len() - 1) as f64 * probability.clamp(0.0, 1.0);
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + fraction * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_textbook_value() {
        // 81 of 263 (Newcombe 1998, example of the Wilson interval): 0.2553 to 0.3662.
        let interval = wilson(81.0, 263, 0.95).unwrap();
        assert!((interval.lower - 0.2553).abs() < 1e-4, "{interval:?}");
        assert!((interval.upper - 0.3662).abs() < 1e-4, "{interval:?}");
    }

    #[test]
    fn clopper_pearson_matches_scipy() {
        // scipy.stats.binomtest(7, 20).proportion_ci(method="exact"): (0.15391, 0.59219)
        let interval = clopper_pearson(7, 20, 0.95).unwrap();
        assert!((interval.lower - 0.153_911).abs() < 1e-5, "{interval:?}");
        assert!((interval.upper - 0.592_189).abs() < 1e-5, "{interval:?}");
        let all = clopper_pearson(10, 10, 0.95).unwrap();
        assert_eq!(all.upper, 1.0);
        assert!((all.lower - 0.691_503).abs() < 1e-5);
    }

    #[test]
    fn binomial_test_is_symmetric_and_exact() {
        // scipy.stats.binomtest(7, 20).pvalue = 0.26317596435546875
        assert!((binomial_test_half(7, 20) - 0.263_175_964).abs() < 1e-8);
        assert!((binomial_test_half(13, 20) - 0.263_175_964).abs() < 1e-8);
        assert_eq!(binomial_test_half(10, 20), 1.0);
    }

    #[test]
    fn nonsense_levels_do_not_panic() {
        assert!(z_for_level(1.5).is_nan());
        assert!(z_for_level(f64::NAN).is_nan());
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(clopper_pearson(3, 10, 1.5).is_none());
    }

    #[test]
    fn numpy_linear_quantile() {
        let data = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&data, 0.5), 2.5);
        assert!((quantile_sorted(&data, 0.025) - 1.075).abs() < 1e-12);
    }
}
