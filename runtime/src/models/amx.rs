//! Intel AMX (Advanced Matrix Extensions) for the bf16 linear layers of [`super::bf16`]: run-time
//! detection and the tile micro-kernel.
//!
//! AMX adds eight tile registers `tmm0..tmm7` of up to 16 rows × 64 bytes and `tdpbf16ps`, which
//! adds the product of a 16 × 32 bf16 tile `A` and a 32 × 16 bf16 tile `B` (stored as 16 rows of
//! 16 column pairs, the "VNNI" layout [`super::bf16::Packed`] keeps the weights in) into a 16 × 16
//! f32 tile `C`. Each `C[i][j]` is updated with the products of row `i` of `A` only, so a row's
//! answer does not depend on the rows beside it in the tile.
//!
//! The kernel here takes one panel of 32 output columns (two `B` tiles a 32-wide k step) and every
//! row block of 32 rows (two `A` tiles): four `C` accumulators, which start as the output's
//! current contents (the bias, plus the residual), then one k step after the other in order.
//! Tiles are named in the assembly text (they are not allocatable registers); the mnemonics are
//! assembled by LLVM's integrated assembler.
//!
//! Linux hands out the 8 KiB of tile state per process only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), which [`available`] makes once; if
//! the CPU, the OS (XCR0) or that request says no, AMX is not used. The tile configuration is
//! per thread: every [`panel`] call loads it (`ldtilecfg`) and releases the tiles at its end
//! (`tilerelease`), so a rayon worker never carries tile state between calls (nor in its context
//! switches) and no thread-local flag is needed; both cost a few tens of cycles against the
//! thousands of a panel.

use super::bf16::Line;

/// Rows of one `A` tile and of one `C` tile.
pub(crate) const TILE_ROWS: usize = 16;

/// Whether this process can run [`panel`]: the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7,
/// EDX bits 24 and 22), the OS saves tile state (XCR0 bits 17 and 18) and, on Linux, granted
/// this process the tile data (asked once, here).
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let leaf1 = __cpuid_count(1, 0);
    // OSXSAVE: the OS enabled XSAVE and `xgetbv` may be executed.
    if leaf1.ecx & (1 << 27) == 0 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    let xcr0 = xgetbv0();
    // XTILECFG (17) and XTILEDATA (18).
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    request_tile_permission()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// XCR0, the OS-enabled state components.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `xgetbv` with ECX = 0 reads XCR0; it is valid when CPUID.1:ECX.OSXSAVE is set,
    // which the caller checked. It touches no memory and only the named registers.
    unsafe {
        std::arch::asm!(
            "xgetbv",
            in("ecx") 0u32,
            out("eax") lo,
            out("edx") hi,
            options(nomem, nostack, preserves_flags),
        );
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: asks Linux (5.16+) to let this
/// process use the tile data. The permission is per process, for every thread.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the raw `arch_prctl` system call with two integer arguments; it reads no user
    // memory for this request. The kernel clobbers RCX and R11 (declared) and returns in RAX.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret != 0 {
        tracing::info!(
            errno = -ret,
            "the kernel refused AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM); bf16 weights use AVX-512 instead"
        );
    }
    ret == 0
}

/// The tile configuration of [`panel`]: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn full() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            // `colsb[t]` (u16, little-endian) at 16 + 2t, `rows[t]` at 48 + t.
            c[16 + 2 * t] = 64;
            c[48 + t] = TILE_ROWS as u8;
            t += 1;
        }
        Self(c)
    }
}

static CONFIG: TileConfig = TileConfig::full();

