"""The layout explorer: choose a mesh, layouts per phase, a batch and a context; run the real
step on the emulated mesh and see the cost model's prediction beside what was compiled and
measured (`tpuinfer.sweeps.step_prediction` at once, then `with_measurement`, which compiles
and runs the step on the worker thread while the kernel stays free)."""
from __future__ import annotations

import math

import ipywidgets as W
import jax
from plotly.subplots import make_subplots

from tpuinfer import MODELS
from tpuinfer.errors import UsageError
from tpuinfer.hardware import PAPER_MESHES, hardware_names
from tpuinfer.layouts import ATTENTION_LAYOUTS, FFN_LAYOUTS, Layout
from tpuinfer.mesh import factorizations, format_shape
from tpuinfer.quant import WEIGHT_FORMATS
from tpuinfer.report import flag_text
from tpuinfer.sweeps import step_prediction, why_not_run, with_measurement
from tpuinfer.terms import KINDS

from .base import Explorer, dropdown, int_text, toggles

CPU_PREDICTED, CPU_MEASURED = "predicted (this CPU)", "measured (this CPU)"
PANELS = (("collective_bytes", "collective bytes per device, by kind"),
          ("flops", "FLOPs per device"),
          ("memory_bytes", "memory per device (bytes)"),
          ("time_s", "step time (s, log scale)"))
COLOURS = ("#4c78a8", "#f58518", "#9d9d9d")  # predicted here, measured here, hardware


def _mesh_options(devices: int):
    return [(format_shape(s), s) for s in factorizations(devices)]


