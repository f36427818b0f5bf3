//! CPU kernels of our own, where candle's are slow for the shapes these models run.
//!
//! [`matmul_nt`]: `y = x · Wᵀ (+ b)` for a few rows of `x` against a row-major weight `W`
//! `[out, in]` (the layout of `nn.Linear.weight`), i.e. one dot product per (row, output) over
//! contiguous memory. candle's CPU matmul (the `gemm` crate) packs the whole right-hand side on
//! every call, which for one row (a decode step) costs more than the product itself: GPT-2-small
//! decoding spent 88 % of its time there (docs/benchmarks.md, "Decode speed"). Here the weight
//! is read once a call, straight from where it lies, by as many threads as rayon has, each over
//! its own block of output rows, with the widest SIMD the CPU has (`pulp`, detected at run time).
//! A block of four weight rows is kept in registers against two rows of `x` at a time, so 4 rows
//! cost little more memory traffic than 1: decoding is bound by reading the weights.
//!
//! Each output element is one dot product whose summation order depends only on `in` and the
//! SIMD width, not on the number of rows nor on the thread split: a row's answer does not depend
//! on the rows batched with it.

use candle_core::{DType, Layout, Storage, Tensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

// bfloat16 rounding (nearest, ties to even) and widening: one implementation, the encoders'.
use super::bf16::{round as bf16_bits, widen as bf16_value};

/// Rows of `x` up to which [`linear`] takes [`matmul_nt`] rather than candle's matmul: decode
/// steps (one row a sequence) and short prompts. Above it the product is compute-bound and
/// `gemm`'s packed micro-kernels are faster.
pub(crate) const SMALL_ROWS: usize = 16;

/// Weight rows a task takes at once: `16 KiB` of weights, rounded to the four-row tile.
fn block_rows(k: usize) -> usize {
    (4096 / k.max(1)).next_multiple_of(4).clamp(4, 256)
}

/// Below this many multiply-adds a call stays on the calling thread (a classifier head).
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// `y[i][j] = x[i] · w[j] + bias[j]` for `x` `[m, k]` and `w` `[n, k]`, both row-major; `y` is
/// `[m, n]` row-major.
///
/// # Panics
/// If the slices do not have the stated sizes (a caller bug).
pub(crate) fn matmul_nt(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not [n]");
    }
    // Computed as `yᵀ` `[n, m]`, so that each task owns a contiguous block of output rows.
    let mut yt = vec![0f32; n * m];
    if m == 0 || n == 0 {
        return yt;
    }
    let block = block_rows(k);
    let run = |(c, out): (usize, &mut [f32])| {
        let j0 = c * block;
        let rows = out.len() / m;
        dispatch(Block {
            x,
            m,
            k,
            w: &w[j0 * k..(j0 + rows) * k],
            bias: bias.map(|b| &b[j0..j0 + rows]),
            out,
        });
    };
    if n * k * m < PARALLEL_MIN_WORK || rayon::current_num_threads() == 1 {
        yt.chunks_mut(block * m).enumerate().for_each(run);
    } else {
        yt.par_chunks_mut(block * m).enumerate().for_each(run);
    }
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * n + j] = *v;
        }
    }
    y
}

/// The rows of `x` for a linear layer of `k` inputs and `n` outputs, and the output's shape
/// (`x`'s leading dimensions, then `n`); an error naming both when `x` does not end in `k`.
pub(crate) fn linear_shape(
    x: &Tensor,
    k: usize,
    n: usize,
) -> candle_core::Result<(usize, Vec<usize>)> {
    let dims = x.dims();
    if dims.last() != Some(&k) {
        return Err(candle_core::Error::Msg(format!(
            "linear: input {:?} does not end in the weight's {k} columns",
            x.shape()
        )));
    }
    let mut shape = dims[..dims.len() - 1].to_vec();
    shape.push(n);
    Ok((x.elem_count() / k.max(1), shape))
}

/// `x · wᵀ (+ bias)` over the last dimension of `x` with [`matmul_nt`], for f32 CPU tensors
/// (`w` `[n, k]`, `bias` `[n]`); the result has `x`'s leading dimensions and `n` last.
pub(crate) fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (n, k) = w.dims2()?;
    let (m, shape) = linear_shape(x, k, n)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let bias_guard = bias.map(Tensor::storage_and_layout);
    let bias = match &bias_guard {
        Some((bs, bl)) => Some(f32_slice(bs, bl, "bias")?),
        None => None,
    };
    let y = matmul_nt(
        f32_slice(&xs, xl, "input")?,
        m,
        f32_slice(&ws, wl, "weight")?,
        n,
        k,
        bias,
    );
    Tensor::from_vec(y, shape, x.device())
}

