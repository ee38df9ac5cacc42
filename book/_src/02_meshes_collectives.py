# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 2 · Meshes, shardings and collectives on 256 emulated devices
#
# The paper's chips sit in a 3D torus: each TPU v4 has six links, to its neighbours along
# three physical axes, and in a slice made of whole 4×4×4 cubes every side closes into a
# ring (wraparound; a smaller slice's sides are lines, as this chapter shows). A slice of n
# chips is a mesh X×Y×Z, and the layouts of the next chapters say, for every tensor, which of
# its dimensions are split over which of the mesh axes x, y, z.
#
# This chapter builds that vocabulary on real (emulated) devices:
#
# 1. a **mesh** names the devices' positions;
# 2. a **sharding** (a JAX `PartitionSpec`) says which block of a tensor each device holds,
#    and is the paper's subscript notation written in Python;
# 3. a **collective** moves blocks between the devices of a *group*: the devices that differ
#    only along the axes it runs over. What it costs depends on the bytes each chip sends and
#    on the links its group can use.
#
# **After this chapter you can** write a paper subscript as a JAX `PartitionSpec` and back;
# say which devices form the groups of a collective over given axes; state the library's byte
# convention for each collective and the bytes a chip actually sends; and estimate when a
# collective is latency-bound. (Paper: [Section 3.1](https://arxiv.org/abs/2211.05102),
# "Partitioning notation and communication collectives".)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import jax
import numpy as np
import plotly.graph_objects as go
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import booktools as bt
from tpuinfer import cost, hlo
from tpuinfer.hardware import group_links, wraps
from tpuinfer.measure import group_axes
from tpuinfer.mesh import mesh_shape
from tpuinfer.terms import Collective
from tpuinfer.theory import bytes_sent

# %% [markdown]
# ## The mesh
#
# `ti.make_mesh((4, 8, 8))` lays the first 256 devices out as a 4×8×8 array with axes named
# `'x'`, `'y'`, `'z'`: the paper's mesh for 256 chips. A smaller mesh takes the first devices.
# Here every device is drawn at its (x, y, z) position, coloured by the **group** it would
# join in a collective over the axes y and z: four groups of 64, one per position along x.

# %%
mesh = ti.make_mesh((4, 8, 8))
bt.mesh_figure(mesh, ("y", "z"), "4×8×8: the groups of a collective over (y, z)").show()

# %% [markdown]
# ## Shardings are the paper's subscripts
#
# The paper's `BE_xyz` (an activation [B, E] with E split over x, y and z) is, in JAX,
# `PartitionSpec(None, ("x", "y", "z"))`: nothing splits B, and E is split over the three
# axes, x the major one. `BE_x` is `PartitionSpec(None, "x")`: E split over x only, so
# the devices that share an x coordinate hold the same block: the tensor is *replicated*
# over y and z. The pictures below come straight from JAX (`NamedSharding.devices_indices_map`)
# on a 2×2×2 mesh: each block carries the xyz coordinates of the devices that hold it.

# %%
small = ti.make_mesh((2, 2, 2))
B, E = 8, 256
bt.ownership_figure(small, P(None, ("x", "y", "z")), (B, E),
                    "BE_xyz on 2×2×2: E split eight ways", ("B", "E")).show()
bt.ownership_figure(small, P(None, "x"), (B, E),
                    "BE_x on 2×2×2: E split over x, replicated over y and z", ("B", "E")).show()

# %% [markdown]
# The layouts of this library write their weights the same way. Here is every weight of one
# layer in the 2D weight-stationary layout (chapter 4): `P('x', ('z', 'y'))` on W_up is the
# paper's `E_xF_yz`.

# %%
# NBVAL_CHECK_OUTPUT
from tpuinfer.layouts.registry import param_specs

for name, spec in sorted(param_specs(ti.MODELS["tiny"], ti.Layout("ws2d"))["layers"][0].items()):
    print(f"{name:7s} {P(*spec)}")

# %% [markdown]
# ## The four collectives, compiled on 256 devices
#
# Each collective below is written as JAX writes it inside a `shard_map` body (the function
# every device runs on its own block), compiled for the 4×8×8 mesh, and then *read back out
# of the compiled program* with `tpuinfer.hlo`: its kind, its groups, and the bytes per
# device. The library counts bytes by one convention, written once in `tpuinfer/terms.py`:

# %%
import tpuinfer.terms

print(tpuinfer.terms.__doc__)

