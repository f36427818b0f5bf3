//! Fused CPU kernels of the encoder layer (issue 9 item 6; the profile that chose them is in
//! docs/benchmarks.md, "Encoder kernels").
//!
//! - [`linear_with`]: `y = x · Wᵀ + b (+ residual)` in one matmul whose destination starts as the
//!   broadcast bias (plus the residual), instead of a matmul, then a bias add, then a residual
//!   add (three passes over the output and two temporaries): our own [`sgemm`] over weights
//!   packed at load where the CPU has AVX-512, else one `gemm` call (a few rows through
//!   [`kernels::matmul_nt`]).
//! - [`attention`]: softmax(q·kᵀ·scale + mask)·v for every (row, head) straight from the fused
//!   Q/K/V projection's output `[B·T, 3H]` into the context `[B·T, H]`: no head split/transpose
//!   copies, no `[B, heads, T, T]` score tensor, the mask and the softmax in the same pass,
//!   query rows in parallel on rayon's threads.
//! - [`gelu_erf`]: the exact GELU in place, vectorised (`erf` after Abramowitz & Stegun 7.1.26,
//!   |error| ≤ 1.5e-7, the formula PyTorch's vectorised `erf` uses).
//!
//! All of them use the widest SIMD the CPU has (`pulp`, AVX-512 / AVX2+FMA detected at run time,
//! scalar elsewhere). A row's answer does not depend on the other rows of the batch except
//! through `gemm`'s blocking, exactly as with candle's matmul.

use candle_core::{DType, Tensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{bf16, kernels, sgemm};

/// The weight of [`linear_with`]: row-major `[n, k]`, or packed at load for [`sgemm`].
#[derive(Clone, Copy)]
pub(crate) enum FusedWeight<'a> {
    /// `nn.Linear`'s `[n, k]`, row-major.
    Rows {
        /// The weight.
        w: &'a [f32],
        /// Outputs.
        n: usize,
        /// Inputs.
        k: usize,
    },
    /// Packed for [`sgemm::matmul_start`] (only made where [`sgemm::available`]).
    Packed(&'a kernels::Panels),
    /// Rounded to bf16 and packed for [`bf16::linear`] (`--dtype bfloat16`).
    Bf16(&'a bf16::Packed),
}

impl FusedWeight<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Self::Rows { n, k, .. } => (*n, *k),
            Self::Packed(p) => (p.n(), p.k()),
            Self::Bf16(p) => p.dims(),
        }
    }
}

/// `y = x · wᵀ + bias + residual` for `x` `[m, k]`, the weight `[n, k]` (`nn.Linear`'s layout,
/// row-major or packed), `bias` `[n]`, `residual` `[m, n]`, all row-major; `y` is `[m, n]`. The
/// packed weight goes through [`sgemm::matmul_start`] for any number of rows (the output starting
/// as the residual plus the bias, then the products in input order: rows do not depend on their
/// batch); the row-major one through [`kernels::matmul_nt`] for a few rows, else one `gemm`
/// call whose destination starts as the bias plus the residual.
///
/// # Panics
/// If the slices do not have the stated sizes (a caller bug).
pub(crate) fn linear_with(
    x: &[f32],
    m: usize,
    weight: FusedWeight<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (n, k) = weight.dims();
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not [n]");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), m * n, "residual is not [m, n]");
    }
    let w = match weight {
        FusedWeight::Packed(p) => return sgemm::matmul_start(x, m, p, bias, residual),
        FusedWeight::Bf16(p) => return bf16::linear(x, m, p, bias, residual),
        FusedWeight::Rows { w, .. } => {
            assert_eq!(w.len(), n * k, "w is not [n, k]");
            w
        }
    };
    if m <= kernels::SMALL_ROWS {
        let mut y = kernels::matmul_nt(x, m, w, n, k, bias);
        if let Some(r) = residual {
            add_assign(&mut y, r);
        }
        return y;
    }
    let mut y = starting_values(m, n, bias, residual);
    gemm_nt(&mut y, x, w, m, n, k, bias.is_some() || residual.is_some());
    y
}

/// `[m, n]`: the residual (or zeros) plus the bias on every row.
fn starting_values(m: usize, n: usize, bias: Option<&[f32]>, residual: Option<&[f32]>) -> Vec<f32> {
    let mut y = match residual {
        Some(r) => r.to_vec(),
        None => vec![0f32; m * n],
    };
    if let Some(b) = bias
        && n > 0
    {
        for row in y.chunks_exact_mut(n) {
            add_assign(row, b);
        }
    }
    y
}

fn add_assign(y: &mut [f32], r: &[f32]) {
    for (a, b) in y.iter_mut().zip(r) {
        *a += b;
    }
}