/// The f32 elements of a contiguous CPU tensor.
pub(crate) fn f32_slice<'a>(
    storage: &'a Storage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        return Err(candle_core::Error::Msg(format!(
            "linear: the {what} is not on the CPU"
        )));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::Msg(format!(
            "linear: the {what} is not contiguous"
        )));
    };
    Ok(&cpu.as_slice::<f32>()?[start..end])
}

/// Whether [`linear`] can run `x · wᵀ`: f32 tensors on the CPU, at most [`SMALL_ROWS`] rows.
pub(crate) fn linear_applies(x: &Tensor, w: &Tensor) -> bool {
    let k = x.dims().last().copied().unwrap_or(0);
    x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.device().is_cpu()
        && w.device().is_cpu()
        && k > 0
        && x.elem_count() / k <= SMALL_ROWS
}

/// Runs `op` with the best SIMD instruction set of this CPU: AVX-512 (`V4`), else AVX2+FMA
/// (`V3`), else what `pulp` finds. The choice is the same for every call of a process, which
/// [`Panels`] relies on (its panel width is the vector width).
pub(crate) fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V4::try_new() {
        return Simd::vectorize(simd, op);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return Simd::vectorize(simd, op);
    }
    pulp::Arch::new().dispatch(op)
}

/// Outputs a panel of [`Panels::new`] holds (the f32 lanes of the vectors [`dispatch`] uses).
pub(crate) fn panel_width() -> usize {
    lanes()
}

/// The f32 lanes of the vectors [`dispatch`] uses.
fn lanes() -> usize {
    struct Lanes;
    impl WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    dispatch(Lanes)
}

/// A weight `W` `[n, k]` laid out once, at load, for [`matmul_panels`]: column panels of
/// `width` outputs (the SIMD width), each `[k, width]` row-major, i.e. `panel[p][kk][l] =
/// W[p·width + l][kk]` (zeros past `n`). A product then reads each panel front to back as one
/// sequential stream, one vector of `width` outputs per input element, with no horizontal sums.
#[derive(Clone, Debug)]
pub(crate) struct Panels {
    data: std::sync::Arc<Aligned<f32>>,
    n: usize,
    k: usize,
    width: usize,
}

impl Panels {
    /// Packs the row-major `w` `[n, k]`.
    ///
    /// # Panics
    /// If `w` is not `n × k` long (a caller bug).
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        let width = lanes();
        Self {
            // `Arc::new(buffer)`, not `Arc<[f32]>::from(Vec)`: the latter copies the whole
            // buffer into a new allocation (another 340 MB of fresh pages for BERT-base at load).
            data: std::sync::Arc::new(pack(w, n, k, width, |v| v)),
            n,
            k,
            width,
        }
    }

    /// Outputs (`n` of `[n, k]`).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Inputs (`k` of `[n, k]`).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Outputs a panel holds.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// The panels, `[n / width][k][width]` (the last one zero-padded).
    pub(crate) fn data(&self) -> &[f32] {
        &self.data
    }

    /// Packs an f32 CPU tensor `[n, k]`.
    pub(crate) fn from_tensor(w: &Tensor) -> candle_core::Result<Self> {
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        Ok(Self::new(f32_slice(&ws, wl, "weight")?, n, k))
    }
}

/// A buffer whose first element sits on a 64-byte boundary (a cache line, an AVX-512 vector):
/// every panel row a kernel loads as one vector is then one cache line, never split across two
/// (split loads cost the encoder products 4–9 % on this CPU). Its whole 2 MiB pages are asked to
/// become huge pages once written ([`crate::memory::prefer_huge_pages`]).
pub(crate) struct Aligned<T> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: `Aligned` owns its elements as a `Vec` would.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for Aligned<T> {}
// SAFETY: as above; shared access gives only `&[T]`.
#[allow(unsafe_code)]
unsafe impl<T: Sync> Sync for Aligned<T> {}

impl<T: Copy + Default> Aligned<T> {
    /// `len` default (zero) elements.
    #[allow(unsafe_code)]
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("buffer size overflows");
        let layout =
            std::alloc::Layout::from_size_align(bytes.max(64), 64.max(std::mem::align_of::<T>()))
                .expect("buffer layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw.cast::<T>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        for i in 0..len {
            // SAFETY: element `i < len` of the allocation, written before any read.
            unsafe { ptr.as_ptr().add(i).write(T::default()) };
        }
        crate::memory::prefer_huge_pages(raw, bytes);
        Self { ptr, len, layout }
    }
}

