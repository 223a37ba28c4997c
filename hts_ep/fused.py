"""Fused CPU relaxation: all steps of one sample in cache, one C++ loop.

Relaxation is independent per sample, so instead of sweeping the whole
[M, B, H] state through memory once per step and per elementwise op (what
eager PyTorch does), this kernel takes one (model, sample) pair at a time
and runs every step of the phase on its 1024 hidden states, which stay in
cache with W2 (40 KB) and the sample's drive. The arithmetic is the same
synchronous Euler update as `Ensemble.relax`; only the order of the sums in
W2^T o and W2 h differs (float32 rounding, ~1e-7 on the states). The inner
loop handles 8 blocks of 16 neurons at a time so that their sums form
independent dependency chains (see `step` in SOURCE); benchmarks/bench_relax.py
times it against a plain PyTorch implementation.

Built once per machine with torch's C++ extension loader (needs a C++
compiler and ninja) and cached on disk under $TORCH_EXTENSIONS_DIR, so later
processes load it in a fraction of a second. Set HTS_EP_KERNEL=torch to
use the plain PyTorch path instead (see config.KERNELS); if the build fails,
that path is used with a warning.
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
#include <limits>
#include <type_traits>

// GCC/Clang vector extensions: the widest vector the build target has,
// without intrinsics, so the same source builds on any x86 or Arm CPU.
#if defined(__AVX512F__)
constexpr int V = 16;
#else
constexpr int V = 8;
#endif
typedef float vec __attribute__((vector_size(V * 4), aligned(4)));

// Lane sums: out[k] = sum of the V lanes of acc[k].
template <int O>
static inline void lane_sums(const vec (&acc)[O], float* out) {
  for (int k = 0; k < O; ++k) {
    float z = 0.f;
    for (int i = 0; i < V; ++i) z += acc[k][i];
    out[k] = z;
  }
}

// One synchronous Euler step of one sample's hidden layer:
//   h[t+1] = h[t] + eps * (-h[t] + phi(d + W2^T c)),   c = gamma * o[t]
// and, from the new state, wh = W2 h[t+1] (the output drive of the next step).
// W2 is read twice per block of V neurons (for z_h, then for W2 h[t+1]), from
// L1. U blocks per iteration with the loop over k outside the loop over blocks:
// the U sums z_h are independent dependency chains. A one-block loop (the
// previous kernel) is one chain of O dependent FMAs per block, whose latency
// the out-of-order window could not hide: about 1.7x slower. O broadcast
// constants, O accumulators and U = 8 blocks fit AVX-512's 32 vector registers
// without spills (checked with g++ -S); with 16 registers (AVX2) it spills but
// still beats one block.
// RES: also return max|h[t+1] - h[t]| (asked for at the last step only).
template <int O, int U, bool RES>
static inline __attribute__((always_inline)) void step(
    const float* __restrict d, float* __restrict hs, const float* __restrict W,
    const float* __restrict eps, int64_t H, const float* c, float* wh, float* res, float slope) {
  vec acc[O], cv[O], r = vec{};
  bool nan = false;
  for (int k = 0; k < O; ++k) { acc[k] = vec{}; cv[k] = vec{} + c[k]; }
  int64_t j = 0;
  auto blocks = [&](auto n) {
    constexpr int N = decltype(n)::value;
    vec z[N];
    #pragma GCC unroll 8
    for (int u = 0; u < N; ++u) z[u] = *(const vec*)(d + j + u * V);         // W1 x + b1
    #pragma GCC unroll 16
    for (int k = 0; k < O; ++k)
      #pragma GCC unroll 8
      for (int u = 0; u < N; ++u) z[u] += cv[k] * *(const vec*)(W + k * H + j + u * V);  // + gamma W2^T o[t]
    #pragma GCC unroll 8
    for (int u = 0; u < N; ++u) {
      const vec p = z[u] > 0.f ? z[u] : slope * z[u];                       // phi = leaky ReLU
      const vec h = *(const vec*)(hs + j + u * V);
      const vec dh = (p - h) * *(const vec*)(eps + j + u * V);            // eps_hidden (-h + phi)
      z[u] = h + dh;                                                      // h[t+1]
      *(vec*)(hs + j + u * V) = z[u];
      if (RES) {
        const vec a = dh < 0.f ? -dh : dh;
        r = a > r ? a : r;
        for (int i = 0; i < V; ++i) nan |= a[i] != a[i];
      }
    }
    #pragma GCC unroll 16
    for (int k = 0; k < O; ++k)
      #pragma GCC unroll 8
      for (int u = 0; u < N; ++u) acc[k] += *(const vec*)(W + k * H + j + u * V) * z[u];  // W2 h[t+1]
  };
  for (; j + U * V <= H; j += U * V) blocks(std::integral_constant<int, U>{});
  for (; j < H; j += V) blocks(std::integral_constant<int, 1>{});
  lane_sums<O>(acc, wh);
  if (RES) {
    float m = 0.f;
    for (int i = 0; i < V; ++i) m = r[i] > m ? r[i] : m;
    *res = nan ? std::numeric_limits<float>::quiet_NaN() : m;
  }
}

// One sample of one model through `steps` Euler steps; its hidden state (H
// floats), W2 (O*H) and the drive stay in L1/L2 cache throughout. The output
// layer (O scalars) is updated from o[t] and z_o[t] = W2 h[t] + b2 after the
// hidden sweep has produced W2 h[t+1]: the synchronous update of network.py.
template <int O, int U>
void relax_sample(const float* d, float* hs, float* ob, const float* W, const float* b2,
                  const float* eps, int64_t H, int64_t steps, float eo, float g,
                  float be, const float* ys, float slope, float* res) {
  float os[O], zo[O], c[O], wh[O];
  {
    vec acc[O];
    for (int k = 0; k < O; ++k) acc[k] = vec{};
    for (int64_t j = 0; j < H; j += V) {
      const vec h = *(const vec*)(hs + j);
      #pragma GCC unroll 16
      for (int k = 0; k < O; ++k) acc[k] += *(const vec*)(W + k * H + j) * h;
    }
    lane_sums<O>(acc, wh);
  }
  for (int k = 0; k < O; ++k) { os[k] = ob[k]; zo[k] = b2[k] + wh[k]; }       // z_o = W2 h[0] + b2
  *res = 0.f;
  for (int64_t t = 0; t < steps; ++t) {
    for (int k = 0; k < O; ++k) c[k] = g * os[k];
    if (t + 1 < steps) step<O, U, false>(d, hs, W, eps, H, c, wh, res, slope);
    else step<O, U, true>(d, hs, W, eps, H, c, wh, res, slope);
    for (int k = 0; k < O; ++k) {          // o += eps_out (-o + sigma(z_o) [+ beta (y - o)])
      float dout = 1.f / (1.f + std::exp(-zo[k])) - os[k];
      if (ys) dout += be * (ys[k] - os[k]);
      os[k] += eo * dout;
      zo[k] = b2[k] + wh[k];               // z_o[t+1] = W2 h[t+1] + b2
    }
  }
  for (int k = 0; k < O; ++k) ob[k] = os[k];
}

// h, o: [M, B, H], [M, B, O], updated in place; returns max|h[T]-h[T-1]| per (m, b).
torch::Tensor relax(torch::Tensor drive, torch::Tensor h, torch::Tensor o,
                    torch::Tensor W2, torch::Tensor b2, torch::Tensor eps_hidden,
                    torch::Tensor eps_out, torch::Tensor gamma, torch::Tensor beta,
                    torch::Tensor y, int64_t steps, double slope) {
  const int64_t M = h.size(0), B = h.size(1), H = h.size(2), O = o.size(2);
  TORCH_CHECK(O == 10 && H % V == 0, "the fused kernel needs 10 outputs and a hidden size divisible by ", V);
  const bool nudged = y.numel() > 0;
  auto residual = torch::zeros({M, B}, h.options());
  const float *pd = drive.data_ptr<float>(), *pW = W2.data_ptr<float>(), *pb = b2.data_ptr<float>();
  const float *pe = eps_hidden.data_ptr<float>(), *peo = eps_out.data_ptr<float>();
  const float *pg = gamma.data_ptr<float>(), *pbeta = beta.data_ptr<float>();
  const float *py = nudged ? y.data_ptr<float>() : nullptr;
  float *ph = h.data_ptr<float>(), *po = o.data_ptr<float>(), *pr = residual.data_ptr<float>();
  // Work items: chunks of CHUNK consecutive (model, sample) pairs, claimed
  // dynamically by the threads, so a thread the OS preempts (other work on the
  // machine) delays only its current chunk, not a fixed half of the batch.
  constexpr int64_t CHUNK = 2;
  const int64_t items = M * B, chunks = (items + CHUNK - 1) / CHUNK;
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (int64_t ch; (ch = next.fetch_add(1, std::memory_order_relaxed)) < chunks; )
      for (int64_t i = ch * CHUNK; i < std::min(items, (ch + 1) * CHUNK); ++i) {
        const int64_t m = i / B;
        relax_sample<10, UNROLL>(pd + i * H, ph + i * H, po + i * O, pW + m * O * H, pb + m * O,
                                 pe + m * H, H, steps, peo[m], pg[m], pbeta[m],
                                 nudged ? py + i * O : nullptr, (float)slope, pr + i);
      }
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), chunks);
  if (threads <= 1) work();
  else at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { work(); });
  return residual;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("relax", &relax); }
"""

