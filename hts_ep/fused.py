"""Fused CPU relaxation: all steps of one sample in cache, one C++ loop.

Relaxation is independent per sample, so instead of sweeping the whole
[M, B, H] state through memory once per step and per elementwise op (what
eager PyTorch does), this kernel takes one (model, sample) pair at a time
and runs every step of the phase on its 1024 hidden states, which stay in L1
cache. The arithmetic is the same Euler update as `Ensemble.relax`.

Built once per machine with torch's C++ extension loader (needs a C++
compiler and ninja) and cached on disk under $TORCH_EXTENSIONS_DIR, so later
processes load it in a fraction of a second. Set HTS_EP_KERNEL=torch to
use the plain PyTorch path instead; if the build fails, that path is used
with a warning.
"""
import hashlib
import os
import platform
import warnings

import torch

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// GCC/Clang vector extensions: the widest vector the build target has,
// without intrinsics, so the same source builds on any x86 or Arm CPU.
#if defined(__AVX512F__)
constexpr int V = 16;
#else
constexpr int V = 8;
#endif
typedef float vec __attribute__((vector_size(V * 4), aligned(4)));

// S samples of one model through `steps` Euler steps, their states in cache.
// One pass over the hidden neurons per step updates h from z_h and, from the
// new h, accumulates z_o = W2 h + b2 for the next step (the synchronous update:
// step t reads o[t] and W2 h[t] only). The S samples share each load of W2,
// which is what limits the speed. O and S are template parameters so their
// loops unroll into registers. Sample s lives at offset s*H (s*O for o, y).
template <int O, int S>
void relax_tile(const float* d, float* hs, float* ob, const float* W, const float* b2,
                const float* eps, int64_t H, int64_t steps, float eo, float g,
                float be, const float* ys, float slope, float* res) {
  float os[S][O], zo[S][O];
  for (int s = 0; s < S; ++s)
    for (int k = 0; k < O; ++k) {
      os[s][k] = ob[s * O + k];
      float acc = 0.f;
      for (int64_t j = 0; j < H; ++j) acc += W[k * H + j] * hs[s * H + j];
      zo[s][k] = acc + b2[k];                            // z_o = W2 h[0] + b2
    }
  for (int64_t t = 0; t < steps; ++t) {
    vec c[S][O], acc[S][O], r[S];
    for (int s = 0; s < S; ++s) {
      r[s] = vec{};
      for (int k = 0; k < O; ++k) { c[s][k] = vec{} + g * os[s][k]; acc[s][k] = vec{}; }
    }
    for (int64_t j = 0; j < H; j += V) {
      const vec e = *(const vec*)(eps + j);
      #pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
        vec z = *(const vec*)(d + s * H + j);            // W1 x + b1
        #pragma GCC unroll 16
        for (int k = 0; k < O; ++k) z += c[s][k] * *(const vec*)(W + k * H + j);  // + gamma W2^T o[t]
        z = z > 0.f ? z : slope * z;                     // phi = leaky ReLU
        const vec h = *(vec*)(hs + s * H + j);
        const vec dh = (z - h) * e;                      // eps_hidden * (-h + phi(z_h))
        const vec hn = h + dh;
        *(vec*)(hs + s * H + j) = hn;
        const vec adh = dh < 0.f ? -dh : dh;
        r[s] = r[s] > adh ? r[s] : adh;
        #pragma GCC unroll 16
        for (int k = 0; k < O; ++k) acc[s][k] += *(const vec*)(W + k * H + j) * hn;  // W2 h[t+1]
      }
    }
    for (int s = 0; s < S; ++s) {
      res[s] = 0.f;
      for (int i = 0; i < V; ++i) res[s] = std::max(res[s], r[s][i]);
      for (int k = 0; k < O; ++k) {                      // o += eps_out (-o + sigma(z_o) [+ beta (y - o)])
        float dout = 1.f / (1.f + std::exp(-zo[s][k])) - os[s][k];
        if (ys) dout += be * (ys[s * O + k] - os[s][k]);
        os[s][k] += eo * dout;
        float z = b2[k];
        for (int i = 0; i < V; ++i) z += acc[s][k][i];
        zo[s][k] = z;
      }
    }
  }
  for (int s = 0; s < S; ++s)
    for (int k = 0; k < O; ++k) ob[s * O + k] = os[s][k];
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
  // Work items: tiles of TILE samples of one model (the last tile of a model may be smaller).
  constexpr int TILE = TILE_SIZE;
  const int64_t tiles = (B + TILE - 1) / TILE;
  at::parallel_for(0, M * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t m = it / tiles, b0 = (it % tiles) * TILE, mb = m * B + b0;
      const int64_t n = std::min<int64_t>(TILE, B - b0);
      for (int64_t s = 0; s < n; ) {
        const float* ys = nudged ? py + (mb + s) * O : nullptr;
        auto args = [&](auto f) {
          f(pd + (mb + s) * H, ph + (mb + s) * H, po + (mb + s) * O, pW + m * O * H, pb + m * O,
            pe + m * H, H, steps, peo[m], pg[m], pbeta[m], ys, (float)slope, pr + mb + s);
        };
        if (n - s >= TILE) { args(relax_tile<10, TILE>); s += TILE; }
        else { args(relax_tile<10, 1>); s += 1; }
      }
    }
  });
  return residual;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("relax", &relax); }
"""

# Samples per tile sharing each load of W2 (measured best on a 2-core AVX-512 Xeon).
TILE = 2
_module = None
_failed = False


def _build():
    from torch.utils.cpp_extension import load_inline
    # -march=native code must not be loaded on another CPU: key the build by it.
    cpu = platform.processor() + open("/proc/cpuinfo").read().split("flags", 1)[-1][:2000] \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    tile = int(os.environ.get("HTS_EP_TILE", TILE))
    tag = hashlib.sha1((SOURCE + cpu + torch.__version__ + str(tile)).encode()).hexdigest()[:10]
    return load_inline(name=f"hts_ep_fused_{tag}", cpp_sources=SOURCE,
                       extra_cflags=["-O3", "-march=native", "-fopenmp", f"-DTILE_SIZE={tile}"],
                       extra_ldflags=["-fopenmp"], verbose=False)


def available():
    """Whether the fused kernel is in use (building it on first call)."""
    global _module, _failed
    if os.environ.get("HTS_EP_KERNEL", "fused") == "torch":
        return False
    if _module is None and not _failed:
        try:
            _module = _build()
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
