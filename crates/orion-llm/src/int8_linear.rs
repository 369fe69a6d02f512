//! Linear layers over Q8_0 weights held as plain `i8` quants with `f32` scales, and their
//! product kernel.
//!
//! Written by hand because no maintained crate multiplies int8 matrices with wasm SIMD, and
//! candle's Q8_0 product spends much of its time on what this layout removes: it converts two
//! f16 scales per block in software (wasm has no f16 instructions) and widens the activations
//! again for every weight row. Here the weights' scales are converted once, at load; per pass,
//! each input row is quantized once the way Q8_0 does it (blocks of 32, scale `max|x| / 127`
//! rounded to f16), and each of its blocks is widened once for four weight rows. The sums are
//! formed lane by lane as candle's simd128 kernel forms them, so the results are the same.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

/// Values per block.
const BLOCK: usize = 32;
/// A Q8_0 block as stored: an f16 scale, then 32 quants.
const BLOCK_BYTES: usize = 2 + BLOCK;
/// Weight rows that share each load of an activation block.
const ROWS_AT_ONCE: usize = 4;

/// A `(rows, cols)` Q8_0 matrix: `quants` row after row, one scale per block of 32.
pub(crate) struct Int8Weights {
    rows: usize,
    cols: usize,
    quants: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Weights {
    /// The matrix `tensor` holds, which must be Q8_0.
    pub(crate) fn from_q8_0(tensor: &QTensor) -> candle_core::Result<Self> {
        if tensor.dtype() != GgmlDType::Q8_0 {
            candle_core::bail!("int8 weights need Q8_0, not {:?}", tensor.dtype());
        }
        let (rows, cols) = tensor.shape().dims2()?;
        if cols % BLOCK != 0 {
            candle_core::bail!("rows of {cols} values are not whole blocks of {BLOCK}");
        }
        let data = tensor.data()?;
        let blocks = rows * cols / BLOCK;
        if data.len() != blocks * BLOCK_BYTES {
            candle_core::bail!(
                "{} bytes for {blocks} Q8_0 blocks of {BLOCK_BYTES}",
                data.len()
            );
        }
        let mut quants = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(blocks);
        for block in data.chunks_exact(BLOCK_BYTES) {
            let (scale, qs) = block.split_at(2);
            scales.push(f16::from_le_bytes([scale[0], scale[1]]).to_f32());
            quants.extend(qs.iter().map(|&q| q as i8));
        }
        Ok(Self {
            rows,
            cols,
            quants,
            scales,
        })
    }

    /// The matrix in f32, `(rows, cols)`: each quant times its block's scale, as candle
    /// dequantizes Q8_0.
    pub(crate) fn dequantize(&self) -> candle_core::Result<Tensor> {
        let values: Vec<f32> = self
            .quants
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .flat_map(|(qs, &d)| qs.iter().map(move |&q| f32::from(q) * d))
            .collect();
        Tensor::from_vec(values, (self.rows, self.cols), &Device::Cpu)
    }

    /// `x W^T` for `x` of shape `(n, cols)`, by the int8 kernel.
    pub(crate) fn product(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, cols) = x.dims2()?;
        if cols != self.cols {
            candle_core::bail!("inputs of {cols} values for rows of {}", self.cols);
        }
        let inputs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(n * self.rows);
        for input in inputs.chunks_exact(cols) {
            let input = QuantizedRow::of(input);
            self.row_products(&input, &mut out);
        }
        Tensor::from_vec(out, (n, self.rows), &Device::Cpu)
    }

    /// Appends the products of every weight row with `input`.
    fn row_products(&self, input: &QuantizedRow, out: &mut Vec<f32>) {
        let per_row = self.cols / BLOCK;
        let mut rows = self
            .quants
            .chunks_exact(self.cols)
            .zip(self.scales.chunks_exact(per_row));
        loop {
            let group: Vec<(&[i8], &[f32])> = rows.by_ref().take(ROWS_AT_ONCE).collect();
            match <[(&[i8], &[f32]); ROWS_AT_ONCE]>::try_from(group) {
                Ok(four) => out.extend(dots(four, input)),
                Err(rest) => {
                    for row in rest {
                        out.extend(dots([row], input));
                    }
                    return;
                }
            }
        }
    }
}

/// An input row quantized as Q8_0 quantizes the vector side of its products.
struct QuantizedRow {
    quants: Vec<i8>,
    scales: Vec<f32>,
}

impl QuantizedRow {
    /// Blocks of 32: scale `max|x| / 127`, quants `round(x / scale)`; the scale is then rounded
    /// to f16, as Q8_0 stores it (and as candle quantizes its activations).
    fn of(values: &[f32]) -> Self {
        let mut quants = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(values.len() / BLOCK);
        for block in values.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            quants.extend(block.iter().map(|&x| (x * id).round() as i8));
            scales.push(f16::from_f32(d).to_f32());
        }
        Self { quants, scales }
    }
}

