"""Reading a compiled step's optimised HLO text: its collectives and its matmuls.

This module knows the text format and nothing about layouts. `tpuinfer.measure` maps what it
finds onto mesh axes and puts it beside the cost model's prediction.

Forms handled: synchronous collectives; async `-start`/`-done` pairs (counted once, at the
start); collectives wrapped in `async-start` computations; combined (variadic, tuple-shaped)
collectives, whose operands are summed; replica groups as explicit lists, as `{}` (every device)
and in the iota form `[G,K]<=[dims]T(perm)`; collective-permute source-target pairs; operands
printed with their types, tuples included (`get-tuple-element((f32[8], s32[]) %t)`); matmuls
as dots, inside fusions or not, and as library calls (a GPU's cuBLAS custom calls).
An instruction inside a while loop runs its known trip count of times per step (`count`); the
engine's step has none today (its layers are unrolled). `flops_disagree` checks the matmul
FLOPs read against the compiler's own count.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

KIND_OF = {"all-gather": "all-gather", "all-gather-start": "all-gather",
           "reduce-scatter": "reduce-scatter",
           "all-reduce": "all-reduce", "all-reduce-start": "all-reduce",
           "all-to-all": "all-to-all",
           "collective-permute": "collective-permute",
           "collective-permute-start": "collective-permute"}

ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
            "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
            "f8e4m3fn": 1, "f8e5m2": 1, "s4": 0.5, "u4": 0.5, "token": 0}

_ASSIGN = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*")
_OP = re.compile(r"\s+(?P<op>[a-z][\w\-]*)\(")
_ARRAY = re.compile(r"\b([a-z]\w*)\[([\d,]*)\]")
_OPERAND = re.compile(r"%([\w.\-]+)")
_IOTA = re.compile(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?")


def arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every array in a (possibly tuple) HLO type: [(dtype, dims), ...]."""
    return [(dt, tuple(int(d) for d in dims.split(",") if d))
            for dt, dims in _ARRAY.findall(type_text) if dt in ITEMSIZE]


def nbytes(type_text: str) -> float:
    return sum(math.prod(dims) * ITEMSIZE[dt] for dt, dims in arrays(type_text))


@dataclass(frozen=True)
class Instruction:
    name: str
    op: str
    type: str  # the result type as printed, e.g. "f32[4,8,64]{1,0,2}" or a tuple
    operands: tuple[str, ...]  # names of the instructions it reads
    args: str  # the text between its parentheses (a parameter's index lives there)
    attrs: str
    computation: str  # the computation it belongs to


@dataclass(frozen=True)
class Module:
    """The instructions of every computation, by name (names are unique in a module)."""
    instructions: dict
    entry: str  # the ENTRY computation's name
    roots: dict  # computation -> its ROOT instruction's name
    callers: dict  # computation -> the instructions that call it (fusions, calls, async)
    loops: dict = dataclasses.field(default_factory=dict)  # a while's body -> the while

    def runs(self, computation: str) -> int:
        """How many times one run of the program runs `computation`: a while loop's body
        its known trip count (1 when XLA does not know it) times what runs the loop."""
        if computation == self.entry:
            return 1
        if computation in self.loops:
            loop = self[self.loops[computation]]
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', loop.attrs)
            return (int(trips[1]) if trips else 1) * self.runs(loop.computation)
        callers = self.callers.get(computation, [])
        return self.runs(self[callers[0]].computation) if callers else 1

    def __getitem__(self, name) -> Instruction:
        return self.instructions[name]


_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_CALLS = re.compile(r"\bcalls=%?([\w.\-]+)")
_BODY = re.compile(r"\bbody=%?([\w.\-]+)")


def _closing(text: str, i: int) -> int:
    """The index of the parenthesis that closes the one at `text[i]`."""
    depth = 0
    for k in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[k], 0)
        if depth == 0:
            return k
    raise ValueError(f"unbalanced parentheses in HLO line {text[:200]!r}")


