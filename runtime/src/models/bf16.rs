//! bfloat16 weights for the encoders' linear layers (`--dtype bfloat16`, issue 9 item 6).
//!
//! [`linear`]: `y = x · Wᵀ + b (+ residual)` with `W` `[n, k]` rounded to bf16 (round to nearest,
//! ties to even) and packed once, at load ([`Packed`]); `x` is rounded to bf16 on every call, the
//! products are accumulated in f32 and the output (f32) starts as the bias plus the residual, so
//! it plugs in where [`super::fused::linear`] does. The weights take half the f32 bytes.
//!
//! Three kernels, chosen once per process ([`Path::best`]; `SAGEBRUSH_BF16_KERNEL` =
//! `amx` / `avx512bf16` / `portable` picks a lesser one, for measurements):
//!
//! - [`Path::Amx`]: Intel AMX tiles, `tdpbf16ps` ([`super::amx`]);
//! - [`Path::Avx512Bf16`]: AVX-512 BF16 `vdpbf16ps`, 16 outputs a vector, over the same layout;
//! - [`Path::Portable`]: any CPU: the bf16 values widened to f32 (a 16-bit shift, exact) and
//!   multiplied and added in f32, vectorised by the compiler at the widest SIMD `pulp` finds.
//!
//! `tdpbf16ps` and `vdpbf16ps` add the two products of a k pair before adding them to the
//! accumulator (and flush denormals); the portable path adds them one at a time: the paths agree
//! to f32 rounding, not to the bit. In each path, a row's answer depends only on that row and the
//! weights (every output is its row's k pairs added in order into its own accumulator), never on
//! the other rows of the batch nor on the thread split: batching does not change an answer.

use std::sync::Arc;

use candle_core::Tensor;
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{amx, kernels};

/// 32 bf16 values, one cache line: a row of an AMX tile.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Line(pub(crate) [u16; 32]);

/// Output columns of a panel: two 16-column tiles.
const PANEL: usize = 32;

/// The bf16 nearest to `x` (ties to even); NaN stays a (quiet) NaN.
#[inline(always)]
pub(crate) fn round(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 of a bf16 value (exact).
#[inline(always)]
pub(crate) fn widen(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// A weight `W` `[n, k]` rounded to bf16 and laid out for the kernels: panels of 32 output
/// columns; a panel is `kp / 32` k steps, a step two tiles (columns `0..16`, `16..32`) of 16
/// [`Line`]s, and line `r` of tile `t` holds `W[p·32 + t·16 + c][step·32 + 2r + e]` at `2c + e`
/// (AMX's pair-interleaved `B` layout). Zeros past `n` and `k`.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    lines: Arc<Vec<Line>>,
    n: usize,
    k: usize,
    /// Lines (32-wide k steps) of a row: `k` rounded up to 32, over 32.
    kl: usize,
}

impl Packed {
    /// Outputs and inputs (`n`, `k` of `[n, k]`).
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Rounds and packs the row-major `w` `[n, k]`.
    ///
    /// # Panics
    /// If `w` is not `n × k` long (a caller bug).
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "w is not [n, k]");
        Self::build(n, k, |j, kk| w[j * k + kk])
    }

    /// Rounds and packs a weight already packed as f32 [`kernels::Panels`] (`panel[p][kk][l] =
    /// W[p·width + l][kk]`).
    pub(crate) fn from_panels(p: &kernels::Panels) -> Self {
        let (n, k, width, data) = (p.n(), p.k(), p.width(), p.data());
        Self::build(n, k, |j, kk| {
            data[(j / width) * k * width + kk * width + j % width]
        })
    }

    /// Packs `W[j][kk] = get(j, kk)` for `j < n`, `kk < k`.
    fn build(n: usize, k: usize, get: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let kl = k.div_ceil(32);
        let panels = n.div_ceil(PANEL);
        let mut lines = vec![Line::default(); panels * kl * PANEL];
        if kl > 0 {
            lines
                .par_chunks_mut(kl * PANEL)
                .enumerate()
                .for_each(|(p, panel)| {
                    // Written in order, read from the panel's 32 weight rows side by side.
                    let cols = PANEL.min(n - p * PANEL);
                    for (li, line) in panel.iter_mut().enumerate() {
                        let (step, t, r) = (li / PANEL, (li % PANEL) / 16, li % 16);
                        for c in 0..16.min(cols.saturating_sub(t * 16)) {
                            let j = p * PANEL + t * 16 + c;
                            for e in 0..2 {
                                let kk = step * 32 + 2 * r + e;
                                if kk < k {
                                    line.0[2 * c + e] = round(get(j, kk));
                                }
                            }
                        }
                    }
                });
        }
        Self {
            lines: Arc::new(lines),
            n,
            k,
            kl,
        }
    }

    /// Rounds and packs an f32 CPU tensor `[n, k]`.
    pub(crate) fn from_tensor(w: &Tensor) -> candle_core::Result<Self> {
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        Ok(Self::new(kernels::f32_slice(&ws, wl, "weight")?, n, k))
    }

    /// Bytes held (with the padding).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(self.lines.as_slice())
    }

    fn panel(&self, p: usize) -> &[Line] {
        &self.lines[p * self.kl * PANEL..(p + 1) * self.kl * PANEL]
    }
}