class LayoutExplorer(Explorer):
    """Predicted against measured for one step of one layout.

    Controls: model, devices, mesh, phase, ffn, attention, looped, batch, context, weights,
    hardware. `ffn`, `attention` and `looped` edit the layout of the phase shown; each phase
    keeps its own (`layouts`). Models too large for this machine show the cost model alone.
    The cost model's side is drawn as soon as a control changes; the measured side follows
    from the background (`background=False`: each change waits for it). A measurement times
    at most `repeats` runs, and stops once they agree or `budget_s` of runs is spent: with
    1 s, a batch-256 decode on 4x8x8 (0.3-0.4 s a run on 2 cores) lands after a warm-up and
    three timed runs.
    """

    def __init__(self, model: str = "tiny", mesh=None, *, phase: str = "prefill",
                 prefill: Layout = Layout("ws2d", "heads"),
                 decode: Layout = Layout("ws2d", "batch"), batch: int = 1, context: int = 8,
                 weights: str = "f32", hardware: str = "tpu-v4", devices: int | None = None,
                 repeats: int = 3, budget_s: float = 1.0, background: bool = True):
        total = jax.device_count()
        if mesh is not None:
            mesh = tuple(int(s) for s in mesh)
            devices = devices or math.prod(mesh)
        devices = devices or total
        counts = [n for n in range(1, total + 1) if total % n == 0]
        if devices not in counts:
            raise UsageError(f"{devices} devices is not a sub-mesh of the {total} emulated "
                             f"ones; choose one of {counts}")
        mesh = mesh or PAPER_MESHES.get(devices, (1, 1, devices))
        self.layouts = {"prefill": prefill, "decode": decode}
        self.repeats, self.budget_s, self.background = repeats, budget_s, background
        shown = self.layouts[phase]
        c = {
            # the dense models: the feed-forward layouts here split a dense block
            "model": dropdown("model", [m for m, c in MODELS.items() if not c.n_experts],
                              model),
            "devices": dropdown("devices", counts, devices,
                                "emulated devices in the mesh (the first ones of all)"),
            "mesh": dropdown("mesh (x×y×z)", _mesh_options(devices), mesh),
            "phase": toggles("phase", ["prefill", "decode"], phase,
                             "each phase keeps its own layouts"),
            "ffn": dropdown("ffn", FFN_LAYOUTS, shown.ffn, "feed-forward layout of this phase"),
            "attention": dropdown("attention", ATTENTION_LAYOUTS, shown.attention,
                                  "attention layout of this phase"),
            "looped": W.Checkbox(
                value=shown.looped, description="looped", indent=False,
                layout=W.Layout(width="7em"),
                tooltip="Looped CollectiveEinsum: each collective runs inside the matmul it "
                        "feeds"),
            "batch": int_text("batch", batch, tooltip="sequences per step (B)"),
            "context": int_text("context", context, tooltip="prefill: prompt tokens; "
                                "decode: KV-cache positions attended over"),
            "weights": toggles("weights", WEIGHT_FORMATS, weights),
            "hardware": dropdown("predict on", hardware_names(), hardware,
                                 "the profile for the prediction shown beside the CPU"),
        }
        # registered before the base class's observer, so they rearrange the controls first
        c["phase"].observe(self._show_phase_layout, names="value")
        c["devices"].observe(self._offer_meshes, names="value")
        super().__init__(c, self._empty_figure(), rows=[
            ["model", "devices", "mesh", "hardware"], ["phase", "ffn", "attention", "looped"],
            ["batch", "context", "weights"]])
        self.update(wait=not background)

    @staticmethod
    def _empty_figure():
        fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in PANELS],
                            vertical_spacing=0.16, horizontal_spacing=0.1)
        for p in range(len(PANELS)):
            for s, colour in enumerate(COLOURS):
                fig.add_bar(x=[], y=[], name="", marker_color=colour, legendgroup=str(s),
                            showlegend=p == 0, row=p // 2 + 1, col=p % 2 + 1)
        fig.update_yaxes(type="log", row=2, col=2)
        fig.update_layout(barmode="group", width=900, height=620,
                          margin=dict(t=70, b=40, l=60, r=20),
                          legend=dict(orientation="h", y=-0.08), title_font_size=14)
        return fig

    # ---- controls that rearrange others ----------------------------------------------------
    def _show_phase_layout(self, change):
        layout = self.layouts[change["new"]]
        with self.hold():
            self.controls["ffn"].value = layout.ffn
            self.controls["attention"].value = layout.attention
            self.controls["looped"].value = layout.looped

    def _offer_meshes(self, change):
        n = change["new"]
        with self.hold():
            self.controls["mesh"].options = _mesh_options(n)
            self.controls["mesh"].value = PAPER_MESHES.get(n, (1, 1, n))

    # ---- the library call and the drawing ---------------------------------------------------
    def layout(self) -> Layout:
        v = {k: self.controls[k].value for k in ("ffn", "attention", "looped")}
        return Layout(v["ffn"], v["attention"], looped=v["looped"])

    def busy_text(self) -> str:
        v = {k: w.value for k, w in self.controls.items()}
        verb = "measuring" if why_not_run(v["model"]) is None else "pricing"
        return (f"{verb} {v['model']} {self.layout()} on {format_shape(v['mesh'])} "
                f"({v['phase']}, batch {v['batch']}) …")

    def compute(self):
        v = {k: w.value for k, w in self.controls.items()}
        self.layouts[v["phase"]] = self.layout()
        return step_prediction(v["model"], v["mesh"], self.layout(), phase=v["phase"],
                               batch=v["batch"], context=v["context"], weights=v["weights"],
                               hardware=v["hardware"])

    def needs_measuring(self, data) -> bool:
        return data["why_not_run"] is None and not data["ran"]

    def measure(self, data, progress):
        return with_measurement(data, self.layouts[data["phase"]], repeats=self.repeats,
                                budget_s=self.budget_s, progress=progress)

    def draw(self, data):
        sides = data["sides"]
        hardware_side = f"predicted ({data['hardware']})"
        slots = [(CPU_PREDICTED, sides.get(CPU_PREDICTED)), (CPU_MEASURED, sides.get(CPU_MEASURED)),
                 (hardware_side, sides[hardware_side])]
        kinds = [k for k in KINDS if any(s and k in s["collective_bytes"] for _, s in slots)]
        for p, (key, _) in enumerate(PANELS):
            for s, (name, side) in enumerate(slots):
                trace = self.figure.data[p * len(slots) + s]
                if side is None:
                    trace.update(x=[], y=[], name=name, visible=False)
                    continue
                values = side[key]
                if key == "time_s":
                    x, y = ["step"], [values]
                elif key == "collective_bytes":
                    x = kinds
                    y = [values.get(k, 0.0) for k in kinds]  # a kind not emitted moved nothing
                else:
                    x, y = list(values), list(values.values())
                trace.update(x=x, y=y, name=name, visible=True, hovertext=self._hover(
                    data, key, side, x, name == hardware_side))
        self.figure.layout.title.text = (
            f"{data['model']} on {format_shape(data['mesh'])}, {data['layout']}, "
            f"{data['phase']}: batch {data['batch']}, {data['tokens']} token(s), context "
            f"{data['context']}, {data['weights']} weights")

    @staticmethod
    def _hover(data, key, side, x, on_hardware):
        if key == "collective_bytes":
            return [f"{side['collective_counts'].get(k, 0)} call(s)" for k in x]
        if key == "time_s" and on_hardware:  # the estimate's parts, as cost.estimate names them
            return [", ".join(f"{k[:-2]} {v:.3g} s" for k, v in data["hardware_times_s"].items())]
        return None

    def notes(self, data):
        ran = [f"compiled in {data['compile_s']:.1f} s" if data["compile_s"] else
               "compiled step reused"] + ([f"median of {data['runs']} timed runs, spread "
                                          f"{data['spread']:.0%}"] if data["spread"] is not None
                                         else []) if data["ran"] else [data["why_not_run"]]
        if data.get("host_error") is not None:
            predicted, measured = (data["sides"][k]["time_s"] for k in (CPU_PREDICTED,
                                                                         CPU_MEASURED))
            ran.append(f"the host profile predicted this CPU's step {predicted:.3g} s, measured "
                       f"{measured:.3g} s: {data['host_error']:.0%} off")
        # measure's own TPU v4 time is not shown here (the chosen profile's is)
        return ran + [flag_text(f) for f in data["flags"]] + [
            f"the {data['hardware']} side is the cost model's prediction (bf16 activations, "
            f"rule '{data['rule']}'), not a measurement"]

