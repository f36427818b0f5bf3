//! sagebrush's CPU matrix kernels, in a crate of their own so that debug builds (the test suite)
//! still optimise them.
//!
//! [`matmul_add`]: `out[m, n] += x[m, k] · Wᵀ` with `W` `[n, k]` packed once, at load, as
//! column panels of 16 outputs (`[n / 16][k][16]`, the last panel zero-padded). candle's matmul
//! (the `gemm` crate) packs the left-hand side on every call with a strided scalar copy — a
//! third of BERT-base's 1×128 pass on a 2-core AVX-512 machine — and runs the 768→768 and
//! 3072→768 products of BERT-base at 70–100 GFLOP/s there. Here nothing is packed per call: a
//! 12-row × 32-column tile of `out` is kept in 24 AVX-512 registers while `k` runs, each step one
//! broadcast of `x[i][kk]` per row against two panel vectors (written in assembly for whole
//! tiles). The panels of a `KC`-deep slice stay in L1 while the rows of an `MC`-row block of `x`
//! pass over them. [`matmul_start`] also takes the bias and the residual where a tile first loads
//! its outputs, so the output is written once.
//!
//! Each output is its start value followed by `x[i][0]·W[j][0]`, `x[i][1]·W[j][1]`, … in input
//! order, one fused multiply-add each: the order depends on nothing but `k`, so a row's answer is
//! the same bit for bit alone or in any batch, on any number of threads.

use rayon::prelude::*;

