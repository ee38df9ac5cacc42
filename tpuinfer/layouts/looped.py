"""Looped CollectiveEinsum (Wang et al., ASPLOS 2023): a collective decomposed into K−1
neighbour steps (collective permutes round the ring of a group of K chips) interleaved with
K partial matmuls, so that on hardware that runs a permute beside a matmul the communication
hides behind the compute.

- `allgather_matmul`: the activation is split along the contracting dimension over the group.
  Each step multiplies the chunk held now by the matching rows of the weights and passes the
  chunk on; after K steps every chunk has been used once. Equals all-gather, then matmul.
- `matmul_reducescatter`: each step computes the partial product for the output chunk owned
  by the chip the accumulator is heading to, adds the accumulator received from the
  neighbour, and passes it on; after K−1 steps each chip holds its own chunk, fully reduced.
  Equals matmul, then reduce-scatter.
- `ring_matmul`: the weight-gathered form: the weights move round the ring instead of the
  activations, and each step multiplies by the weight chunk held now.

Bidirectional variants split the moving tensor in halves that travel the two directions of the
ring at once (both link directions busy; each permute half the bytes).

Rings run over the chips of a group in the order JAX linearises its axes, so a group spanning
several mesh axes (y, z) is one ring of Y·Z chips.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..axes import group_size
from ..model import mm
from ..weight_formats import QWeight
from ._common import spec_axes

RECV_FROM_NEXT, RECV_FROM_PREV = 1, -1


def _shift(x, axes, k: int, direction: int):
    """Every chip d receives the tensor of chip d + direction (mod k)."""
    return jax.lax.ppermute(x, axes, [(d, (d - direction) % k) for d in range(k)])


def _index(axes):
    return jax.lax.axis_index(axes)


def allgather_matmul(x_BLc, axes, k: int, consume, bidirectional: bool = False):
    """sum_j consume(row_start_j, piece_j) over the K chunks of x's last dimension, where
    chunk j lives on chip j of the group. `consume(row_start, piece)` multiplies a piece of
    the gathered activation (its last dim starting at `row_start` of the gathered dim) by the
    matching weight rows and returns a pytree of partial results."""
    width = x_BLc.shape[-1]
    i = _index(axes)
    add = lambda a, b: jax.tree.map(jnp.add, a, b)
    if not bidirectional:
        cur, acc = x_BLc, consume(i * width, x_BLc)
        for s in range(1, k):
            cur = _shift(cur, axes, k, RECV_FROM_NEXT)  # now chunk i + s
            acc = add(acc, consume(((i + s) % k) * width, cur))
        return acc
    half = width // 2
    fwd, bwd = x_BLc[..., :half], x_BLc[..., half:]
    acc = add(consume(i * width, fwd), consume(i * width + half, bwd))
    for s in range(1, k):
        fwd = _shift(fwd, axes, k, RECV_FROM_NEXT)  # first half of chunk i + s
        bwd = _shift(bwd, axes, k, RECV_FROM_PREV)  # second half of chunk i - s
        acc = add(acc, add(consume(((i + s) % k) * width, fwd),
                           consume(((i - s) % k) * width + half, bwd)))
    return acc


def matmul_reducescatter(produce, axes, k: int, width: int, bidirectional: bool = False):
    """This chip's chunk (width `width` of the output's last dim) of sum-over-the-group of
    `produce(col_start, cols)`, each chip's partial product for output columns
    [col_start, col_start + cols)."""
    i = _index(axes)
    if not bidirectional:
        # The accumulator for chunk c starts on chip c+1 and travels +1 round the ring.
        acc = produce(((i - 1) % k) * width, width)
        for s in range(1, k):
            acc = _shift(acc, axes, k, RECV_FROM_PREV) + produce(((i - 1 - s) % k) * width, width)
        return acc
    half = width // 2
    fwd = produce(((i - 1) % k) * width, half)  # first halves travel +1
    bwd = produce(((i + 1) % k) * width + half, width - half)  # second halves travel -1
    for s in range(1, k):
        fwd = _shift(fwd, axes, k, RECV_FROM_PREV) + produce(((i - 1 - s) % k) * width, half)
        bwd = _shift(bwd, axes, k, RECV_FROM_NEXT) + produce(
            ((i + 1 + s) % k) * width + half, width - half)
    return jnp.concatenate([fwd, bwd], axis=-1)


def rows(w, start, count: int, dim: int = 0):
    """`count` consecutive entries of w along `dim` from a traced `start` (int8 weights
    carry their scales, whose output dims are untouched by a slice of the input dim)."""
    if isinstance(w, QWeight):
        return QWeight(jax.lax.dynamic_slice_in_dim(w.q, start, count, dim), w.scale)
    return jax.lax.dynamic_slice_in_dim(w, start, count, dim)


def cols(w, start, count: int):
    """`count` output columns (the last dim) of w, int8 scales sliced alike."""
    if isinstance(w, QWeight):
        return QWeight(jax.lax.dynamic_slice_in_dim(w.q, start, count, w.q.ndim - 1),
                       jax.lax.dynamic_slice_in_dim(w.scale, start, count, w.scale.ndim - 1))
    return jax.lax.dynamic_slice_in_dim(w, start, count, w.ndim - 1)


class Ring:
    """A stored weight shard that is not gathered: its chunks travel the ring of the gather
    axes instead (the weight-gathered layouts, looped)."""

    def __init__(self, w, spec, axes, mesh_shape):
        self.w, self.spec, self.axes, self.mesh_shape = w, spec, axes, mesh_shape


def ring_matmul(eq: str, x, ring: Ring):
    """einsum(eq, x, W) where W is `ring.w` all-gathered over `ring.axes`, without ever
    holding W whole: chunk j of the group arrives, is multiplied, and moves on. Contracting
    dims of a chunk pick their slice of x; output dims place the product in the result."""
    axes, w = ring.axes, ring.w
    k = group_size(ring.mesh_shape, axes)
    sizes = [group_size(ring.mesh_shape, (a,)) for a in axes]
    x_dims, rest = eq.split(",")
    w_dims, out_dims = rest.split("->")
    local = (w.q if isinstance(w, QWeight) else w).shape
    entries = tuple(ring.spec) + (None,) * (len(local) - len(ring.spec))

    def offsets(j):
        """Where chunk j (linear over `axes`) sits along each dimension of W."""
        coords, rest_j = {}, j
        for a, size in reversed(list(zip(axes, sizes))):
            coords[a], rest_j = rest_j % size, rest_j // size
        out = []
        for d, e in enumerate(entries):
            lin = 0
            for a in spec_axes(e):
                if a in axes:
                    lin = lin * group_size(ring.mesh_shape, (a,)) + coords[a]
            out.append(lin * local[d])
        return out

    out_shape = [x.shape[x_dims.index(ch)] if ch in x_dims else
                 local[w_dims.index(ch)] * group_size(
                     ring.mesh_shape, tuple(a for a in spec_axes(entries[w_dims.index(ch)])
                                            if a in axes))
                 for ch in out_dims]
    out = jnp.zeros(out_shape, x.dtype)

    def step(out, j, chunk):
        offs = offsets(j)
        xs = x
        for d, ch in enumerate(w_dims):
            if ch in x_dims:  # contracting: this chunk meets its slice of x
                xs = jax.lax.dynamic_slice_in_dim(xs, offs[d], local[d], x_dims.index(ch))
        part = mm(eq, xs, chunk)
        start = [0] * len(out_dims)
        for d, ch in enumerate(w_dims):
            if ch in out_dims and ch not in x_dims:  # output: the product lands at its place
                start[out_dims.index(ch)] = offs[d]
        here = jax.lax.dynamic_slice(out, start, part.shape)
        return jax.lax.dynamic_update_slice(out, here + part, start)

    i = _index(axes)
    chunk = w
    out = step(out, i, chunk)
    for s in range(1, k):
        chunk = jax.tree.map(lambda t: _shift(t, axes, k, RECV_FROM_NEXT), chunk)
        out = step(out, (i + s) % k, chunk)
    return out