impl<T> Drop for Aligned<T> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout; `T: Copy` there, so nothing to drop.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), self.layout) };
    }
}

impl<T> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} elements)", self.len)
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    #[allow(unsafe_code)]
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements (`zeroed`), owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    #[allow(unsafe_code)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as `deref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// The row-major `w` `[n, k]` as column panels of `width` outputs, `[n / width][k][width]`
/// (zeros past `n`), each element passed through `convert`. Each panel is written front to
/// back (the reads stride over its `width` rows), the panels on rayon's threads.
///
/// # Panics
/// If `w` is not `n × k` long (a caller bug).
fn pack<T: Copy + Default + Send>(
    w: &[f32],
    n: usize,
    k: usize,
    width: usize,
    convert: impl Fn(f32) -> T + Sync,
) -> Aligned<T> {
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    let mut data = Aligned::zeroed(n.div_ceil(width) * k * width);
    data.par_chunks_mut((k * width).max(1))
        .enumerate()
        .for_each(|(p, panel)| {
            let rows = width.min(n - p * width);
            let src = &w[p * width * k..(p * width + rows) * k];
            for (kk, out) in panel.chunks_exact_mut(width).enumerate() {
                for (l, v) in out[..rows].iter_mut().enumerate() {
                    *v = convert(src[l * k + kk]);
                }
            }
        });
    data
}

/// [`Panels`] stored as bfloat16 (`--dtype bfloat16`): the same layout, half the bytes. Each
/// weight is rounded to nearest-even from f32 once, at load; [`matmul_bf16_panels`] widens it
/// back to f32 in registers (exactly: a bfloat16 is the top half of an f32) and multiplies and
/// sums in f32 in the order of [`matmul_panels`], so its answer is the f32 kernel's on the
/// rounded weights, bit for bit, and a row's answer still does not depend on its batch.
#[derive(Clone, Debug)]
pub(crate) struct Bf16Panels {
    data: std::sync::Arc<Aligned<u16>>,
    n: usize,
    k: usize,
    width: usize,
}

impl Bf16Panels {
    /// Packs the row-major `w` `[n, k]`, rounding each weight to bfloat16.
    ///
    /// # Panics
    /// If `w` is not `n × k` long (a caller bug).
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        let width = lanes();
        Self {
            data: std::sync::Arc::new(pack(w, n, k, width, bf16_bits)),
            n,
            k,
            width,
        }
    }

    /// Packs an f32 CPU tensor `[n, k]`.
    pub(crate) fn from_tensor(w: &Tensor) -> candle_core::Result<Self> {
        let (n, k) = w.dims2()?;
        let w = w.to_dtype(DType::F32)?.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        Ok(Self::new(f32_slice(&ws, wl, "weight")?, n, k))
    }
}

/// What a panel holds: f32, or bfloat16 bits widened to f32 as they are read.
trait PanelElem: Copy + Sync {
    /// [`panel_tile`] over panels of this element.
    fn tile<S: Simd, const P: usize, const R: usize>(
        simd: S,
        panels: [&[Self]; P],
        x: [&[f32]; R],
    ) -> [[S::f32s; P]; R];
}

impl PanelElem for f32 {
    #[inline(always)]
    fn tile<S: Simd, const P: usize, const R: usize>(
        simd: S,
        panels: [&[Self]; P],
        x: [&[f32]; R],
    ) -> [[S::f32s; P]; R] {
        panel_tile::<S, P, R>(simd, panels.map(|p| S::as_simd_f32s(p).0), x)
    }
}

impl PanelElem for u16 {
    #[inline(always)]
    fn tile<S: Simd, const P: usize, const R: usize>(
        simd: S,
        panels: [&[Self]; P],
        x: [&[f32]; R],
    ) -> [[S::f32s; P]; R] {
        let width = S::F32_LANES;
        let k = x[0].len();
        let panels = panels.map(|s| &s[..k * width]);
        let x = x.map(|s| &s[..k]);
        let mut acc = [[simd.splat_f32s(0.0); P]; R];
        let mut lanes = [0f32; 16];
        let ahead = PREFETCH_BYTES / (2 * width);
        for kk in 0..k {
            if kk + ahead < k {
                for panel in &panels {
                    prefetch(&panel[(kk + ahead) * width]);
                }
            }
            let w: [S::f32s; P] = std::array::from_fn(|q| {
                let bits = &panels[q][kk * width..(kk + 1) * width];
                for (l, b) in lanes[..width].iter_mut().zip(bits) {
                    *l = bf16_value(*b);
                }
                S::as_simd_f32s(&lanes[..width]).0[0]
            });
            for r in 0..R {
                let xs = simd.splat_f32s(x[r][kk]);
                for q in 0..P {
                    acc[r][q] = simd.mul_add_f32s(xs, w[q], acc[r][q]);
                }
            }
        }
        acc
    }
}

