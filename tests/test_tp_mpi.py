"""Tensor parallelism across processes on the CPU: ranks under mpiexec (MPICH in CI) give the
TP=1 engine's greedy tokens and logits, followers run every iteration and return None, a rank
that fails to load or dies or stalls ends the launch quickly with a message that names it, and
orchestrator mode (one plain process starting the ranks) gives the same results. The tests marked
gpu (two or more GPUs) do the same with CUDA engines, one GPU per rank and NCCL between them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import build_engine
from tiny_hf import FAMILIES
from trtllm_runtime import LLM, ModelRunner, SamplingParams, _core, parallel
from trtllm_runtime.executor import EngineDirError, read_engine_dir

PROMPTS = [[5, 17, 99, 3, 42, 8, 77, 1, 64, 23, 11], [7, 2, 90], [33]]
NEW_TOKENS = 16
DRIVER = Path(__file__).with_name("mpi_driver.py")
LAUNCH_TIMEOUT_S = 180


def _mpi_missing() -> str:
    if not _core.mpi_available:
        return "trtllm_runtime was built without MPI"
    try:
        parallel.launcher_command(1)
    except (RuntimeError, OSError) as e:
        return str(e)
    return ""


@pytest.fixture(scope="module")
def mpi() -> None:
    """Skips without MPI; fails instead where MPI must be there (TRTLLM_REQUIRE_MPI=1, as in CI)."""
    missing = _mpi_missing()
    if missing and os.environ.get("TRTLLM_REQUIRE_MPI") == "1":
        pytest.fail(f"TRTLLM_REQUIRE_MPI=1 but: {missing}")
    if missing:
        pytest.skip(missing)


def mpiexec(n: int, args: list[str], timeout: float = LAUNCH_TIMEOUT_S,
            env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    command, launch_env = parallel.launcher_command(n)
    start = time.monotonic()
    proc = subprocess.run(command + [sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**launch_env, **(env or {})}, cwd=Path(__file__).parent)
    return proc, time.monotonic() - start


def run_driver(n: int, tasks: list[dict], out_dir: Path, **kw) -> tuple[subprocess.CompletedProcess, float]:
    spec = out_dir / "spec.json"
    spec.write_text(json.dumps({"out_dir": str(out_dir), "tasks": tasks}))
    return mpiexec(n, [str(DRIVER), str(spec)], **kw)


@pytest.fixture(scope="module")
def tp_engines(hf_models, tmp_path_factory) -> dict[tuple[str, int], Path]:
    """(family, tp_size) -> float32 CPU engine dir with context logits, for tp_size 2 and 4."""
    return {(family, tp): build_engine(hf_models[family][0], tmp_path_factory.mktemp(f"tp{tp}_{family}"),
                                       tp_size=tp, gather_context_logits=True)
            for family in FAMILIES for tp in (2, 4)}


@pytest.fixture(scope="module")
def tp1_outputs(tiny_engines) -> dict[str, dict]:
    out = {}
    for family in FAMILIES:
        with ModelRunner.from_dir(tiny_engines[family]) as runner:
            out[family] = runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS, end_id=-1, return_dict=True,
                                          return_context_logits=True, return_generation_logits=True)
    return out


def launch_all_families(mpi, tp_engines, tmp_path_factory, tp: int) -> Path:
    out_dir = tmp_path_factory.mktemp(f"tp{tp}_run")
    tasks = [{"kind": "generate", "name": family, "engine_dir": str(tp_engines[family, tp]), "prompts": PROMPTS,
              "new_tokens": NEW_TOKENS} for family in FAMILIES]
    if tp == 2:
        tasks.append({"kind": "collectives", "name": "collectives"})
    proc, _ = run_driver(tp, tasks, out_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out_dir


@pytest.fixture(scope="module")
def tp2_run(mpi, tp_engines, tmp_path_factory) -> Path:
    return launch_all_families(mpi, tp_engines, tmp_path_factory, 2)


@pytest.fixture(scope="module")
def tp4_run(mpi, tp_engines, tmp_path_factory) -> Path:
    """Four ranks on however few cores (oversubscribed on CI's two)."""
    return launch_all_families(mpi, tp_engines, tmp_path_factory, 4)


def assert_matches_tp1(run_dir: Path, name: str, reference: dict, rel_tol: float = 2e-5) -> None:
    """float32: TP only changes the summation order (row-parallel partial sums, then the all-reduce),
    so logits within `rel_tol` of the logit scale and the same greedy tokens."""
    got = np.load(run_dir / f"{name}.npz")
    for i in range(len(PROMPTS)):
        assert got[f"tokens{i}"].tolist() == reference["output_ids"][i], f"prompt {i}"
        for kind, ref in (("context", reference["context_logits"][i]), ("generation", reference["generation_logits"][i])):
            assert got[f"{kind}{i}"].shape == ref.shape
            assert np.abs(got[f"{kind}{i}"] - ref).max() <= rel_tol * np.abs(ref).max(), f"{kind} logits, prompt {i}"


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_tp2_greedy_tokens_and_logits_match_tp1(tp2_run, tp1_outputs, family):
    assert_matches_tp1(tp2_run, family, tp1_outputs[family])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_tp4_oversubscribed_greedy_tokens_and_logits_match_tp1(tp4_run, tp1_outputs, family):
    assert_matches_tp1(tp4_run, family, tp1_outputs[family])


@pytest.mark.slow
@pytest.mark.parametrize("run", ["tp2_run", "tp4_run"])
def test_followers_return_none_and_run_every_iteration_of_the_leader(run, request):
    run_dir = request.getfixturevalue(run)
    for family in FAMILIES:
        roles = [json.loads(p.read_text()) for p in sorted(run_dir.glob(f"{family}.rank*.json"))]
        assert [r["is_leader"] for r in roles] == [True] + [False] * (len(roles) - 1)
        assert [r["returned_none"] for r in roles] == [False] + [True] * (len(roles) - 1)
        assert len({r["iterations"] for r in roles}) == 1 and roles[0]["iterations"] > 0


@pytest.mark.slow
def test_all_reduce_is_a_float32_sum_rounded_once_and_all_gather_concatenates_in_rank_order(tp2_run):
    import ml_dtypes

    ranks = [np.load(tp2_run / f"collectives.rank{r}.npz") for r in range(2)]
    inputs32 = [r["input_f32"].astype(np.float64) for r in ranks]
    for r in ranks:  # identical on every rank, and the float32 sum (two addends: exact order-free)
        np.testing.assert_array_equal(r["sum_f32"], (inputs32[0] + inputs32[1]).astype(np.float32))
    for name, dtype in (("bf16", ml_dtypes.bfloat16), ("f16", np.float16)):
        exact = sum(r[f"input_{name}"].view(dtype).astype(np.float64) for r in ranks)
        expected = exact.astype(np.float32).astype(dtype).view(np.uint16)
        for r in ranks:
            np.testing.assert_array_equal(r[f"sum_{name}"], expected)
    for r in ranks:
        assert r["gather_i32"].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


@pytest.mark.slow
def test_trtllm_run_under_mpirun_prints_only_on_rank_0(mpi, tp_engines, tp1_outputs):
    proc, _ = mpiexec(2, ["-m", "trtllm_runtime.cli.run", "--engine-dir", str(tp_engines["llama3", 2]),
                          "--input-ids", ",".join(map(str, PROMPTS[0])), "--max-new-tokens", str(NEW_TOKENS),
                          "--ignore-eos"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("tokens:")]
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith(f"tokens: {tp1_outputs['llama3']['output_ids'][0]}")


@pytest.mark.slow
def test_trtllm_bench_under_mpirun_times_the_plan_broadcast_within_the_leaders_step(mpi, tp_engines, tmp_path):
    out = tmp_path / "bench.json"
    proc, _ = mpiexec(2, ["-m", "trtllm_runtime.cli.bench", "throughput", "--engine-dir", str(tp_engines["llama3", 2]),
                          "--input-len", "8", "--output-len", "4", "--num-requests", "3", "--json", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    split = json.loads(out.read_text())["per_step"]
    assert split["iterations"] >= 4
    assert 0 < split["broadcast_ms"] <= split["step_host_ms"]


def test_a_rank_bound_to_one_core_warns_how_to_launch_it(mpi):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: there is no wider binding to ask for")
    command, launch_env = parallel.launcher_command(2)
    # Both ranks inherit the single-CPU affinity, as Open MPI's default --bind-to core gives each its own core.
    proc = subprocess.run(["taskset", "-c", "0", *command, sys.executable, "-c",
                           "from trtllm_runtime import parallel; parallel.world_comm()"],
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=launch_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        assert f"rank {rank} is bound to one CPU core (CPU 0 of" in proc.stderr, proc.stderr
    assert "--bind-to none" in proc.stderr
    # Our own launcher leaves the ranks unbound: no warning.
    proc = subprocess.run([*command, sys.executable, "-c", "from trtllm_runtime import parallel; parallel.world_comm()"],
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=launch_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bound to one CPU core" not in proc.stderr, proc.stderr


def broken_copy(engine_dir: Path, tmp_path: Path, how: str) -> Path:
    broken = tmp_path / "engine"
    shutil.copytree(engine_dir, broken)
    if how == "missing":
        (broken / "rank1.engine").unlink()
    else:
        data = (broken / "rank1.engine").read_bytes()
        (broken / "rank1.engine").write_bytes(data[: len(data) // 2])
    return broken


@pytest.mark.slow
@pytest.mark.parametrize("how", ["missing", "truncated"])
def test_a_follower_that_cannot_load_its_engine_fails_the_launch_fast_naming_rank_and_file(
        mpi, tp_engines, tmp_path, how):
    broken = broken_copy(tp_engines["qwen2", 2], tmp_path, how)
    proc, seconds = mpiexec(2, ["-m", "trtllm_runtime.cli.run", "--engine-dir", str(broken), "--input-ids", "1,2,3"],
                            timeout=60)
    assert proc.returncode != 0
    # Rank 0's own line (the C++ agreement writes it before any rank leaves), then trtllm-run's.
    rank0 = [line for line in proc.stderr.splitlines() if line.startswith("trtllm rank 0: error:")]
    assert len(rank0) == 1, proc.stderr
    assert "rank 1: " in rank0[0] and "rank1.engine" in rank0[0] and "rank 0: " not in rank0[0].split("error:")[1]
    assert proc.stderr.count("trtllm-run: error:") == 1, proc.stderr  # only rank 0 prints
    assert seconds < 30


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job(mpi, tp_engines, tmp_path):
    proc, seconds = run_driver(2, [{"kind": "die", "rank": 1, "engine_dir": str(tp_engines["gpt2", 2])}], tmp_path,
                               timeout=60)
    assert proc.returncode != 0
    assert seconds < 30


@pytest.mark.slow
def test_a_rank_that_never_joins_makes_the_others_abort_after_the_timeout_naming_the_step(mpi, tp_engines, tmp_path):
    proc, seconds = run_driver(2, [{"kind": "stall", "rank": 1, "engine_dir": str(tp_engines["gpt2", 2])}], tmp_path,
                               timeout=60, env={parallel.TIMEOUT_ENV: "3"})
    assert proc.returncode != 0
    fatal = [line for line in proc.stderr.splitlines() if line.startswith("trtllm rank 0: fatal:")]
    assert len(fatal) == 1 and "reading" in fatal[0] and "did not complete within 3" in fatal[0], proc.stderr
    assert seconds < 30


# --- two "machines" on one: network namespaces ------------------------------------------------
# Each rank gets its own network namespace (joined by a veth pair, as two machines by a cable)
# and its own hostname; MPICH's hydra starts the remote rank through a launcher that enters the
# other namespace where ssh would log into the other machine, and the ranks talk over TCP only
# (UCX_TLS=tcp: no shared memory between "machines"). Needs root (ip netns) and MPICH's hydra.
NETNS_LAUNCHER = """#!/bin/sh
# ssh-style: [options] host command...: run the command on that "host" (its namespace, its hostname)
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
case $host in IP_A) ns=NS_A ;; IP_B) ns=NS_B ;; *) echo "unknown host $host" >&2; exit 1 ;; esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts(mpi, tmp_path):
    """(mpiexec command prefix for 2 ranks, one per namespace) or a skip saying what is missing."""
    launcher = parallel.launcher_command(2)[0][0]
    if "HYDRA" not in _run(launcher, "--version").stdout:
        pytest.skip("the two-namespace launch uses MPICH hydra's -launcher-exec")
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("network namespaces need root, ip and unshare")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b, veth_a, veth_b = f"trtA{tag}", f"trtB{tag}", f"tva{tag}", f"tvb{tag}"
    ip_a, ip_b = "10.231.0.1", "10.231.0.2"
    setup = [("netns", "add", ns_a), ("netns", "add", ns_b),
             ("link", "add", veth_a, "type", "veth", "peer", "name", veth_b),
             ("link", "set", veth_a, "netns", ns_a), ("link", "set", veth_b, "netns", ns_b),
             ("-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", veth_a), ("-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", veth_b),
             ("-n", ns_a, "link", "set", veth_a, "up"), ("-n", ns_b, "link", "set", veth_b, "up"),
             ("-n", ns_a, "link", "set", "lo", "up"), ("-n", ns_b, "link", "set", "lo", "up")]
    try:
        for step in setup:
            proc = _run("ip", *step)
            if proc.returncode != 0:
                pytest.skip(f"cannot make network namespaces here: ip {' '.join(step)}: {proc.stderr.strip()}")
        script = tmp_path / "netns_launcher.sh"
        script.write_text(NETNS_LAUNCHER.replace("IP_A", ip_a).replace("IP_B", ip_b).replace("NS_A", ns_a).replace("NS_B", ns_b))
        script.chmod(0o755)
        hosts = tmp_path / "hosts"
        hosts.write_text(f"{ip_a}:1\n{ip_b}:1\n")
        yield ["ip", "netns", "exec", ns_a, "unshare", "--uts", "sh", "-c", f'hostname {ns_a}; exec "$@"', "sh",
               launcher, "-launcher", "ssh", "-launcher-exec", str(script), "-f", str(hosts), "-iface", veth_a, "-n", "2"]
    finally:
        for ns in (ns_a, ns_b):
            _run("ip", "netns", "del", ns)  # takes its end of the veth pair with it


@pytest.mark.slow
def test_tp2_across_two_network_namespaces_matches_tp1(two_hosts, tp_engines, tp1_outputs, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"out_dir": str(tmp_path), "tasks": [
        {"kind": "generate", "name": "llama3", "engine_dir": str(tp_engines["llama3", 2]), "prompts": PROMPTS,
         "new_tokens": NEW_TOKENS}]}))
    env = {**os.environ, "UCX_TLS": "tcp,self", "TRTLLM_TP_TIMEOUT_S": "60"}
    proc = subprocess.run(two_hosts + [sys.executable, str(DRIVER), str(spec)], capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, env=env, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = {json.loads((tmp_path / f"llama3.rank{r}.json").read_text())["host"] for r in (0, 1)}
    assert len(hosts) == 2, hosts  # one rank on each "machine"
    assert_matches_tp1(tmp_path, "llama3", tp1_outputs["llama3"])


@pytest.mark.slow
def test_orchestrator_mode_starts_the_ranks_and_matches_tp1(mpi, tp_engines, tp1_outputs):
    with ModelRunner.from_dir(tp_engines["qwen3", 2]) as runner:
        assert runner.is_leader and runner.tp_size == 2
        out = runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS, end_id=-1, return_dict=True,
                              return_generation_logits=True)
        streamed = list(runner.generate(PROMPTS[:1], max_new_tokens=4, end_id=-1, streaming=True))
        with pytest.raises(ValueError, match="outside the vocabulary"):
            runner.generate([[100000]], max_new_tokens=2)
        assert runner.client.stats()["iterations"] > 0
    ref = tp1_outputs["qwen3"]
    assert out["output_ids"] == ref["output_ids"]
    for got, want in zip(out["generation_logits"], ref["generation_logits"]):
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()
    assert streamed[-1] == [ref["output_ids"][0][:4]]

    with LLM(tp_engines["gpt2", 2]) as llm:
        outputs = llm.generate([PROMPTS[1]], SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True))
    assert outputs[0].token_ids == tp1_outputs["gpt2"]["output_ids"][1]


@pytest.mark.slow
def test_orchestrator_mode_reports_a_rank_that_fails_to_load(mpi, tp_engines, tmp_path):
    broken = broken_copy(tp_engines["mistral", 2], tmp_path, "truncated")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1: .*rank1\.engine"):
        ModelRunner.from_dir(broken)
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_orchestrator_mode_fails_requests_when_the_ranks_die(mpi, tp_engines):
    runner = ModelRunner.from_dir(tp_engines["llama_tied", 2])
    try:
        os.killpg(runner.client.executor._proc.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="went away"):
            runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS)
    finally:
        runner.close()


# --- on GPUs: one GPU per rank, NCCL between them --------------------------------------------
#
# TP on GPUs against TP=1 on the GPU, tiny models of every family, decode CUDA graphs on (the
# default; NCCL inside them) and off:
# - float32 engines: logits within 1e-4 of the logit scale (the GPU-vs-CPU bound of
#   test_cuda_runtime.py; TP only changes the summation order), greedy tokens identical.
# - bfloat16 engines: context and first-token logits within BF16_TP_TOL of the scale (TP adds
#   roundings: each rank rounds its partial sums to bf16 before the all-reduce; the CPU backend,
#   which rounds the same way, measured at most 1.8% at TP=2 and TP=4 on these models), greedy
#   tokens identical for the first BF16_GREEDY_PREFIX tokens unless the first difference is a
#   near tie: TP=1's margin between the two tokens within twice the largest logit difference of
#   the two runs at that step (on the CPU such divergences had margins of 0 to 0.6 times it).

BF16_TP_TOL = 3e-2
BF16_GREEDY_PREFIX = 8
GPU_DTYPES = ("float32", "bfloat16")


def gpu_count() -> int:
    if not _core.cuda_available():
        return 0
    n = 0
    while True:
        try:
            _core.cuda_device_sm_arch(n)
        except RuntimeError:
            return n
        n += 1


@pytest.fixture(scope="module")
def gpus(mpi) -> int:
    n = gpu_count()
    if n < 2:
        pytest.skip(f"needs two GPUs, {n} visible")
    if not _core.nccl_available:
        pytest.skip("trtllm_runtime was built without NCCL")
    return n


@pytest.fixture(scope="module")
def gpu_engines(gpus, hf_models, tmp_path_factory) -> dict[tuple[str, str, int], Path]:
    """(family, dtype, tp_size) -> CUDA engine dir with context logits; tp_size 1, 2 and, with four GPUs, 4."""
    sizes = [1, 2] + ([4] if gpus >= 4 else [])
    return {(family, dtype, tp): build_engine(hf_models[family][0], tmp_path_factory.mktemp(f"gpu_{dtype}_tp{tp}"),
                                              dtype, tp_size=tp, gather_context_logits=True, target="cuda")
            for family in FAMILIES for dtype in GPU_DTYPES for tp in sizes}


@pytest.fixture(scope="module")
def gpu_tp1_outputs(gpu_engines) -> dict[tuple[str, str], dict]:
    out = {}
    for family in FAMILIES:
        for dtype in GPU_DTYPES:
            with ModelRunner.from_dir(gpu_engines[family, dtype, 1]) as runner:
                out[family, dtype] = runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS, end_id=-1, return_dict=True,
                                                     return_context_logits=True, return_generation_logits=True)
    return out


EAGER_FAMILIES = ("llama3", "gpt2")  # rope + GQA; learned positions + biased row-parallel linears


@pytest.fixture(scope="module")
def gpu_tp_run(gpus, gpu_engines, tmp_path_factory):
    """run(tp, graphs=True) -> dir of one mpiexec launch on tp GPUs running every (family, dtype)
    (without CUDA graphs and the peer all-reduce, so through NCCL: the float32 engines of
    EAGER_FAMILIES)."""
    runs: dict[tuple[int, bool], Path] = {}

    def run(tp: int, graphs: bool = True) -> Path:
        if tp > gpus:
            pytest.skip(f"needs {tp} GPUs, {gpus} visible")
        if (tp, graphs) not in runs:
            out_dir = tmp_path_factory.mktemp(f"gpu_tp{tp}_run")
            cases = [(f, d) for f in FAMILIES for d in GPU_DTYPES] if graphs else [(f, "float32") for f in EAGER_FAMILIES]
            tasks = [{"kind": "generate", "name": f"{family}_{dtype}", "engine_dir": str(gpu_engines[family, dtype, tp]),
                      "prompts": PROMPTS, "new_tokens": NEW_TOKENS} for family, dtype in cases]
            # Graph runs take the peer all-reduce where it fits (the default), eager runs NCCL.
            env = {"TRTLLM_CUDA_GRAPHS": "1"} if graphs else {"TRTLLM_CUDA_GRAPHS": "0", "TRTLLM_CUSTOM_ALL_REDUCE": "0"}
            proc, _ = run_driver(tp, tasks, out_dir, env=env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            runs[tp, graphs] = out_dir
        return runs[tp, graphs]

    return run


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_tp_on_gpus_matches_tp1_on_gpu(gpu_tp_run, gpu_tp1_outputs, family, tp):
    assert_matches_tp1(gpu_tp_run(tp), f"{family}_float32", gpu_tp1_outputs[family, "float32"], rel_tol=1e-4)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("family", EAGER_FAMILIES)
def test_fp32_tp2_on_gpus_without_cuda_graphs_matches_tp1(gpu_tp_run, gpu_tp1_outputs, family):
    assert_matches_tp1(gpu_tp_run(2, graphs=False), f"{family}_float32", gpu_tp1_outputs[family, "float32"],
                       rel_tol=1e-4)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("tp", [2, 4])  # 4: the all-reduce goes through float32 (cuda_backend.cpp)
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_tp_on_gpus_close_to_tp1_on_gpu(gpu_tp_run, gpu_tp1_outputs, family, tp):
    got = np.load(gpu_tp_run(tp) / f"{family}_bfloat16.npz")
    ref = gpu_tp1_outputs[family, "bfloat16"]
    for i in range(len(PROMPTS)):
        context, first = ref["context_logits"][i], ref["generation_logits"][i][0]
        assert np.abs(got[f"context{i}"] - context).max() <= BF16_TP_TOL * np.abs(context).max(), f"prompt {i}"
        assert np.abs(got[f"generation{i}"][0] - first).max() <= BF16_TP_TOL * np.abs(first).max(), f"prompt {i}"
        ours, theirs = got[f"tokens{i}"].tolist(), ref["output_ids"][i]
        j = next((j for j in range(BF16_GREEDY_PREFIX) if ours[j] != theirs[j]), None)
        if j is not None:
            logits = ref["generation_logits"][i][j]
            gap = logits[theirs[j]] - logits[ours[j]]
            diff = np.abs(got[f"generation{i}"][j] - logits).max()
            assert gap <= 2 * diff, f"prompt {i}: token {j} differs, not a near tie (margin {gap:.3g}, diff {diff:.3g})"


@pytest.mark.gpu
@pytest.mark.slow
def test_followers_on_gpus_return_none_and_run_every_iteration(gpu_tp_run):
    run_dir = gpu_tp_run(2)
    roles = [json.loads(p.read_text()) for p in sorted(run_dir.glob("qwen3_float32.rank*.json"))]
    assert [r["returned_none"] for r in roles] == [False, True]
    assert roles[0]["iterations"] == roles[1]["iterations"] > 0


@pytest.mark.gpu
def test_nccl_all_reduce_sums_and_all_gather_concatenates_on_two_gpus(gpus, tmp_path):
    import ml_dtypes

    proc, _ = run_driver(2, [{"kind": "nccl", "name": "nccl"}], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [np.load(tmp_path / f"nccl.rank{r}.npz") for r in range(2)]
    for name, dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16)):
        inputs = [r[f"input_{name}"].view(dtype) for r in ranks]
        # two addends: one rounding of the exact sum, whichever way NCCL pairs them
        expected = (inputs[0].astype(np.float64) + inputs[1].astype(np.float64)).astype(np.float32).astype(dtype)
        for r in ranks:
            np.testing.assert_array_equal(r[f"sum_{name}"].view(dtype), expected)
            np.testing.assert_array_equal(r[f"gathered_{name}"].view(dtype), np.concatenate(inputs))


@pytest.mark.gpu
def test_peer_all_reduce_sums_in_float32_rounding_once_on_two_gpus(gpus, tmp_path):
    """The one-shot all-reduce through peer memory against a float64 sum rounded once, for sizes
    of one item to 32 blocks, vector and single-item paths, float32/bfloat16/float16, with
    negative zeros (the kernel's empty marker) in every seventh item from the fourth; NCCL on the same arrays (two
    ranks: one addition, so the same). all_reduce_check also runs each sum a second time in place
    and checks it is unchanged, so the calls cycle through the kernel's three slots."""
    import ml_dtypes

    from mpi_driver import ALL_REDUCE_SIZES

    proc, _ = run_driver(2, [{"kind": "all_reduce_paths", "name": "ar"}], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [np.load(tmp_path / f"ar.rank{r}.npz") for r in range(2)]
    for name, dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        for n in ALL_REDUCE_SIZES:
            inputs = [r[f"input_{name}_{n}"].view(dtype) for r in ranks]
            assert np.abs(inputs[0].astype(np.float64)).max() > 0
            expected = sum(x.astype(np.float64) for x in inputs).astype(np.float32).astype(dtype)
            for r in ranks:
                for path in ("peer", "nccl"):
                    np.testing.assert_array_equal(r[f"{path}_{name}_{n}"].view(dtype), expected,
                                                  err_msg=f"{path} {name} n={n}")


@pytest.mark.gpu
def test_fused_peer_all_reduce_add_rms_norm_matches_the_float64_reference_on_two_gpus(gpus, tmp_path):
    """all_reduce_add_rms_norm in one peer kernel: the sum over the ranks rounded once, plus the
    residual rounded (bit-exact), and the RMSNorm of that row within one rounding (and float32's sums)
    of a float64 norm; one row to more rows than blocks, widths up to 1024 vectors, negative zeros in
    the partial sums, float32/bfloat16/float16. Per shape, five calls with new data each alternate
    the fused kernel and the plain peer all-reduce on one communicator, largest shape first: the
    slots are reused after both kernels have emptied them, so a wrong clearing or byte count shows."""
    import ml_dtypes

    from mpi_driver import ALL_REDUCE_NORM_CALLS, ALL_REDUCE_NORM_SHAPES

    proc, _ = run_driver(2, [{"kind": "all_reduce_norm", "name": "arn"}], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [np.load(tmp_path / f"arn.rank{r}.npz") for r in range(2)]
    eps, checked = 1e-5, 0
    for name, dtype, ulp in (("float32", np.float32, 2.0**-23), ("bfloat16", ml_dtypes.bfloat16, 2.0**-8),
                             ("float16", np.float16, 2.0**-11)):
        for rows, dim in ALL_REDUCE_NORM_SHAPES:
            key = f"{name}_{rows}x{dim}"
            if f"weight_{key}" not in ranks[0]:
                continue  # float32 rows past 1024 vectors
            get = lambda r, what: r[f"{what}_{key}"].view(dtype).reshape(rows, dim)
            residual, w = get(ranks[0], "residual"), ranks[0][f"weight_{key}"].view(dtype).astype(np.float64)
            for j in range(ALL_REDUCE_NORM_CALLS):
                reduced = sum(get(r, f"partial_{j}").astype(np.float64) for r in ranks).astype(np.float32).astype(dtype)
                for r in ranks:
                    if j % 2:  # the plain all-reduce
                        np.testing.assert_array_equal(get(r, f"sum_{j}"), reduced, err_msg=f"{key} call {j}")
                        continue
                    expected = (reduced.astype(np.float64) + residual.astype(np.float64)).astype(np.float32).astype(dtype)
                    np.testing.assert_array_equal(get(r, f"sum_{j}"), expected, err_msg=f"{key} call {j}")
                    s = expected.astype(np.float64)
                    exact = s / np.sqrt((s * s).mean(axis=1, keepdims=True) + eps) * w
                    err = np.abs(get(r, f"normed_{j}").astype(np.float64) - exact)
                    # one rounding to the dtype, plus the float32 sums of the kernel (~1e-5 relative)
                    assert np.all(err <= 2 * ulp * np.abs(exact) + 1e-5 * np.abs(exact).max()), f"{key} call {j}"
                    checked += 1
    assert checked == 2 * 3 * (4 + 5 + 5)  # ranks x fused calls x shapes (float32: 4, 16-bit: 5 each)


@pytest.mark.gpu
def test_more_ranks_on_a_machine_than_gpus_fails_fast_saying_so(gpus, tmp_path):
    proc, seconds = run_driver(gpus + 1, [{"kind": "nccl", "name": "nccl"}], tmp_path, timeout=120)
    assert proc.returncode != 0
    rank0 = [line for line in proc.stderr.splitlines() if line.startswith("trtllm rank 0: error:")]
    assert len(rank0) == 1 and f"runs {gpus + 1} ranks but has {gpus} GPUs" in rank0[0], proc.stderr
    assert seconds < 60


@pytest.mark.gpu
@pytest.mark.slow
def test_a_rank_on_a_gpu_that_dies_ends_the_job(gpu_engines, tmp_path):
    proc, seconds = run_driver(2, [{"kind": "die", "rank": 1, "engine_dir": str(gpu_engines["gpt2", "float32", 2])}],
                               tmp_path, timeout=120)
    assert proc.returncode != 0
    assert seconds < 60


def test_a_tp_engine_without_mpi_says_how_to_get_it(tp_engines, monkeypatch):
    monkeypatch.setattr(parallel._core, "mpi_available", False)
    with pytest.raises(RuntimeError, match="built without MPI"):
        ModelRunner.from_dir(tp_engines["gpt2", 2])


def test_read_engine_dir_for_one_rank_checks_only_that_rank_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"tp_size": 2, "engine_files": ["rank0.engine", "rank1.engine"]}))
    (tmp_path / "rank1.engine").write_bytes(b"")
    assert read_engine_dir(tmp_path, rank=1)["tp_size"] == 2
    with pytest.raises(EngineDirError, match="missing rank0.engine"):
        read_engine_dir(tmp_path, rank=0)
    with pytest.raises(EngineDirError, match="no rank 2"):
        read_engine_dir(tmp_path, rank=2)