/// Output columns of a panel (one AVX-512 vector of f32).
pub const WIDTH: usize = 16;
/// Rows of `x` a micro-tile takes.
const MR: usize = 12;
/// Panels a micro-tile takes.
const NP: usize = 2;
/// Depth of the slice of `k` whose panels stay in L1 (2 panels × 256 × 64 B = 32 KiB).
const KC: usize = 256;
/// Rows of `x` whose `KC`-slice stays in L2 while the panels pass (128 × 256 × 4 B = 128 KiB).
const MC: usize = 144;
/// Column groups (of `NP` panels) whose tile of `out` stays in L2 across the slices of `k`.
const NC_GROUPS: usize = 32;
/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Whether [`matmul_add`] can run here: x86-64 with AVX-512F.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i][j] += Σ_kk x[i][kk] · W[j][kk]` (in `kk` order, one fused multiply-add each) for `x`
/// `[m, k]` and `out` `[m, n]` row-major, `W` `[n, k]` packed as `panels` `[n / 16][k][16]`
/// (`panels[(p·k + kk)·16 + l] = W[p·16 + l][kk]`, zeros past `n`). Runs on rayon's threads.
///
/// # Panics
/// If the sizes do not match, or the CPU has no AVX-512 (a caller bug: check [`available`]).
pub fn matmul_add(x: &[f32], m: usize, panels: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    check(x, m, panels, n, k);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    run(x, m, panels, n, k, out.as_mut_ptr(), Init::OUT);
}

/// `y[i][j] = residual[i][j] + bias[j]` (either left out when `None`) followed by
/// `Σ_kk x[i][kk] · W[j][kk]` as in [`matmul_add`]: the same sums, bit for bit, as
/// [`matmul_add`] into an `out` that starts as those values, without writing that `out` first
/// (the start values are read where the first slice of `k` loads its tile).
///
/// # Panics
/// As [`matmul_add`], or if `bias` is not `[n]` or `residual` not `[m, n]`.
pub fn matmul_start(
    x: &[f32],
    m: usize,
    panels: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    check(x, m, panels, n, k);
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not [n]");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), m * n, "residual is not [m, n]");
    }
    if m == 0 || n == 0 || k == 0 {
        let mut y = residual.map_or_else(|| vec![0f32; m * n], <[f32]>::to_vec);
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(n.max(1)) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        return y;
    }
    let mut y = Vec::with_capacity(m * n);
    let init = Init {
        values: true,
        bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
        residual: residual.map_or(std::ptr::null(), <[f32]>::as_ptr),
    };
    run(x, m, panels, n, k, y.as_mut_ptr(), init);
    // SAFETY: with `k > 0` the first slice of `k` stores every element of every tile (rows
    // `..m`, the lanes of columns `..n`), which `run` covers.
    #[allow(unsafe_code)]
    unsafe {
        y.set_len(m * n)
    };
    y
}

fn check(x: &[f32], m: usize, panels: &[f32], n: usize, k: usize) {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(
        panels.len(),
        n.div_ceil(WIDTH) * k * WIDTH,
        "panels are not [n / 16][k][16]"
    );
    assert!(available(), "matmul_add needs AVX-512");
}

/// Where a tile's first slice of `k` takes its start values: `out` itself, or `residual` (`[m,
/// n]`, null: zeros) plus `bias` (`[n]`, null: zeros).
#[derive(Clone, Copy)]
struct Init {
    values: bool,
    bias: *const f32,
    residual: *const f32,
}

impl Init {
    const OUT: Self = Self {
        values: false,
        bias: std::ptr::null(),
        residual: std::ptr::null(),
    };

    /// The same start for the tile at row `i`, columns from `col`, of an `[_, n]` output.
    fn at(self, i: usize, n: usize, col: usize) -> Self {
        // SAFETY (offsets): within `bias` / `residual` for a tile of the product (the caller's
        // sizes); not dereferenced when null.
        #[allow(unsafe_code)]
        Self {
            bias: if self.bias.is_null() {
                self.bias
            } else {
                unsafe { self.bias.add(col) }
            },
            residual: if self.residual.is_null() {
                self.residual
            } else {
                unsafe { self.residual.add(i * n + col) }
            },
            ..self
        }
    }
}

// SAFETY: read-only pointers into slices that `matmul_start` borrows for the whole call.
#[allow(unsafe_code)]
unsafe impl Sync for Init {}

/// The tasks of a product with `m, n, k > 0` into `out` (`[m, n]`, written as `init` says).
fn run(x: &[f32], m: usize, panels: &[f32], n: usize, k: usize, out: *mut f32, init: Init) {
    let groups = n.div_ceil(WIDTH * NP);
    let row_blocks = m.div_ceil(MC);
    let threads = rayon::current_num_threads().max(1);
    // Tasks: row blocks × column chunks, about two a thread (fewer for small products).
    let col_chunks = if m * n * k < PARALLEL_MIN_WORK || threads == 1 {
        1
    } else {
        (2 * threads).div_ceil(row_blocks).clamp(1, groups)
    };
    let chunk = groups.div_ceil(col_chunks);
    let col_chunks = groups.div_ceil(chunk);
    let out_at = Shared(out);
    let task = |t: usize| {
        let (rb, cc) = (t / col_chunks, t % col_chunks);
        let rows = rb * MC..((rb + 1) * MC).min(m);
        let cols = cc * chunk..((cc + 1) * chunk).min(groups);
        // SAFETY: AVX-512F is present (checked by the callers). The task writes only `out`'s
        // rows `rows` × columns `cols` (in groups of 32), which no other task writes; `x`,
        // `panels` and `out` have the sizes checked by the callers, which `block` stays within.
        #[allow(unsafe_code)]
        unsafe {
            block(x, k, panels, n, &out_at, rows, cols, init);
        }
    };
    let tasks = row_blocks * col_chunks;
    if tasks == 1 {
        task(0);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// The panel slice a tile fetches ahead: `lines` rows of 16 floats (one cache line each), panel
/// after panel, `rows` a panel, panels `panel_stride` floats apart from `base`.
struct Ahead {
    base: *const f32,
    panel_stride: usize,
    rows: usize,
    lines: usize,
}

impl Ahead {
    /// Nothing to fetch (the task's last slice).
    const NONE: Self = Self {
        base: std::ptr::null(),
        panel_stride: 0,
        rows: 0,
        lines: 0,
    };
}

/// `out`'s base pointer, shared by tasks that write disjoint tiles.
struct Shared(*mut f32);
// SAFETY: the pointer is only used by `matmul_add`'s tasks, each on its own tiles, while
// `matmul_add` holds the `&mut` borrow of `out`.
#[allow(unsafe_code)]
unsafe impl Sync for Shared {}

/// One task of [`matmul_add`]: rows `rows` × column groups `groups` (of `NP` panels).
///
/// # Safety
/// AVX-512F must be present; `x` is `[_, k]`, `panels` the packed `[n, k]`, `out` `[_, n]`, and
/// no other thread writes these rows × columns of `out` meanwhile.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn block(
    x: &[f32],
    k: usize,
    panels: &[f32],
    n: usize,
    out: &Shared,
    rows: std::ops::Range<usize>,
    groups: std::ops::Range<usize>,
    init: Init,
) {
    use std::arch::x86_64::__mmask16;
    let np = n.div_ceil(WIDTH);
    // Columns in chunks of `NC_GROUPS` groups: the chunk's rows × columns of `out` stay in L2
    // while every `KC`-slice of `k` passes (128 rows × 1024 columns × 4 B = 512 KiB).
    let mut chunk = groups.start;
    while chunk < groups.end {
        let chunk_end = (chunk + NC_GROUPS).min(groups.end);
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            for g in chunk..chunk_end {
                let p0 = g * NP;
                let pn = NP.min(np - p0);
                let last = (n - p0 * WIDTH).min(pn * WIDTH) - (pn - 1) * WIDTH;
                let mask: __mmask16 = if last == WIDTH {
                    0xffff
                } else {
                    ((1u32 << last) - 1) as u16
                };
                // SAFETY (all pointer offsets below): panel `p0 + q` starts at `(p0 + q)·k·16`,
                // row `kk` of it at `+ kk·16`, within `panels` for `p0 + q < np`, `kk < k`; row
                // `i` of `x` at `i·k`, of `out` at `i·n`, columns `p0·16 ..` within the row for
                // the lanes the mask keeps.
                let b = unsafe { panels.as_ptr().add(p0 * k * WIDTH + k0 * WIDTH) };
                // The slice that runs next (the next group at this depth, else the chunk's first
                // group at the next depth, else the next chunk's first at depth 0) is fetched
                // into L2 while this one runs, its lines shared out over the row tiles: weights
                // come from memory, and a tile that waits for them runs at a fraction of its
                // speed.
                let next = if g + 1 < chunk_end {
                    Some((g + 1, k0))
                } else if k0 + kc < k {
                    Some((chunk, k0 + kc))
                } else if chunk_end < groups.end {
                    Some((chunk_end, 0))
                } else {
                    None
                };
                let ahead = next.map_or(Ahead::NONE, |(ng, nk0)| Ahead {
                    // SAFETY: as `b`, for group `ng < groups.end` at depth `nk0 < k`.
                    base: unsafe { panels.as_ptr().add(ng * NP * k * WIDTH + nk0 * WIDTH) },
                    panel_stride: k * WIDTH,
                    rows: KC.min(k - nk0),
                    lines: KC.min(k - nk0) * NP.min(np - ng * NP),
                });
                let tiles = rows.len().div_ceil(MR);
                let mut i = rows.start;
                while i < rows.end {
                    let r = (rows.end - i).min(MR);
                    let a = unsafe { x.as_ptr().add(i * k + k0) };
                    let c = unsafe { out.0.add(i * n + p0 * WIDTH) };
                    let t = (i - rows.start) / MR;
                    let share = ahead.lines * t / tiles..ahead.lines * (t + 1) / tiles;
                    let start = if k0 == 0 {
                        init.at(i, n, p0 * WIDTH)
                    } else {
                        Init::OUT
                    };
                    macro_rules! go {
                        ($r:literal, $p:literal) => {
                            unsafe {
                                tile::<$r, $p>(
                                    a,
                                    k,
                                    b,
                                    k * WIDTH,
                                    kc,
                                    c,
                                    n,
                                    mask,
                                    &ahead,
                                    share,
                                    start,
                                )
                            }
                        };
                    }
                    match (r, pn) {
                        (12, 2) if mask == 0xffff => unsafe {
                            full_tile(a, k, b, k * WIDTH, kc, c, n, &ahead, share, start)
                        },
                        (12, 2) => go!(12, 2),
                        (11, 2) => go!(11, 2),
                        (10, 2) => go!(10, 2),
                        (9, 2) => go!(9, 2),
                        (8, 2) => go!(8, 2),
                        (7, 2) => go!(7, 2),
                        (6, 2) => go!(6, 2),
                        (5, 2) => go!(5, 2),
                        (4, 2) => go!(4, 2),
                        (3, 2) => go!(3, 2),
                        (2, 2) => go!(2, 2),
                        (1, 2) => go!(1, 2),
                        (12, _) => go!(12, 1),
                        (11, _) => go!(11, 1),
                        (10, _) => go!(10, 1),
                        (9, _) => go!(9, 1),
                        (8, _) => go!(8, 1),
                        (7, _) => go!(7, 1),
                        (6, _) => go!(6, 1),
                        (5, _) => go!(5, 1),
                        (4, _) => go!(4, 1),
                        (3, _) => go!(3, 1),
                        (2, _) => go!(2, 1),
                        _ => go!(1, 1),
                    }
                    i += r;
                }
            }
            k0 += kc;
        }
        chunk = chunk_end;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn block(
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: &Shared,
    _: std::ops::Range<usize>,
    _: std::ops::Range<usize>,
    _: Init,
) {
    unreachable!("gemm::available() is false off x86-64");
}

/// `c[R × P·16] += a[R, kc] · b[P panels][kc][16]`: `a` rows `lda` apart, panels `ldp` apart,
/// `c` rows `ldc` apart; the last panel's lanes outside `mask` are neither read nor written.
///
/// # Safety
/// AVX-512F; the pointers address `R` rows of `kc` elements (`a`), `P` panels of `kc × 16`
/// (`b`) and `R` rows of `P·16` elements, the last panel's only where `mask` is set (`c`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize, const P: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldp: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    mask: std::arch::x86_64::__mmask16,
    ahead: &Ahead,
    share: std::ops::Range<usize>,
    init: Init,
) {
    use std::arch::x86_64::*;
    let lane_mask = |q: usize| if q == P - 1 { mask } else { 0xffff };
    // The lines of `ahead` this tile fetches, `per` a step of `kk`.
    let mut left = share.len();
    let per = left.div_ceil(kc.max(1));
    let (mut panel, mut row) = share
        .start
        .checked_div(ahead.rows)
        .map_or((0, 0), |p| (p, share.start % ahead.rows));
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        for (q, v) in row.iter_mut().enumerate() {
            // SAFETY: row `r`, panel `q`'s lanes under the mask, of `c` or of the start values.
            *v = unsafe { start_value(init, c, ldc, r, q * WIDTH, lane_mask(q)) };
        }
    }
    let step = |kk: usize, acc: &mut [[__m512; P]; R]| {
        let mut bv = [_mm512_setzero_ps(); P];
        for (q, v) in bv.iter_mut().enumerate() {
            // SAFETY: row `kk < kc` of panel `q`.
            *v = unsafe { _mm512_loadu_ps(b.add(q * ldp + kk * WIDTH)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: element `kk < kc` of row `r < R` of `a`.
            let av = _mm512_set1_ps(unsafe { *a.add(r * lda + kk) });
            for (v, w) in row.iter_mut().zip(&bv) {
                *v = _mm512_fmadd_ps(av, *w, *v);
            }
        }
    };
    // The first steps also fetch this tile's share of the next slice, `per` lines each.
    let fetching = left.div_ceil(per.max(1)).min(kc);
    for kk in 0..fetching {
        step(kk, &mut acc);
        for _ in 0..per.min(left) {
            // SAFETY: a prefetch does not fault; the address is within `panels` anyway
            // (panel `panel` of the next slice, row `row < ahead.rows`).
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(
                    ahead.base.add(panel * ahead.panel_stride + row * WIDTH) as *const i8,
                )
            };
            left -= 1;
            row += 1;
            if row == ahead.rows {
                row = 0;
                panel += 1;
            }
        }
    }
    for kk in fetching..kc {
        step(kk, &mut acc);
    }
    for (r, row) in acc.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            // SAFETY: as the loads above.
            unsafe { _mm512_mask_storeu_ps(c.add(r * ldc + q * WIDTH), lane_mask(q), *v) };
        }
    }
}

