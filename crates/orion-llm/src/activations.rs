//! The element-wise steps of a pass that need `exp`: the SiLU-gated feed-forward product and the
//! causal softmax of attention scores.
//!
//! Written here rather than with candle's ops because on wasm `f32::exp` is a software routine
//! called once per number: in Chromium it was about a third of a 393-token prompt's attention
//! time, plus the SiLU. The `exp` below is branch-free arithmetic that LLVM turns into simd128
//! lanes. The softmax also reads only the keys a query may see, so scores need no mask.

use candle_core::{Device, Tensor};

/// `e^x`, relative error below 3e-7 on [-87, 88]; inputs outside are clamped to that range.
///
/// Cody–Waite reduction `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial
/// for `e^r`, and `2^n` built in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `n` is in [-126, 127] after the clamp, so the biased exponent is a normal one.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `silu(gate) * up` for a `(rows, 2 * width)` matrix whose rows are `gate` then `up`.
pub fn silu_gate(gate_up: &Tensor, width: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = gate_up.dims2()?;
    if cols != 2 * width {
        candle_core::bail!("{cols} columns are not a gate and an up of {width}");
    }
    let values = gate_up.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(rows * width);
    for row in values.chunks_exact(cols) {
        let (gate, up) = row.split_at(width);
        out.extend(gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + exp(-g)) * u));
    }
    Tensor::from_vec(out, (rows, width), &Device::Cpu)
}

/// Softmax over the last dimension of `scores`, `(batch, matrices, queries, keys)`, whose query
/// rows are stacks of `positions` consecutive positions (grouped-query heads): position `i` sees
/// only the first `first_visible + i` keys, the others get weight 0.
pub fn causal_softmax(
    scores: &Tensor,
    first_visible: usize,
    positions: usize,
) -> candle_core::Result<Tensor> {
    let (batch, matrices, queries, keys) = scores.dims4()?;
    if positions == 0 || queries % positions != 0 {
        candle_core::bail!("{queries} query rows are not stacks of {positions} positions");
    }
    if first_visible == 0 || first_visible + positions - 1 > keys {
        candle_core::bail!("{positions} positions cannot see {first_visible}.. of {keys} keys");
    }
    let mut values = scores.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    for (index, row) in values.chunks_exact_mut(keys).enumerate() {
        let (seen, hidden) = row.split_at_mut(first_visible + index % positions);
        let max = lanes(seen, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
        seen.iter_mut().for_each(|v| *v = exp(*v - max));
        let scale = 1.0 / lanes(seen, 0.0, |sum, v| sum + v);
        seen.iter_mut().for_each(|v| *v *= scale);
        hidden.fill(0.0);
    }
    Tensor::from_vec(values, (batch, matrices, queries, keys), &Device::Cpu)
}

/// Folds `values` into eight running lanes and then the lanes into one: a sequential fold of
/// floats cannot be vectorized (its order is fixed), eight independent ones can.
#[inline(always)]
fn lanes(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = f(*a, v);
        }
    }
    acc.into_iter().chain(rest.iter().copied()).fold(init, &f)
}

#[cfg(test)]
// A failed unwrap in a test is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn largest_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn exp_is_within_a_few_ulps_of_the_library_one() {
        let mut worst = 0f32;
        for i in -8700..8800 {
            let x = i as f32 * 0.01 + 0.003;
            let expected = x.exp();
            worst = worst.max(((exp(x) - expected) / expected).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        // Clamped, not wrapped around through the exponent bits.
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 2e-38);
        assert_eq!(exp(1000.0), exp(88.0));
        assert!(exp(1000.0).is_finite());
        assert!(exp(0.0) == 1.0);
    }

    #[test]
    fn silu_gate_matches_candle() {
        let gate_up = Tensor::randn(0f32, 3.0, (5, 16), &Device::Cpu).unwrap();
        let gate = gate_up.narrow(1, 0, 8).unwrap();
        let up = gate_up.narrow(1, 8, 8).unwrap();
        let expected = (candle_nn::ops::silu(&gate).unwrap() * up).unwrap();
        let got = silu_gate(&gate_up, 8).unwrap();
        let difference = largest_difference(&got, &expected);
        assert!(difference < 1e-5, "{difference}");
        assert!(silu_gate(&gate_up, 7).is_err());
    }

    #[test]
    fn causal_softmax_matches_a_masked_softmax() {
        // Two matrices of two stacked heads of 3 positions over 6 keys; the first position sees
        // 4 keys.
        let scores = Tensor::randn(0f32, 2.0, (1, 2, 6, 6), &Device::Cpu).unwrap();
        let mask: Vec<f32> = (0..6)
            .flat_map(|i| {
                (0..6).map(move |j| {
                    if j < 4 + i % 3 {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (6, 6), &Device::Cpu).unwrap();
        let expected =
            candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).unwrap()).unwrap();
        let got = causal_softmax(&scores, 4, 3).unwrap();
        let difference = largest_difference(&got, &expected);
        assert!(difference < 1e-6, "{difference}");
        assert!(causal_softmax(&scores, 5, 3).is_err());
        assert!(causal_softmax(&scores, 0, 3).is_err());
        assert!(causal_softmax(&scores, 4, 4).is_err());
    }
}