# Blocks of V neurons per inner iteration (independent z_h chains); measured
# best on a 2-core AVX-512 Xeon (8 and 4 within noise, 1 about 1.7x slower).
UNROLL = 8
_module = None
_failed = False
_build_seconds = None


def _build():
    from torch.utils.cpp_extension import load_inline
    # -march=native code must not be loaded on another CPU: key the build by it.
    cpu = platform.processor() + open("/proc/cpuinfo").read().split("flags", 1)[-1][:2000] \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    unroll = int(os.environ.get("HTS_EP_UNROLL", UNROLL))
    cflags = ["-O3", "-march=native", "-fopenmp", f"-DUNROLL={unroll}"]
    # torch's location too: the build's include paths point into it, and two
    # environments sharing one build folder would rebuild it in turn.
    tag = hashlib.sha1((SOURCE + cpu + torch.__version__ + torch.__file__ + " ".join(cflags)).encode()
                       ).hexdigest()[:10]
    return load_inline(name=f"hts_ep_fused_{tag}", cpp_sources=SOURCE, extra_cflags=cflags,
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


def supports(drive, o):
    """The kernel covers CPU float32, 10 outputs, hidden size a multiple of 16 (the paper's network)."""
    return (drive.device.type == "cpu" and drive.dtype == torch.float32 and o.shape[-1] == 10
            and drive.shape[-1] % 16 == 0 and available())


def relax(ens, drive, h, o, steps, y=None):
    """Same contract as `Ensemble.relax`, on CPU float32 tensors."""
    h, o = h.contiguous().clone(), o.contiguous().clone()
    y = torch.empty(0) if y is None else y.contiguous()
    M = len(ens)
    residual = _module.relax(drive.contiguous(), h, o, ens.W2.contiguous(), ens.b2.contiguous(),
                             ens.eps_hidden.reshape(M, -1).contiguous(), ens.eps_out.reshape(M).contiguous(),
                             ens.gamma.reshape(M).contiguous(), ens.beta.reshape(M).contiguous(),
                             y, steps, ens.slope)
    return h, o, residual.amax(1)


def per_model_bytes(config, batch):
    """Memory one model of an ensemble needs, in bytes, for a batch of `batch` samples.

    Weights and time steps (W1, b1, W2, b2, eps_hidden: 4 (H n_in + O H + 2 H + O)),
    plus the training step's live tensors at its peak, per model: its gathered
    input x (B n_in), one-hot y (B O) and 7 [B, H] float32 tensors. The fused
    and Triton paths peak at 5 (drive, zero state, free and nudged states,
    hb - h0), the PyTorch path (HTS_EP_KERNEL=torch) at 6 (two states of the
    running step plus the step's temporary), and one more is margin. Measured peaks
    (benchmarks/bench_relax.py) stay below this. Not counted: data sets held
    on the device (shared by all models), the allocator's caching slack on
    CUDA, and evaluation batches larger than `batch` (train.evaluate uses 1000:
    pass the larger of the two).
    """
    H, n_in, O, B = config.n_hidden, config.n_in, config.n_out, batch
    weights = 4 * (H * n_in + O * H + 2 * H + O)
    activations = 4 * B * (n_in + O + 7 * H + 4 * O)
    return weights + activations
