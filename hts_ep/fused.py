"""Fused CPU relaxation: every step of a phase in one C++ loop, in cache.

Relaxation is independent per sample, so instead of sweeping the whole
[M, B, H] state through memory once per step and per elementwise op (what
eager PyTorch does), a thread takes 16 samples of one model and runs every
step of the phase on them. Each step goes over the hidden neurons in tiles of
512: for 3 samples at a time (4 with AVX-512) it updates the tile,
h += eps (-h + phi(d + gamma W2^T o)), then adds the tile's share of W2 h
while the tile and its 20 KiB of W2 are in L1. Every vector of W2 loaded into
a register serves those 3 or 4 samples at once, and rows are copied with one
cache line of padding, so that the rows of W2, the drive and the state, 4 KiB
apart otherwise, do not compete for the same L1 sets. The arithmetic is the
synchronous Euler update of `Ensemble.relax`, with the sums in the order of
the one-sample-at-a-time kernel it replaced (bit for bit the same states, so
records made before keep their NUMERICS_VERSION); against the PyTorch path
only the order of the sums in W2^T o and W2 h differs (float32 rounding, ~1e-7
on the states).
benchmarks/bench_relax.py times it against a plain PyTorch implementation and
against the machine's own matrix-product rate.

Built once per machine with torch's C++ extension loader (needs a C++
compiler and ninja) for the CPU it runs on (-march=native: AVX2 or AVX-512
vectors, keyed by the CPU's feature flags) and cached on disk under
$TORCH_EXTENSIONS_DIR, so later processes load it in a fraction of a second.
Set HTS_EP_KERNEL=torch to use the plain PyTorch path instead (see
config.KERNELS); if the build fails, that path is used with a warning.
"""
import hashlib
import os
import platform
import time
import warnings

import torch

from .config import kernel_choice

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cmath>
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
constexpr int V = 8, ZS = 3, ZU = 4, ZK1 = 4, ZK2 = 4, ZK3 = 2;
#endif
constexpr int O = 10;
// Rows of W2, of the drive and of the state are H floats apart; for H = 1024
// that is 4 KiB, so element j of every row falls into the same L1 cache set
// and the 10 + 2 ZS rows one block touches evict each other (8-way L1).
// Copies padded by one cache line per row spread them over the sets: the
// largest single gain measured (1.3x).
constexpr int64_t PAD = 64 / sizeof(float);
constexpr int GROUP = 16;      // samples of one model per work item (W2 read once for all)
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
#define IN_REGISTER(x) asm("" : "+x"(x))