def _instruction(line: str, computation: str) -> Instruction | None:
    """One instruction line: `[ROOT] %name = TYPE op(OPERANDS), attrs`. TYPE may be a tuple
    `(s32[], f32[4,8]{1,0})`, and OPERANDS may carry their types, tuples included
    (`get-tuple-element((s32[], f32[8]{0}) %t)`), as XLA prints with operand shapes."""
    m = _ASSIGN.match(line)
    if not m:
        return None
    rest = line[m.end():]
    if rest.startswith("("):
        end = _closing(rest, 0) + 1
    else:
        end = len(rest.split(None, 1)[0]) if rest.strip() else 0
    op = _OP.match(rest, end)
    if not end or not op:
        return None
    close = _closing(rest, op.end() - 1)
    operands = rest[op.end():close]
    return Instruction(m["name"], op["op"], rest[:end], tuple(_OPERAND.findall(operands)),
                       operands, rest[close + 1:], computation)


def parse(hlo_text: str) -> Module:
    instrs, roots, callers, loops, entry, comp = {}, {}, {}, {}, "", ""
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header and "=" not in line.split("(")[0]:
            comp = header[2]
            entry = comp if header[1] else entry
            continue
        ins = _instruction(line, comp)
        if ins is None:
            continue
        instrs[ins.name] = ins
        if line.lstrip().startswith("ROOT"):
            roots[comp] = ins.name
        for called in _CALLS.findall(ins.attrs):
            callers.setdefault(called, []).append(ins.name)
        if ins.op == "while":
            loops[_BODY.search(ins.attrs)[1]] = ins.name
    return Module(instrs, entry, roots, callers, loops)


# ---- collectives ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HloCollective:
    """One collective instruction as compiled. `bytes` is per device under tpuinfer.terms'
    convention: an all-gather's output (operands × group size), every other kind's input."""
    name: str
    kind: str  # one of tpuinfer.terms.KINDS
    groups: tuple[tuple[int, ...], ...]  # device ids (flattened) of each group
    operand_shapes: tuple[str, ...]
    result_shape: str
    bytes: float
    dtype: str  # element type of its operands as compiled, e.g. "f32" ("s8,f32" when mixed)
    count: int = 1  # times one step runs it (inside a loop: the trip count)

    @property
    def group_size(self) -> int:
        return len(self.groups[0]) if self.groups else 1


def _attr(attrs: str, key: str) -> str | None:
    """The balanced-brace (or iota) value of `key=` in an attribute string."""
    i = attrs.find(key + "=")
    if i < 0:
        return None
    j = i + len(key) + 1
    if attrs[j] != "{":  # iota form: up to the next ", " or the end
        end = attrs.find(", ", j)
        return attrs[j:] if end < 0 else attrs[j:end]
    depth = 0
    for k in range(j, len(attrs)):
        depth += {"{": 1, "}": -1}.get(attrs[k], 0)
        if depth == 0:
            return attrs[j:k + 1]
    raise ValueError(f"unbalanced braces after {key}= in {attrs[:200]!r}")


def _braced_lists(text: str) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in g.split(",") if v.strip())
                 for g in re.findall(r"\{([\d,\s]*)\}", text[1:-1]))


def replica_groups(attrs: str, n_devices: int) -> tuple[tuple[int, ...], ...]:
    """The groups of a collective: explicit `{{0,1},{2,3}}`, `{}` (one group of every device)
    or iota `[G,K]<=[d0,d1,...]T(perm)` (arange over dims, transposed, reshaped to G×K);
    for a collective-permute, the sets of devices its source-target pairs link."""
    pairs = _attr(attrs, "source_target_pairs")
    if pairs is not None:
        return _linked_sets(_braced_lists(pairs))
    text = _attr(attrs, "replica_groups")
    if text is None or text in ("{}", "{{}}"):
        return (tuple(range(n_devices)),)
    m = _IOTA.fullmatch(text)
    if m:
        shape = [int(v) for v in m[1].split(",")]
        dims = [int(v) for v in m[2].split(",")]
        ids = np.arange(math.prod(dims)).reshape(dims)
        if m[3]:
            ids = ids.transpose([int(v) for v in m[3].split(",")])
        return tuple(tuple(int(v) for v in row) for row in ids.reshape(shape))
    return _braced_lists(text)


def _linked_sets(pairs) -> tuple[tuple[int, ...], ...]:
    parent: dict[int, int] = {}

    def root(a):
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a
    for s, t in pairs:
        parent[root(s)] = root(t)
    sets: dict[int, list[int]] = {}
    for d in list(parent):
        sets.setdefault(root(d), []).append(d)
    return tuple(sorted(tuple(sorted(g)) for g in sets.values()))