/// `dst (+)= x · wᵀ` with the `gemm` crate (candle's matmul, called directly so that `dst` can
/// start as the bias): `x` `[m, k]`, `w` `[n, k]`, `dst` `[m, n]`, all row-major.
#[allow(unsafe_code)]
fn gemm_nt(dst: &mut [f32], x: &[f32], w: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    assert_eq!(dst.len(), m * n, "dst is not [m, n]");
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the three slices have exactly the sizes the strides below address (checked above):
    // dst(i, j) = dst[i·n + j], lhs(i, l) = x[i·k + l], rhs(l, j) = w[j·k + l] for i < m, j < n,
    // l < k. `dst` is borrowed mutably, so it aliases neither input. gemm reads `dst` only when
    // `read_dst` is true, and it was initialised either way (a Vec of f32).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// [`linear`] on tensors: `x` `[.., k]`, `w` `[n, k]`, `bias` `[n]`, `residual` shaped like the
/// output; f32 on the CPU (see [`applies`]). The result has `x`'s leading dimensions and `n`.
pub(crate) fn linear_tensor(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    linear_tensor_then(x, TensorWeight::Rows(w), bias, residual, |_| ())
}

/// The weight of [`linear_tensor_then`].
#[derive(Clone, Copy)]
pub(crate) enum TensorWeight<'a> {
    /// `[n, k]`, f32 on the CPU.
    Rows(&'a Tensor),
    /// Packed for [`sgemm`].
    Packed(&'a kernels::Panels),
    /// Rounded to bf16 and packed for [`bf16::linear`].
    Bf16(&'a bf16::Packed),
}

/// [`linear_with`] on tensors, then `then` on the output's elements (e.g. [`gelu_erf`] in
/// place) before it becomes a tensor.
pub(crate) fn linear_tensor_then(
    x: &Tensor,
    w: TensorWeight<'_>,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    then: impl FnOnce(&mut [f32]),
) -> candle_core::Result<Tensor> {
    let (n, k) = match w {
        TensorWeight::Rows(w) => w.dims2()?,
        TensorWeight::Packed(p) => (p.n(), p.k()),
        TensorWeight::Bf16(p) => p.dims(),
    };
    let (m, shape) = kernels::linear_shape(x, k, n)?;
    let x = x.contiguous()?;
    let rows = match w {
        TensorWeight::Rows(w) => Some(w.contiguous()?),
        TensorWeight::Packed(_) | TensorWeight::Bf16(_) => None,
    };
    let residual = residual.map(Tensor::contiguous).transpose()?;
    if let Some(r) = &residual
        && r.dims() != shape.as_slice()
    {
        return Err(candle_core::Error::Msg(format!(
            "linear: residual {:?} is not the output's {shape:?}",
            r.shape()
        )));
    }
    let mut y = {
        let (xs, xl) = x.storage_and_layout();
        let ws = rows.as_ref().map(Tensor::storage_and_layout);
        let weight = match (&ws, w) {
            (Some((ws, wl)), _) => FusedWeight::Rows {
                w: kernels::f32_slice(ws, wl, "weight")?,
                n,
                k,
            },
            (None, TensorWeight::Packed(p)) => FusedWeight::Packed(p),
            (None, TensorWeight::Bf16(p)) => FusedWeight::Bf16(p),
            (None, TensorWeight::Rows(_)) => unreachable!("row-major weights were made contiguous"),
        };
        let b = bias.map(Tensor::storage_and_layout);
        let r = residual.as_ref().map(Tensor::storage_and_layout);
        linear_with(
            kernels::f32_slice(&xs, xl, "input")?,
            m,
            weight,
            b.as_ref()
                .map(|(s, l)| kernels::f32_slice(s, l, "bias"))
                .transpose()?,
            r.as_ref()
                .map(|(s, l)| kernels::f32_slice(s, l, "residual"))
                .transpose()?,
        )
    };
    then(&mut y);
    Tensor::from_vec(y, shape, x.device())
}

/// Whether the kernels of this module can take these tensors: f32, on the CPU.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.device().is_cpu())
}

/// Keys are padded to a multiple of this, so every score row is whole SIMD vectors (16 lanes
/// of AVX-512, two of AVX2's 8, sixteen of the scalar fallback's 1).
const KEY_PAD: usize = 16;

/// Query rows a task takes at once.
const QUERY_BLOCK: usize = 16;

/// Multi-head scaled dot-product attention over the output of the fused Q/K/V projection.
///
/// `qkv` is `[b·t, 3·heads·hd]` row-major (Q, K, V side by side, each `[heads, hd]`), `mask` the
/// additive mask `[b, t]` (0 where attended, a large negative number on padding); the result
/// is the context `[b·t, heads·hd]`: for each (row, head), `softmax(q·kᵀ·scale + mask) · v`.
///
/// # Panics
/// If the slices do not have the stated sizes (a caller bug).
pub(crate) fn attention(
    qkv: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    hd: usize,
    mask: &[f32],
    scale: f32,
) -> Vec<f32> {
    let h = heads * hd;
    assert_eq!(qkv.len(), b * t * 3 * h, "qkv is not [b·t, 3h]");
    assert_eq!(mask.len(), b * t, "mask is not [b, t]");
    let mut ctx = vec![0f32; b * t * h];
    if b == 0 || t == 0 || h == 0 {
        return ctx;
    }
    let tp = t.next_multiple_of(KEY_PAD);
    // Kᵀ of each (batch row, head), `[hd, tp]`, zero past `t`: a score row is then a sum of hd
    // scaled rows of it (whole vectors, no horizontal sums).
    let mut kt = vec![0f32; b * heads * hd * tp];
    kt.par_chunks_mut(hd * tp)
        .enumerate()
        .for_each(|(bh, out)| {
            let (bi, hi) = (bh / heads, bh % heads);
            for j in 0..t {
                let k = &qkv[(bi * t + j) * 3 * h + h + hi * hd..][..hd];
                for (d, &v) in k.iter().enumerate() {
                    out[d * tp + j] = v;
                }
            }
        });
    // The mask padded to `tp` with -inf: padded keys get exactly 0 weight.
    let mut maskp = vec![f32::NEG_INFINITY; b * tp];
    for (row, m) in maskp.chunks_exact_mut(tp).zip(mask.chunks_exact(t)) {
        row[..t].copy_from_slice(m);
    }
    let (kt, maskp) = (&kt, &maskp);
    ctx.par_chunks_mut(t * h).enumerate().for_each(|(bi, out)| {
        // Keys after the last attended one (right padding) get exactly 0 weight
        // (e^(f32::MIN − max) underflows), so they are skipped; a row with no attended key
        // keeps them all, as transformers weighs them then.
        let row_mask = &mask[bi * t..(bi + 1) * t];
        let keys = row_mask
            .iter()
            .rposition(|&m| m > f32::MIN)
            .map_or(t, |j| j + 1);
        out.par_chunks_mut(QUERY_BLOCK * h)
            .enumerate()
            .for_each(|(c, out)| {
                dispatch(AttentionRows {
                    qkv: &qkv[bi * t * 3 * h..(bi + 1) * t * 3 * h],
                    kt: &kt[bi * heads * hd * tp..(bi + 1) * heads * hd * tp],
                    mask: &maskp[bi * tp..(bi + 1) * tp],
                    keys,
                    tp,
                    heads,
                    hd,
                    scale,
                    first: c * QUERY_BLOCK,
                    out,
                });
            });
    });
    ctx
}

/// Runs `op` with the best SIMD instruction set of this CPU.
fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = pulp::x86::V4::try_new() {
            return Simd::vectorize(simd, op);
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            return Simd::vectorize(simd, op);
        }
    }
    pulp::Arch::new().dispatch(op)
}