/// Which kernel multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
    /// bf16 widened to f32, any CPU.
    Portable,
}

impl Path {
    /// Every path, best first.
    pub(crate) const ALL: [Self; 3] = [Self::Amx, Self::Avx512Bf16, Self::Portable];

    /// The name in logs and in `SAGEBRUSH_BF16_KERNEL`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx",
            Self::Avx512Bf16 => "avx512bf16",
            Self::Portable => "portable",
        }
    }

    /// Whether this CPU (and OS) runs this path.
    pub(crate) fn available(self) -> bool {
        match self {
            Self::Amx => amx::available(),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512Bf16 => false,
            Self::Portable => true,
        }
    }

    /// The path of this process: the best available one, or the one `SAGEBRUSH_BF16_KERNEL`
    /// names if it is available (chosen once; logged).
    pub(crate) fn best() -> Self {
        static BEST: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let asked = std::env::var("SAGEBRUSH_BF16_KERNEL").ok();
            let path = Self::ALL
                .into_iter()
                .find(|p| {
                    p.available()
                        && asked
                            .as_deref()
                            .is_none_or(|a| a.eq_ignore_ascii_case(p.name()))
                })
                .unwrap_or(Self::Portable);
            tracing::info!(
                kernel = path.name(),
                asked = asked.as_deref().unwrap_or("-"),
                "bf16 linear layers"
            );
            path
        })
    }
}

/// `y = x · Wᵀ + bias + residual` with [`Path::best`]; see [`linear_on`].
pub(crate) fn linear(
    x: &[f32],
    m: usize,
    w: &Packed,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    linear_on(Path::best(), x, m, w, bias, residual)
}

/// The bf16 activations of one row chunk: half of this CPU's 2 MiB L2.
const ROW_CHUNK_BYTES: usize = 1 << 20;