/// Row `r`, columns `col..col + 16` (the lanes of `mask`) of a tile's start: `c`'s, or the
/// residual's plus the bias.
///
/// # Safety
/// AVX-512F; the lanes addressed are within `c` (`Init::OUT`) or within the residual and the
/// bias of [`Init::at`].
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn start_value(
    init: Init,
    c: *mut f32,
    ldc: usize,
    r: usize,
    col: usize,
    mask: std::arch::x86_64::__mmask16,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        if !init.values {
            return _mm512_maskz_loadu_ps(mask, c.add(r * ldc + col));
        }
        let bias = if init.bias.is_null() {
            _mm512_setzero_ps()
        } else {
            _mm512_maskz_loadu_ps(mask, init.bias.add(col))
        };
        if init.residual.is_null() {
            bias
        } else {
            _mm512_add_ps(
                _mm512_maskz_loadu_ps(mask, init.residual.add(r * ldc + col)),
                bias,
            )
        }
    }
}

/// [`tile`] for a whole 12-row × 2-panel tile (every lane kept), with the steps written out in
/// assembly: the compiler's loop spends a scalar add per row and step on the row addresses; here
/// the 12 rows are three base pointers with scaled indices, and a step is 2 loads, 12 broadcasts
/// and 24 fused multiply-adds — the same ones, in the same order, as [`tile`]'s, so the sums are
/// equal bit for bit.
///
/// # Safety
/// As [`tile`] with `R = 12`, `P = 2` and a full mask.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn full_tile(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldp: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    ahead: &Ahead,
    share: std::ops::Range<usize>,
    init: Init,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 24];
    for (i, v) in acc.iter_mut().enumerate() {
        // SAFETY: row `i / 2`, panel `i % 2`, of `c` or of the start values.
        *v = unsafe { start_value(init, c, ldc, i / 2, (i % 2) * WIDTH, 0xffff) };
    }
    // This tile's share of the next slice as runs of lines contiguous in memory (a run ends
    // where a panel does), fetched one line a step while the first steps run.
    let mut done = 0;
    let mut line = share.start;
    while line < share.end {
        let (panel, row) = (line / ahead.rows, line % ahead.rows);
        let run = (share.end - line).min(ahead.rows - row);
        // SAFETY: within `panels` (see `Ahead`).
        let pf = unsafe { ahead.base.add(panel * ahead.panel_stride + row * WIDTH) };
        let steps = run.min(kc - done);
        if steps > 0 {
            // SAFETY: steps `done..done + steps < kc` of the tile (the caller's contract).
            unsafe {
                tile_steps(
                    &mut acc,
                    a.add(done),
                    lda,
                    b.add(done * WIDTH),
                    ldp,
                    steps,
                    pf,
                )
            };
            done += steps;
        }
        for extra in steps..run {
            // SAFETY: a prefetch does not fault; the address is within `panels` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(pf.add(extra * WIDTH) as *const i8) };
        }
        line += run;
    }
    if done < kc {
        // SAFETY: as above; a null `pf` fetches nothing.
        unsafe {
            tile_steps(
                &mut acc,
                a.add(done),
                lda,
                b.add(done * WIDTH),
                ldp,
                kc - done,
                std::ptr::null(),
            )
        };
    }
    for (i, v) in acc.iter().enumerate() {
        // SAFETY: as the loads above.
        unsafe { _mm512_storeu_ps(c.add((i / 2) * ldc + (i % 2) * WIDTH), *v) };
    }
}