/// One task of [`attention`]: query rows `first..` of one batch row, every head, into `out`
/// (`[rows, heads·hd]`).
struct AttentionRows<'a> {
    /// `[t, 3h]` of this batch row.
    qkv: &'a [f32],
    /// `[heads, hd, tp]` of this batch row.
    kt: &'a [f32],
    /// `[tp]`.
    mask: &'a [f32],
    /// Keys that can get a weight: `..keys`.
    keys: usize,
    tp: usize,
    heads: usize,
    hd: usize,
    scale: f32,
    first: usize,
    out: &'a mut [f32],
}

impl WithSimd for AttentionRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            qkv,
            kt,
            mask,
            keys,
            tp,
            heads,
            hd,
            scale,
            first,
            out,
        } = self;
        let h = heads * hd;
        // Scores of the keys `..keys`, padded to whole vectors (the padding's mask is -inf or
        // f32::MIN: weight 0).
        let kp = keys.next_multiple_of(KEY_PAD);
        let (maskv, _) = S::as_simd_f32s(&mask[..kp]);
        let lanes = S::F32_LANES;
        let vectors = (hd % lanes == 0).then_some(hd / lanes);
        // Four query rows at once where their accumulators fit in registers (AVX-512, heads of
        // up to 64): each key vector loaded feeds four rows. Every row's sums are the same
        // operations in the same order as one row at a time.
        let quad = lanes >= 16 && matches!(vectors, Some(1 | 2 | 4));
        let mut scores = vec![0f32; QUAD * kp];
        let mut rows = out.chunks_exact_mut(h).enumerate().peekable();
        while rows.peek().is_some() {
            let group: Vec<(usize, &mut [f32])> = if quad {
                rows.by_ref().take(QUAD).collect()
            } else {
                rows.by_ref().take(1).collect()
            };
            if group.len() == QUAD {
                let mut group: [(usize, &mut [f32]); QUAD] = group
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("a group of four"));
                for hi in 0..heads {
                    let q: [&[f32]; QUAD] = std::array::from_fn(|r| {
                        &qkv[(first + group[r].0) * 3 * h + hi * hd..][..hd]
                    });
                    let kt = &kt[hi * hd * tp..(hi + 1) * hd * tp];
                    scores_rows::<S, QUAD>(simd, q, kt, tp, scale, &mut scores, kp);
                    for row in scores.chunks_exact_mut(kp) {
                        softmax_masked(simd, row, maskv);
                    }
                    let v_at = |j: usize| &qkv[j * 3 * h + 2 * h + hi * hd..][..hd];
                    let acc: [&mut [f32]; QUAD] = {
                        let mut it = group.iter_mut();
                        std::array::from_fn(|_| {
                            let (_, row) = it.next().unwrap_or_else(|| unreachable!());
                            &mut row[hi * hd..(hi + 1) * hd]
                        })
                    };
                    match vectors {
                        Some(1) => weighted_sums::<S, QUAD, 1>(simd, acc, &scores, kp, keys, v_at),
                        Some(2) => weighted_sums::<S, QUAD, 2>(simd, acc, &scores, kp, keys, v_at),
                        _ => weighted_sums::<S, QUAD, 4>(simd, acc, &scores, kp, keys, v_at),
                    }
                }
                continue;
            }
            for (r, out_row) in group {
                let i = first + r;
                for hi in 0..heads {
                    let q = &qkv[i * 3 * h + hi * hd..][..hd];
                    let kt = &kt[hi * hd * tp..(hi + 1) * hd * tp];
                    let scores = &mut scores[..kp];
                    scores_row(simd, q, kt, tp, scale, scores);
                    softmax_masked(simd, scores, maskv);
                    let acc = &mut out_row[hi * hd..(hi + 1) * hd];
                    let v_at = |j: usize| &qkv[j * 3 * h + 2 * h + hi * hd..][..hd];
                    match vectors {
                        Some(2) => weighted_sum::<S, 2>(simd, acc, &scores[..keys], v_at),
                        Some(4) => weighted_sum::<S, 4>(simd, acc, &scores[..keys], v_at),
                        Some(8) => weighted_sum::<S, 8>(simd, acc, &scores[..keys], v_at),
                        _ => {
                            for (j, &p) in scores[..keys].iter().enumerate() {
                                axpy(simd, acc, p, v_at(j));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Query rows [`AttentionRows`] takes at once where registers allow.
const QUAD: usize = 4;

/// [`scores_row`] for `R` query rows at once: row `r`'s scores into `s[r·kp..(r + 1)·kp]`, each
/// key vector loaded once for all rows; every score the same sum in the same order.
#[inline(always)]
fn scores_rows<S: Simd, const R: usize>(
    simd: S,
    q: [&[f32]; R],
    kt: &[f32],
    tp: usize,
    scale: f32,
    s: &mut [f32],
    kp: usize,
) {
    let nv = kp / S::F32_LANES;
    let hd = q[0].len();
    let mut c0 = 0;
    while c0 < nv {
        let nb = (nv - c0).min(4);
        // Blocks of four vectors, then one at a time: loops of a known length keep the
        // accumulators in registers.
        if nb == 4 {
            scores_block::<S, R, 4>(simd, &q, kt, tp, scale, s, kp, c0, hd);
        } else {
            for c in c0..c0 + nb {
                scores_block::<S, R, 1>(simd, &q, kt, tp, scale, s, kp, c, hd);
            }
        }
        c0 += nb;
    }
}

/// Vectors `c0..c0 + B` of [`scores_rows`]' `R` score rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scores_block<S: Simd, const R: usize, const B: usize>(
    simd: S,
    q: &[&[f32]; R],
    kt: &[f32],
    tp: usize,
    scale: f32,
    s: &mut [f32],
    kp: usize,
    c0: usize,
    hd: usize,
) {
    let lanes = S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); B]; R];
    for d in 0..hd {
        let kv: [S::f32s; B] = {
            let (kv, _) = S::as_simd_f32s(&kt[d * tp + c0 * lanes..d * tp + (c0 + B) * lanes]);
            std::array::from_fn(|u| kv[u])
        };
        for (row, qr) in acc.iter_mut().zip(q) {
            let qd = simd.splat_f32s(qr[d] * scale);
            for (a, k) in row.iter_mut().zip(kv) {
                *a = simd.mul_add_f32s(qd, k, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let (sv, _) = S::as_mut_simd_f32s(&mut s[r * kp..(r + 1) * kp]);
        sv[c0..c0 + B].copy_from_slice(row);
    }
}

/// [`weighted_sum`] for `R` rows at once (`acc[r] += Σ_j p[r·kp + j] · v(j)` for `j < keys`),
/// each value vector loaded once for all rows; every sum the same in the same order.
#[inline(always)]
fn weighted_sums<'v, S: Simd, const R: usize, const N: usize>(
    simd: S,
    mut acc: [&mut [f32]; R],
    p: &[f32],
    kp: usize,
    keys: usize,
    v: impl Fn(usize) -> &'v [f32],
) {
    let mut regs: [[S::f32s; N]; R] = std::array::from_fn(|r| {
        let (av, _) = S::as_simd_f32s(acc[r]);
        std::array::from_fn(|u| av[u])
    });
    for j in 0..keys {
        // A fixed-size copy: loops of a known length keep `regs` in registers.
        let vv: [S::f32s; N] = {
            let (vv, _) = S::as_simd_f32s(v(j));
            std::array::from_fn(|u| vv[u])
        };
        for (r, row) in regs.iter_mut().enumerate() {
            let pv = simd.splat_f32s(p[r * kp + j]);
            for (a, x) in row.iter_mut().zip(vv) {
                *a = simd.mul_add_f32s(pv, x, *a);
            }
        }
    }
    for (a, row) in acc.iter_mut().zip(&regs) {
        let (av, _) = S::as_mut_simd_f32s(a);
        av[..N].copy_from_slice(row);
    }
}

/// `s[j] = scale · Σ_d q[d] · kt[d][j]` for `kt` `[hd, tp]` and `j < s.len()` (whole vectors),
/// four vectors of `s` at a time in registers.
#[inline(always)]
fn scores_row<S: Simd>(simd: S, q: &[f32], kt: &[f32], tp: usize, scale: f32, s: &mut [f32]) {
    let (sv, _) = S::as_mut_simd_f32s(s);
    let lanes = S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    let mut c0 = 0;
    while c0 < sv.len() {
        let nb = (sv.len() - c0).min(4);
        let mut acc = [zero; 4];
        for (d, &qd) in q.iter().enumerate() {
            let qd = simd.splat_f32s(qd * scale);
            let (kv, _) = S::as_simd_f32s(&kt[d * tp + c0 * lanes..d * tp + (c0 + nb) * lanes]);
            for (a, k) in acc.iter_mut().zip(kv) {
                *a = simd.mul_add_f32s(qd, *k, *a);
            }
        }
        sv[c0..c0 + nb].copy_from_slice(&acc[..nb]);
        c0 += nb;
    }
}

/// `s = softmax(s + mask)` over whole vectors (`s` and `mask` of one length, a multiple of the
/// SIMD width).
#[inline(always)]
fn softmax_masked<S: Simd>(simd: S, s: &mut [f32], mask: &[S::f32s]) {
    let (sv, _) = S::as_mut_simd_f32s(s);
    let mut mx = simd.splat_f32s(f32::NEG_INFINITY);
    for (v, m) in sv.iter_mut().zip(mask) {
        *v = simd.add_f32s(*v, *m);
        mx = simd.max_f32s(mx, *v);
    }
    let mx = simd.splat_f32s(simd.reduce_max_f32s(mx));
    let mut sum = simd.splat_f32s(0.0);
    for v in sv.iter_mut() {
        *v = exp(simd, simd.sub_f32s(*v, mx));
        sum = simd.add_f32s(sum, *v);
    }
    let inv = simd.splat_f32s(1.0 / simd.reduce_sum_f32s(sum));
    for v in sv.iter_mut() {
        *v = simd.mul_f32s(*v, inv);
    }
}

/// `acc += Σ_j p[j] · v(j)` for `acc` of exactly `N` vectors, kept in registers across `j`
/// (the same fused multiply-adds in the same order as [`axpy`] one `j` at a time).
#[inline(always)]
fn weighted_sum<'v, S: Simd, const N: usize>(
    simd: S,
    acc: &mut [f32],
    p: &[f32],
    v: impl Fn(usize) -> &'v [f32],
) {
    let (av, _) = S::as_mut_simd_f32s(acc);
    let mut regs: [S::f32s; N] = std::array::from_fn(|u| av[u]);
    for (j, &pj) in p.iter().enumerate() {
        let pv = simd.splat_f32s(pj);
        let (vv, _) = S::as_simd_f32s(v(j));
        for (a, x) in regs.iter_mut().zip(vv) {
            *a = simd.mul_add_f32s(pv, *x, *a);
        }
    }
    av[..N].copy_from_slice(&regs);
}

/// `acc += p · v`.
#[inline(always)]
fn axpy<S: Simd>(simd: S, acc: &mut [f32], p: f32, v: &[f32]) {
    let pv = simd.splat_f32s(p);
    let (av, at) = S::as_mut_simd_f32s(acc);
    let (vv, vt) = S::as_simd_f32s(v);
    for (a, x) in av.iter_mut().zip(vv) {
        *a = simd.mul_add_f32s(pv, *x, *a);
    }
    for (a, x) in at.iter_mut().zip(vt) {
        *a += p * x;
    }
}

/// `e^x` lane-wise: `x = n·ln 2 + r`, a degree-6 polynomial for `e^r` (|r| ≤ ln 2 / 2, relative
/// error ≈ 1e-7), times `2^n` built in the exponent bits; 0 below `ln(2^-126)`.
#[inline(always)]
fn exp<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.0;
    // 1.5 · 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = simd.min_f32s(simd.max_f32s(x, simd.splat_f32s(LO)), simd.splat_f32s(HI));
    let magic = simd.splat_f32s(MAGIC);
    let shifted = simd.mul_add_f32s(xc, simd.splat_f32s(std::f32::consts::LOG2_E), magic);
    let n = simd.sub_f32s(shifted, magic);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_HI), xc);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_LO), r);
    let mut p = simd.splat_f32s(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = simd.mul_add_f32s(p, r, simd.splat_f32s(c));
    }
    // bits(shifted) = bits(MAGIC) + n; the biased exponent n + 127 shifted into place is 2^n.
    let biased = simd.add_u32s(
        simd.sub_u32s(
            simd.transmute_u32s_f32s(shifted),
            simd.splat_u32s(MAGIC.to_bits()),
        ),
        simd.splat_u32s(127),
    );
    let pow2 = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)));
    let y = simd.mul_f32s(p, pow2);
    simd.select_f32s(
        simd.less_than_f32s(x, simd.splat_f32s(LO)),
        simd.splat_f32s(0.0),
        y,
    )
}