def collectives(module: Module, n_devices: int) -> list[HloCollective]:
    """Every collective the compiled program runs, each counted once: `-done` halves are
    skipped (the `-start` carries the operands) and `async-start` wrappers are skipped (the
    wrapped computation holds the collective itself)."""
    out = []
    for ins in module.instructions.values():
        kind = KIND_OF.get(ins.op)
        if kind is None:
            continue
        shapes = tuple(module[o].type for o in ins.operands)
        groups = replica_groups(ins.attrs, n_devices)
        size = sum(nbytes(s) for s in shapes)
        if kind == "all-gather":
            size *= len(groups[0])  # its output: every member's operand
        dtypes = sorted({dt for s in shapes for dt, _ in arrays(s)})
        out.append(HloCollective(ins.name, kind, groups, shapes, ins.type, float(size),
                                 ",".join(dtypes), module.runs(ins.computation)))
    return out


# ---- matmuls --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Matmul:
    """A dot as compiled, or a dot the compiler rewrote as a broadcast multiply (a contraction
    of size one, e.g. the output projection when each chip holds one column of E)."""
    name: str
    flops: float  # 2 · output elements · contracted elements
    einsum: str  # the einsum it came from (jax's op_name metadata), "" when the compiler lost it
    reads_argument: bool  # an operand is a step argument, moved but not computed on: a weight
    count: int = 1  # times one step runs it (inside a loop: the trip count)
    library: str = ""  # the custom call's target when a library runs it (a GPU's cuBLAS)


def _dims(attrs: str, key: str) -> tuple[int, ...]:
    m = re.search(key + r"=\{([\d,]*)\}", attrs)
    return tuple(int(v) for v in m[1].split(",") if v) if m else ()


def _einsum(attrs: str) -> str:
    m = re.search(r'op_name="[^"]*/([A-Za-z,]+->[A-Za-z]+)/dot_general"', attrs)
    return m[1] if m else ""


# Ops that move or re-type data without computing on it: a weight read through them is still
# the weight (gathered, passed round a ring, sliced into a loop's chunk, transposed,
# dequantized by a cast, broadcast for an outer product).
MOVES = {"bitcast", "copy", "transpose", "reshape", "convert", "broadcast", "slice",
         "dynamic-slice", "get-tuple-element", "all-gather", "all-gather-start",
         "all-gather-done", "collective-permute", "collective-permute-start",
         "collective-permute-done"}


def reads_argument(module: Module, name: str, seen=None) -> bool:
    """Whether `name` is a step argument (an ENTRY parameter) after data movement only. The KV
    cache is an argument too, but attention reads it through the dynamic-update-slice that
    writes this step's keys and values: computed on, so not a weight."""
    seen = set() if seen is None else seen
    if name in seen:
        return False
    seen.add(name)
    ins = module[name]
    if ins.op == "parameter":
        if ins.computation == module.entry:
            return True
        callers = module.callers.get(ins.computation, [])
        return len(callers) == 1 and reads_argument(
            module, module[callers[0]].operands[int(ins.args)], seen)
    if ins.op == "fusion":
        root = module.roots[_CALLS.search(ins.attrs)[1]]
        return reads_argument(module, root, seen)
    if ins.op == "get-tuple-element":  # an element of a tuple built here or fed to a loop
        element = _tuple_element(module, module[ins.operands[0]],
                                 int(re.search(r"\bindex=(\d+)", ins.attrs)[1]))
        if element is not None:
            return reads_argument(module, element, seen)
    return ins.op in MOVES and any(reads_argument(module, o, seen) for o in ins.operands)


# A backend may hand a matmul to a library as a custom call instead of printing a dot: XLA:GPU
# calls cuBLAS (`__cublas$gemm`, `__cublas$lt$matmul`, hipBLASLt on ROCm under the same
# names), XLA:CPU may call oneDNN (`__onednn$matmul`). Their FLOPs count as a dot's.
MIN_MATMUL_SHARE = 0.5  # of the compiler's FLOPs: below it, matmuls were missed (`flops_disagree`)
# Above the compiler's FLOPs by more than this, a matmul was read twice. Not exact: XLA:CPU's
# cost analysis counted 0.5% fewer FLOPs than the dots of a 4x8x8 wg-xy decode step hold (read
# 7.848M, equal to the prediction; compiler 7.812M), while a matmul read twice adds far more.
MAX_READ_EXCESS = 0.02
_LIBRARY_MATMUL = re.compile(r'custom_call_target="([^"]*(?:gemm|matmul)[^"]*)"', re.I)