/// Below this many (padded) multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// `y = x · Wᵀ + bias + residual` for `x` `[m, k]` (f32, rounded to bf16 here), `W` packed,
/// `bias` `[n]`, `residual` `[m, n]`, all row-major; `y` is `[m, n]` f32. The work is cut into
/// (row chunk, panel of 32 outputs) tasks run on rayon's threads; a row chunk's activations stay
/// in L2 while the panels go by.
///
/// # Panics
/// If the slices do not have the stated sizes or `path` is not available (caller bugs).
pub(crate) fn linear_on(
    path: Path,
    x: &[f32],
    m: usize,
    w: &Packed,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (n, k, kl) = (w.n, w.k, w.kl);
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not [n]");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), m * n, "residual is not [m, n]");
    }
    assert!(
        path.available(),
        "the {} bf16 kernel is not available",
        path.name()
    );
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    // Rows padded to two AMX tiles (the other kernels take four rows at a time).
    let mp = m.next_multiple_of(2 * amx::TILE_ROWS);
    let xb = to_lines(x, m, k, mp, kl);
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0f32; panels * mp * PANEL];
    // Row chunks whose bf16 activations fit in half of L2 (2 MiB a core here), so that a chunk
    // is read from memory once and then reused by every panel; a panel's weights are read once
    // a chunk.
    let mc = (ROW_CHUNK_BYTES / (kl.max(1) * std::mem::size_of::<Line>()))
        .max(1)
        .next_multiple_of(2 * amx::TILE_ROWS)
        .min(mp);
    // Tasks in (row chunk, panel) order: rayon splits the list into contiguous halves, so a
    // thread keeps its row chunks and goes through the panels.
    let mut tasks: Vec<(usize, usize, &mut [f32])> = out
        .chunks_mut(mp * PANEL)
        .enumerate()
        .flat_map(|(p, o)| {
            o.chunks_mut(mc * PANEL)
                .enumerate()
                .map(move |(c, o)| (c, p, o))
        })
        .collect();
    tasks.sort_by_key(|&(c, p, _)| (c, p));
    let run = |(c, p, o): (usize, usize, &mut [f32])| {
        let r0 = c * mc;
        let rows = o.len() / PANEL;
        // The start values: bias + residual (zeros on padding rows).
        let cols = PANEL.min(n - p * PANEL);
        for i in r0..m.min(r0 + rows) {
            let row = &mut o[(i - r0) * PANEL..(i - r0) * PANEL + cols];
            if let Some(b) = bias {
                row.copy_from_slice(&b[p * PANEL..p * PANEL + cols]);
            }
            if let Some(r) = residual {
                for (v, r) in row.iter_mut().zip(&r[i * n + p * PANEL..]) {
                    *v += r;
                }
            }
        }
        if kl > 0 {
            let xs = &xb[r0 * kl..(r0 + rows) * kl];
            panel(path, xs, kl, rows, w.panel(p), o);
        }
    };
    let parallel = mp * panels * PANEL * kl * 32 >= PARALLEL_MIN_WORK;
    if parallel && rayon::current_num_threads() > 1 {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    // `[panel][row][32]` → `[row][n]`.
    let gather = |(i, row): (usize, &mut [f32])| {
        for (p, dst) in row.chunks_mut(PANEL).enumerate() {
            let src = &out[p * mp * PANEL + i * PANEL..][..dst.len()];
            dst.copy_from_slice(src);
        }
    };
    if parallel {
        y.par_chunks_mut(n).enumerate().for_each(gather);
    } else {
        y.chunks_mut(n).enumerate().for_each(gather);
    }
    y
}

/// One panel with the kernel of `path`: `out` `[mp][32]` += `xb` · panelᵀ.
fn panel(path: Path, xb: &[Line], kl: usize, mp: usize, w: &[Line], out: &mut [f32]) {
    match path {
        Path::Amx => amx::panel(xb, kl, mp, w, out),
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Bf16 => avx512::panel(xb, kl, mp, w, out),
        #[cfg(not(target_arch = "x86_64"))]
        Path::Avx512Bf16 => unreachable!("AVX-512 is x86-64 only"),
        Path::Portable => kernels::dispatch(Portable { xb, kl, mp, w, out }),
    }
}

