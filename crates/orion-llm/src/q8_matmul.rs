//! Q8_0 weights times f32 activations with wasm SIMD integer dot products: every linear layer of
//! a Q8_0 model in wasm, for a prompt's many rows and a decoding step's one to a few.
//!
//! Written by hand because no crate has it: candle's Q8_0 kernel is a dot product per row pair
//! (no register blocking, a horizontal sum per block), and gemm has only float kernels, which on
//! wasm (no fused multiply-add) spend a multiply and an add per product. In Chromium this kernel
//! ran at 39–48 GFLOP/s on a prompt's rows against 22–23 for dequantizing and gemm, and at 13–32
//! on one row against 11–12 for candle's (`docs/BENCHMARKS.md`). `i32x4.dot_i16x8_s` does eight products
//! and their sums in one instruction. The weights are laid out so that its four lanes are four
//! output rows: an activation pair is broadcast and meets the same two columns of four rows, as
//! in a float GEMM micro-kernel, and no lane ever needs a horizontal sum.
//!
//! Numbers: the weights are exactly the Q8_0 ones. The activations are quantized per row and per
//! 32 columns to 15-bit integers (candle's decoding path uses 8 bits), so the result matches the
//! float product to about 1e-4 relative.

use core::arch::wasm32::{
    f32x4_add, f32x4_convert_i32x4, f32x4_mul, f32x4_splat, i16x8_load_extend_i8x8, i32x4_add,
    i32x4_dot_i16x8, i32x4_splat, v128, v128_load, v128_load32_splat, v128_store,
};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Columns per quantization block (Q8_0's block).
const BLOCK: usize = 32;
/// Bytes of a Q8_0 block: an f16 scale, then 32 signed bytes.
const Q8_0_BYTES: usize = 34;
/// Output rows per lane group.
const LANES: usize = 4;
/// Activation rows a micro-kernel reads at once.
const TILE_ROWS: usize = 6;
/// Weight bytes of a panel (see [`PackedQ8::forward`]).
const PANEL_BYTES: usize = 64 * 1024;

/// A Q8_0 matrix re-laid for the kernel: for each group of four output rows and each block of
/// 32 columns, 16 column pairs of 8 bytes (`row0 c, row0 c+1, row1 c, …, row3 c+1`), and the
/// four rows' block scales.
pub struct PackedQ8 {
    rows: usize,
    cols: usize,
    weights: Vec<i8>,
    scales: Vec<f32>,
}

impl PackedQ8 {
    /// Re-lays a Q8_0 matrix of `(rows, cols)`. `None` for any other type or shape.
    pub fn pack(tensor: &QTensor) -> candle_core::Result<Option<Self>> {
        let Ok((rows, cols)) = tensor.shape().dims2() else {
            return Ok(None);
        };
        if tensor.dtype() != GgmlDType::Q8_0 || cols == 0 || cols % BLOCK != 0 || rows % LANES != 0
        {
            return Ok(None);
        }
        let data = tensor.data()?;
        let blocks = cols / BLOCK;
        if data.len() != rows * blocks * Q8_0_BYTES {
            candle_core::bail!("a Q8_0 matrix of {rows}x{cols} has {} bytes", data.len());
        }
        let groups = rows / LANES;
        let mut weights = vec![0i8; rows * cols];
        let mut scales = vec![0f32; groups * blocks * LANES];
        for (row, blocks_of_row) in data.chunks_exact(blocks * Q8_0_BYTES).enumerate() {
            let (group, lane) = (row / LANES, row % LANES);
            for (b, block) in blocks_of_row.chunks_exact(Q8_0_BYTES).enumerate() {
                let (scale, values) = block.split_at(2);
                let slot = (group * blocks + b) * LANES + lane;
                scales[slot] = half::f16::from_le_bytes([scale[0], scale[1]]).to_f32();
                let base = (group * blocks + b) * BLOCK * LANES;
                for (pair, two) in values.chunks_exact(2).enumerate() {
                    let at = base + pair * 2 * LANES + lane * 2;
                    weights[at] = two[0] as i8;
                    weights[at + 1] = two[1] as i8;
                }
            }
        }
        Ok(Some(Self {
            rows,
            cols,
            weights,
            scales,
        }))
    }

    /// `x W^T` for `x` of `(n, cols)`: tiles of up to six input rows against one lane group,
    /// swept over panels of lane groups small enough to stay in the L2 cache.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, cols) = x.dims2()?;
        if cols != self.cols {
            candle_core::bail!("{cols} input columns for a matrix of {}", self.cols);
        }
        let x = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let input = QuantizedRows::new(&x);
        let mut out = vec![0f32; n * self.rows];
        let groups = self.rows / LANES;
        // A panel of lane groups stays in the L2 cache while every tile of input rows meets it.
        let panel = (PANEL_BYTES / (self.cols * LANES)).clamp(1, groups);
        for first in (0..groups).step_by(panel) {
            let last = (first + panel).min(groups);
            let mut row = 0;
            while row < n {
                let take = (n - row).min(TILE_ROWS);
                for group in first..last {
                    // SAFETY: `group < rows / 4` and `row + take <= n`; `input` was quantized
                    // from `n` rows of `cols` numbers and `out` holds `n * rows`.
                    unsafe {
                        match take {
                            1 => self.tile::<1>(group, &input, row, &mut out),
                            2 => self.tile::<2>(group, &input, row, &mut out),
                            3 => self.tile::<3>(group, &input, row, &mut out),
                            4 => self.tile::<4>(group, &input, row, &mut out),
                            5 => self.tile::<5>(group, &input, row, &mut out),
                            _ => self.tile::<TILE_ROWS>(group, &input, row, &mut out),
                        }
                    }
                }
                row += take;
            }
        }
        Tensor::from_vec(out, (n, self.rows), &Device::Cpu)
    }

    /// Rows `ids` of the matrix, dequantized: `(ids, cols)`.
    pub fn rows(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let blocks = self.cols / BLOCK;
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        for &id in ids {
            let row = id as usize;
            if row >= self.rows {
                candle_core::bail!("row {row} of a matrix of {}", self.rows);
            }
            let (group, lane) = (row / LANES, row % LANES);
            for b in 0..blocks {
                let at = group * blocks + b;
                let scale = self.scales[at * LANES + lane];
                let block = &self.weights[at * BLOCK * LANES..(at + 1) * BLOCK * LANES];
                for pair in block.chunks_exact(2 * LANES) {
                    out.push(f32::from(pair[lane * 2]) * scale);
                    out.push(f32::from(pair[lane * 2 + 1]) * scale);
                }
            }
        }
        Tensor::from_vec(out, (ids.len(), self.cols), &Device::Cpu)
    }

    /// Rows `row..row + T` of the output, columns of lane group `group`.
    ///
    /// # Safety
    ///
    /// `group < rows / 4`, `row + T <=` the input's rows, `input` has `cols` columns and `out`
    /// holds the input's rows times `rows`: the loads and stores are not bounds-checked.
    #[inline(always)]
    unsafe fn tile<const T: usize>(
        &self,
        group: usize,
        input: &QuantizedRows,
        row: usize,
        out: &mut [f32],
    ) {
        let blocks = self.cols / BLOCK;
        let mut sums = [f32x4_splat(0.0); T];
        for b in 0..blocks {
            let w = self
                .weights
                .as_ptr()
                .add((group * blocks + b) * BLOCK * LANES);
            let a: [*const i16; T] = core::array::from_fn(|t| {
                input.values.as_ptr().add((row + t) * self.cols + b * BLOCK)
            });
            let mut dots = [i32x4_splat(0); T];
            for pair in 0..BLOCK / 2 {
                let wv = i16x8_load_extend_i8x8(w.add(pair * 2 * LANES));
                for t in 0..T {
                    let av = v128_load32_splat(a[t].add(pair * 2) as *const u32);
                    dots[t] = i32x4_add(dots[t], i32x4_dot_i16x8(wv, av));
                }
            }
            let ws =
                v128_load(self.scales.as_ptr().add((group * blocks + b) * LANES) as *const v128);
            for t in 0..T {
                let scale = f32x4_mul(
                    ws,
                    f32x4_splat(*input.scales.as_ptr().add((row + t) * blocks + b)),
                );
                sums[t] = f32x4_add(sums[t], f32x4_mul(f32x4_convert_i32x4(dots[t]), scale));
            }
        }
        for (t, sum) in sums.iter().enumerate() {
            v128_store(
                out.as_mut_ptr().add((row + t) * self.rows + group * LANES) as *mut v128,
                *sum,
            );
        }
    }
}

