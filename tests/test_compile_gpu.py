"""The attention kernels and the smoke config's steps compile for NVIDIA H100 (sm_90a) on this CPU.

jax's CUDA plugin describes compile-only GPUs from the project's spec files
(qwenlong_jax/assets/gpu_specs/, qwenlong_jax/capacity/targets.py); the programs go through XLA:GPU,
Triton and ptxas as on a GPU host, without autotuning. No monkeypatching: the kernels take their
Triton ("loop") shape because the active mesh is made of GPU devices. Each test asserts the
compiled program holds the Triton kernels it should -- a silent XLA fallback (the reference
attention, [T, S] scores) has none -- and that its temporaries stay O(T).

Skipped only when the CUDA compiler wheels are absent (tests/requirements.txt installs them).
"""

import json

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from kernels import backend
from qwenlong_jax.capacity import targets
from qwenlong_jax.cli import compile as compile_cli
from tests import kernel_cases

GIB = 2**30
needs_cuda = pytest.mark.skipif(not targets.cuda_available(), reason=targets.CUDA_INSTALL)


def _triton(compiled) -> int:
    return targets.kernel_count(compiled, "gpu")


@pytest.fixture(scope="module")
def gpu_mesh():
    """One H100 (a 1-node x 1-GPU target)."""
    return Mesh(np.array(targets.gpu_devices("h100:1x1")), ("data",))


# --- the target table and the spec files ------------------------------------------------------


def test_targets_parse_both_kinds():
    tpu = targets.parse("v5p:4x4x4")
    assert (tpu.kind, tpu.chip, tpu.chips, tpu.kernel_name) == ("tpu", "v5p", 64, "Mosaic")
    h100 = targets.parse("h100:16x8")
    assert (h100.kind, h100.chips, h100.kernel_name) == ("gpu", 128, "Triton")
    # The driver's total for an H100 80GB; a run may allocate jax's default 75% of it.
    assert h100.device_memory_bytes == 84942979072
    assert h100.memory_bytes == int(0.75 * 84942979072)
    assert targets.parse("h200:8x8").device_memory_bytes == 151397597184
    for bad, msg in [("h100:16", "NODESxGPUS"), ("a9000:1x1", "unknown chip 'a9000'"), ("v5p:4x4", "AxBxC")]:
        with pytest.raises(targets.TopologyError, match=msg):
            targets.parse(bad)


def test_mem_fraction_follows_jax_client_variable(monkeypatch):
    monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "0.9")
    assert targets.parse("h100:1x8").memory_bytes == int(0.9 * 84942979072)
    monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "2")
    with pytest.raises(targets.TopologyError, match=r"must be in \(0, 1\]"):
        targets.parse("h100:1x8")


@needs_cuda
@pytest.mark.parametrize("chip_name", sorted(targets.GPU_SPECS))
def test_gpu_spec_files_parse(chip_name):
    """The plugin accepts each spec (it rejects unknown fields) and describes the GPU it names."""
    devices = targets.gpu_devices(f"{chip_name}:2x4")
    assert len(devices) == 8 and {d.platform for d in devices} == {"gpu"}
    assert {d.device_kind for d in devices} == {
        {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200 141GB HBM3e"}[chip_name]
    }
    assert [d.process_index for d in devices] == [0] * 4 + [1] * 4  # node by node


# --- the kernels ------------------------------------------------------------------------------


@needs_cuda
def test_backend_comes_from_the_gpu_mesh(gpu_mesh):
    assert jax.default_backend() == "cpu"
    with jax.set_mesh(gpu_mesh):
        assert backend.target_backend() == "gpu" and backend.resolve_kernel(None) == "loop"
        assert not backend.resolve_interpret(None)


@needs_cuda
@pytest.mark.parametrize("T", [8192, 32768, 131072])
def test_flash_fwd_bwd_compiles_for_one_h100(gpu_mesh, T):
    compiled = kernel_cases.flash_fwd_bwd(gpu_mesh, T)
    assert _triton(compiled) == 3  # fwd, dq, dk/dv
    mem = compiled.memory_analysis()
    # O(T) temporaries (a [T, T] score matrix would be 2 GiB at 32K): under 4 KiB per token.
    assert mem.temp_size_in_bytes < 4096 * T, mem


@needs_cuda
def test_decode_compiles_for_one_h100_with_a_64k_prompt_cache(gpu_mesh):
    compiled = kernel_cases.decode_64k(gpu_mesh)
    assert _triton(compiled) == 2  # prompt cache, response caches
    assert compiled.memory_analysis().temp_size_in_bytes < 64 * 2**20  # no copy of the cache


@needs_cuda
def test_ring_with_flash_pairs_compiles_over_4_h100():
    """Ring attention over 4 GPUs of one node (sequence axis), flash pairs, 32K tokens."""
    compiled = kernel_cases.ring_fwd_bwd(Mesh(np.array(targets.gpu_devices("h100:1x4")), ("sequence",)))
    assert _triton(compiled) >= 3
    assert compiled.memory_analysis().temp_size_in_bytes < 1 * GIB


@needs_cuda
def test_gpu_mesh_keeps_tensor_groups_inside_a_node():
    """On GPUs the tensor axis is laid innermost over the nodes' devices (sharding.GPU_LAYOUT):
    the 32B GPU layout's tensor=4 x sequence=4 over 2 nodes puts each tensor group on one node
    and each sequence group across the two (jax.make_mesh's order did the opposite)."""
    from qwenlong_jax.config.schema import MeshConfig
    from qwenlong_jax.parallel import sharding

    devices = targets.gpu_devices("h100:2x8")
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=4, sequence=4), devices)
    node = np.vectorize(lambda d: d.process_index)(mesh.devices)[0, 0]  # [tensor, sequence]
    assert all(len(set(node[:, j])) == 1 for j in range(4))  # one node per tensor group
    assert all(len(set(node[i, :])) == 2 for i in range(4))  # sequence groups span both
    assert sorted(d.id for d in mesh.devices.flat) == list(range(16))
    # fsdp over the nodes, tensor=8 fills a node
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=2, tensor=8, sequence=1), devices)
    node = np.vectorize(lambda d: d.process_index)(mesh.devices)[0, :, :, 0]
    assert node.tolist() == [[0] * 8, [1] * 8]


