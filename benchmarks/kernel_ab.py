"""A/B timing of variants of the fused CPU kernel's C++ source, built standalone (no torch).

    .venv/bin/python benchmarks/kernel_ab.py [--mode relax|sweep] [--reps N] [VARIANT ...]

VARIANT: name=path[:old=>new;;old=>new...], the kernel's C++ source
(hts_ep/fused.cpp, or a copy of it; an older fused.py holding it in a SOURCE
string works too) with literal replacements applied; none given: the package's
own source, twice (an A/A run: how far apart two identical builds land).
Example, the register block of the hidden sweep:

    benchmarks/kernel_ab.py base=hts_ep/fused.cpp \\
        "s3u4=hts_ep/fused.cpp:ZS = 4, ZU = 4,=>ZS = 3, ZU = 4,"

Every variant goes into one binary (one namespace each, compiled with the
kernel's flags for this CPU) that times one group of 24 samples of the
paper's network (H = 1024, 10 outputs): `relax` runs relax_group for a
training batch's 137 steps, `sweep` the hidden sweep alone for as many
(fixed output layer). The variants take turns rep by rep, rotating which
goes first, and each rep's time is divided by the first variant's from the
same rep: on a shared machine whose speed drifts over seconds, these paired
ratios move far less than the times do (an A/A run lands within about 1%).
Beside them, the rate of a register-only multiply-add loop timed around each
call gives each variant's time in "slots" per 16-lane vector of state: how
many vector multiply-adds the core could have issued meanwhile (a step's
ideal is 24: 20 multiply-adds and 4 other vector operations, benchmarks/
bench_relax.py). The sweep mode calls the kernel's internal
sweep<RES, PC[, BND]>(...): a variant that changes that signature runs in relax
mode only. Results are checked, not just timed: each variant's final states
are summed into a checksum it prints (equal sums: most likely the same
arithmetic; the kernel's tests decide).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from hts_ep import fused  # noqa: E402

HEADERS = ["vector", "chrono", "cstdio", "algorithm", "atomic", "cmath", "cstdint", "cstdlib", "cstring",
           "limits", "memory"]

HARNESS = r"""
// the group the benchmark times: the paper's network, one work item of the kernel
static double run(int steps, int mode, double* checksum) {
  const int64_t H = 1024, P = H + PAD; const int n = GROUP;
  static float *W, *d, *hs, *eps; static bool init = false;
  alignas(64) static float c[GROUP][O]; alignas(64) static vec acc[GROUP][O]; static Residual rs[GROUP];
  static float b2[O], ob[GROUP * O], res[GROUP];
  if (!init) {
    init = true;
    W = (float*)aligned_alloc(64, O * P * 4); d = (float*)aligned_alloc(64, n * P * 4);
    hs = (float*)aligned_alloc(64, n * P * 4); eps = (float*)aligned_alloc(64, H * 4);
    uint32_t x = 12345; auto rnd = [&]() { x = x * 1664525u + 1013904223u; return (x >> 8) * (1.f / 16777216.f); };
    for (int i = 0; i < O * P; ++i) W[i] = (rnd() - 0.5f) * 0.1f;
    for (int i = 0; i < n * P; ++i) d[i] = rnd() - 0.4f;
    for (int i = 0; i < H; ++i) eps[i] = 0.1f + 0.4f * rnd();
    for (int k = 0; k < O; ++k) b2[k] = 0.f;
    for (int s = 0; s < n; ++s) for (int k = 0; k < O; ++k) { c[s][k] = 0.1f * rnd(); acc[s][k] = vec{}; }
  }
  const Model model{W, b2, eps, P, H, 0.2f, 0.5f, 0.5f, 0.01f};
  for (int i = 0; i < n * P; ++i) hs[i] = 0;
  for (int i = 0; i < n * O; ++i) ob[i] = 0;
  const auto t0 = std::chrono::steady_clock::now();
  if (mode == 0) RELAX_CALL;
  else SWEEP_CALL;
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double cs = 0;
  for (int s = 0; s < n; ++s) for (int64_t j = 0; j < H; ++j) cs += hs[s * P + j] * (1 + (j % 7));
  for (int i = 0; i < n * O; ++i) cs += ob[i];
  *checksum = cs;
  return t / ((double)steps * n * H / V);   // seconds per 16-lane (or 8-lane) vector of state
}
"""

MAIN = r"""
typedef float pvec __attribute__((vector_size(sizeof(FIRST::vec))));
__attribute__((noinline)) static double fma_seconds() {   // seconds per vector multiply-add, all issued
  pvec a[24];
  for (int i = 0; i < 24; ++i) a[i] = pvec{} + (float)i;
  pvec x = pvec{} + 0.999f, y = pvec{} + 1e-3f;
  asm("" : "+x"(x), "+x"(y));
  const long N = 20000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < N; ++i) {
    #pragma GCC unroll 24
    for (int k = 0; k < 24; ++k) a[k] = a[k] * x + y;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  static volatile float sink; float z = 0; for (int i = 0; i < 24; ++i) z += a[i][0]; sink = z;
  return s / (N * 24.0);
}
int main(int argc, char** argv) {
  const int mode = atoi(argv[1]), reps = atoi(argv[2]), nv = NV;
  const char* names[] = {NAMES};
  double (*fs[])(int, int, double*) = {FUNCS};
  const int widths[] = {WIDTHS};
  std::vector<std::vector<double>> ratio(nv), slots(nv);
  std::vector<double> best(nv, 1e9), sums(nv);
  for (int r = 0; r < reps; ++r) {
    std::vector<double> t(nv);
    for (int i = 0; i < nv; ++i) {
      const int v = (i + r) % nv;
      const double f0 = fma_seconds();
      t[v] = fs[v](137, mode, &sums[v]);
      const double f1 = fma_seconds();
      slots[v].push_back(t[v] / std::min(f0, f1));   // the loop's vectors are the first variant's width
      best[v] = std::min(best[v], t[v]);
    }
    for (int v = 0; v < nv; ++v) ratio[v].push_back(t[v] / t[0]);
  }
  for (int v = 0; v < nv; ++v) {
    std::sort(ratio[v].begin(), ratio[v].end());
    std::sort(slots[v].begin(), slots[v].end());
    printf("%-12s time / %s: median %.3f (quartiles %.3f %.3f); best %.3f ns per %d-lane vector, "
           "%.1f slots (median %.1f); checksum %.9g\n", names[v], names[0], ratio[v][reps / 2], ratio[v][reps / 4],
           ratio[v][3 * reps / 4], best[v] * 1e9, widths[v], slots[v][0], slots[v][reps / 2], sums[v]);
  }
}
"""


def variant_source(spec):
    """(name, C++ text) from name=path[:old=>new;;...]."""
    name, _, rest = spec.partition("=")
    path, _, replacements = rest.partition(":")
    if not re.fullmatch(r"[A-Za-z_]\w*", name) or not path:
        raise SystemExit(f"bad variant {spec!r}: expected name=path[:old=>new;;...], name a C++ identifier")
    text = Path(path).read_text()
    source = text.split('SOURCE = r"""', 1)[1].split('"""', 1)[0] if 'SOURCE = r"""' in text else text
    for rep in filter(None, replacements.split(";;")):
        old, sep, new = rep.partition("=>")
        if not sep or old not in source:
            raise SystemExit(f"variant {name}: replacement {old[:60]!r} not found in {path}")
        source = source.replace(old, new)
    source = re.sub(r"#include <[^>]+>\n", "", source.split("struct Free {")[0])
    return name, source