/// The exact GELU, `x · (1 + erf(x / √2)) / 2`, in place, on rayon's threads for large inputs.
pub(crate) fn gelu_erf(xs: &mut [f32]) {
    gelu(xs, GeluKind::Erf);
}

/// The tanh GELU (`gelu_new`), `x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) / 2`, in place,
/// on rayon's threads for large inputs. Written as `x / (1 + e^{−2u})` (the same function:
/// `(1 + tanh u) / 2` is the logistic of `2u`), one vectorised `exp` per element.
pub(crate) fn gelu_tanh(xs: &mut [f32]) {
    gelu(xs, GeluKind::Tanh);
}

#[derive(Clone, Copy)]
enum GeluKind {
    Erf,
    Tanh,
}

fn gelu(xs: &mut [f32], kind: GeluKind) {
    const CHUNK: usize = 1 << 14;
    let run = |c: &mut [f32]| match kind {
        GeluKind::Erf => dispatch(Lanewise::<ErfLanes>(c, std::marker::PhantomData)),
        GeluKind::Tanh => dispatch(Lanewise::<TanhLanes>(c, std::marker::PhantomData)),
    };
    if xs.len() <= CHUNK {
        run(xs);
    } else {
        xs.par_chunks_mut(CHUNK).for_each(run);
    }
}