/// `x` `[m, k]` f32 → `[mp][kl]` lines of bf16, zero padded (vectorised by the compiler).
fn to_lines(x: &[f32], m: usize, k: usize, mp: usize, kl: usize) -> Vec<Line> {
    struct Convert<'a> {
        x: &'a [f32],
        out: &'a mut [u16],
    }
    impl WithSimd for Convert<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            for (o, v) in self.out.iter_mut().zip(self.x) {
                *o = round(*v);
            }
        }
    }
    let mut lines = vec![Line::default(); mp * kl];
    if k == 0 {
        return lines;
    }
    let convert = |(i, row): (usize, &mut [Line])| {
        let flat: &mut [u16] = bytemuck::cast_slice_mut(row);
        kernels::dispatch(Convert {
            x: &x[i * k..(i + 1) * k],
            out: &mut flat[..k],
        });
    };
    let rows = &mut lines[..m * kl];
    if m * k >= 1 << 16 {
        rows.par_chunks_mut(kl).enumerate().for_each(convert);
    } else {
        rows.chunks_mut(kl).enumerate().for_each(convert);
    }
    lines
}

// SAFETY: `Line` is `repr(C)` over `[u16; 32]`: 64 bytes at align 64, no padding, and the
// all-zero pattern is a valid value.
#[allow(unsafe_code)]
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; every bit pattern is a valid `[u16; 32]`, and `Line` is `Copy + 'static`.
#[allow(unsafe_code)]
unsafe impl bytemuck::Pod for Line {}

/// The portable kernel: four rows at a time against a k pair of 32 columns widened to f32.
struct Portable<'a> {
    xb: &'a [Line],
    kl: usize,
    mp: usize,
    w: &'a [Line],
    out: &'a mut [f32],
}

impl WithSimd for Portable<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self { xb, kl, mp, w, out } = self;
        for i0 in (0..mp).step_by(4) {
            let mut acc = [[0f32; PANEL]; 4];
            for (i, a) in acc.iter_mut().enumerate() {
                a.copy_from_slice(&out[(i0 + i) * PANEL..(i0 + i + 1) * PANEL]);
            }
            for step in 0..kl {
                for r in 0..16 {
                    let mut even = [0f32; PANEL];
                    let mut odd = [0f32; PANEL];
                    for t in 0..2 {
                        let line = &w[step * PANEL + t * 16 + r].0;
                        for c in 0..16 {
                            even[t * 16 + c] = widen(line[2 * c]);
                            odd[t * 16 + c] = widen(line[2 * c + 1]);
                        }
                    }
                    for (i, a) in acc.iter_mut().enumerate() {
                        let xl = &xb[(i0 + i) * kl + step].0;
                        let (x0, x1) = (widen(xl[2 * r]), widen(xl[2 * r + 1]));
                        for c in 0..PANEL {
                            a[c] = a[c] + x0 * even[c] + x1 * odd[c];
                        }
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                out[(i0 + i) * PANEL..(i0 + i + 1) * PANEL].copy_from_slice(a);
            }
        }
    }
}

