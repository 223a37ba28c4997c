// The fused CPU relaxation kernel of hts_ep/fused.py (its docstring says what it does and why);
// built by fused.py with torch's C++ extension loader, keyed by a hash of this text.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>

// GCC/Clang vector extensions: the widest vector the build target has,
// without intrinsics, so the same source builds on any x86 or Arm CPU.
// ZS x ZU: samples x vectors of one register block of the hidden sweep;
// ZS x ZK*: samples x output rows of the blocks of the W2 h reduction. Chosen
// so that accumulators, broadcasts and one loaded vector fit the register
// file (16 vectors with AVX2, 32 with AVX-512) without spills.
#if defined(__AVX512F__)
constexpr int V = 16, ZS = 4, ZU = 4, ZK1 = 5, ZK2 = 5, ZK3 = 0;
#else
constexpr int V = 8, ZS = 3, ZU = 4, ZK1 = 3, ZK2 = 3, ZK3 = 4;
#endif
constexpr int O = 10;
// Rows of W2, of the drive and of the state are H floats apart; for H = 1024
// that is 4 KiB, so element j of every row falls into the same L1 cache set
// and the 10 + 2 ZS rows one block touches evict each other (8-way L1).
// Copies padded by one cache line per row spread them over the sets: the
// largest single gain measured (1.3x).
constexpr int64_t PAD = 64 / sizeof(float);
// Samples of one model per work item (W2 read once for all of them): a
// multiple of ZS, so that only a batch's last group has a sample on its own
// (the single-sample path runs at about 0.6 of a register block's rate; 16,
// with one such sample per group, measured 4% slower than 24). The group's
// drive and state (and the nudged branch's state), 2 or 3 x 24 x 4 KiB, stay
// in a 512 KiB L2.
constexpr int GROUP = 24;
static_assert(GROUP % ZS == 0, "groups are whole register blocks");
constexpr int64_t TILE = 512;  // neurons per tile: W2's tile (20 KiB) stays in L1 for the group
typedef float vec __attribute__((vector_size(V * 4), aligned(4)));
typedef int ivec __attribute__((vector_size(V * 4), aligned(4)));

static inline float lane_sum(vec a) {
  float z = 0.f;
  for (int i = 0; i < V; ++i) z += a[i];
  return z;
}

struct Residual { vec r; ivec nan; };   // max|h[t+1] - h[t]| per lane, and whether a NaN was seen

// Keeps a loaded vector in a register: without it the compiler folds the load
// into every FMA that uses it (one load per FMA: the sweep becomes load-bound).
// (Only where one vector is one register: AVX and AVX-512.)
#if defined(__AVX__)
#define IN_REGISTER(x) asm("" : "+x"(x))
#else
#define IN_REGISTER(x) ((void)0)
#endif

// Hidden update of S samples (rows P floats apart) on neurons [j0, j1), U vectors at a time:
//   h[t+1] = h[t] + eps (-h[t] + phi(d + W2^T c)),   c = gamma o[t]   (per sample)
// BND: phi clamped to [-bound, bound] (Config.h_bound); a template parameter, so that
// the unbounded network pays nothing for it.
template <int S, int U, bool RES, bool BND>
static inline __attribute__((always_inline)) void hidden_tile(
    const float* d, float* hs, const float* W, const float* eps, int64_t P, int64_t j0, int64_t j1,
    const float (*c)[O], float slope, float bound, Residual* res) {
  const vec hi = vec{} + bound, lo = -hi;
  for (int64_t j = j0; j < j1; j += U * V) {
    vec z[S][U];
    #pragma GCC unroll 8
    for (int s = 0; s < S; ++s)
      #pragma GCC unroll 8
      for (int u = 0; u < U; ++u) z[s][u] = *(const vec*)(d + s * P + j + u * V);       // W1 x + b1
    #pragma GCC unroll 10
    for (int k = 0; k < O; ++k) {
      // c holds 0 + gamma o (rounded like the broadcast of earlier kernels), so
      // this is a bare broadcast from memory: adding the zero vector here cost a
      // scalar add and a register broadcast per FMA row (9% of a step).
      vec cb[S];
      #pragma GCC unroll 8
      for (int s = 0; s < S; ++s) cb[s] = c[s][k] - vec{};
      #pragma GCC unroll 8
      for (int u = 0; u < U; ++u) {
        vec w = *(const vec*)(W + k * P + j + u * V);
        IN_REGISTER(w);
        #pragma GCC unroll 8
        for (int s = 0; s < S; ++s) z[s][u] += cb[s] * w;                          // + gamma W2^T o[t]
      }
    }
    #pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const vec e = *(const vec*)(eps + j + u * V);
      #pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        const vec zz = z[s][u], sz = slope * zz;
        vec p = zz > sz ? zz : sz;                  // leaky ReLU for 0 <= slope <= 1; NaN stays NaN
        if (BND) {                                  // comparisons false for NaN: NaN stays NaN
          p = p > hi ? hi : p;
          p = p < lo ? lo : p;
        }
        const vec h = *(const vec*)(hs + s * P + j + u * V);
        const vec dh = (p - h) * e;                 // eps_hidden (-h + phi)
        *(vec*)(hs + s * P + j + u * V) = h + dh;
        if (RES) {
          const vec a = dh < 0.f ? -dh : dh;
          res[s].r = a > res[s].r ? a : res[s].r;
          res[s].nan |= a != a;
        }
      }
    }
  }
}

