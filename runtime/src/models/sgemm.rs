//! The encoders' f32 matrix product over weights packed once at load as [`Panels`]: a thin
//! layer over `sagebrush_kernels::matmul_start` (the kernel and why it is faster than candle's
//! matmul for these shapes are documented there). A row's answer does not depend on its batch.

use super::kernels::Panels;

/// Whether [`matmul_start`] can run here (x86-64 with AVX-512F; [`Panels::new`] then packs 16
/// outputs a panel, the kernel's width).
pub(crate) fn available() -> bool {
    sagebrush_kernels::available() && super::kernels::panel_width() == sagebrush_kernels::WIDTH
}

/// `out[i][j] += Σ_kk x[i][kk] · W[j][kk]`, summed in input order, for `x` `[m, k]` and `out`
/// `[m, n]` row-major.
///
/// # Panics
/// If the sizes do not match or [`available`] is false (a caller bug).
#[cfg(test)]
pub(crate) fn matmul_add(x: &[f32], m: usize, w: &Panels, out: &mut [f32]) {
    assert_eq!(
        w.width(),
        sagebrush_kernels::WIDTH,
        "panels packed for another SIMD width"
    );
    sagebrush_kernels::matmul_add(x, m, w.data(), w.n(), w.k(), out);
}

/// `residual + bias` (either may be absent) followed by `Σ_kk x[i][kk] · W[j][kk]` summed in
/// input order, as a new `[m, n]` for `x` `[m, k]`: the same numbers as adding the products to
/// an output that starts as those values, without writing it twice.
///
/// # Panics
/// If the sizes do not match or [`available`] is false (a caller bug), or if `bias` is not `[n]` or `residual` not `[m, n]`.
pub(crate) fn matmul_start(
    x: &[f32],
    m: usize,
    w: &Panels,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(
        w.width(),
        sagebrush_kernels::WIDTH,
        "panels packed for another SIMD width"
    );
    sagebrush_kernels::matmul_start(x, m, w.data(), w.n(), w.k(), bias, residual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::tests::lcg;

    /// Each output equals its start value followed by the products summed in input order with
    /// fused multiply-adds (computed here one element at a time with `f32::mul_add`), exactly,
    /// for sizes that exercise every edge (rows not a multiple of 12 or of the 144-row block,
    /// columns not a multiple of 16 or 32, depths not a multiple of the 256-deep slice), on one
    /// thread and on several; and a row's answer is the same alone.
    #[test]
    fn equals_ordered_fused_sums_and_rows_do_not_depend_on_their_batch() {
        if !available() {
            eprintln!("no AVX-512 here: sgemm::matmul_add is not used, nothing to test");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 17, 5),
            (9, 33, 257),
            (130, 48, 300),
            (17, 100, 513),
            (200, 31, 64),
            (12, 64, 600),
            (144, 96, 256),
            (40, 160, 1030),
        ] {
            let x = lcg(m as u64 * 31 + 1, m * k, 0.5);
            let wr = lcg(n as u64 * 17 + k as u64, n * k, 0.5);
            let start = lcg(7, m * n, 0.5);
            let w = Panels::new(&wr, n, k);
            let mut out = start.clone();
            matmul_add(&x, m, &w, &mut out);
            for i in 0..m {
                for j in 0..n {
                    let mut v = start[i * n + j];
                    for kk in 0..k {
                        v = x[i * k + kk].mul_add(wr[j * k + kk], v);
                    }
                    assert_eq!(
                        out[i * n + j].to_bits(),
                        v.to_bits(),
                        "{m}x{n}x{k} at ({i}, {j})"
                    );
                }
            }
            // Starting from a bias and a residual instead: the same bits as adding them first.
            let bias = lcg(11, n, 0.5);
            let mut begun: Vec<f32> = start
                .chunks_exact(n)
                .flat_map(|row| row.iter().zip(&bias).map(|(r, b)| r + b))
                .collect();
            matmul_add(&x, m, &w, &mut begun);
            let started = matmul_start(&x, m, &w, Some(&bias), Some(&start));
            assert_eq!(started, begun, "{m}x{n}x{k}: start values in the kernel");
            let mut from_bias: Vec<f32> = bias.repeat(m);
            matmul_add(&x, m, &w, &mut from_bias);
            assert_eq!(
                matmul_start(&x, m, &w, Some(&bias), None),
                from_bias,
                "{m}x{n}x{k}: bias only"
            );
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("pool");
            let mut alone = start[(m - 1) * n..].to_vec();
            pool.install(|| matmul_add(&x[(m - 1) * k..], 1, &w, &mut alone));
            assert_eq!(alone, out[(m - 1) * n..], "{m}x{n}x{k}: last row alone");
        }
    }
}
