//! GPT-2-small's decode-step products (12 layers x [2304x768, 768x768, 3072x768, 768x3072] + the
//! 50257x768 LM head) with `matmul_panels` (f32) and `matmul_bf16_panels`, random weights.
//! Prints the wall and CPU time (this process, all threads) a step.
mod kernels;
use kernels::*;

fn cpu_ms() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_utime.tv_sec as f64 + ru.ru_stime.tv_sec as f64) * 1e3
        + (ru.ru_utime.tv_usec as f64 + ru.ru_stime.tv_usec as f64) / 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).map_or(1, |s| s.parse().unwrap());
    let steps: usize = args.get(2).map_or(8, |s| s.parse().unwrap());
    let mut shapes = Vec::new();
    for _ in 0..12 {
        shapes.extend([(2304, 768), (768, 768), (3072, 768), (768, 3072)]);
    }
    shapes.push((50257, 768));
    let mut state = 1u64;
    let mut rnd = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let f32p: Vec<Panels> = shapes.iter().map(|&(n, k)| Panels::new(&rnd(n * k), n, k)).collect();
    let bf: Vec<Bf16Panels> = shapes.iter().map(|&(n, k)| Bf16Panels::new(&rnd(n * k), n, k)).collect();
    let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| rnd(rows * k)).collect();
    let threads = rayon::current_num_threads();
    for round in 0..3 {
        for kind in ["f32", "bf16"] {
            let (w0, c0) = (std::time::Instant::now(), cpu_ms());
            let mut sink = 0f32;
            for _ in 0..steps {
                for (i, x) in xs.iter().enumerate() {
                    let y = if kind == "f32" {
                        matmul_panels(x, rows, &f32p[i], None)
                    } else {
                        matmul_bf16_panels(x, rows, &bf[i], None)
                    };
                    sink += y[0];
                }
            }
            let wall = w0.elapsed().as_secs_f64() * 1e3 / steps as f64;
            let cpu = (cpu_ms() - c0) / steps as f64;
            println!("round {round} {kind} rows={rows} threads={threads}: wall {wall:.1} ms, cpu {cpu:.1} ms a step ({sink:.0})");
        }
    }
}