/// Panels a task of [`matmul_panels`] takes: four (the register tile), unless that leaves the
/// threads unevenly loaded. GPT-2-small's 768-output projections have 12 panels of 16: three
/// tasks of four would leave one of two threads idle for a third of the product; six tasks of
/// two keep both busy to the end (the sums are the same: each output is summed in input order
/// whatever the tiling).
fn task_panels(np: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    [4, 2]
        .into_iter()
        .find(|&t| {
            let tasks = np.div_ceil(t);
            tasks >= 8 * threads || (tasks >= threads && tasks.is_multiple_of(threads))
        })
        .unwrap_or(1)
}

/// `y[i][j] = x[i] · W[j] + bias[j]` for `x` `[m, k]` row-major and `W` packed as [`Panels`];
/// `y` is `[m, n]` row-major. Any `m`: rows go four at a time against up to four panels held in
/// registers (16 accumulators), each panel read from memory once a call for all rows.
///
/// Each output is `x[i][0]·W[j][0] + x[i][1]·W[j][1] + …` in that order (fused multiply-adds),
/// then the bias: it does not depend on `m`, on the rows beside `i`, on the thread split nor on
/// the SIMD width, so a row's answer is the same alone or in any batch, bit for bit.
///
/// # Panics
/// If the slices do not have the stated sizes (a caller bug).
pub(crate) fn matmul_panels(x: &[f32], m: usize, w: &Panels, bias: Option<&[f32]>) -> Vec<f32> {
    panels_product(x, m, &w.data, (w.n, w.k, w.width), bias)
}

/// [`matmul_panels`] with the weights stored as bfloat16 ([`Bf16Panels`]): the same outputs as
/// [`matmul_panels`] over the rounded weights, bit for bit.
///
/// # Panics
/// If the slices do not have the stated sizes (a caller bug).
pub(crate) fn matmul_bf16_panels(
    x: &[f32],
    m: usize,
    w: &Bf16Panels,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    panels_product(x, m, &w.data, (w.n, w.k, w.width), bias)
}

/// The body of [`matmul_panels`] for either element type; `shape` is `(n, k, width)`.
fn panels_product<E: PanelElem>(
    x: &[f32],
    m: usize,
    data: &[E],
    (n, k, width): (usize, usize, usize),
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not [n]");
    }
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let np = n.div_ceil(width);
    // `[panel][row][lane]`: each task owns a contiguous block.
    let mut yp = vec![0f32; np * m * width];
    let per_task = task_panels(np, rayon::current_num_threads());
    let task = per_task * m * width;
    let run = |(c, out): (usize, &mut [f32])| {
        let p0 = c * per_task;
        let count = out.len() / (m * width);
        dispatch(PanelBlock {
            x,
            m,
            k,
            width,
            panels: &data[p0 * k * width..(p0 + count) * k * width],
            out,
        });
    };
    if np * k * width * m < PARALLEL_MIN_WORK || rayon::current_num_threads() == 1 {
        yp.chunks_mut(task).enumerate().for_each(run);
    } else {
        yp.par_chunks_mut(task).enumerate().for_each(run);
    }
    for (p, block) in yp.chunks_exact(m * width).enumerate() {
        let j0 = p * width;
        let cols = width.min(n - j0);
        for (i, lanes) in block.chunks_exact(width).enumerate() {
            let dst = &mut y[i * n + j0..i * n + j0 + cols];
            dst.copy_from_slice(&lanes[..cols]);
            if let Some(b) = bias {
                for (v, b) in dst.iter_mut().zip(&b[j0..j0 + cols]) {
                    *v += b;
                }
            }
        }
    }
    y
}

/// [`matmul_panels`] over the last dimension of an f32 CPU tensor `x` (any number of rows),
/// then `then` in place on the output (an activation, or nothing); the result has `x`'s leading
/// dimensions and `n` last.
pub(crate) fn linear_panels(
    x: &Tensor,
    w: &Panels,
    bias: Option<&Tensor>,
    then: impl FnOnce(&mut [f32]),
) -> candle_core::Result<Tensor> {
    linear_with(x, (w.n, w.k), bias, then, |x, m, b| {
        matmul_panels(x, m, w, b)
    })
}