// acc[s][k0 .. k0+K) += W2[k0 .. k0+K, j0:j1] h_s[j0:j1], lane by lane (first: acc = instead of
// +=, so a step's sums need no zeroed accumulators; the same bits: both start from the +0 vector).
template <int S, int K>
static inline __attribute__((always_inline)) void output_tile(
    const float* hs, const float* W, int64_t P, int64_t j0, int64_t j1, int k0, vec (*acc)[O], bool first) {
  vec a[S][K];
  #pragma GCC unroll 8
  for (int s = 0; s < S; ++s)
    #pragma GCC unroll 10
    for (int k = 0; k < K; ++k) a[s][k] = first ? vec{} : acc[s][k0 + k];
  for (int64_t j = j0; j < j1; j += V) {
    vec hv[S];
    #pragma GCC unroll 8
    for (int s = 0; s < S; ++s) { hv[s] = *(const vec*)(hs + s * P + j); IN_REGISTER(hv[s]); }
    #pragma GCC unroll 10
    for (int k = 0; k < K; ++k) {
      vec w = *(const vec*)(W + (k0 + k) * P + j);
      IN_REGISTER(w);
      #pragma GCC unroll 8
      for (int s = 0; s < S; ++s) a[s][k] += w * hv[s];
    }
  }
  #pragma GCC unroll 8
  for (int s = 0; s < S; ++s)
    #pragma GCC unroll 10
    for (int k = 0; k < K; ++k) acc[s][k0 + k] = a[s][k];
}

// One tile of one step for S samples: the hidden update, then W2 h[t+1] from
// the tile while it is in L1 (output rows in blocks of K1, K2, K3). noinline:
// inlined into the tile loop, GCC hoists the broadcasts of c out of it into
// stack slots and reloads one per FMA (measured 1.3x slower).
// PC: the row stride P when known at compile time (0: not). A constant stride
// turns the addresses of all the rows into one register plus offsets; with a
// register each, the 4 + 4 + 10 rows of a block outnumber the general
// registers and spill (measured 1.08x faster for H = 1024, paired, 6 of 6 runs).
template <int S, int U, int K1, int K2, int K3, bool RES, int64_t PC, bool BND>
static __attribute__((noinline)) void tile_step(const float* d, float* hs, const float* W, const float* eps, int64_t P_,
                             int64_t j0, int64_t j1, const float (*c)[O], vec (*acc)[O], float slope,
                             float bound, Residual* res, bool first) {
  const int64_t P = PC ? PC : P_;
  hidden_tile<S, U, RES, BND>(d, hs, W, eps, P, j0, j1, c, slope, bound, res);
  output_tile<S, K1>(hs, W, P, j0, j1, 0, acc, first);
  if constexpr (K2 > 0) output_tile<S, K2>(hs, W, P, j0, j1, K1, acc, first);
  if constexpr (K3 > 0) output_tile<S, K3>(hs, W, P, j0, j1, K1 + K2, acc, first);
}