/// A function applied lane-wise. A trait with a generic method rather than a closure or a
/// function pointer: only then is it inlined into [`Lanewise`]'s SIMD context (pulp's operations
/// are fast only inlined into a function compiled for the CPU's instruction set).
trait LaneFn {
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s;
}

struct ErfLanes;

impl LaneFn for ErfLanes {
    #[inline(always)]
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        gelu_erf_lanes(simd, x)
    }
}

struct TanhLanes;

impl LaneFn for TanhLanes {
    #[inline(always)]
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        gelu_tanh_lanes(simd, x)
    }
}

/// `xs[i] = F(xs[i])` a vector at a time; the tail through the same `F`, one padded vector.
struct Lanewise<'a, F>(&'a mut [f32], std::marker::PhantomData<F>);

impl<F: LaneFn> WithSimd for Lanewise<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.0);
        for v in head {
            *v = F::apply(simd, *v);
        }
        if !tail.is_empty() {
            let v = F::apply(simd, simd.partial_load_f32s(tail));
            simd.partial_store_f32s(tail, v);
        }
    }
}

#[inline(always)]
fn gelu_tanh_lanes<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // −2·√(2/π), and √(2/π)·0.044715 folded in: −2u = x · (A + B·x²).
    const A: f32 = -2.0 * 0.797_884_6;
    const B: f32 = -2.0 * 0.797_884_6 * 0.044_715;
    let x2 = simd.mul_f32s(x, x);
    let minus_2u = simd.mul_f32s(
        x,
        simd.mul_add_f32s(simd.splat_f32s(B), x2, simd.splat_f32s(A)),
    );
    let e = exp(simd, minus_2u);
    simd.div_f32s(x, simd.add_f32s(simd.splat_f32s(1.0), e))
}

