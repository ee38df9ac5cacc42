"""The package's own steps on one GPU, against that GPU's measured rates.

On one device (mesh 1x1x1, every layout the same there) it times, with `tpuinfer.measure`:
- a decode step at batch 1 in bf16 and in int8: the weights read per second, as a fraction of
  the HBM read bandwidth measured here (a reduction over a large bf16 array), and int8's
  speed-up over bf16 (int8 halves the bytes read, if the dequantization fuses into the matmul);
- a prefill step: its matmul FLOPs per second, as a fraction of the bf16 matmul rate measured
  here (a large square matmul).
The targets of issue 15 are printed beside each figure: decode at batch 1 >= 85% of the HBM
bandwidth, int8 >= 1.6x bf16, prefill >= 80% of the matmul rate. With `--hardware NAME` the
cost model's prediction for that profile is printed beside each measured step.

Without a GPU it runs on the CPU with a small model and says so: the figures are then this
CPU's, and the targets do not apply.

    python benchmarks/bench_gpu.py [--model palm-8b] [--hardware PROFILE]
"""
import argparse

import jax
import jax.numpy as jnp

import tpuinfer as ti
from tpuinfer.calibrate import timed  # a warm-up, then the median of five calls
from tpuinfer.cost import estimate

MESH = (1, 1, 1)
LAYOUT = ti.Layout("ws1d", "heads")


def hbm_bytes_per_s(n_bytes: int) -> float:
    """Bytes per second of a sum over `n_bytes` of bf16 (each read once)."""
    x = jnp.ones(n_bytes // 2, jnp.bfloat16)
    return n_bytes / timed(jax.jit(lambda x: jnp.sum(x, dtype=jnp.float32)), x)


def matmul_flops_per_s(n: int) -> float:
    """FLOP/s of an [n, n] x [n, n] bf16 matmul, accumulated in f32."""
    a = jnp.ones((n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    return 2 * n**3 / timed(mm, a, a)


def step(model, phase, weights, batch, context, repeats):
    return ti.measure(model, MESH, LAYOUT, phase=phase, batch=batch,
                      tokens=context if phase == "prefill" else None, context=context,
                      weights=weights, repeats=repeats)


def predicted(args, m) -> str:
    if not args.hardware:
        return ""
    e = estimate(m.model, LAYOUT, MESH, batch=m.batch, tokens=m.tokens, context=m.context,
                 weights=m.weights, hardware=args.hardware)
    return f"; {args.hardware} predicted {e.step_s * 1e3:.3f} ms ({e.rule})"


def main(argv=None):
    on_gpu = jax.default_backend() == "gpu"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="palm-8b" if on_gpu else "mini")
    p.add_argument("--context", type=int, default=128, help="decode: cache positions")
    p.add_argument("--prefill-batch", type=int, default=8 if on_gpu else 2)
    p.add_argument("--prompt", type=int, default=512 if on_gpu else 32)
    p.add_argument("--hbm-mib", type=int, default=4096 if on_gpu else 256)
    p.add_argument("--matmul", type=int, default=8192 if on_gpu else 1024)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--hardware", default=None, help="a hardware profile to predict on")
    args = p.parse_args(argv)

    device = jax.devices()[0]
    print(f"{device.device_kind} ({jax.default_backend()}); model {args.model}, mesh 1x1x1")
    if not on_gpu:
        print("note: no GPU here: these are this CPU's figures, and the GPU targets below "
              "do not apply")
    hbm = hbm_bytes_per_s(args.hbm_mib * 2**20)
    peak = matmul_flops_per_s(args.matmul)
    print(f"measured here: HBM read {hbm / 1e9:.1f} GB/s (sum over {args.hbm_mib} MiB of "
          f"bf16); bf16 matmul {peak / 1e12:.2f} TFLOP/s ({args.matmul}^2 x {args.matmul})")

    decode = {w: step(args.model, "decode", w, 1, args.context, args.repeats)
              for w in ("bf16", "int8")}
    for w, m in decode.items():
        rate = m.measured.weight_bytes_per_device / m.measured.time_s
        print(f"decode, batch 1, {w}: {m.measured.time_s * 1e3:.3f} ms, weights read at "
              f"{rate / 1e9:.1f} GB/s = {rate / hbm:.0%} of HBM (target >= 85%)"
              + predicted(args, m))
    speedup = decode["bf16"].measured.time_s / decode["int8"].measured.time_s
    print(f"int8's speed-up over bf16 at batch 1: {speedup:.2f}x (target >= 1.6x)")

    pre = step(args.model, "prefill", "bf16", args.prefill_batch, args.prompt, args.repeats)
    rate = pre.measured.flops / pre.measured.time_s
    print(f"prefill, batch {args.prefill_batch} x {args.prompt} tokens, bf16: "
          f"{pre.measured.time_s * 1e3:.2f} ms, matmuls at {rate / 1e12:.2f} TFLOP/s = "
          f"{rate / peak:.0%} of the matmul rate (target >= 80%)" + predicted(args, pre))


if __name__ == "__main__":
    main()
