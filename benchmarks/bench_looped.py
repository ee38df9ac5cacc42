"""Plain against Looped CollectiveEinsum on the full 4x8x8 mesh (tiny model): measured step
time and the collectives of each compiled step, side by side, for the weight-stationary
layouts (activations go round the ring) and the weight-gathered ones (weights do); then the
cost model's TPU v4 prediction for a step on PaLM 540B (64 heads) at batch 512.

    python benchmarks/bench_looped.py

The CPU runs collectives synchronously, one after another: a looped schedule cannot overlap
anything here, and its many small permutes each pay the CPU's per-collective cost. What does
carry over is what the compiler emits: permutes in place of all-gathers and reduce-scatters,
with the predicted bytes.
"""
import tpuinfer as ti

ti.emulate(256)
from tpuinfer.cost import estimate  # noqa: E402


def kinds(side):
    return ", ".join(f"{k} x{n}" for k, (n, _) in sorted(side.by_kind().items()))


def main():
    print(f"{'layout':<24} {'phase':<8} {'step s':>8}  collectives (measured = predicted?)")
    for ffn, phase, batch in [("ws2d", "prefill", 8), ("ws2d", "decode", 8),
                              ("ws1d", "decode", 8),
                              # weight-gathered: the weights, not activations, go round
                              ("wg-x", "decode", 8), ("wg-xy", "decode", 32)]:
        for looped in (False, True):
            layout = ti.Layout(ffn, "heads", looped=looped)
            m = ti.measure("tiny", (4, 8, 8), layout, phase=phase, batch=batch, repeats=3)
            same = m.predicted.by_kind() == m.measured.by_kind()
            print(f"{str(layout):<24} {phase:<8} {m.measured.time_s:>8.3f}  "
                  f"{kinds(m.measured)} ({'yes' if same else 'NO'})", flush=True)
    print("\nTPU v4 prediction, palm-540b-64heads on 4x4x4, batch 512, bf16 (rule overlap / sum):")
    for phase, tokens in [("prefill", 2048), ("decode", 1)]:
        for looped, bidir in [(False, False), (True, False), (True, True)]:
            layout = ti.Layout("ws2d", "batch", looped=looped, bidirectional=bidir)
            t = [estimate("palm-540b-64heads", layout, (4, 4, 4), batch=512, tokens=tokens,
                          context=2048, weights="bf16", hardware="tpu-v4", rule=r).step_s
                 for r in ("overlap", "sum")]
            print(f"  {phase:<8} {str(layout):<28} {t[0] * 1e3:9.2f} ms / {t[1] * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
