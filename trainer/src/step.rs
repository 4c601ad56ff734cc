//! One micro-batch's forward and backward pass, its pairs shared among workers.
//!
//! On the CPU, a batch computed by two cores together spends much of its time with one core waiting: at
//! the barrier after each of candle's matrix products and element-wise ops (its element-wise pool is
//! one per process, behind a lock), and in the ops that run on one thread. Instead the pairs of a micro-batch are split among `workers`, and each runs the forward and
//! backward pass of its share on a one-thread rayon pool of its own (candle's kernels and this crate's
//! run on the pool they are called from; `moat train` sets `CANDLE_NUM_THREADS=1` so that candle's
//! element-wise ops run on the calling thread too, and the shares never wait for each other). Each share's
//! loss is weighted by its fraction of the pairs, so the summed gradients are those of the whole batch's
//! mean loss, up to the order of the float additions.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::loss::bradley_terry_loss;
use crate::model::RewardModel;

/// A pair ready for training: both sides encoded, its margin, and its cost (the longer side's size).
pub(crate) struct EncodedPair<I> {
    pub chosen: I,
    pub rejected: I,
    pub margin: f32,
    pub cost: usize,
}

/// One-thread rayon pools, one per worker.
pub(crate) struct Workers {
    pools: Vec<rayon::ThreadPool>,
}