/// [`linear_panels`] with bfloat16 weights ([`matmul_bf16_panels`]).
pub(crate) fn linear_bf16_panels(
    x: &Tensor,
    w: &Bf16Panels,
    bias: Option<&Tensor>,
    then: impl FnOnce(&mut [f32]),
) -> candle_core::Result<Tensor> {
    linear_with(x, (w.n, w.k), bias, then, |x, m, b| {
        matmul_bf16_panels(x, m, w, b)
    })
}

/// `product(x, m, bias)` over the last dimension of `x` (`k` wide, giving `n`), then `then`.
fn linear_with(
    x: &Tensor,
    (n, k): (usize, usize),
    bias: Option<&Tensor>,
    then: impl FnOnce(&mut [f32]),
    product: impl FnOnce(&[f32], usize, Option<&[f32]>) -> Vec<f32>,
) -> candle_core::Result<Tensor> {
    let (m, shape) = linear_shape(x, k, n)?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let bias_guard = bias.map(Tensor::storage_and_layout);
    let bias = match &bias_guard {
        Some((bs, bl)) => Some(f32_slice(bs, bl, "bias")?),
        None => None,
    };
    let mut y = product(f32_slice(&xs, xl, "input")?, m, bias);
    then(&mut y);
    Tensor::from_vec(y, shape, x.device())
}

/// One task of [`matmul_panels`]: `panels` (`count × [k, width]`) against every row of `x`,
/// into `out` `[count][m][width]`.
struct PanelBlock<'a, E> {
    x: &'a [f32],
    m: usize,
    k: usize,
    width: usize,
    panels: &'a [E],
    out: &'a mut [f32],
}

impl<E: PanelElem> WithSimd for PanelBlock<'_, E> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Four panels × four rows is 16 accumulators + 4 weight vectors: AVX-512 has 32
        // registers; AVX2's 16 take two panels.
        if S::F32_LANES >= 16 {
            panel_block::<S, E, 4>(simd, self);
        } else {
            panel_block::<S, E, 2>(simd, self);
        }
    }
}

#[inline(always)]
fn panel_block<S: Simd, E: PanelElem, const P: usize>(simd: S, b: PanelBlock<'_, E>) {
    let PanelBlock {
        x,
        m,
        k,
        width,
        panels,
        out,
    } = b;
    assert_eq!(width, S::F32_LANES, "panels packed for another SIMD width");
    let count = panels.len() / (k * width).max(1);
    let panel = |p: usize| &panels[p * k * width..(p + 1) * k * width];
    let xr = |i: usize| &x[i * k..(i + 1) * k];
    let mut p = 0;
    while p < count {
        let pw = if count - p >= P {
            P
        } else if count - p >= 2 {
            2
        } else {
            1
        };
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(4);
            // `out` is `[panel][row][lane]`.
            let mut store = |r: usize, q: usize, v: S::f32s| {
                let at = ((p + q) * m + i + r) * width;
                S::as_mut_simd_f32s(&mut out[at..at + width]).0[0] = v;
            };
            macro_rules! go {
                ($pw:tt, $r:tt) => {{
                    let acc = E::tile::<S, $pw, $r>(
                        simd,
                        std::array::from_fn(|q| panel(p + q)),
                        std::array::from_fn(|r| xr(i + r)),
                    );
                    for (r, row) in acc.iter().enumerate() {
                        for (q, v) in row.iter().enumerate() {
                            store(r, q, *v);
                        }
                    }
                }};
            }
            match (pw, rows) {
                (w, 4) if w == P => go!(P, 4),
                (w, 3) if w == P => go!(P, 3),
                (w, 2) if w == P => go!(P, 2),
                (w, _) if w == P => go!(P, 1),
                (2, 4) => go!(2, 4),
                (2, 3) => go!(2, 3),
                (2, 2) => go!(2, 2),
                (2, _) => go!(2, 1),
                (_, 4) => go!(1, 4),
                (_, 3) => go!(1, 3),
                (_, 2) => go!(1, 2),
                (_, _) => go!(1, 1),
            }
            i += rows;
        }
        p += pw;
    }
}