def _library_dims(attrs: str, key: str) -> tuple[int, ...] | None:
    """Dimension numbers from a library call's backend config (JSON: `"key":["1"]`)."""
    m = re.search(rf'"{key}":\[([^\]]*)\]', attrs)
    return None if m is None else tuple(int(v.strip(' "')) for v in m[1].split(",") if v.strip())


def _tuple_element(module: Module, ins: Instruction, index: int) -> str | None:
    """The instruction that is element `index` of the tuple `ins`, where the text says: a
    `tuple`, or a loop body's parameter at an element the loop passes on unchanged (a scan's
    weights): its initial value."""
    if ins.op == "tuple":
        return ins.operands[index]
    body = ins.computation
    if ins.op == "parameter" and body in module.loops:
        carried = module[module.roots[body]]  # what the next iteration gets at `index`
        if carried.op == "tuple" and _is_element(module[carried.operands[index]], ins, index):
            return _tuple_element(module, module[module[module.loops[body]].operands[0]],
                                  index)
    return None


def _is_element(ins: Instruction, tuple_: Instruction, index: int) -> bool:
    return (ins.op == "get-tuple-element" and ins.operands[0] == tuple_.name
            and re.search(r"\bindex=(\d+)", ins.attrs)[1] == str(index))


def matmuls(module: Module) -> list[Matmul]:
    """Every matmul of the program: dots (inside fusions too), dots rewritten as a broadcast
    multiply, and library calls (`_LIBRARY_MATMUL`). `flops` are one run's; `count` says how
    many runs a step makes."""
    out = []
    for ins in module.instructions.values():
        library = ""
        if ins.op == "dot":
            (_, lhs), = arrays(module[ins.operands[0]].type)
            contracted = math.prod(lhs[d] for d in _dims(ins.attrs, "lhs_contracting_dims"))
            (_, result), = arrays(ins.type)
            flops = 2.0 * math.prod(result) * contracted
        elif ins.op == "multiply" and _einsum(ins.attrs):
            (_, result), = arrays(ins.type)
            flops = 2.0 * math.prod(result)
        elif ins.op == "custom-call" and _LIBRARY_MATMUL.search(ins.attrs):
            library = _LIBRARY_MATMUL.search(ins.attrs)[1]
            (_, lhs), = arrays(module[ins.operands[0]].type)[:1]
            (_, result), = arrays(ins.type)[:1]  # cuBLAS returns (result, workspace)
            dims = _library_dims(ins.attrs, "lhs_contracting_dimensions")
            contracted = math.prod(lhs[d] for d in dims) if dims is not None else lhs[-1]
            flops = 2.0 * math.prod(result) * contracted
        else:
            continue
        weight = any(reads_argument(module, o) for o in ins.operands)
        out.append(Matmul(ins.name, flops, _einsum(ins.attrs), weight,
                          module.runs(ins.computation), library))
    return out


def flops_disagree(matmuls_read: list[Matmul], compiler_flops: float | None) -> str | None:
    """Why the matmul FLOPs read from the text disagree with the compiler's own count
    (`Compiled.cost_analysis()["flops"]`, which counts every instruction once, loop bodies
    once, elementwise work too), or None when they agree or the compiler gave no count.
    Read FLOPs well above the compiler's (`MAX_READ_EXCESS`), or under half of them, mean the
    text was misread (a matmul counted twice, or one of a form this module skips)."""
    if not compiler_flops:
        return None
    read = sum(m.flops for m in matmuls_read)
    if read > compiler_flops * (1 + MAX_READ_EXCESS):
        return (f"the matmuls read from the HLO text come to {read:.4g} FLOPs, more than the "
                f"compiler's cost analysis counts for the whole program ({compiler_flops:.4g})")
    if read < MIN_MATMUL_SHARE * compiler_flops:
        return (f"the matmuls read from the HLO text come to {read:.4g} FLOPs, under "
                f"{MIN_MATMUL_SHARE:.0%} of the compiler's cost analysis ({compiler_flops:.4g}): "
                f"matmuls of a form this reader does not know were missed")
    return None