/// The products of `R` weight rows (quants, scales) with `input`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn dots<const R: usize>(rows: [(&[i8], &[f32]); R], input: &QuantizedRow) -> [f32; R] {
    use core::arch::wasm32::{
        f32x4_add, f32x4_convert_i32x4, f32x4_extract_lane, f32x4_mul, f32x4_splat,
        i16x8_extend_high_i8x16, i16x8_extend_low_i8x16, i32x4_add, i32x4_dot_i16x8, v128,
    };
    // `forbid(unsafe_code)`: bytemuck reads the 16 bytes into a vector register.
    let load = |bytes: &[i8]| -> v128 { bytemuck::pod_read_unaligned(bytemuck::cast_slice(bytes)) };
    let mut acc = [f32x4_splat(0.0); R];
    for (block, (a, &a_scale)) in input
        .quants
        .chunks_exact(BLOCK)
        .zip(&input.scales)
        .enumerate()
    {
        let (a0, a1) = a.split_at(16);
        let (a0, a1) = (load(a0), load(a1));
        let a = [
            i16x8_extend_low_i8x16(a0),
            i16x8_extend_high_i8x16(a0),
            i16x8_extend_low_i8x16(a1),
            i16x8_extend_high_i8x16(a1),
        ];
        for ((quants, scales), acc) in rows.iter().zip(acc.iter_mut()) {
            let (Some(w), Some(&w_scale)) = (
                quants.get(block * BLOCK..(block + 1) * BLOCK),
                scales.get(block),
            ) else {
                continue;
            };
            let (w0, w1) = w.split_at(16);
            let (w0, w1) = (load(w0), load(w1));
            let sum = i32x4_dot_i16x8(i16x8_extend_low_i8x16(w0), a[0]);
            let sum = i32x4_add(sum, i32x4_dot_i16x8(i16x8_extend_high_i8x16(w0), a[1]));
            let sum = i32x4_add(sum, i32x4_dot_i16x8(i16x8_extend_low_i8x16(w1), a[2]));
            let sum = i32x4_add(sum, i32x4_dot_i16x8(i16x8_extend_high_i8x16(w1), a[3]));
            let scaled = f32x4_mul(f32x4_convert_i32x4(sum), f32x4_splat(w_scale * a_scale));
            *acc = f32x4_add(*acc, scaled);
        }
    }
    acc.map(|acc| {
        f32x4_extract_lane::<0>(acc)
            + f32x4_extract_lane::<1>(acc)
            + f32x4_extract_lane::<2>(acc)
            + f32x4_extract_lane::<3>(acc)
    })
}

/// The products of `R` weight rows (quants, scales) with `input`, lane by lane as the wasm
/// kernel forms them: lane `j` of a block sums the products of values `2j` and `2j + 1` of each
/// group of 8.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn dots<const R: usize>(rows: [(&[i8], &[f32]); R], input: &QuantizedRow) -> [f32; R] {
    rows.map(|(quants, scales)| {
        let mut acc = [0f32; 4];
        for ((w, &w_scale), (a, &a_scale)) in quants
            .chunks_exact(BLOCK)
            .zip(scales)
            .zip(input.quants.chunks_exact(BLOCK).zip(&input.scales))
        {
            let mut lanes = [0i32; 4];
            for (pair, (w, a)) in w.chunks_exact(2).zip(a.chunks_exact(2)).enumerate() {
                let product: i32 = w
                    .iter()
                    .zip(a)
                    .map(|(&w, &a)| i32::from(w) * i32::from(a))
                    .sum();
                lanes[pair % 4] += product;
            }
            for (acc, lane) in acc.iter_mut().zip(lanes) {
                *acc += lane as f32 * (w_scale * a_scale);
            }
        }
        acc[0] + acc[1] + acc[2] + acc[3]
    })
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    use super::*;

    /// A pseudo-random matrix, deterministic.
    fn matrix(rows: usize, cols: usize, seed: u32) -> Tensor {
        let mut state = seed;
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
    }

    #[test]
    fn products_and_dequantized_weights_match_candles_q8_0() {
        // 7 rows: one group of four and three left over.
        let weights =
            std::sync::Arc::new(QTensor::quantize(&matrix(7, 96, 1), GgmlDType::Q8_0).unwrap());
        let int8 = Int8Weights::from_q8_0(&weights).unwrap();
        let x = matrix(3, 96, 2);
        let ours = int8.product(&x).unwrap().to_vec2::<f32>().unwrap();
        let candles = QMatMul::from_arc(weights.clone())
            .unwrap()
            .forward(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (ours, theirs) in ours.iter().flatten().zip(candles.iter().flatten()) {
            assert!(
                (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0),
                "{ours} vs {theirs}"
            );
        }
        let dequantized = weights.dequantize(&Device::Cpu).unwrap();
        let difference = (int8.dequantize().unwrap() - dequantized)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(difference, 0.0);
    }

    #[test]
    fn other_types_and_shapes_are_refused() {
        let q4 = QTensor::quantize(&matrix(2, 64, 3), GgmlDType::Q4_0).unwrap();
        assert!(Int8Weights::from_q8_0(&q4).is_err());
        let int8 =
            Int8Weights::from_q8_0(&QTensor::quantize(&matrix(2, 64, 3), GgmlDType::Q8_0).unwrap())
                .unwrap();
        assert!(int8.product(&matrix(1, 32, 4)).is_err());
    }
}