/// `acc[r][q] = Σ_kk x[r][kk] · panel[q][kk]` (one vector of outputs per panel), summed in
/// `kk` order.
#[inline(always)]
fn panel_tile<S: Simd, const P: usize, const R: usize>(
    simd: S,
    panels: [&[S::f32s]; P],
    x: [&[f32]; R],
) -> [[S::f32s; P]; R] {
    let k = x[0].len();
    let panels = panels.map(|s| &s[..k]);
    let x = x.map(|s| &s[..k]);
    let mut acc = [[simd.splat_f32s(0.0); P]; R];
    let ahead = PREFETCH_BYTES / std::mem::size_of::<S::f32s>();
    for kk in 0..k {
        let w: [S::f32s; P] = std::array::from_fn(|q| panels[q][kk]);
        if kk + ahead < k {
            for panel in &panels {
                prefetch(&panel[kk + ahead]);
            }
        }
        for r in 0..R {
            let xs = simd.splat_f32s(x[r][kk]);
            for q in 0..P {
                acc[r][q] = simd.mul_add_f32s(xs, w[q], acc[r][q]);
            }
        }
    }
    acc
}

/// How far ahead of the row a panel product reads it asks for the panel's next lines (2 KiB:
/// 32 rows of f32 panels). Decoding reads every weight once a step from memory, each panel a
/// stream of its own; the hardware's stream prefetcher stops at each 4 KiB page, and asking
/// ahead across pages took GPT-2-small decoding at 4 clients from 163 to 185–193 tokens/s here
/// (1–4 KiB ahead all did about as well).
const PREFETCH_BYTES: usize = 2048;

/// Asks for the cache line holding `at` to be brought into L1 (nothing elsewhere than x86-64).
#[inline(always)]
fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and cannot fault; `at` is a reference.
    #[allow(unsafe_code, unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (at as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// One task of [`matmul_nt`]: the weight rows `w` (`[rows, k]`) against every row of `x`
/// (`[m, k]`), into `out` `[rows, m]`.
struct Block<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            m,
            k,
            w,
            bias,
            out,
        } = self;
        let rows = w.len() / k;
        let wr = |j: usize| &w[j * k..(j + 1) * k];
        let xr = |i: usize| &x[i * k..(i + 1) * k];
        let mut j = 0;
        while j < rows {
            let jw = if rows - j >= 4 { 4 } else { 1 };
            let mut i = 0;
            while i < m {
                let ix = if m - i >= 2 { 2 } else { 1 };
                match (jw, ix) {
                    (4, 2) => {
                        let d = tile(
                            simd,
                            [wr(j), wr(j + 1), wr(j + 2), wr(j + 3)],
                            [xr(i), xr(i + 1)],
                        );
                        for (r, row) in d.iter().enumerate() {
                            out[(j + r) * m + i..(j + r) * m + i + 2].copy_from_slice(row);
                        }
                    }
                    (4, _) => {
                        let d = tile(simd, [wr(j), wr(j + 1), wr(j + 2), wr(j + 3)], [xr(i)]);
                        for (r, row) in d.iter().enumerate() {
                            out[(j + r) * m + i] = row[0];
                        }
                    }
                    (_, 2) => {
                        let d = tile(simd, [wr(j)], [xr(i), xr(i + 1)]);
                        out[j * m + i..j * m + i + 2].copy_from_slice(&d[0]);
                    }
                    _ => out[j * m + i] = tile(simd, [wr(j)], [xr(i)])[0][0],
                }
                i += ix;
            }
            j += jw;
        }
        if let Some(bias) = bias {
            for (row, b) in out.chunks_exact_mut(m).zip(bias) {
                for v in row {
                    *v += b;
                }
            }
        }
    }
}