template <bool RES, int64_t PC, bool BND>
static inline void sweep(const float* d, float* hs, const float* W, const float* eps, int64_t P, int64_t H,
                         int n, const float (*c)[O], vec (*acc)[O], float slope, float bound, Residual* res) {
  for (int64_t j0 = 0; j0 < H; j0 += TILE) {
    const int64_t j1 = j0 + TILE < H ? j0 + TILE : H;
    // whole register blocks first, then single vectors (hidden sizes that are not a multiple)
    const int64_t jm = j0 + (j1 - j0) / (ZU * V) * (ZU * V), jr = j0 + (j1 - j0) / (2 * ZU * V) * (2 * ZU * V);
    int s = 0;
    for (; s + ZS <= n; s += ZS) {
      tile_step<ZS, ZU, ZK1, ZK2, ZK3, RES, PC, BND>(d + s * P, hs + s * P, W, eps, P, j0, jm, c + s, acc + s, slope, bound, res + s, j0 == 0);
      if (jm < j1) tile_step<ZS, 1, ZK1, ZK2, ZK3, RES, PC, BND>(d + s * P, hs + s * P, W, eps, P, jm, j1, c + s, acc + s, slope, bound, res + s, false);
    }
    for (; s < n; ++s) {     // the group's last n % ZS samples, one at a time
      tile_step<1, 2 * ZU, 10, 0, 0, RES, PC, BND>(d + s * P, hs + s * P, W, eps, P, j0, jr, c + s, acc + s, slope, bound, res + s, j0 == 0);
      if (jr < j1) tile_step<1, 1, 10, 0, 0, RES, PC, BND>(d + s * P, hs + s * P, W, eps, P, jr, j1, c + s, acc + s, slope, bound, res + s, false);
    }
  }
}

// exp(x) for EW floats at a time, bit for bit glibc's expf, so that
// vectorising the output layer's sigmoid keeps the states of std::exp: x N/ln2
// = k + r, exp(x) = 2^(k/N) 2^(r/N), the first from a 32-entry table, the
// second a cubic, all in double. Written as single expressions so that the
// compiler forms the fused multiply-adds of glibc's FMA build, which glibc
// (2.27 and later) picks on x86-64 CPUs with FMA and AVX2; elsewhere (other
// architectures round differently, other C libraries differ) it is std::exp
// one float at a time. exp_mismatches (below, and tests/test_fused.py)
// compares the two.
#if defined(__x86_64__) && defined(__FMA__) && defined(__AVX2__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 27))
#define VECTOR_EXPF 1
#else
#define VECTOR_EXPF 0
#endif
#if defined(__x86_64__)
#include <immintrin.h>   // the gather and movemask below
#endif
// EW floats at a time: 8 with AVX-512 (one 512-bit vector of doubles), else 4.
#if defined(__AVX512F__)
constexpr int EW = 8;
#else
constexpr int EW = 4;
#endif
typedef double dvecE __attribute__((vector_size(EW * 8), aligned(8)));
typedef float fvecE __attribute__((vector_size(EW * 4), aligned(4)));
typedef int32_t ivecE __attribute__((vector_size(EW * 4), aligned(4)));
typedef uint64_t lvecE __attribute__((vector_size(EW * 8), aligned(8)));
static const uint64_t EXP2_TABLE[32] = {  // 2^(i/32) as a double, minus i << 47
  0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull, 0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull, 0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull, 0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull, 0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull, 0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull, 0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull, 0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull};
constexpr double INV_LN2_N = 0x1.71547652b82fep+5, EXP_SHIFT = 0x1.8p+52;
constexpr double EXP_C0 = 0x1.c6af84b912394p-20, EXP_C1 = 0x1.ebfce50fac4f3p-13, EXP_C2 = 0x1.62e42ff0c52d6p-6;

#if VECTOR_EXPF
static inline bool any(ivecE m) {                     // any lane true (-1)
#if defined(__AVX512F__)
  return _mm256_movemask_ps((__m256)m) != 0;
#else
  return _mm_movemask_ps((__m128)m) != 0;
#endif
}
#else
static inline bool any(ivecE) { return true; }
#endif