impl Workers {
    pub fn new(count: usize) -> anyhow::Result<Self> {
        let pools = (0..count)
            .map(|index| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("moat-train-{index}"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Workers { pools })
    }

    pub fn count(&self) -> usize {
        self.pools.len()
    }
}

/// What a micro-batch's pass yields: a gradient per share, to be summed, and each pair's rewards.
pub(crate) struct BatchPass {
    pub grads: Vec<GradStore>,
    pub chosen: Vec<f32>,
    pub rejected: Vec<f32>,
    /// The sum over the batch's pairs of each pair's loss (the batch's mean loss times its size).
    pub loss_sum: f64,
}

/// Splits `batch` (indices into `pairs`) into at most `shares` groups of similar total cost: the
/// costliest pair first, each to the group with the least so far (ties to the lower index), so the
/// split is the same every run.
pub(crate) fn split_by_cost<I>(
    pairs: &[EncodedPair<I>],
    batch: &[usize],
    shares: usize,
) -> Vec<Vec<usize>> {
    let shares = shares.clamp(1, batch.len().max(1));
    let mut order = batch.to_vec();
    // A stable sort keeps pairs of equal cost in batch order.
    order.sort_by_key(|&index| std::cmp::Reverse(pairs[index].cost));
    let mut groups = vec![Vec::new(); shares];
    let mut totals = vec![0usize; shares];
    for index in order {
        let least = (0..shares)
            .min_by_key(|&group| (totals[group], group))
            .unwrap_or(0);
        totals[least] += pairs[index].cost;
        groups[least].push(index);
    }
    groups.retain(|group| !group.is_empty());
    groups
}

/// Forward and backward of `batch`; the loss is multiplied by `weight` (1 / gradient accumulation)
/// before the backward pass. With `workers` the pairs are shared among them, otherwise the whole batch
/// runs on the calling thread.
pub(crate) fn batch_pass<M: RewardModel + Sync>(
    model: &M,
    pairs: &[EncodedPair<M::Input>],
    batch: &[usize],
    weight: f64,
    center_coef: f64,
    workers: Option<&Workers>,
) -> anyhow::Result<BatchPass> {
    let total = batch.len() as f64;
    let run = |share: &[usize]| {
        share_pass(
            model,
            pairs,
            share,
            weight * share.len() as f64 / total,
            center_coef,
        )
    };
    let shares = match workers {
        Some(workers) if workers.count() > 1 && batch.len() > 1 => {
            let groups = split_by_cost(pairs, batch, workers.count());
            let run = &run;
            std::thread::scope(|scope| -> anyhow::Result<Vec<SharePass>> {
                let others: Vec<_> = groups
                    .iter()
                    .zip(&workers.pools)
                    .skip(1)
                    .map(|(group, pool)| scope.spawn(move || pool.install(|| run(group))))
                    .collect();
                let mut shares = vec![workers.pools[0].install(|| run(&groups[0]))];
                for handle in others {
                    shares.push(
                        handle
                            .join()
                            .map_err(|_| anyhow::anyhow!("a training worker panicked"))?,
                    );
                }
                Ok(shares
                    .into_iter()
                    .collect::<candle_core::Result<Vec<_>>>()?)
            })?
        }
        _ => vec![run(batch)?],
    };
    let mut pass = BatchPass {
        grads: Vec::with_capacity(shares.len()),
        chosen: Vec::with_capacity(batch.len()),
        rejected: Vec::with_capacity(batch.len()),
        loss_sum: 0.0,
    };
    for share in shares {
        pass.grads.push(share.grads);
        pass.chosen.extend(share.chosen);
        pass.rejected.extend(share.rejected);
        pass.loss_sum += share.loss_sum;
    }
    Ok(pass)
}

struct SharePass {
    grads: GradStore,
    chosen: Vec<f32>,
    rejected: Vec<f32>,
    loss_sum: f64,
}

fn share_pass<M: RewardModel>(
    model: &M,
    pairs: &[EncodedPair<M::Input>],
    share: &[usize],
    weight: f64,
    center_coef: f64,
) -> candle_core::Result<SharePass> {
    let inputs: Vec<&M::Input> = share
        .iter()
        .map(|&i| &pairs[i].chosen)
        .chain(share.iter().map(|&i| &pairs[i].rejected))
        .collect();
    let rewards = model.rewards(&inputs, true)?;
    let n = share.len();
    let chosen = rewards.narrow(0, 0, n)?;
    let rejected = rewards.narrow(0, n, n)?;
    let margins: Vec<f32> = share.iter().map(|&i| pairs[i].margin).collect();
    let margin = if margins.iter().any(|&m| m != 0.0) {
        Some(Tensor::new(margins.as_slice(), model.device())?)
    } else {
        None
    };
    let loss = bradley_terry_loss(&chosen, &rejected, margin.as_ref(), center_coef)?;
    let grads = (&loss * weight)?.backward()?;
    Ok(SharePass {
        grads,
        chosen: chosen.to_vec1::<f32>()?,
        rejected: rejected.to_vec1::<f32>()?,
        loss_sum: loss.to_scalar::<f32>()? as f64 * n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(costs: &[usize]) -> Vec<EncodedPair<()>> {
        costs
            .iter()
            .map(|&cost| EncodedPair {
                chosen: (),
                rejected: (),
                margin: 0.0,
                cost,
            })
            .collect()
    }

    #[test]
    fn shares_balance_cost_and_keep_every_pair_once() {
        let pairs = pairs(&[10, 200, 30, 180, 50, 60, 90, 100]);
        let batch: Vec<usize> = (0..8).collect();
        let groups = split_by_cost(&pairs, &batch, 2);
        assert_eq!(groups.len(), 2);
        let totals: Vec<usize> = groups
            .iter()
            .map(|group| group.iter().map(|&i| pairs[i].cost).sum())
            .collect();
        // Greedy, costliest first: 200 | 180, 100 → right, 90 → left, 60 → right, 50 → left, the tie at
        // 340 / 340 goes left with 30, and 10 right.
        assert_eq!(totals, vec![370, 350]);
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, batch);
        // The same split every time.
        assert_eq!(split_by_cost(&pairs, &batch, 2), groups);
    }

    #[test]
    fn fewer_pairs_than_workers_leaves_no_empty_share() {
        let pairs = pairs(&[5, 7]);
        assert_eq!(split_by_cost(&pairs, &[1], 4), vec![vec![1]]);
        assert_eq!(split_by_cost(&pairs, &[0, 1], 4), vec![vec![1], vec![0]]);
        assert_eq!(split_by_cost(&pairs, &[0, 1], 1), vec![vec![1, 0]]);
    }
}