def build(variants, mode_sweep):
    head = "".join(f"#include <{h}>\n" for h in HEADERS) + "#if defined(__x86_64__)\n#include <immintrin.h>\n#endif\n"
    body = ""
    for name, src in variants:
        # the unbounded network (Config.h_bound None), where a source has the bound as a template parameter
        bnd, bound = (", false", ", INFINITY") if "bool BND>" in src else ("", "")
        relax = f"relax_group_<1024 + PAD{bnd}>(model, d, hs, ob, n, steps, nullptr, res)" if "relax_group_" in src \
            else "relax_group(model, d, hs, ob, n, steps, nullptr, res)"
        sweep = (f"for (int k = 0; k < steps; ++k) sweep<false, 1024 + PAD{bnd}>(d, hs, W, eps, P, H, n, c, acc, "
                 f"0.01f{bound}, rs)" if mode_sweep else "(void)0")
        # namespaces prefixed: a variant's name may be a C++ keyword
        body += (f"namespace v_{name} {{\n{src}\n" + HARNESS.replace("RELAX_CALL", relax).replace("SWEEP_CALL", sweep)
                 + "static const int width = V;\n}\n#undef IN_REGISTER\n#undef SHUFFLE\n#undef VECTOR_EXPF\n")
    names = [n for n, _ in variants]
    main = (MAIN.replace("NV", str(len(names))).replace("NAMES", ", ".join(f'"{n}"' for n in names))
            .replace("FUNCS", ", ".join(f"v_{n}::run" for n in names))
            .replace("WIDTHS", ", ".join(f"v_{n}::width" for n in names)).replace("FIRST", f"v_{names[0]}"))
    return head + body + main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="*", help="name=path[:old=>new;;...] (default: the package's source, twice)")
    p.add_argument("--mode", choices=["relax", "sweep"], default="relax")
    p.add_argument("--reps", type=int, default=100, help="reps per variant (default 100)")
    p.add_argument("--keep", help="also write the generated C++ to this path")
    args = p.parse_args(argv)
    if args.reps < 4:
        p.error("--reps must be >= 4 (quartiles)")
    specs = args.variants or [f"a={fused.SOURCE_PATH}", f"b={fused.SOURCE_PATH}"]
    variants = [variant_source(s) for s in specs]
    if len({n for n, _ in variants}) != len(variants):
        p.error("variant names must differ")
    cpp = build(variants, args.mode == "sweep")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "ab.cpp", Path(tmp) / "ab"
        src.write_text(cpp)
        if args.keep:
            Path(args.keep).write_text(cpp)
        flags = [f for f in fused.CFLAGS if f != "-fopenmp"]
        compiler = os.environ.get("CXX", "c++")
        done = subprocess.run([compiler, *flags, "-std=c++17", "-o", str(exe), str(src)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{compiler} failed to build the variants (mode {args.mode}); see above")
        out = subprocess.run([str(exe), "0" if args.mode == "relax" else "1", str(args.reps)],
                             capture_output=True, text=True, check=True).stdout
    print(f"mode {args.mode}, {args.reps} reps, {len(variants)} variants, alternating; "
          f"slots: vector multiply-adds the core could have issued in the time, per vector of state (ideal 24)")
    print(out, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
