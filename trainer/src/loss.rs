//! The Bradley–Terry pairwise loss with TRL's optional margin and reward-centering terms.

use candle_core::{Result, Tensor};

/// `−log σ(x)`, element-wise: the value computed stably as `relu(−x) + log(1 + exp(−|x|))`, the
/// gradient attached by hand as `−σ(−x)`. (Differentiating the stable form through candle gives the
/// wrong gradient at exactly x = 0, where its `relu` and `abs` both take the subgradient 1; x = 0 is
/// where every pair starts when a model is initialised to zero.)
pub fn neg_log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let detached = x.detach();
    let tail = ((detached.abs()?.neg()?.exp()? + 1.0)?).log()?;
    let value = (detached.neg()?.relu()? + tail)?;
    crate::ops::attach_gradient(x, value, "neg-log-sigmoid", |x, _y, g| {
        g * candle_nn::ops::sigmoid(&x.neg()?)?.neg()?
    })
}

/// Mean over pairs of `−log σ(r_chosen − r_rejected − margin)`, plus
/// `center_coefficient · mean((r_chosen + r_rejected)²)` (TRL's `center_rewards_coefficient`, which
/// keeps the rewards centred on zero). `margin`, when given, has one value per pair.
pub fn bradley_terry_loss(
    chosen: &Tensor,
    rejected: &Tensor,
    margin: Option<&Tensor>,
    center_coefficient: f64,
) -> Result<Tensor> {
    let difference = (chosen - rejected)?;
    let difference = match margin {
        Some(margin) => (difference - margin)?,
        None => difference,
    };
    let loss = neg_log_sigmoid(&difference)?.mean_all()?;
    if center_coefficient == 0.0 {
        return Ok(loss);
    }
    let centering = (chosen + rejected)?.sqr()?.mean_all()?;
    loss + (centering * center_coefficient)?
}

/// The loss of one pair in plain floating point, for evaluation reports.
pub fn pair_loss(reward_difference: f64, margin: f64) -> f64 {
    let x = reward_difference - margin;
    (-x).max(0.0) + (-x.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Values by hand: −log σ(0) = ln 2 = 0.693147; −log σ(2) = ln(1 + e⁻²) = 0.126928;
    /// −log σ(−1) = ln(1 + e) = 1.313262; their mean 0.711112.
    #[test]
    fn loss_matches_hand_computed_values() {
        let device = Device::Cpu;
        let chosen = Tensor::new(&[1.0f32, 3.0, -0.5], &device).unwrap();
        let rejected = Tensor::new(&[1.0f32, 1.0, 0.5], &device).unwrap();
        let loss = scalar(&bradley_terry_loss(&chosen, &rejected, None, 0.0).unwrap());
        assert!((loss - 0.711_112).abs() < 1e-5, "{loss}");
        assert!((pair_loss(2.0, 0.0) - 0.126_928).abs() < 1e-6);
        assert!((pair_loss(-1.0, 0.0) - 1.313_262).abs() < 1e-6);
    }

    /// With margin 1 the pair with difference 2 costs −log σ(1) = ln(1 + e⁻¹) = 0.313262.
    #[test]
    fn margin_is_subtracted_from_the_reward_difference() {
        let device = Device::Cpu;
        let chosen = Tensor::new(&[3.0f32], &device).unwrap();
        let rejected = Tensor::new(&[1.0f32], &device).unwrap();
        let margin = Tensor::new(&[1.0f32], &device).unwrap();
        let loss = scalar(&bradley_terry_loss(&chosen, &rejected, Some(&margin), 0.0).unwrap());
        assert!((loss - 0.313_262).abs() < 1e-6, "{loss}");
        assert!((pair_loss(2.0, 1.0) - 0.313_262).abs() < 1e-6);
    }

    /// Rewards (1.5, −0.5) and (0, 2): BT part (−log σ(2) + −log σ(−2)) / 2 = (0.126928 + 2.126928) / 2
    /// = 1.126928; centring 0.1 · ((1.0)² + (2.0)²) / 2 = 0.25; total 1.376928.
    #[test]
    fn centering_term_adds_mean_squared_reward_sum() {
        let device = Device::Cpu;
        let chosen = Tensor::new(&[1.5f32, 0.0], &device).unwrap();
        let rejected = Tensor::new(&[-0.5f32, 2.0], &device).unwrap();
        let loss = scalar(&bradley_terry_loss(&chosen, &rejected, None, 0.1).unwrap());
        assert!((loss - 1.376_928).abs() < 1e-5, "{loss}");
    }

    /// Large differences neither overflow nor lose the gradient: −log σ(−100) = 100 exactly in f32.
    #[test]
    fn loss_is_stable_for_large_differences() {
        let device = Device::Cpu;
        let chosen = Tensor::new(&[0.0f32, 100.0], &device).unwrap();
        let rejected = Tensor::new(&[100.0f32, 0.0], &device).unwrap();
        let per_pair = neg_log_sigmoid(&(&chosen - &rejected).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(per_pair, vec![100.0, 0.0]);
    }

    /// d/dr_c of −log σ(r_c − r_r) is −σ(r_r − r_c) = −(1 − σ(d)); at d = 0 that is −0.5, at d = 2 it is
    /// −0.119203; the mean over two pairs halves each. Centring adds 2·c·(r_c + r_r)/n.
    #[test]
    fn loss_gradient_matches_hand_computed_values() {
        let device = Device::Cpu;
        let chosen = Var::new(&[1.0f64, 3.0], &device).unwrap();
        let rejected = Var::new(&[1.0f64, 1.0], &device).unwrap();
        let loss = bradley_terry_loss(chosen.as_tensor(), rejected.as_tensor(), None, 0.1).unwrap();
        let grads = loss.backward().unwrap();
        let chosen_grad = grads
            .get(chosen.as_tensor())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let rejected_grad = grads
            .get(rejected.as_tensor())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let expected_chosen = [
            -0.5 / 2.0 + 2.0 * 0.1 * 2.0 / 2.0,
            -0.119_203 / 2.0 + 2.0 * 0.1 * 4.0 / 2.0,
        ];
        let expected_rejected = [
            0.5 / 2.0 + 2.0 * 0.1 * 2.0 / 2.0,
            0.119_203 / 2.0 + 2.0 * 0.1 * 4.0 / 2.0,
        ];
        for (got, want) in chosen_grad
            .iter()
            .zip(expected_chosen)
            .chain(rejected_grad.iter().zip(expected_rejected))
        {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
