/* A STREAM-like memory bandwidth probe (issue 11, docs/benchmarks.md "Decode speed"):
 * read-only (sum of a 512 MiB f32 array: what a decode step does with the weights),
 * copy and triad, with 1 and 2 OpenMP threads; best of 10 passes each, in GB/s (1e9 B/s).
 *   gcc -O3 -march=native -ffast-math -fopenmp scripts/membw.c -o /tmp/membw && nice -n 19 /tmp/membw
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define N (128UL * 1024 * 1024) /* 128 Mi floats = 512 MiB per array */
#define REPS 10

static double best(double a, double b) { return a < b ? a : b; }

int main(void) {
  float *a = aligned_alloc(64, N * sizeof(float));
  float *b = aligned_alloc(64, N * sizeof(float));
  float *c = aligned_alloc(64, N * sizeof(float));
  if (!a || !b || !c) return 1;
#pragma omp parallel for
  for (size_t i = 0; i < N; i++) { a[i] = 1.0f; b[i] = 2.0f; c[i] = 0.0f; }
  for (int threads = 1; threads <= 2; threads++) {
    omp_set_num_threads(threads);
    double tr = 1e9, tc = 1e9, tt = 1e9;
    volatile float sink = 0;
    for (int r = 0; r < REPS; r++) {
      double t0 = omp_get_wtime();
      float s = 0;
#pragma omp parallel for reduction(+ : s)
      for (size_t i = 0; i < N; i++) s += a[i]; /* vectorised: -ffast-math */
      sink += s;
      double t1 = omp_get_wtime();
#pragma omp parallel for
      for (size_t i = 0; i < N; i++) c[i] = a[i];
      double t2 = omp_get_wtime();
#pragma omp parallel for
      for (size_t i = 0; i < N; i++) c[i] = a[i] + 3.0f * b[i];
      double t3 = omp_get_wtime();
      tr = best(tr, t1 - t0); tc = best(tc, t2 - t1); tt = best(tt, t3 - t2);
    }
    double bytes = N * sizeof(float);
    printf("threads %d: read %.1f GB/s, copy %.1f GB/s, triad %.1f GB/s\n", threads,
           bytes / tr / 1e9, 2 * bytes / tc / 1e9, 3 * bytes / tt / 1e9);
  }
  return 0;
}