/// Activations quantized per row and per block of 32 columns to 15-bit integers.
struct QuantizedRows {
    values: Vec<i16>,
    scales: Vec<f32>,
}

impl QuantizedRows {
    fn new(x: &[f32]) -> Self {
        let mut values = Vec::with_capacity(x.len());
        let mut scales = Vec::with_capacity(x.len() / BLOCK);
        for block in x.chunks_exact(BLOCK) {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / f32::from(i16::MAX);
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            scales.push(scale);
            values.extend(block.iter().map(|v| (v * inverse).round() as i16));
        }
        Self { values, scales }
    }
}

#[cfg(test)]
// A failed unwrap in a test is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use wasm_bindgen_test::*;

    use super::*;

    wasm_bindgen_test_configure!(run_in_dedicated_worker);

    fn quantized(rows: usize, cols: usize, dtype: GgmlDType) -> QTensor {
        let w = Tensor::randn(0f32, 0.05, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&w, dtype).unwrap()
    }

    /// The largest difference from the f32 product of the same Q8_0 weights, relative to the
    /// largest output.
    fn relative_error(weights: &QTensor, packed: &PackedQ8, x: &Tensor) -> f32 {
        let expected = x
            .matmul(&weights.dequantize(&Device::Cpu).unwrap().t().unwrap())
            .unwrap();
        let got = packed.forward(x).unwrap();
        assert_eq!(got.dims(), expected.dims());
        let max = |t: Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        max((&got - &expected).unwrap()) / max(expected)
    }

    #[wasm_bindgen_test]
    fn products_match_the_float_product_for_every_tile_shape() {
        let weights = quantized(24, 96, GgmlDType::Q8_0);
        let packed = PackedQ8::pack(&weights).unwrap().unwrap();
        // 1 to 7 rows: every tile height and every remainder.
        for rows in 1..=7 {
            let x = Tensor::randn(0f32, 1.0, (rows, 96), &Device::Cpu).unwrap();
            let error = relative_error(&weights, &packed, &x);
            assert!(error < 1e-3, "{rows} rows: relative error {error}");
        }
    }

    #[wasm_bindgen_test]
    fn zero_and_outlier_blocks_keep_their_precision() {
        let weights = quantized(8, 64, GgmlDType::Q8_0);
        let packed = PackedQ8::pack(&weights).unwrap().unwrap();
        // A block of zeros (scale 0) and a block with one large outlier.
        let mut row = vec![0f32; 64];
        for (i, v) in row.iter_mut().enumerate().skip(32) {
            *v = (i as f32 * 0.37).sin();
        }
        row[40] = 300.0;
        let x = Tensor::from_vec(row, (1, 64), &Device::Cpu).unwrap();
        let error = relative_error(&weights, &packed, &x);
        assert!(error < 1e-3, "relative error {error}");
    }

    #[wasm_bindgen_test]
    fn only_q8_0_matrices_of_whole_lane_groups_are_packed() {
        assert!(PackedQ8::pack(&quantized(8, 64, GgmlDType::Q4_1))
            .unwrap()
            .is_none());
        assert!(PackedQ8::pack(&quantized(6, 64, GgmlDType::Q8_0))
            .unwrap()
            .is_none());
    }

    #[wasm_bindgen_test]
    fn rows_are_the_dequantized_rows() {
        let weights = quantized(12, 64, GgmlDType::Q8_0);
        let packed = PackedQ8::pack(&weights).unwrap().unwrap();
        let ids = [11u32, 0, 5, 5];
        let expected = weights
            .dequantize(&Device::Cpu)
            .unwrap()
            .index_select(&Tensor::new(&ids[..], &Device::Cpu).unwrap(), 0)
            .unwrap();
        let got = packed.rows(&ids).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(packed.rows(&[12]).is_err());
    }

    #[wasm_bindgen_test]
    fn an_input_of_the_wrong_width_is_an_error() {
        let packed = PackedQ8::pack(&quantized(8, 64, GgmlDType::Q8_0))
            .unwrap()
            .unwrap();
        let x = Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(packed.forward(&x).is_err());
    }
}