# --- the run's steps through the compile check -----------------------------------------------


@needs_cuda
def test_smoke_steps_compile_for_4_h100_with_flash(tmp_path, capsys):
    """The smoke config's SFT update, GRPO logprob pass and update, and sampler, compiled by
    XLA:GPU for 1 node x 4 H100 (data=2 x tensor=2) with flash attention: the updates and the
    logprob pass hold the Triton kernels, the table says Triton."""
    out = tmp_path / "compile.json"
    rc = compile_cli.main(
        [
            "--config",
            "configs/smoke.py",
            "--target",
            "h100:1x4",
            "--phases",
            "sft,rl_short",
            "--json",
            str(out),
            "--config.mesh.data=2",
            "--config.mesh.tensor=2",
            "--config.model.attention_impl=flash",
            "--config.data.eval_lengths=()",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    res = json.loads(out.read_text())
    assert res["topology"] == "h100:1x4" and res["kind"] == "gpu"
    assert res["hbm_bytes"] == targets.parse("h100:1x4").memory_bytes
    fns = {(r["phase"], r["fn"]): r for r in res["results"]}
    assert set(fns) == {("sft", "update"), ("rl_short", "old_logp"), ("rl_short", "update"), ("rl_short", "sample")}
    for r in fns.values():
        assert r["ok"] and r["fits"] and r["error"] == "" and 0 < r["total_bytes"] < r["hbm_bytes"]
    # forward (logprob pass) 1 kernel; forward + backward (updates) 3 kernels
    assert fns[("rl_short", "old_logp")]["pallas_kernels"] >= 1
    for key in (("sft", "update"), ("rl_short", "update")):
        assert fns[key]["pallas_kernels"] >= 3, (key, fns[key])
    header = [line for line in text.splitlines() if line.startswith("phase ")]
    assert len(header) == 1 and "Triton" in header[0] and "Mosaic" not in header[0], header


def test_gpu_target_without_cuda_wheels_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(targets, "cuda_available", lambda: False)
    assert compile_cli.main(["--config", "configs/smoke.py", "--target", "h100:1x4", "--config.mesh.data=4"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith('error: the CUDA compiler wheels are not installed: pip install "jax-cuda13-plugin==0.10.2"')
        and "\n" not in err
    )


def test_bad_target_is_one_line(capsys):
    assert compile_cli.main(["--config", "configs/smoke.py", "--target", "h100:16"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: target 'h100:16'") and "\n" not in err


@needs_cuda
def test_gpu_no_fit_is_exit_2_naming_phase_function_and_knob(monkeypatch, capsys):
    """The exit rule is the TPU one: a function over the GPU's budget (here a 1e-6 share of the
    H100's memory) exits 2 with one error line naming the phase, the function and the knob."""
    monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "0.000001")
    rc = compile_cli.main(
        [
            "--config",
            "configs/smoke.py",
            "--target",
            "h100:1x4",
            "--phases",
            "rl_short",
            "--functions",
            "old_logp",
            "--config.mesh.data=2",
            "--config.mesh.tensor=2",
            "--config.data.eval_lengths=()",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: phase rl_short, old_logp: needs ") and "\n" not in err
    assert err.endswith("per device; change rl.micro_batch, model.remat or mesh.sequence")
