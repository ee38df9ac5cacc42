"""Reading compiled HLO text (tpuinfer/hlo.py) in the forms XLA prints it: tuple-typed
operands, loops, and matmuls a GPU backend hands to a library; the FLOPs read checked against
the compiler's own count. (tests/test_measure.py reads the collectives of every kind.)"""
import jax
import jax.numpy as jnp
import pytest

import tpuinfer as ti
from tpuinfer import hlo
from tpuinfer.measure import Flag, measure


def _scan(x_BE, w_EE):
    """Three matmuls by one weight in a loop: compiled HLO passes the weight into the loop
    as an element of a tuple and reads it back with get-tuple-element."""
    def body(x, _):
        return jnp.einsum("BE,EF->BF", x, w_EE), None
    return jax.lax.scan(body, x_BE, None, length=3)[0]


@pytest.fixture(scope="module")
def scan_compiled():
    return jax.jit(_scan).lower(jnp.ones((4, 8)), jnp.ones((8, 8))).compile()


def _with_operand_shapes(compiled) -> str:
    """The same compiled module printed as XLA prints it by default elsewhere (dumps, older
    `as_text`): every operand with its type, tuples included."""
    _hlo = pytest.importorskip("jaxlib._hlo")
    options = _hlo.HloPrintOptions()
    options.print_operand_shape = True
    return compiled.runtime_executable().hlo_modules()[0].to_string(options)


def test_tuple_typed_operands_and_loops_are_read(scan_compiled):
    shaped = _with_operand_shapes(scan_compiled)
    assert "get-tuple-element((s32[], f32[4,8]{1,0}, f32[8,8]{1,0}) %" in shaped  # real text
    for text in (scan_compiled.as_text(), shaped):
        module = hlo.parse(text)
        gte = [i for i in module.instructions.values() if i.op == "get-tuple-element"
               and i.computation in module.loops]
        assert gte and all(len(i.operands) == 1 for i in gte)
        # one dot in the loop's body, run 3 times, reading the weight through the loop tuple
        (m,) = hlo.matmuls(module)
        assert (m.flops, m.count, m.reads_argument) == (2 * 4 * 8 * 8, 3, True)
        assert hlo.flops_disagree([m], scan_compiled.cost_analysis()["flops"]) is None


# What XLA:GPU prints for `jnp.einsum("BE,EF->BF", x, w)` of f32[4,8] by f32[8,16]: a cuBLAS
# call returning (result, workspace), read through get-tuple-element. No GPU is here: this text
# is written by hand in the form XLA:GPU prints (operand shapes, backend_config abridged).
GPU_HLO = """\
HloModule jit_f, entry_computation_layout={(f32[4,8]{1,0}, f32[8,16]{1,0})->f32[4,16]{1,0}}

ENTRY %main.5 (Arg_0.1: f32[4,8], Arg_1.2: f32[8,16]) -> f32[4,16] {
  %Arg_0.1 = f32[4,8]{1,0} parameter(0)
  %Arg_1.2 = f32[8,16]{1,0} parameter(1)
  %custom-call.1 = (f32[4,16]{1,0}, s8[4194304]{0}) custom-call(f32[4,8]{1,0} %Arg_0.1, f32[8,16]{1,0} %Arg_1.2), custom_call_target="__cublas$gemm", metadata={op_name="jit(f)/jit(main)/BE,EF->BF/dot_general" source_file="f.py" source_line=3}, backend_config={"operation_queue_id":"0","wait_on_operation_queues":[],"gemm_backend_config":{"alpha_real":1,"beta":0,"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]},"alpha_imag":0,"precision_config":{"operand_precision":["DEFAULT","DEFAULT"],"algorithm":"ALG_UNSET"},"epilogue":"DEFAULT","lhs_stride":"32","rhs_stride":"128","grad_x":false,"grad_y":false,"damax_output":false},"force_earliest_schedule":false}
  ROOT %get-tuple-element.1 = f32[4,16]{1,0} get-tuple-element((f32[4,16]{1,0}, s8[4194304]{0}) %custom-call.1), index=0
}
"""


def test_gpu_library_matmuls_are_counted():
    (m,) = hlo.matmuls(hlo.parse(GPU_HLO))
    assert (m.flops, m.einsum, m.reads_argument, m.library) == (
        2 * 4 * 16 * 8, "BE,EF->BF", True, "__cublas$gemm")
    assert hlo.flops_disagree([m], 2 * 4 * 16 * 8) is None


def test_flops_disagreeing_with_the_compiler_are_named():
    m = hlo.Matmul("dot", 1000.0, "", True)
    assert hlo.flops_disagree([], 1000.0).endswith("were missed")  # a step read as 0 FLOPs
    assert "more than the compiler" in hlo.flops_disagree([m, m], 1500.0)
    assert hlo.flops_disagree([m], None) is None  # a backend without a cost analysis


def test_a_measured_step_agrees_with_the_compilers_flops():
    m = measure(ti.MODELS["tiny"], (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode",
                batch=8, context=7, repeats=0)
    read = m.measured.flops + m.measured.attention_flops
    assert Flag.FLOPS_MISREAD not in m.flags
    # matmuls are all but the elementwise work the compiler also counts (0.97-0.99 here)
    assert 0.9 * m.compiler_flops <= read <= m.compiler_flops