// y[0:EW] = exp(x[0:EW]).
static inline void expw(const float* x, float* y) {
  const fvecE xv = *(const fvecE*)x;
  const ivecE top = (((ivecE)xv) >> 20) & 0x7ff;
  const ivecE big = top > 0x42a;                      // |x| >= 88, inf, NaN
  if (!VECTOR_EXPF || any(big)) {
    for (int i = 0; i < EW; ++i) y[i] = std::exp(x[i]);
    return;
  }
  const dvecE xd = __builtin_convertvector(xv, dvecE);
  dvecE kd = xd * INV_LN2_N + EXP_SHIFT;              // round(x N/ln2) in the low bits
  const lvecE ki = (lvecE)kd;
  kd -= EXP_SHIFT;
  const dvecE r = xd * INV_LN2_N - kd;
  lvecE t;
#if defined(__AVX512F__)
  t = (lvecE)_mm512_i64gather_epi64((__m512i)(ki & 31), (const void*)EXP2_TABLE, 8);
#else
  for (int i = 0; i < EW; ++i) t[i] = EXP2_TABLE[ki[i] & 31];
#endif
  t += ki << 47;
  const dvecE z = r * EXP_C0 + EXP_C1, r2 = r * r;
  dvecE p = r * EXP_C2 + 1.0;
  p = z * r2 + p;
  *(fvecE*)y = __builtin_convertvector(p * (dvecE)t, fvecE);
}