/// `steps ≥ 1` steps of [`full_tile`] on the accumulators `acc` (`acc[2r + q]`: row `r`, panel
/// `q`), each step also fetching the line at `pf + step·64 B` into L2 unless `pf` is null.
///
/// # Safety
/// As [`full_tile`], for steps `0..steps` from `a` and `b`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_steps(
    acc: &mut [std::arch::x86_64::__m512; 24],
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldp: usize,
    steps: usize,
    pf: *const f32,
) {
    use std::arch::asm;
    debug_assert!(steps > 0);
    let l = lda * 4;
    let a0 = a;
    // SAFETY: rows 4 and 8 of the tile.
    let (a4, a8) = unsafe { (a.add(4 * lda), a.add(8 * lda)) };
    // SAFETY: the loads are those of `tile` (rows `r < 12` of `a`, steps `< steps`; rows of the
    // two panels); a prefetch does not fault. The accumulators are the registers named.
    unsafe {
        if pf.is_null() {
            asm!(
                "2:",
                "vmovups zmm24, [{b}]",
                "vmovups zmm25, [{b} + {p}]",
                "vbroadcastss zmm26, dword ptr [{a0}]",
                "vfmadd231ps zmm0, zmm26, zmm24",
                "vfmadd231ps zmm1, zmm26, zmm25",
                "vbroadcastss zmm27, dword ptr [{a0} + {l}]",
                "vfmadd231ps zmm2, zmm27, zmm24",
                "vfmadd231ps zmm3, zmm27, zmm25",
                "vbroadcastss zmm28, dword ptr [{a0} + {l}*2]",
                "vfmadd231ps zmm4, zmm28, zmm24",
                "vfmadd231ps zmm5, zmm28, zmm25",
                "vbroadcastss zmm29, dword ptr [{a0} + {l3}]",
                "vfmadd231ps zmm6, zmm29, zmm24",
                "vfmadd231ps zmm7, zmm29, zmm25",
                "vbroadcastss zmm30, dword ptr [{a4}]",
                "vfmadd231ps zmm8, zmm30, zmm24",
                "vfmadd231ps zmm9, zmm30, zmm25",
                "vbroadcastss zmm31, dword ptr [{a4} + {l}]",
                "vfmadd231ps zmm10, zmm31, zmm24",
                "vfmadd231ps zmm11, zmm31, zmm25",
                "vbroadcastss zmm26, dword ptr [{a4} + {l}*2]",
                "vfmadd231ps zmm12, zmm26, zmm24",
                "vfmadd231ps zmm13, zmm26, zmm25",
                "vbroadcastss zmm27, dword ptr [{a4} + {l3}]",
                "vfmadd231ps zmm14, zmm27, zmm24",
                "vfmadd231ps zmm15, zmm27, zmm25",
                "vbroadcastss zmm28, dword ptr [{a8}]",
                "vfmadd231ps zmm16, zmm28, zmm24",
                "vfmadd231ps zmm17, zmm28, zmm25",
                "vbroadcastss zmm29, dword ptr [{a8} + {l}]",
                "vfmadd231ps zmm18, zmm29, zmm24",
                "vfmadd231ps zmm19, zmm29, zmm25",
                "vbroadcastss zmm30, dword ptr [{a8} + {l}*2]",
                "vfmadd231ps zmm20, zmm30, zmm24",
                "vfmadd231ps zmm21, zmm30, zmm25",
                "vbroadcastss zmm31, dword ptr [{a8} + {l3}]",
                "vfmadd231ps zmm22, zmm31, zmm24",
                "vfmadd231ps zmm23, zmm31, zmm25",
                "add {a0}, 4",
                "add {a4}, 4",
                "add {a8}, 4",
                "add {b}, 64",
                "dec {n}",
                "jnz 2b",
                a0 = inout(reg) a0 => _,
                a4 = inout(reg) a4 => _,
                a8 = inout(reg) a8 => _,
                b = inout(reg) b => _,
                n = inout(reg) steps => _,

                l = in(reg) l,
                l3 = in(reg) 3 * l,
                p = in(reg) ldp * 4,
                inout("zmm0") acc[0],
                inout("zmm1") acc[1],
                inout("zmm2") acc[2],
                inout("zmm3") acc[3],
                inout("zmm4") acc[4],
                inout("zmm5") acc[5],
                inout("zmm6") acc[6],
                inout("zmm7") acc[7],
                inout("zmm8") acc[8],
                inout("zmm9") acc[9],
                inout("zmm10") acc[10],
                inout("zmm11") acc[11],
                inout("zmm12") acc[12],
                inout("zmm13") acc[13],
                inout("zmm14") acc[14],
                inout("zmm15") acc[15],
                inout("zmm16") acc[16],
                inout("zmm17") acc[17],
                inout("zmm18") acc[18],
                inout("zmm19") acc[19],
                inout("zmm20") acc[20],
                inout("zmm21") acc[21],
                inout("zmm22") acc[22],
                inout("zmm23") acc[23],
                out("zmm24") _,
                out("zmm25") _,
                out("zmm26") _,
                out("zmm27") _,
                out("zmm28") _,
                out("zmm29") _,
                out("zmm30") _,
                out("zmm31") _,
                options(nostack, readonly),
            );
        } else {
            asm!(
                "2:",
                "prefetcht1 [{pf}]",
                "add {pf}, 64",
                "vmovups zmm24, [{b}]",
                "vmovups zmm25, [{b} + {p}]",
                "vbroadcastss zmm26, dword ptr [{a0}]",
                "vfmadd231ps zmm0, zmm26, zmm24",
                "vfmadd231ps zmm1, zmm26, zmm25",
                "vbroadcastss zmm27, dword ptr [{a0} + {l}]",
                "vfmadd231ps zmm2, zmm27, zmm24",
                "vfmadd231ps zmm3, zmm27, zmm25",
                "vbroadcastss zmm28, dword ptr [{a0} + {l}*2]",
                "vfmadd231ps zmm4, zmm28, zmm24",
                "vfmadd231ps zmm5, zmm28, zmm25",
                "vbroadcastss zmm29, dword ptr [{a0} + {l3}]",
                "vfmadd231ps zmm6, zmm29, zmm24",
                "vfmadd231ps zmm7, zmm29, zmm25",
                "vbroadcastss zmm30, dword ptr [{a4}]",
                "vfmadd231ps zmm8, zmm30, zmm24",
                "vfmadd231ps zmm9, zmm30, zmm25",
                "vbroadcastss zmm31, dword ptr [{a4} + {l}]",
                "vfmadd231ps zmm10, zmm31, zmm24",
                "vfmadd231ps zmm11, zmm31, zmm25",
                "vbroadcastss zmm26, dword ptr [{a4} + {l}*2]",
                "vfmadd231ps zmm12, zmm26, zmm24",
                "vfmadd231ps zmm13, zmm26, zmm25",
                "vbroadcastss zmm27, dword ptr [{a4} + {l3}]",
                "vfmadd231ps zmm14, zmm27, zmm24",
                "vfmadd231ps zmm15, zmm27, zmm25",
                "vbroadcastss zmm28, dword ptr [{a8}]",
                "vfmadd231ps zmm16, zmm28, zmm24",
                "vfmadd231ps zmm17, zmm28, zmm25",
                "vbroadcastss zmm29, dword ptr [{a8} + {l}]",
                "vfmadd231ps zmm18, zmm29, zmm24",
                "vfmadd231ps zmm19, zmm29, zmm25",
                "vbroadcastss zmm30, dword ptr [{a8} + {l}*2]",
                "vfmadd231ps zmm20, zmm30, zmm24",
                "vfmadd231ps zmm21, zmm30, zmm25",
                "vbroadcastss zmm31, dword ptr [{a8} + {l3}]",
                "vfmadd231ps zmm22, zmm31, zmm24",
                "vfmadd231ps zmm23, zmm31, zmm25",
                "add {a0}, 4",
                "add {a4}, 4",
                "add {a8}, 4",
                "add {b}, 64",
                "dec {n}",
                "jnz 2b",
                a0 = inout(reg) a0 => _,
                a4 = inout(reg) a4 => _,
                a8 = inout(reg) a8 => _,
                b = inout(reg) b => _,
                n = inout(reg) steps => _,
                pf = inout(reg) pf => _,
                l = in(reg) l,
                l3 = in(reg) 3 * l,
                p = in(reg) ldp * 4,
                inout("zmm0") acc[0],
                inout("zmm1") acc[1],
                inout("zmm2") acc[2],
                inout("zmm3") acc[3],
                inout("zmm4") acc[4],
                inout("zmm5") acc[5],
                inout("zmm6") acc[6],
                inout("zmm7") acc[7],
                inout("zmm8") acc[8],
                inout("zmm9") acc[9],
                inout("zmm10") acc[10],
                inout("zmm11") acc[11],
                inout("zmm12") acc[12],
                inout("zmm13") acc[13],
                inout("zmm14") acc[14],
                inout("zmm15") acc[15],
                inout("zmm16") acc[16],
                inout("zmm17") acc[17],
                inout("zmm18") acc[18],
                inout("zmm19") acc[19],
                inout("zmm20") acc[20],
                inout("zmm21") acc[21],
                inout("zmm22") acc[22],
                inout("zmm23") acc[23],
                out("zmm24") _,
                out("zmm25") _,
                out("zmm26") _,
                out("zmm27") _,
                out("zmm28") _,
                out("zmm29") _,
                out("zmm30") _,
                out("zmm31") _,
                options(nostack, readonly),
            );
        }
    }
}