/// The AVX-512 BF16 kernel (`vdpbf16ps`).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __m512bh, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32,
        _mm512_storeu_ps,
    };

    use super::{Line, PANEL};

    /// `out` `[mp][32]` += `xb` · `w`ᵀ for one panel, four rows at a time (eight accumulators).
    ///
    /// # Panics
    /// If AVX-512 BF16 is missing or the sizes are wrong (caller bugs).
    #[allow(unsafe_code)]
    pub(super) fn panel(xb: &[Line], kl: usize, mp: usize, w: &[Line], out: &mut [f32]) {
        assert!(super::Path::Avx512Bf16.available(), "no AVX-512 BF16");
        assert!(mp.is_multiple_of(4), "rows are not padded to 4");
        assert_eq!(xb.len(), mp * kl, "xb is not [mp, kl] lines");
        assert_eq!(w.len(), kl * PANEL, "w is not one panel");
        assert_eq!(out.len(), mp * PANEL, "out is not [mp, 32]");
        // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (checked above); the sizes are checked.
        unsafe { panel_impl(xb, kl, mp, w, out) }
    }

    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn panel_impl(xb: &[Line], kl: usize, mp: usize, w: &[Line], out: &mut [f32]) {
        for i0 in (0..mp).step_by(4) {
            let mut acc: [[__m512; 2]; 4] = [[std::arch::x86_64::_mm512_setzero_ps(); 2]; 4];
            for (i, a) in acc.iter_mut().enumerate() {
                let row = &out[(i0 + i) * PANEL..(i0 + i + 1) * PANEL];
                // SAFETY: `row` is 32 f32: two unaligned loads of 16.
                unsafe {
                    a[0] = _mm512_loadu_ps(row.as_ptr());
                    a[1] = _mm512_loadu_ps(row.as_ptr().add(16));
                }
            }
            for step in 0..kl {
                for r in 0..16 {
                    let b0 = bh(&w[step * PANEL + r]);
                    let b1 = bh(&w[step * PANEL + 16 + r]);
                    for (i, a) in acc.iter_mut().enumerate() {
                        let xl = &xb[(i0 + i) * kl + step].0;
                        let pair = u32::from(xl[2 * r]) | u32::from(xl[2 * r + 1]) << 16;
                        // SAFETY: a bit cast between two 64-byte vector types.
                        let xv: __m512bh =
                            unsafe { std::mem::transmute(_mm512_set1_epi32(pair as i32)) };
                        a[0] = _mm512_dpbf16_ps(a[0], xv, b0);
                        a[1] = _mm512_dpbf16_ps(a[1], xv, b1);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let row = &mut out[(i0 + i) * PANEL..(i0 + i + 1) * PANEL];
                // SAFETY: `row` is 32 f32: two unaligned stores of 16.
                unsafe {
                    _mm512_storeu_ps(row.as_mut_ptr(), a[0]);
                    _mm512_storeu_ps(row.as_mut_ptr().add(16), a[1]);
                }
            }
        }
    }

    /// A line as 32 bf16 lanes.
    #[allow(unsafe_code)]
    #[inline(always)]
    fn bh(line: &Line) -> __m512bh {
        // SAFETY: `line` is 64 readable bytes (an unaligned load is fine either way), and the
        // transmute is a bit cast between two 64-byte vector types. Only called from
        // `panel_impl`, whose target features include AVX-512F.
        unsafe { std::mem::transmute(_mm512_loadu_si512(line.0.as_ptr().cast())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::tests::lcg;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round(1.0), 0x3f80);
        assert_eq!(widen(round(1.0)), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(widen(round(1.0 + 1.0 / 256.0)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to the even 1 + 2^-6.
        assert_eq!(widen(round(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        // Just above halfway rounds up.
        assert_eq!(
            widen(round(f32::from_bits((1.0f32 + 1.0 / 256.0).to_bits() + 1))),
            1.0 + 1.0 / 128.0
        );
        assert_eq!(widen(round(-2.5)), -2.5);
        assert!(widen(round(f32::NAN)).is_nan());
        assert_eq!(widen(round(f32::INFINITY)), f32::INFINITY);
        assert_eq!(widen(round(f32::MAX)), f32::INFINITY);
        // Every value is within a relative 2^-8 of its bf16 (half a step of 8 significant bits).
        for v in lcg(5, 10_000, 1e3) {
            let r = widen(round(v));
            assert!((r - v).abs() <= v.abs() / 256.0, "{v} → {r}");
        }
    }

    /// Every available kernel against an f64 product of the bf16-rounded inputs, on shapes that
    /// are not multiples of the tiles, with and without bias and residual.
    ///
    /// Tolerance: the products of bf16 values are exact in f32 (8 + 8 significant bits); the
    /// error is the f32 accumulation, ≤ k · 2^-24 · Σ|x·w| plus the rounding of the start value,
    /// stated here as `2e-6 · k · (Σ_k |x·w| + |start|)`.
    #[test]
    fn every_path_equals_the_f64_product_of_the_rounded_inputs() {
        let shapes = [
            (1, 1, 1),
            (1, 7, 17),
            (7, 17, 33),
            (17, 33, 100),
            (33, 100, 130),
            (100, 130, 7),
            (130, 64, 768),
            (3, 40, 64),
            // Two row chunks (`ROW_CHUNK_BYTES`): 64 rows of 8192 bf16 are 1 MiB.
            (100, 40, 8192),
        ];
        let paths: Vec<Path> = Path::ALL.into_iter().filter(|p| p.available()).collect();
        assert!(paths.contains(&Path::Portable));
        for (m, n, k) in shapes {
            let x = lcg((m * 31 + k) as u64, m * k, 2.0);
            let w = lcg((n * 17 + k) as u64, n * k, 0.5);
            let bias = lcg(n as u64, n, 1.0);
            let res = lcg(m as u64 + 99, m * n, 3.0);
            let packed = Packed::new(&w, n, k);
            for (with_bias, with_res) in [(false, false), (true, false), (true, true)] {
                let b = with_bias.then_some(&bias[..]);
                let r = with_res.then_some(&res[..]);
                let mut want = vec![(0f64, 0f64); m * n];
                for i in 0..m {
                    for j in 0..n {
                        let start = b.map_or(0.0, |b| f64::from(b[j]))
                            + r.map_or(0.0, |r| f64::from(r[i * n + j]));
                        let (mut sum, mut mag) = (start, start.abs());
                        for l in 0..k {
                            let p = f64::from(widen(round(x[i * k + l])))
                                * f64::from(widen(round(w[j * k + l])));
                            sum += p;
                            mag += p.abs();
                        }
                        want[i * n + j] = (sum, mag);
                    }
                }
                for &path in &paths {
                    let y = linear_on(path, &x, m, &packed, b, r);
                    assert_eq!(y.len(), m * n);
                    for (e, (got, (sum, mag))) in y.iter().zip(&want).enumerate() {
                        let got = f64::from(*got);
                        let tol = 2e-6 * (k as f64 + 1.0) * mag + 1e-30;
                        assert!(
                            (got - sum).abs() <= tol,
                            "{path:?} m={m} n={n} k={k} bias={with_bias} res={with_res} \
                             ({}, {}): {got} vs {sum} (tol {tol})",
                            e / n,
                            e % n
                        );
                    }
                }
            }
        }
    }

    /// A row's answer is the same, bit for bit, alone or in a batch of any size, in every path.
    #[test]
    fn a_row_answers_the_same_alone_and_batched() {
        let (n, k) = (70, 200);
        let w = Packed::new(&lcg(1, n * k, 0.3), n, k);
        let bias = lcg(2, n, 1.0);
        for path in Path::ALL.into_iter().filter(|p| p.available()) {
            for m in [2, 5, 33, 64, 100] {
                let x = lcg(m as u64, m * k, 1.0);
                let all = linear_on(path, &x, m, &w, Some(&bias), None);
                for i in [0, m / 2, m - 1] {
                    let one = linear_on(path, &x[i * k..(i + 1) * k], 1, &w, Some(&bias), None);
                    assert_eq!(one, all[i * n..(i + 1) * n], "{path:?} m={m} row {i}");
                }
            }
        }
    }

    /// Packing from the f32 panels of the encoders' matmul gives the same lines as packing the
    /// row-major weight.
    #[test]
    fn packing_from_f32_panels_equals_packing_rows() {
        for (n, k) in [(1, 1), (33, 17), (70, 200)] {
            let w = lcg((n + k) as u64, n * k, 1.0);
            let rows = Packed::new(&w, n, k);
            let panels = Packed::from_panels(&kernels::Panels::new(&w, n, k));
            assert_eq!(rows.lines, panels.lines, "n={n} k={k}");
        }
    }

    /// The packed weights take half the f32 bytes (plus the padding to 32 × 32).
    #[test]
    fn packed_weights_are_half_the_bytes() {
        let (n, k) = (768, 3072);
        let p = Packed::new(&lcg(3, n * k, 1.0), n, k);
        assert_eq!(p.bytes(), n * k * 2);
        let odd = Packed::new(&lcg(3, 33 * 17, 1.0), 33, 17);
        assert_eq!(odd.bytes(), 64 * 32 * 2);
    }
}