// z[q] = b[q] + (a[q][0] + a[q][1] + ... + a[q][V-1]) for V consecutive q,
// summed lane by lane in lane order (the order of a scalar loop over the
// lanes, so the same float rounding), after transposing the vectors in
// registers: with 8 lanes the usual unpack, shuffle, 128-bit permute; with 16,
// four rounds of two-source shuffles, each swapping blocks of 8, 4, 2, 1 lanes
// between pairs of rows. (The scalar loop, one lane extracted per add, took
// about a third of the time outside the hidden sweep on an AVX-512 Xeon.)
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, ivec{__VA_ARGS__})
#endif
#if defined(__AVX512F__)
// One round of the 16 x 16 register transpose: rows i and i + B (bit B of i
// clear) trade their blocks of B lanes, lane j of row i taking lane j - B of
// row i + B where bit B of j is set, and back. After B = 8, 4, 2, 1, row i
// holds lane i of every input vector.
#define LO(j) ((j) & B ? 16 + (j) - B : (j))
#define HI(j) ((j) & B ? 16 + (j) : (j) + B)
template <int B>
static inline void swap_blocks(vec* r) {
  for (int i = 0; i < 16; ++i) {
    if (i & B) continue;
    const vec x = r[i], y = r[i + B];
    r[i] = SHUFFLE(x, y, LO(0), LO(1), LO(2), LO(3), LO(4), LO(5), LO(6), LO(7),
                   LO(8), LO(9), LO(10), LO(11), LO(12), LO(13), LO(14), LO(15));
    r[i + B] = SHUFFLE(x, y, HI(0), HI(1), HI(2), HI(3), HI(4), HI(5), HI(6), HI(7),
                       HI(8), HI(9), HI(10), HI(11), HI(12), HI(13), HI(14), HI(15));
  }
}
#undef LO
#undef HI
#endif
static inline void lane_sums(const vec* a, const float* b, float* z) {
#if !defined(__AVX512F__)
  static_assert(V == 8);
  vec t[8], u[8], col[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = SHUFFLE(a[i], a[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = SHUFFLE(a[i], a[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      u[i + 2 * h] = SHUFFLE(t[i + h], t[i + 2 + h], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * h + 1] = SHUFFLE(t[i + h], t[i + 2 + h], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int c = 0; c < 4; ++c) {
    col[c] = SHUFFLE(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    col[c + 4] = SHUFFLE(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
  vec sum = vec{};
  for (int i = 0; i < 8; ++i) sum += col[i];
  *(vec*)z = *(const vec*)b + sum;
#else
  static_assert(V == 16);
  vec r[16];
  for (int i = 0; i < 16; ++i) r[i] = a[i];
  swap_blocks<8>(r);
  swap_blocks<4>(r);
  swap_blocks<2>(r);
  swap_blocks<1>(r);
  vec sum = vec{};
  for (int i = 0; i < 16; ++i) sum += r[i];
  *(vec*)z = *(const vec*)b + sum;
#endif
}

struct Model {                 // one model as the kernel reads it
  const float *W, *b2, *eps;   // W2 [O rows, P floats apart], b2 [O], eps_hidden [H]
  int64_t P, H;
  float eo, g, be, slope;      // eps_out, gamma, beta, leaky-ReLU slope
  float bound;                 // phi clamped to [-bound, bound] (inf: unbounded, BND false)
};

// n <= GROUP samples of one model through `steps` Euler steps. The output layer
// (O scalars per sample) is updated from o[t] and z_o[t] = W2 h[t] + b2 after
// the sweep has produced W2 h[t+1]: the synchronous update of network.py.
// The output layer's quantities are flat arrays over q = s O + k, padded to
// whole vectors, so that its update, sigmoid and lane sums run vectorised
// (measured: 7% of a step as scalar code).
// d, hs: the group's drive and hidden state (rows P floats apart); ob: its
// outputs [n, O], updated in place; ys: one-hot targets [n, O] (nudged) or
// null (free); residual: max|h[T] - h[T-1]| per sample, written.
template <int64_t PC, bool BND>
static void relax_group_(const Model& model, const float* d, float* hs, float* ob, int n, int64_t steps,
                        const float* ys, float* residual) {
  const float *W = model.W, *b2 = model.b2, *eps = model.eps;
  const int64_t P = model.P, H = model.H;
  const float eo = model.eo, g = model.g, be = model.be, slope = model.slope, bound = model.bound;
  constexpr int NQ = (GROUP * O + V - 1) / V * V;
  alignas(64) float os[NQ] = {}, zo[NQ] = {}, c[NQ] = {}, bq[NQ] = {}, ex[NQ] = {}, nz[NQ] = {}, yq[NQ] = {};
  alignas(64) vec acc[NQ];
  Residual res[GROUP];
  const int nq = n * O, nv = (nq + V - 1) / V * V;
  for (int q = 0; q < NQ; ++q) acc[q] = vec{};
  for (int q = 0; q < nq; ++q) { os[q] = ob[q]; bq[q] = b2[q % O]; if (ys) yq[q] = ys[q]; }
  for (int s = 0; s < n; ++s) {
    res[s] = Residual{vec{}, ivec{}};
    for (int64_t j0 = 0; j0 < H; j0 += TILE)                              // W2 h[0]
      output_tile<1, 10>(hs + s * P, W, P, j0, j0 + TILE < H ? j0 + TILE : H, 0, (vec (*)[O])(acc + s * O), j0 == 0);
  }
  for (int q = 0; q < nv; q += V) lane_sums(acc + q, bq + q, zo + q);
  for (int64_t t = 0; t < steps; ++t) {
    for (int q = 0; q < nq; ++q) c[q] = 0.f + g * os[q];   // 0 +: see hidden_tile
    if (t + 1 < steps) sweep<false, PC, BND>(d, hs, W, eps, P, H, n, (const float (*)[O])c, (vec (*)[O])acc, slope, bound, res);
    else sweep<true, PC, BND>(d, hs, W, eps, P, H, n, (const float (*)[O])c, (vec (*)[O])acc, slope, bound, res);
    for (int q = 0; q < nv; ++q) nz[q] = -zo[q];
    for (int q = 0; q < nv; q += EW) expw(nz + q, ex + q);
    for (int q = 0; q < nv; ++q) {           // o += eps_out (-o + sigma(z_o) [+ beta (y - o)])
      float dout = 1.f / (1.f + ex[q]) - os[q];
      if (ys) dout += be * (yq[q] - os[q]);
      os[q] += eo * dout;
    }
    for (int q = 0; q < nv; q += V) lane_sums(acc + q, bq + q, zo + q);   // z_o[t+1] = W2 h[t+1] + b2
  }
  for (int q = 0; q < nq; ++q) ob[q] = os[q];
  for (int s = 0; s < n; ++s) {
    float m = 0.f;
    bool nan = false;
    for (int i = 0; i < V; ++i) { m = res[s].r[i] > m ? res[s].r[i] : m; nan |= res[s].nan[i] != 0; }
    residual[s] = nan ? std::numeric_limits<float>::quiet_NaN() : m;
  }
}

struct Free { void operator()(float* p) const { std::free(p); } };
static std::unique_ptr<float, Free> padded(int64_t floats) {
  return std::unique_ptr<float, Free>((float*)std::aligned_alloc(64, ((floats * 4 + 63) / 64) * 64));
}

// drive, h: [M, B, H] (h empty: the zero state, set in cache instead of read);
// o: [M, B, O]; y: [M, B, O] or empty (no nudge).
//   relax:  `steps` steps; returns (h, o, r), r = max|h[T]-h[T-1]| per (m, b).
//   branch: `steps` free steps, then from that state t_nudge free steps and
//           t_nudge nudged steps (network.py's "branch" scheme); returns
//           (h0, o0, r0, hb, ob, rb). One call instead of three: each group's
//           drive and state are copied in once and stay in cache throughout.
//           With a scale [M], h0 is replaced by (hb - h0) scale[m]: the weight
//           update's factor, formed in cache instead of in a pass over memory.
// New tensors; the inputs are not modified.
static std::vector<torch::Tensor> run(torch::Tensor drive, torch::Tensor h_in, torch::Tensor o_in,
                                      torch::Tensor W2, torch::Tensor b2, torch::Tensor eps_hidden,
                                      torch::Tensor eps_out, torch::Tensor gamma, torch::Tensor beta,
                                      torch::Tensor bound, torch::Tensor y, int64_t steps, int64_t t_nudge,
                                      double slope, bool branch, torch::Tensor scale) {
  const int64_t M = drive.size(0), B = drive.size(1), H = drive.size(2);
  const bool zero_start = h_in.numel() == 0;
  TORCH_CHECK(o_in.size(2) == O && H % V == 0, "the fused kernel needs 10 outputs and a hidden size divisible by ", V);
  TORCH_CHECK(zero_start || h_in.sizes() == drive.sizes(), "h must have the shape of the drive, or be empty");
  TORCH_CHECK(slope >= 0 && slope <= 1, "the fused kernel needs 0 <= slope <= 1");
  TORCH_CHECK(steps >= 0 && t_nudge >= 0, "step counts must be >= 0");
  const int64_t P = H + PAD;
  const bool nudged = y.numel() > 0, scaled = scale.defined() && scale.numel() > 0;
  TORCH_CHECK(!scaled || (branch && scale.numel() == M), "a scale needs the branch scheme and one value per model");
  auto h = torch::empty_like(drive), o = o_in.clone();
  auto residual = torch::zeros({M, B}, drive.options());
  torch::Tensor hb, ob, rb;
  if (branch) hb = torch::empty_like(drive), ob = torch::empty_like(o_in), rb = torch::zeros({M, B}, drive.options());
  // W2 with padded rows, all models (M x 40 KB: copied once per call).
  auto Wp = padded(M * O * P);
  const float* W = W2.data_ptr<float>();
  for (int64_t r = 0; r < M * O; ++r) std::memcpy(Wp.get() + r * P, W + r * H, H * 4);
  const float *pd = drive.data_ptr<float>(), *pb = b2.data_ptr<float>(), *phi = zero_start ? nullptr : h_in.data_ptr<float>();
  const float *pe = eps_hidden.data_ptr<float>(), *peo = eps_out.data_ptr<float>();
  const float *pg = gamma.data_ptr<float>(), *pbeta = beta.data_ptr<float>(), *pbound = bound.data_ptr<float>();
  const float *py = nudged ? y.data_ptr<float>() : nullptr;
  float *ph = h.data_ptr<float>(), *po = o.data_ptr<float>(), *pr = residual.data_ptr<float>();
  float *phb = branch ? hb.data_ptr<float>() : nullptr, *pob = branch ? ob.data_ptr<float>() : nullptr;
  float *prb = branch ? rb.data_ptr<float>() : nullptr;
  const float* psc = scaled ? scale.data_ptr<float>() : nullptr;
  // Work items: groups of up to GROUP samples of one model, claimed
  // dynamically, so a thread the OS preempts delays only its current group.
  const int64_t per_model = (B + GROUP - 1) / GROUP, items = M * per_model;
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    // this group's drive and state (and the nudged branch's), padded rows
    auto dp = padded(GROUP * P), hp = padded(GROUP * P), hq = padded(branch ? GROUP * P : 0);
    for (int64_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < items; ) {
      const int64_t m = it / per_model, b0 = (it % per_model) * GROUP;
      const int n = (int)std::min<int64_t>(GROUP, B - b0);
      const int64_t i0 = m * B + b0;
      for (int s = 0; s < n; ++s) {
        std::memcpy(dp.get() + s * P, pd + (i0 + s) * H, H * 4);
        if (zero_start) std::memset(hp.get() + s * P, 0, H * 4);
        else std::memcpy(hp.get() + s * P, phi + (i0 + s) * H, H * 4);
      }
      const Model model{Wp.get() + m * O * P, pb + m * O, pe + m * H, P, H, peo[m], pg[m], pbeta[m], (float)slope,
                        pbound[m]};
      const float* ym = nudged ? py + i0 * O : nullptr;
      // the paper's hidden size with its stride fixed at compile time, any other with it at run time
      const bool bnd = std::isfinite(pbound[m]);
      const auto relax_group = P == 1024 + PAD ? (bnd ? relax_group_<1024 + PAD, true> : relax_group_<1024 + PAD, false>)
                                               : (bnd ? relax_group_<0, true> : relax_group_<0, false>);
      if (!branch) {
        relax_group(model, dp.get(), hp.get(), po + i0 * O, n, steps, ym, pr + i0);
      } else {
        relax_group(model, dp.get(), hp.get(), po + i0 * O, n, steps, nullptr, pr + i0);   // to the branch point
        std::memcpy(hq.get(), hp.get(), n * P * 4);
        std::memcpy(pob + i0 * O, po + i0 * O, n * O * 4);
        relax_group(model, dp.get(), hp.get(), po + i0 * O, n, t_nudge, nullptr, pr + i0);   // free: h0, o0
        relax_group(model, dp.get(), hq.get(), pob + i0 * O, n, t_nudge, ym, prb + i0);      // nudged: hb, ob
        for (int s = 0; s < n; ++s) std::memcpy(phb + (i0 + s) * H, hq.get() + s * P, H * 4);
      }
      if (scaled) {
        const float sc = psc[m];
        for (int s = 0; s < n; ++s) {
          const float *a = hq.get() + s * P, *b = hp.get() + s * P;
          float* out = ph + (i0 + s) * H;
          for (int64_t j = 0; j < H; ++j) out[j] = (a[j] - b[j]) * sc;
        }
      } else {
        for (int s = 0; s < n; ++s) std::memcpy(ph + (i0 + s) * H, hp.get() + s * P, H * 4);
      }
    }
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), items);
  if (threads <= 1) work();
  else at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { work(); });
  if (branch) return {h, o, residual, hb, ob, rb};
  return {h, o, residual};
}

std::vector<torch::Tensor> relax(torch::Tensor drive, torch::Tensor h_in, torch::Tensor o_in,
                                 torch::Tensor W2, torch::Tensor b2, torch::Tensor eps_hidden,
                                 torch::Tensor eps_out, torch::Tensor gamma, torch::Tensor beta,
                                 torch::Tensor bound, torch::Tensor y, int64_t steps, double slope) {
  return run(drive, h_in, o_in, W2, b2, eps_hidden, eps_out, gamma, beta, bound, y, steps, 0, slope, false,
             torch::Tensor());
}

std::vector<torch::Tensor> branch(torch::Tensor drive, torch::Tensor h_in, torch::Tensor o_in,
                                  torch::Tensor W2, torch::Tensor b2, torch::Tensor eps_hidden,
                                  torch::Tensor eps_out, torch::Tensor gamma, torch::Tensor beta,
                                  torch::Tensor bound, torch::Tensor y, int64_t t_branch, int64_t t_nudge,
                                  double slope, torch::Tensor scale) {
  return run(drive, h_in, o_in, W2, b2, eps_hidden, eps_out, gamma, beta, bound, y, t_branch, t_nudge, slope,
             true, scale);
}

// The multiply-add peak of this build's vectors on `threads` threads: each runs
// 12 independent chains of vector FMAs on registers (no memory: more chains
// than the ports times their latency) for `seconds`. Returns GFLOP/s, 2 per
// lane and FMA: the ceiling the relaxation's multiply-adds share with its other
// vector operations (benchmarks/bench_relax.py sets the kernel against it).
double fma_peak(double seconds, int64_t threads) {
  TORCH_CHECK(seconds > 0 && threads >= 1 && threads <= at::get_num_threads(),
              "fma_peak needs seconds > 0 and 1 <= threads <= torch's thread count (", at::get_num_threads(), ")");
  constexpr int CHAINS = 12;
  constexpr int64_t CHUNK = 1 << 14;
  std::atomic<int64_t> iterations{0};
  std::atomic<uint32_t> sink{0};
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&]() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  at::parallel_for(0, threads, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      vec a[CHAINS], x = vec{} + 0.999f, y = vec{} + 1e-3f;
      for (int i = 0; i < CHAINS; ++i) a[i] = vec{} + (float)i;
      IN_REGISTER(x);
      IN_REGISTER(y);
      int64_t n = 0;
      do {
        for (int64_t it = 0; it < CHUNK; ++it) {
          #pragma GCC unroll 12
          for (int i = 0; i < CHAINS; ++i) a[i] = a[i] * x + y;
        }
        n += CHUNK;
      } while (elapsed() < seconds);
      float z = 0.f;
      for (int i = 0; i < CHAINS; ++i) z += a[i][0];
      uint32_t u;
      std::memcpy(&u, &z, 4);
      sink += u;                      // the chains' results are used: not optimised away
      iterations += n;
    }
  });
  return (double)iterations * CHAINS * V * 2 / elapsed() / 1e9;
}

// How many floats x, among the bit patterns lo, lo + stride, ... below hi,
// get a different expw(x) from std::exp(x) (any bit; NaN for NaN agrees).
int64_t exp_mismatches(int64_t lo, int64_t hi, int64_t stride) {
  TORCH_CHECK(0 <= lo && lo < hi && hi <= (int64_t(1) << 32) && stride > 0, "bad bit-pattern range");
  int64_t bad = 0;
  alignas(64) float x[EW], y[EW];
  for (int64_t b = lo; b < hi; b += EW * stride) {
    for (int i = 0; i < EW; ++i) { uint32_t u = (uint32_t)std::min<int64_t>(b + i * stride, hi - 1); std::memcpy(x + i, &u, 4); }
    expw(x, y);
    for (int i = 0; i < EW; ++i) {
      const float e = std::exp(x[i]);
      uint32_t u, v;
      std::memcpy(&u, &e, 4);
      std::memcpy(&v, y + i, 4);
      bad += u != v && !(e != e && y[i] != y[i]);
    }
  }
  return bad;
}

// lane_sums against the scalar loop it replaces (b + a[0] + a[1] + ... in
// lane order, from 0): how many of `rounds` x V sums differ in any bit, and,
// to show the data can tell orders apart, how many differ from the sum in
// reverse lane order. Lanes of wildly different magnitudes and signs (a fixed
// xorshift sequence, the seed one argument).
std::tuple<int64_t, int64_t> lane_sum_mismatches(int64_t rounds, int64_t seed) {
  uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)seed;
  auto next = [&x]() { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x; };
  int64_t bad = 0, reversed = 0;
  alignas(64) vec a[V];
  alignas(64) float b[V], z[V];
  for (int64_t r = 0; r < rounds; ++r) {
    for (int q = 0; q < V; ++q) {
      b[q] = std::ldexp(float(int64_t(next() % 2001) - 1000), int(next() % 40) - 30);
      for (int i = 0; i < V; ++i) a[q][i] = std::ldexp(float(int64_t(next() % 2001) - 1000), int(next() % 40) - 30);
    }
    lane_sums(a, b, z);
    for (int q = 0; q < V; ++q) {
      float fwd = 0.f, rev = 0.f;
      for (int i = 0; i < V; ++i) fwd += a[q][i];
      for (int i = V - 1; i >= 0; --i) rev += a[q][i];
      fwd = b[q] + fwd;
      rev = b[q] + rev;
      uint32_t u, v, w;
      std::memcpy(&u, &fwd, 4); std::memcpy(&v, z + q, 4); std::memcpy(&w, &rev, 4);
      bad += u != v;
      reversed += w != v;
    }
  }
  return {bad, reversed};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("relax", &relax);
  m.def("branch", &branch);
  m.def("exp_mismatches", &exp_mismatches);
  m.def("lane_sum_mismatches", &lane_sum_mismatches);
  m.def("fma_peak", &fma_peak);
  m.attr("vector_expf") = bool(VECTOR_EXPF);   // false: expw is std::exp, nothing to compare
  m.attr("lanes") = V;                           // floats per vector in this build
}