/// The `RW × RX` dot products of `RW` weight rows with `RX` input rows (all of one length).
/// Each product sums lane-wise over SIMD chunks, then across lanes, then the scalar tail.
#[inline(always)]
fn tile<S: Simd, const RW: usize, const RX: usize>(
    simd: S,
    w: [&[f32]; RW],
    x: [&[f32]; RX],
) -> [[f32; RX]; RW] {
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; RX]; RW];
    let wv = w.map(|r| S::as_simd_f32s(r));
    let xv = x.map(|r| S::as_simd_f32s(r));
    let chunks = xv[0].0.len();
    let wh = wv.map(|(h, _)| &h[..chunks]);
    let xh = xv.map(|(h, _)| &h[..chunks]);
    for c in 0..chunks {
        let xs: [S::f32s; RX] = std::array::from_fn(|i| xh[i][c]);
        for r in 0..RW {
            let wc = wh[r][c];
            for i in 0..RX {
                acc[r][i] = simd.mul_add_f32s(xs[i], wc, acc[r][i]);
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|i| {
            let tail: f32 = wv[r].1.iter().zip(xv[i].1).map(|(a, b)| a * b).sum();
            simd.reduce_sum_f32s(acc[r][i]) + tail
        })
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        // A fixed, seeded sequence (candle's randn is not seedable on the CPU).
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }

    /// `f(x, None)` and `f(x, Some(b))` against candle's `x · wᵀ` (`+ b`), within 1e-4·√k;
    /// returns `f(x, Some(b))`.
    fn assert_linear_equals_candle(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        f: impl Fn(&Tensor, Option<&Tensor>) -> candle_core::Result<Tensor>,
    ) -> Tensor {
        let ((m, k), n) = (x.dims2().expect("x"), w.dims()[0]);
        let want = x.matmul(&w.t().expect("t")).expect("matmul");
        let got = f(x, None).expect("linear");
        assert_eq!(got.dims(), &[m, n]);
        let d = worst_diff(&got, &want);
        assert!(d < 1e-4 * (k as f32).sqrt(), "m={m} n={n} k={k}: {d}");
        let want = want.broadcast_add(b).expect("bias");
        let got = f(x, Some(b)).expect("linear bias");
        let d = worst_diff(&got, &want);
        assert!(d < 1e-4 * (k as f32).sqrt(), "bias m={m} n={n} k={k}: {d}");
        got
    }

    fn worst_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
        let b = b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("b");
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Every row count 1..=9 (the 4×2 tile, its remainders, the parallel split) and widths that
    /// are not multiples of any SIMD width, against candle's matmul.
    /// Packed weights start on a cache line whatever the allocator returned, and hold exactly
    /// the packed values.
    #[test]
    fn packed_weights_start_on_a_cache_line() {
        for (n, k) in [(1, 1), (17, 3), (48, 33), (100, 7)] {
            let w = crate::models::tests::lcg((n * k) as u64, n * k, 1.0);
            let p = Panels::new(&w, n, k);
            assert_eq!(p.data().as_ptr() as usize % 64, 0, "{n}x{k}");
            assert_eq!(p.data().len(), n.div_ceil(p.width()) * k * p.width());
            let b: Aligned<u16> = Aligned::zeroed(n * k);
            assert_eq!(b.as_ptr() as usize % 64, 0, "{n}x{k} (u16)");
            assert_eq!(b.len(), n * k);
        }
    }

    #[test]
    fn matmul_nt_equals_candle_matmul_on_odd_sizes() {
        for (n, k) in [(1, 1), (3, 7), (5, 17), (37, 100), (301, 769), (1030, 131)] {
            let w = randn(&[n, k], (n * 1000 + k) as u64);
            let b = randn(&[n], n as u64);
            for m in 1..=9 {
                let x = randn(&[m, k], (m * 7 + k) as u64);
                let _ = assert_linear_equals_candle(&x, &w, &b, |x, b| linear(x, &w, b));
            }
        }
    }

    /// Leading dimensions are kept, a non-contiguous input is accepted, and a row's answer
    /// does not depend on the rows computed with it (bit for bit).
    #[test]
    fn linear_keeps_leading_dims_and_rows_are_independent() {
        let (n, k) = (70, 45);
        let w = randn(&[n, k], 1);
        let x = randn(&[3, 2, k], 2);
        let y = linear(&x, &w, None).expect("linear");
        assert_eq!(y.dims(), &[3, 2, n]);
        for b in 0..3 {
            for t in 0..2 {
                let row = x
                    .narrow(0, b, 1)
                    .and_then(|r| r.narrow(1, t, 1))
                    .expect("row");
                let alone = linear(&row, &w, None).expect("alone");
                let within = y
                    .narrow(0, b, 1)
                    .and_then(|r| r.narrow(1, t, 1))
                    .expect("within");
                assert_eq!(worst_diff(&alone, &within), 0.0, "row {b},{t}");
            }
        }
        let xt = randn(&[k, 3], 3).t().expect("t");
        assert!(!xt.is_contiguous());
        let want = xt.matmul(&w.t().expect("t")).expect("matmul");
        assert!(worst_diff(&linear(&xt, &w, None).expect("linear"), &want) < 1e-4);
    }

    /// The panel kernel against candle's matmul: widths and output counts that are not
    /// multiples of the panel width, 1..=9 rows and a prompt-sized 37; and a row's answer is the
    /// same bit for bit alone and among others (whatever the row tiling and thread split).
    #[test]
    fn matmul_panels_equals_candle_matmul_and_rows_are_independent() {
        for (n, k) in [(1, 1), (3, 7), (17, 33), (37, 100), (301, 769), (1030, 131)] {
            let w = randn(&[n, k], (n * 1000 + k) as u64);
            let b = randn(&[n], n as u64);
            let packed = Panels::from_tensor(&w).expect("pack");
            assert_eq!((packed.n, packed.k), (n, k));
            for m in (1..=9).chain([37]) {
                let x = randn(&[m, k], (m * 7 + k) as u64);
                let got = assert_linear_equals_candle(&x, &w, &b, |x, b| {
                    linear_panels(x, &packed, b, |_| ())
                });
                for i in [0, m / 2, m - 1] {
                    let row = x.narrow(0, i, 1).expect("row");
                    let alone = linear_panels(&row, &packed, Some(&b), |_| ()).expect("alone");
                    let within = got.narrow(0, i, 1).expect("within");
                    assert_eq!(
                        worst_diff(&alone, &within),
                        0.0,
                        "m={m} n={n} k={k} row {i}"
                    );
                }
            }
        }
    }

    /// The bfloat16 panels answer as the f32 panels over the same weights rounded to
    /// bfloat16, bit for bit (odd shapes, 1..=9 rows and 37, with and without a bias), and
    /// a row's answer is the same alone and among others.
    #[test]
    fn bf16_panels_equal_f32_panels_on_rounded_weights_bit_for_bit() {
        for (n, k) in [(1, 1), (3, 7), (17, 33), (37, 100), (301, 769), (1030, 131)] {
            let w = randn(&[n, k], (n * 31 + k) as u64);
            let wv = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("w");
            let rounded: Vec<f32> = wv.iter().map(|&v| bf16_value(bf16_bits(v))).collect();
            assert!(
                rounded.iter().zip(&wv).any(|(a, b)| a != b),
                "rounding happened"
            );
            let exact = Panels::new(&rounded, n, k);
            let half = Bf16Panels::new(&wv, n, k);
            let b = randn(&[n], n as u64 + 1);
            let bv = b.to_vec1::<f32>().expect("b");
            for m in (1..=9).chain([37]) {
                let x = randn(&[m, k], (m * 13 + k) as u64);
                let xv = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("x");
                for bias in [None, Some(bv.as_slice())] {
                    let want = matmul_panels(&xv, m, &exact, bias);
                    let got = matmul_bf16_panels(&xv, m, &half, bias);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "m={m} n={n} k={k}"
                    );
                }
                let got = linear_bf16_panels(&x, &half, Some(&b), |_| ()).expect("linear");
                let last = x.narrow(0, m - 1, 1).expect("row");
                let alone = linear_bf16_panels(&last, &half, Some(&b), |_| ()).expect("alone");
                let within = got.narrow(0, m - 1, 1).expect("within");
                assert_eq!(worst_diff(&alone, &within), 0.0, "m={m} n={n} k={k}");
            }
        }
    }

    /// Tasks keep two threads evenly loaded: GPT-2-small's 12-panel projections in tasks of 2,
    /// its 36-panel Q/K/V in tasks of 2, its 48-panel MLP and the LM head in tasks of 4.
    #[test]
    fn panel_tasks_balance_the_threads() {
        assert_eq!(task_panels(12, 2), 2);
        assert_eq!(task_panels(36, 2), 2);
        assert_eq!(task_panels(48, 2), 4);
        assert_eq!(task_panels(3142, 2), 4);
        assert_eq!(task_panels(3, 2), 2);
        assert_eq!(task_panels(1, 2), 1);
        assert_eq!(task_panels(12, 1), 4);
    }

    /// Round to nearest, ties to even; overflow to infinity; NaN stays NaN.
    #[test]
    fn bf16_rounding_is_nearest_even() {
        let cases = [
            (1.0f32, 0x3f80u16),
            // 1 + 2^-8 is half-way between 1 and 1 + 2^-7: ties to the even 1.
            (f32::from_bits(0x3f80_8000), 0x3f80),
            // 1 + 3·2^-8 is half-way between 1 + 2^-7 and 1 + 2^-6: ties to even (up).
            (f32::from_bits(0x3f81_8000), 0x3f82),
            (f32::from_bits(0x3f80_8001), 0x3f81),
            (f32::from_bits(0x3f80_7fff), 0x3f80),
            (-2.5, 0xc020),
            (f32::MAX, 0x7f80),
            (f32::INFINITY, 0x7f80),
            (0.0, 0),
        ];
        for (x, bits) in cases {
            assert_eq!(bf16_bits(x), bits, "{x:e}");
        }
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(0x3f81), 1.0078125);
    }

    #[test]
    fn linear_refuses_a_width_mismatch() {
        let w = randn(&[4, 5], 1);
        let x = randn(&[2, 6], 2);
        assert!(linear(&x, &w, None).is_err());
    }
}