# %% [markdown]
# So an all-gather is charged its per-device *output*, a reduce-scatter its per-device
# *input*. The table below checks that convention against the compiled programs: the bytes
# the compiler reports beside the block sizes JAX gives each device.
#
# - **all-gather(yz)**: `BE_xyz → BE_x`, every device collects its group's blocks;
# - **reduce-scatter(yz)**: partial sums over yz are added up, and each device keeps one block
#   of the result, `BE_x` (partial-sum over yz) `→ BE_xyz`;
# - **all-reduce(x)**: partial sums over x added up, every device keeps all of the sum;
# - **all-to-all(yz)**: re-splits a tensor: from split over E to split over B (the move
#   attention by batch makes in chapter 6).

# **Exercise 02.1 · Predict, then run.** The reduce-scatter(yz) program below starts from an
# f32 array of [8, 256·64] split over x, y and z, and sums it over (y, z). By the library's
# convention, how many bytes per device will the compiler report for it? Write your number
# before running the next two cells, which compile the four programs and read them back.

# %%
answer_1 = 2048

# %%
XYZ, YZ = ("x", "y", "z"), ("y", "z")
programs = {  # name: (body, input spec, output spec, global input shape)
    "all-gather(yz)": (lambda a: jax.lax.all_gather(a, YZ, axis=1, tiled=True),
                       P(None, XYZ), P(None, "x"), (B, E)),
    "reduce-scatter(yz)": (lambda a: jax.lax.psum_scatter(a, YZ, scatter_dimension=1, tiled=True),
                           P(None, XYZ), P(None, XYZ), (B, E * 64)),
    "all-reduce(x)": (lambda a: jax.lax.psum(a, "x"), P(None, XYZ), P(None, YZ), (B, E)),
    "all-to-all(yz)": (lambda a: jax.lax.all_to_all(a, YZ, 0, 1, tiled=True),
                       P(None, XYZ), P(YZ, "x"), (64, E)),
}
compiled = {}
for name, (body, in_spec, out_spec, shape) in programs.items():
    step = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=in_spec, out_specs=out_spec,
                                 check_vma=False))
    x = jax.device_put(np.ones(shape, np.float32), NamedSharding(mesh, in_spec))
    exe = step.lower(x).compile()
    y = exe(x)
    (found,) = hlo.collectives(hlo.parse(exe.as_text()), mesh.size)
    compiled[name] = (found, x.addressable_shards[0].data.nbytes,
                      y.addressable_shards[0].data.nbytes)

# %%
# NBVAL_CHECK_OUTPUT
rows = [[name, c.kind, "".join(group_axes(c.groups, mesh_shape(mesh))), c.group_size,
         len(c.groups), f"{c.bytes:,.0f}", f"{n_in:,}", f"{n_out:,}"]
        for name, (c, n_in, n_out) in compiled.items()]
print(bt.table(["program", "compiled as", "axes", "group", "groups", "bytes (HLO)",
                "input/device", "output/device"], rows))

# %%
# NBVAL_CHECK_OUTPUT
bt.check("02.1", answer_1)

# %% [markdown]
# Each row agrees with the convention: the all-gather's bytes are its output block, the
# reduce-scatter's its input block, the all-reduce and all-to-all their input. The
# convention counts the larger side of the operation, not what crosses the links: of an
# all-gather's output, a chip's own 1/K never leaves it (`tpuinfer.theory.bytes_sent` counts
# what does; exercise 02.2 uses it). The group
# sizes are the products of the axes' sizes (64 for y·z, 4 for x), and there are as many
# groups as positions along the other axes.
#
# ## What a collective costs: links, steps and bytes
#
# On a torus, a collective over a group uses the links along its axes. On TPU v4 a slice
# made of whole 4×4×4 cubes wraps round on every axis: each side is a ring, data flows both
# ways round it over both neighbours' links, and a ring algorithm needs half a side of
# neighbour steps. Any smaller slice (2×2×2, 2×4×4, ...) has no wraparound at all, even along
# a side of 4: its sides are lines, with less bandwidth through the middle and more steps
# end to end (Jouppi et al., "TPU v4", ISCA 2023, Section 2; the paper's 64-chip runs use the
# 4×4×4 cube). `hardware.wraps` says which slices wrap, and `hardware.group_links` what a
# group has to work with: its bandwidth per chip, and the number of neighbour steps a ring
# algorithm takes. A group over several axes runs its collective one axis after another
# (gather along one, then along the next with what it has gathered so far), so its steps
# add over the axes and its bandwidth per chip is about one axis's links, not their sum.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for shape in [(4, 8, 8), (2, 4, 4), (2, 2, 2)]:
    for axes in [("x",), ("y",), ("y", "z"), ("x", "y", "z")]:
        g = group_links("tpu-v4", shape, axes)
        rows.append(["x".join(map(str, shape)), "yes" if wraps("tpu-v4", shape) else "no",
                     "".join(axes), g.chips, f"{g.bandwidth / 1e9:g}", g.steps,
                     f"{g.a2a_distance:g}"])