// Hidden update of S samples (rows P floats apart) on neurons [j0, j1), U vectors at a time:
//   h[t+1] = h[t] + eps (-h[t] + phi(d + W2^T c)),   c = gamma o[t]   (per sample)
template <int S, int U, bool RES>
static inline __attribute__((always_inline)) void hidden_tile(
    const float* d, float* hs, const float* W, const float* eps, int64_t P, int64_t j0, int64_t j1,
    const float (*c)[O], float slope, Residual* res) {
  for (int64_t j = j0; j < j1; j += U * V) {
    vec z[S][U];
    #pragma GCC unroll 8
    for (int s = 0; s < S; ++s)
      #pragma GCC unroll 8
      for (int u = 0; u < U; ++u) z[s][u] = *(const vec*)(d + s * P + j + u * V);       // W1 x + b1
    #pragma GCC unroll 10
    for (int k = 0; k < O; ++k) {
      vec cb[S];
      #pragma GCC unroll 8
      for (int s = 0; s < S; ++s) cb[s] = vec{} + c[s][k];
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
        const vec p = zz > sz ? zz : sz;            // leaky ReLU for 0 <= slope <= 1; NaN stays NaN
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

// acc[s][k0 .. k0+K) += W2[k0 .. k0+K, j0:j1] h_s[j0:j1], lane by lane.
template <int S, int K>
static inline __attribute__((always_inline)) void output_tile(
    const float* hs, const float* W, int64_t P, int64_t j0, int64_t j1, int k0, vec (*acc)[O]) {
  vec a[S][K];
  #pragma GCC unroll 8
  for (int s = 0; s < S; ++s)
    #pragma GCC unroll 10
    for (int k = 0; k < K; ++k) a[s][k] = acc[s][k0 + k];
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
template <int S, int U, int K1, int K2, int K3, bool RES>
static __attribute__((noinline)) void tile_step(const float* d, float* hs, const float* W, const float* eps, int64_t P,
                             int64_t j0, int64_t j1, const float (*c)[O], vec (*acc)[O], float slope,
                             Residual* res) {
  hidden_tile<S, U, RES>(d, hs, W, eps, P, j0, j1, c, slope, res);
  output_tile<S, K1>(hs, W, P, j0, j1, 0, acc);
  if constexpr (K2 > 0) output_tile<S, K2>(hs, W, P, j0, j1, K1, acc);
  if constexpr (K3 > 0) output_tile<S, K3>(hs, W, P, j0, j1, K1 + K2, acc);
}

template <bool RES>
static inline void sweep(const float* d, float* hs, const float* W, const float* eps, int64_t P, int64_t H,
                         int n, const float (*c)[O], vec (*acc)[O], float slope, Residual* res) {
  for (int64_t j0 = 0; j0 < H; j0 += TILE) {
    const int64_t j1 = j0 + TILE < H ? j0 + TILE : H;
    // whole register blocks first, then single vectors (hidden sizes that are not a multiple)
    const int64_t jm = j0 + (j1 - j0) / (ZU * V) * (ZU * V), jr = j0 + (j1 - j0) / (2 * ZU * V) * (2 * ZU * V);
    int s = 0;
    for (; s + ZS <= n; s += ZS) {
      tile_step<ZS, ZU, ZK1, ZK2, ZK3, RES>(d + s * P, hs + s * P, W, eps, P, j0, jm, c + s, acc + s, slope, res + s);
      if (jm < j1) tile_step<ZS, 1, ZK1, ZK2, ZK3, RES>(d + s * P, hs + s * P, W, eps, P, jm, j1, c + s, acc + s, slope, res + s);
    }
    for (; s < n; ++s) {     // the group's last n % ZS samples, one at a time
      tile_step<1, 2 * ZU, 5, 5, 0, RES>(d + s * P, hs + s * P, W, eps, P, j0, jr, c + s, acc + s, slope, res + s);
      if (jr < j1) tile_step<1, 1, 5, 5, 0, RES>(d + s * P, hs + s * P, W, eps, P, jr, j1, c + s, acc + s, slope, res + s);
    }
  }
}

// n <= GROUP samples of one model through `steps` Euler steps. The output layer
// (O scalars per sample) is updated from o[t] and z_o[t] = W2 h[t] + b2 after
// the sweep has produced W2 h[t+1]: the synchronous update of network.py.
static void relax_group(const float* d, float* hs, float* ob, const float* W, const float* b2,
                        const float* eps, int64_t P, int64_t H, int n, int64_t steps, float eo, float g,
                        float be, const float* ys, float slope, float* residual) {
  float os[GROUP][O], zo[GROUP][O], c[GROUP][O];
  vec acc[GROUP][O];
  Residual res[GROUP];
  for (int s = 0; s < n; ++s) {
    for (int k = 0; k < O; ++k) acc[s][k] = vec{};
    res[s] = Residual{vec{}, ivec{}};
    for (int64_t j0 = 0; j0 < H; j0 += TILE)                              // W2 h[0]
      output_tile<1, 5>(hs + s * P, W, P, j0, j0 + TILE < H ? j0 + TILE : H, 0, acc + s),
      output_tile<1, 5>(hs + s * P, W, P, j0, j0 + TILE < H ? j0 + TILE : H, 5, acc + s);
    for (int k = 0; k < O; ++k) { os[s][k] = ob[s * O + k]; zo[s][k] = b2[k] + lane_sum(acc[s][k]); }
  }
  for (int64_t t = 0; t < steps; ++t) {
    for (int s = 0; s < n; ++s)
      for (int k = 0; k < O; ++k) { c[s][k] = g * os[s][k]; acc[s][k] = vec{}; }
    if (t + 1 < steps) sweep<false>(d, hs, W, eps, P, H, n, c, acc, slope, res);
    else sweep<true>(d, hs, W, eps, P, H, n, c, acc, slope, res);
    for (int s = 0; s < n; ++s)
      for (int k = 0; k < O; ++k) {        // o += eps_out (-o + sigma(z_o) [+ beta (y - o)])
        float dout = 1.f / (1.f + std::exp(-zo[s][k])) - os[s][k];
        if (ys) dout += be * (ys[s * O + k] - os[s][k]);
        os[s][k] += eo * dout;
        zo[s][k] = b2[k] + lane_sum(acc[s][k]);   // z_o[t+1] = W2 h[t+1] + b2
      }
  }
  for (int s = 0; s < n; ++s) {
    for (int k = 0; k < O; ++k) ob[s * O + k] = os[s][k];
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

// drive, h: [M, B, H]; o: [M, B, O]. Returns (h, o) after `steps` steps (new
// tensors; the inputs are not modified) and max|h[T]-h[T-1]| per (m, b).
std::vector<torch::Tensor> relax(torch::Tensor drive, torch::Tensor h_in, torch::Tensor o_in,
                                 torch::Tensor W2, torch::Tensor b2, torch::Tensor eps_hidden,
                                 torch::Tensor eps_out, torch::Tensor gamma, torch::Tensor beta,
                                 torch::Tensor y, int64_t steps, double slope) {
  const int64_t M = h_in.size(0), B = h_in.size(1), H = h_in.size(2);
  TORCH_CHECK(o_in.size(2) == O && H % V == 0, "the fused kernel needs 10 outputs and a hidden size divisible by ", V);
  TORCH_CHECK(slope >= 0 && slope <= 1, "the fused kernel needs 0 <= slope <= 1");
  const int64_t P = H + PAD;
  const bool nudged = y.numel() > 0;
  auto h = torch::empty_like(h_in), o = o_in.clone();
  auto residual = torch::zeros({M, B}, h_in.options());
  // W2 with padded rows, all models (M x 40 KB: copied once per call).
  auto Wp = padded(M * O * P);
  const float* W = W2.data_ptr<float>();
  for (int64_t r = 0; r < M * O; ++r) std::memcpy(Wp.get() + r * P, W + r * H, H * 4);
  const float *pd = drive.data_ptr<float>(), *pb = b2.data_ptr<float>(), *phi = h_in.data_ptr<float>();
  const float *pe = eps_hidden.data_ptr<float>(), *peo = eps_out.data_ptr<float>();
  const float *pg = gamma.data_ptr<float>(), *pbeta = beta.data_ptr<float>();
  const float *py = nudged ? y.data_ptr<float>() : nullptr;
  float *ph = h.data_ptr<float>(), *po = o.data_ptr<float>(), *pr = residual.data_ptr<float>();
  // Work items: groups of up to GROUP samples of one model, claimed
  // dynamically, so a thread the OS preempts delays only its current group.
  const int64_t per_model = (B + GROUP - 1) / GROUP, items = M * per_model;
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    auto dp = padded(GROUP * P), hp = padded(GROUP * P);   // this group's drive and state, padded rows
    for (int64_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < items; ) {
      const int64_t m = it / per_model, b0 = (it % per_model) * GROUP;
      const int n = (int)std::min<int64_t>(GROUP, B - b0);
      const int64_t i0 = m * B + b0;
      for (int s = 0; s < n; ++s) {
        std::memcpy(dp.get() + s * P, pd + (i0 + s) * H, H * 4);
        std::memcpy(hp.get() + s * P, phi + (i0 + s) * H, H * 4);
      }
      relax_group(dp.get(), hp.get(), po + i0 * O, Wp.get() + m * O * P, pb + m * O, pe + m * H, P, H, n,
                  steps, peo[m], pg[m], pbeta[m], nudged ? py + i0 * O : nullptr, (float)slope, pr + i0);
      for (int s = 0; s < n; ++s) std::memcpy(ph + (i0 + s) * H, hp.get() + s * P, H * 4);
    }
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), items);
  if (threads <= 1) work();
  else at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { work(); });
  return {h, o, residual};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("relax", &relax); }
"""

_module = None
_failed = False
_build_seconds = None


CFLAGS = ["-O3", "-march=native", "-fopenmp"]


def _cpu():
    """The build target: -march=native code must not be loaded on another CPU."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            return platform.processor() + f.read().split("flags", 1)[-1][:2000]
    return platform.processor()


def source_tag():
    """Names the kernel build: source, CPU, torch and flags (also keys hts_ep.speed's cache).

    torch's location too: the build's include paths point into it, and two
    environments sharing one build folder would rebuild it in turn."""
    if kernel_choice() != "auto":
        return f"kernel={kernel_choice()}"
    return hashlib.sha1((SOURCE + _cpu() + torch.__version__ + torch.__file__ + " ".join(CFLAGS)).encode()
                        ).hexdigest()[:10]


def _build():
    from torch.utils.cpp_extension import load_inline
    return load_inline(name=f"hts_ep_fused_{source_tag()}", cpp_sources=SOURCE, extra_cflags=CFLAGS,
                       extra_ldflags=["-fopenmp"], verbose=False)


def build_seconds():
    """Seconds the first available() call took to build or load the kernel (None before it)."""
    return _build_seconds


def available():
    """Whether the fused kernel is in use (building it on first call)."""
    global _module, _failed, _build_seconds
    if kernel_choice() != "auto":
        return False
    if _module is None and not _failed:
        start = time.perf_counter()
        try:
            _module = _build()
            _build_seconds = time.perf_counter() - start
        except Exception as error:  # no compiler, no ninja, read-only cache ...
            _failed = True
            warnings.warn(f"fused CPU kernel unavailable ({error}); using the PyTorch path")
    return _module is not None


def supports(drive, o, slope):
    """The kernel covers CPU float32, 10 outputs, hidden size a multiple of 16 and a
    leaky-ReLU slope in [0, 1] (the paper's network)."""
    return (drive.device.type == "cpu" and drive.dtype == torch.float32 and o.shape[-1] == 10
            and drive.shape[-1] % 16 == 0 and 0 <= slope <= 1 and available())


def relax(ens, drive, h, o, steps, y=None):
    """Same contract as `Ensemble.relax`, on CPU float32 tensors."""
    y = torch.empty(0) if y is None else y.contiguous()
    M = len(ens)
    h, o, residual = _module.relax(drive.contiguous(), h.contiguous(), o.contiguous(), ens.W2.contiguous(), ens.b2.contiguous(),
                             ens.eps_hidden.reshape(M, -1).contiguous(), ens.eps_out.reshape(M).contiguous(),
                             ens.gamma.reshape(M).contiguous(), ens.beta.reshape(M).contiguous(),
                             y, steps, ens.slope)
    return h, o, residual.amax(1)