/// GELU with `erf` after Abramowitz & Stegun 7.1.26: `erf(z) = 1 − poly(t)·e^{−z²}`,
/// `t = 1 / (1 + p·z)` for `z ≥ 0`, odd in `z`.
#[inline(always)]
fn gelu_erf_lanes<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let z = simd.mul_f32s(
        simd.abs_f32s(x),
        simd.splat_f32s(std::f32::consts::FRAC_1_SQRT_2),
    );
    let one = simd.splat_f32s(1.0);
    let t = simd.div_f32s(one, simd.mul_add_f32s(simd.splat_f32s(P), z, one));
    let mut poly = simd.splat_f32s(A[4]);
    for a in [A[3], A[2], A[1], A[0]] {
        poly = simd.mul_add_f32s(poly, t, simd.splat_f32s(a));
    }
    poly = simd.mul_f32s(poly, t);
    let e = exp(
        simd,
        simd.mul_f32s(simd.sub_f32s(simd.splat_f32s(0.0), z), z),
    );
    let erf_abs = simd.sub_f32s(one, simd.mul_f32s(poly, e));
    let negative = simd.less_than_f32s(x, simd.splat_f32s(0.0));
    let one_plus_erf = simd.select_f32s(
        negative,
        simd.sub_f32s(one, erf_abs),
        simd.add_f32s(one, erf_abs),
    );
    simd.mul_f32s(simd.mul_f32s(simd.splat_f32s(0.5), x), one_plus_erf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::tests::lcg;

    #[test]
    fn exp_and_gelu_match_f64() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.01).collect();
        let mut g = xs.clone();
        gelu_erf(&mut g);
        for (x, got) in xs.iter().zip(&g) {
            let x = f64::from(*x);
            let want =
                0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2));
            assert!(
                (f64::from(*got) - want).abs() <= 2e-7 * (1.0 + x.abs()),
                "gelu({x}) = {got}, want {want}"
            );
        }
        // Softmax of a row whose entries span the whole exp range, and fully masked keys.
        let mut s = vec![0f32; 32];
        for (i, v) in s.iter_mut().enumerate() {
            *v = -80.0 + i as f32 * 5.0;
        }
        let mut mask = vec![0f32; 32];
        mask[31] = f32::MIN;
        mask[30] = f32::NEG_INFINITY;
        let want: Vec<f64> = {
            let z: Vec<f64> = s[..30]
                .iter()
                .map(|&v| f64::from(v) - f64::from(s[29]))
                .collect();
            let sum: f64 = z.iter().map(|v| v.exp()).sum();
            z.iter().map(|v| v.exp() / sum).collect()
        };
        struct Run<'a>(&'a mut [f32], &'a [f32]);
        impl WithSimd for Run<'_> {
            type Output = ();
            fn with_simd<S: Simd>(self, simd: S) {
                let (m, _) = S::as_simd_f32s(self.1);
                softmax_masked(simd, self.0, m);
            }
        }
        dispatch(Run(&mut s, &mask));
        for (got, want) in s.iter().zip(&want) {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-7 + 1e-6 * want,
                "{got} vs {want}"
            );
        }
        assert_eq!(s[30], 0.0);
        assert_eq!(s[31], 0.0);
    }

    /// The tanh GELU against the same formula in f64 (the one candle's `gelu` computes in f32),
    /// over the range where it is not 0 or `x`, and its tails; a length that is not a multiple
    /// of the SIMD width.
    #[test]
    fn gelu_tanh_matches_f64() {
        let mut xs: Vec<f32> = (-1500..=1500).map(|i| i as f32 * 0.01).collect();
        xs.extend([-100.0, -60.0, 40.0, 100.0, 0.0, -0.0]);
        let mut g = xs.clone();
        gelu_tanh(&mut g);
        for (x, got) in xs.iter().zip(&g) {
            let x = f64::from(*x);
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let want = 0.5 * x * (1.0 + (c * x * (1.0 + 0.044715 * x * x)).tanh());
            assert!(
                (f64::from(*got) - want).abs() <= 2e-7 * (1.0 + x.abs()),
                "gelu_tanh({x}) = {got}, want {want}"
            );
        }
    }

    /// The fused attention against the same attention written with candle's tensor ops, with
    /// padding in one batch row, head sizes that are not a multiple of the SIMD width and a
    /// length that is not a multiple of [`KEY_PAD`].
    #[test]
    fn attention_equals_candle_ops() {
        use candle_core::{D, Device};
        for (b, t, heads, hd) in [(1, 1, 1, 1), (2, 7, 3, 5), (3, 37, 4, 16), (2, 130, 2, 64)] {
            let h = heads * hd;
            let qkv = lcg((b * 1000 + t) as u64, b * t * 3 * h, 1.5);
            let mut mask = vec![0f32; b * t];
            if b > 1 {
                // Right padding in the second row, and in the third a row with no attended key
                // (every key weighs the same then) when there is one.
                for v in &mut mask[2 * t - t / 3..2 * t] {
                    *v = f32::MIN;
                }
                if b > 2 {
                    for v in &mut mask[2 * t..3 * t] {
                        *v = f32::MIN;
                    }
                }
            }
            let scale = 1.0 / (hd as f32).sqrt();
            let got = attention(&qkv, b, t, heads, hd, &mask, scale);
            let dev = Device::Cpu;
            let qkv_t = Tensor::from_vec(qkv, (b, t, 3 * h), &dev).expect("qkv");
            let split = |i: usize| {
                qkv_t
                    .narrow(D::Minus1, i * h, h)
                    .and_then(|x| x.reshape((b, t, heads, hd)))
                    .and_then(|x| x.transpose(1, 2))
                    .and_then(|x| x.contiguous())
                    .expect("split")
            };
            let q = (split(0) * f64::from(scale)).expect("scale");
            let scores = q
                .matmul(&split(1).t().expect("t"))
                .and_then(|s| {
                    s.broadcast_add(
                        &Tensor::from_vec(mask.clone(), (b, 1, 1, t), &dev).expect("mask"),
                    )
                })
                .expect("scores");
            let probs = candle_nn::ops::softmax_last_dim(&scores).expect("softmax");
            let want = probs
                .matmul(&split(2))
                .and_then(|c| c.transpose(1, 2))
                .and_then(|c| c.reshape((b * t * h,)))
                .and_then(|c| c.to_vec1::<f32>())
                .expect("context");
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "b={b} t={t} heads={heads} hd={hd}: {worst}");
        }
    }

    /// A query row's context is the same bit for bit whether it runs in a group of four rows
    /// or alone: row 20 of 21 (alone: the last task has 5 rows) asks the same query as row 0.
    #[test]
    fn attention_rows_in_fours_equal_rows_alone() {
        for hd in [16, 32, 64] {
            let (t, heads) = (21, 2);
            let h = heads * hd;
            let mut qkv = lcg(hd as u64, t * 3 * h, 1.5);
            let first_q: Vec<f32> = qkv[..h].to_vec();
            qkv[20 * 3 * h..20 * 3 * h + h].copy_from_slice(&first_q);
            let mask = vec![0f32; t];
            let ctx = attention(&qkv, 1, t, heads, hd, &mask, 0.125);
            assert_eq!(ctx[..h], ctx[20 * h..21 * h], "hd={hd}");
        }
    }

    /// Bias and residual folded into the gemm's starting value, for the gemm path and the
    /// small-rows path, against candle's matmul + adds.
    #[test]
    fn linear_with_bias_and_residual_equals_candle() {
        use candle_core::Device;
        let dev = Device::Cpu;
        for (m, n, k) in [(3, 5, 7), (17, 33, 65), (128, 96, 200), (40, 1, 3)] {
            let x = Tensor::from_vec(lcg(m as u64, m * k, 1.0), (m, k), &dev).expect("x");
            let w = Tensor::from_vec(lcg(n as u64 + 7, n * k, 1.0), (n, k), &dev).expect("w");
            let b = Tensor::from_vec(lcg(k as u64 + 9, n, 1.0), n, &dev).expect("b");
            let r = Tensor::from_vec(lcg(3, m * n, 1.0), (m, n), &dev).expect("r");
            let want = x
                .matmul(&w.t().expect("t"))
                .and_then(|y| y.broadcast_add(&b))
                .and_then(|y| y + &r)
                .expect("want");
            let packed = kernels::Panels::from_tensor(&w).expect("panels");
            let mut forms = vec![("rows", TensorWeight::Rows(&w))];
            if sgemm::available() {
                forms.push(("packed", TensorWeight::Packed(&packed)));
            }
            let diff = |got: Tensor, want: &Tensor| {
                (got - want)
                    .and_then(|d| d.abs())
                    .and_then(|d| d.max_all())
                    .and_then(|d| d.to_scalar::<f32>())
                    .expect("diff")
            };
            let plain_want = x.matmul(&w.t().expect("t")).expect("matmul");
            for (form, weight) in forms {
                let got = linear_tensor_then(&x, weight, Some(&b), Some(&r), |_| ()).expect("got");
                let d = diff(got, &want);
                assert!(d < 1e-4, "{form} m={m} n={n} k={k}: {d}");
                let plain = linear_tensor_then(&x, weight, None, None, |_| ()).expect("plain");
                let d = diff(plain, &plain_want);
                assert!(d < 1e-4, "{form} plain m={m} n={n} k={k}: {d}");
            }
        }
    }
}