print(bt.table(["mesh", "wraps", "axes", "chips", "GB/s per chip", "ring steps",
                "all-to-all mean hops"], rows))

# %% [markdown]
# The cost model prices a collective from those links (`cost.collective_time`): a bandwidth
# part, which grows with the bytes, and a latency part of about 1 µs per neighbour step.
# Small collectives are latency-bound, large ones bandwidth-bound. Where one turns into the
# other depends on the group: about 90 kilobytes per chip for a pair of chips, about 0.7 MB
# for the 64 chips of (y, z), whose rings take more steps. Decode steps at small
# batch move a few kilobytes per collective: they pay latency.

# %%
sizes = [2**k for k in range(8, 27, 2)]  # 256 B .. 64 MiB per chip
groups = [((4, 8, 8), ("x",)), ((4, 8, 8), ("y", "z")), ((4, 8, 8), ("x", "y", "z")),
          ((2, 2, 2), ("x",))]
fig = go.Figure()
for shape, axes in groups:
    k = group_links("tpu-v4", shape, axes).chips
    times = [cost.collective_time(Collective("all-gather", axes, k, float(v)), "tpu-v4",
                                  shape).total_s for v in sizes]
    fig.add_trace(go.Scatter(x=sizes, y=[t * 1e6 for t in times], mode="lines+markers",
                             name=f"{'x'.join(map(str, shape))} over {''.join(axes)} ({k} chips)"))
fig.update_xaxes(type="log", title="bytes per chip (all-gather output)")
fig.update_yaxes(type="log", title="µs on TPU v4 (datasheet)")
fig.update_layout(title="All-gather time: latency-bound, then bandwidth-bound", height=380,
                  width=760)
fig.show()

# %% [markdown]
# The compiled programs above can be priced directly: `measure` and the cost model share the
# `Collective` type, so what the compiler emitted is what the cost model prices.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for name, (c, _, _) in compiled.items():
    found = Collective(c.kind, group_axes(c.groups, mesh_shape(mesh)), c.group_size, c.bytes)
    t = cost.collective_time(found, "tpu-v4", mesh_shape(mesh))
    rows.append([name, f"{t.bandwidth_s * 1e9:.1f} ns", f"{t.latency_s * 1e6:.0f} µs"])
print(bt.table(["program", "bandwidth part", "latency part"], rows))

# %% [markdown]
# Every one of these tiny collectives is pure latency. The layouts of the next chapters move
# megabytes, and then the bandwidth part and the choice of axes matter.
#
# ## A real step on all 256 devices
#
# The same reading, done by `measure` on a whole decode step of the tiny model in 2D
# weight-stationary (chapter 4) on the 4×8×8 mesh: every collective the compiler emitted,
# with the axes its groups span, beside what the layout file predicts. The groups are the
# ones pictured at the top: 64 chips over (y, z), 4 over x, all 256 for the final norm and
# the output projection.

# %%
from tpuinfer.measure import measure

cfg = ti.MODELS["tiny"]
step = measure(cfg, mesh, ti.Layout("ws2d", "heads"), phase="decode", batch=8, context=16,
               params=ti.init_params(cfg, seed=0), repeats=1)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.collectives_table(step))

# %% [markdown]
# ## Recap
#
# - A mesh names positions; a `PartitionSpec` is the paper's subscript; a collective's group
#   is the devices that differ only along its axes.
# - The library charges an all-gather its output and a reduce-scatter its input, per device;
#   a chip sends (K−1)/K of that.
# - Only slices of whole 4×4×4 cubes wrap round; a ring over a wrapped side of k chips takes
#   k/2 neighbour steps both ways, a line of k chips k−1.
# - Small collectives pay latency (about 1 µs a step); large ones pay bandwidth.
#
# ## Exercises
#
# Exercise 02.1 is above, with the compiled collectives.
#
# **Exercise 02.2 · Derive.** An activation `BE_xyz` with B = 8, E = 256 in f32 is
# all-gathered over (y, z) on the 4×8×8 mesh (the first program above). The convention charges
# each device its output, [8, 256/4] in f32. How many bytes does each device actually *send*
# over its links?
#
# **Exercise 02.3 · Derive.** A TPU v4 slice of 4×4×8 chips is two whole 4×4×4 cubes, so every
# side wraps round. How many neighbour steps does a ring all-gather over the axes (x, z) take,
# data flowing both ways round each ring?

# %%
answer_2 = 2016
answer_3 = 6

# %%
# NBVAL_CHECK_OUTPUT
bt.check("02.2", answer_2)
bt.check("02.3", answer_3)