/// `out[i][c] += Σ_k x[i][k] · W[c][k]` for one panel of 32 output columns with AMX.
///
/// - `xb`: the activations as bf16, `mp` rows of `kl` [`Line`]s (`kl · 32` values, zero padded);
/// - `w`: the panel, `kl` k steps of two `B` tiles (16 lines each), see [`super::bf16::Packed`];
/// - `out`: `[mp][32]` f32, holding the start values (bias, residual) and receiving the result.
///
/// Within a row, the k steps are added in order into that row's accumulators only, so the result
/// of a row depends on that row, the weights and nothing else.
///
/// # Panics
/// If [`available`] is false, `mp` is not a multiple of 32, `kl` is 0 or the slices do not have
/// the stated sizes (caller bugs).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) fn panel(xb: &[Line], kl: usize, mp: usize, w: &[Line], out: &mut [f32]) {
    assert!(available(), "AMX is not available");
    assert!(
        mp.is_multiple_of(2 * TILE_ROWS) && kl > 0,
        "bad panel shape"
    );
    assert_eq!(xb.len(), mp * kl, "xb is not [mp, kl] lines");
    assert_eq!(w.len(), kl * 2 * TILE_ROWS, "w is not one panel");
    assert_eq!(out.len(), mp * 32, "out is not [mp, 32]");
    let a_stride = kl * std::mem::size_of::<Line>();
    let c_stride = 32 * std::mem::size_of::<f32>();
    // SAFETY: `available()` holds, so the CPU has AMX-TILE/AMX-BF16, the OS saves the tile
    // state and this process may use it. `CONFIG` is a valid 64-byte palette-1 configuration
    // (8 tiles of 16 × 64 bytes). Every tile load/store below stays inside its slice:
    // - C tiles: rows `r0..r0 + 32` of `out` (stride 128 bytes, 64 bytes a row, at byte
    //   offsets 0 and 64 of the row), `r0 + 32 ≤ mp`, `out` is `mp × 32` f32;
    // - A tiles: rows `r0..r0 + 32` of `xb` (stride `kl · 64` bytes, 64 bytes a row) at line
    //   `step < kl` of the row;
    // - B tiles: lines `step · 32 .. step · 32 + 32` of `w`, which has `kl · 32` lines.
    // The loop runs `kl ≥ 1` times. No Rust code uses the tile registers; `tilerelease` leaves
    // them in their initial state.
    unsafe {
        std::arch::asm!(
            "ldtilecfg [{cfg}]",
            cfg = in(reg) CONFIG.0.as_ptr(),
            options(nostack, readonly, preserves_flags),
        );
        for r0 in (0..mp).step_by(2 * TILE_ROWS) {
            let c0 = out.as_mut_ptr().add(r0 * 32);
            let c1 = c0.add(TILE_ROWS * 32);
            let a0 = xb.as_ptr().add(r0 * kl);
            let a1 = a0.add(TILE_ROWS * kl);
            std::arch::asm!(
                "tileloadd tmm0, [{c0} + {cs}]",
                "tileloadd tmm1, [{c0} + {cs} + 64]",
                "tileloadd tmm2, [{c1} + {cs}]",
                "tileloadd tmm3, [{c1} + {cs} + 64]",
                "2:",
                "tileloadd tmm4, [{a0} + {as_}]",
                "tileloadd tmm5, [{a1} + {as_}]",
                "tileloadd tmm6, [{b} + {bs}]",
                "tileloadd tmm7, [{b} + {bs} + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c0} + {cs}], tmm0",
                "tilestored [{c0} + {cs} + 64], tmm1",
                "tilestored [{c1} + {cs}], tmm2",
                "tilestored [{c1} + {cs} + 64], tmm3",
                c0 = in(reg) c0,
                c1 = in(reg) c1,
                cs = in(reg) c_stride,
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                as_ = in(reg) a_stride,
                b = inout(reg) w.as_ptr() => _,
                bs = in(reg) 64usize,
                n = inout(reg) kl => _,
                options(nostack),
            );
        }
        std::arch::asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }
}

/// Not x86-64: [`available`] is false and this is never called.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn panel(_: &[Line], _: usize, _: usize, _: &[Line], _: &mut [f32]) {
    unreachable!("AMX is x86-64 only");
}
