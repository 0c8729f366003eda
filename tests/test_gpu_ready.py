"""What breaks or misleads on first contact with a GPU, checked on the CPU by simulation: checkpoints
restored for another device, precision pinned across a resume, the LSTM under bf16 autocast,
honest step timing, DDP and compile wiring, batch prefetch, pack micro-batches, out-of-memory
fallback, device choice under torchrun. GPU-only checks are marked `gpu` and skip without CUDA."""
import math
import time
from pathlib import Path

import pytest
import torch

import train.book
import train.ddp
import train.loop
import train.packed
from models import ModelConfig, build_model
from models.counting import flops_per_token, useful_flops_per_token
from train import checkpoint as ckpt
from train.api import train_run
from train.cli import main
from train.config import ConfigError, RunConfig
from train.contract import EXIT_OUT_OF_MEMORY
from train.ddp import DistInfo
from train.optim import build_optimizer, pack_plan, plan_batches
from train.packed import train_packed
from train.rundir import read_metrics, read_run

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model.width": 32, "model.depth": 1, "model.context": 32, "data.vocab_size": 64,
        "train.batch_tokens": 512, "train.tokens": 512 * 12, "eval.tokens": 1024, "eval.points": 4,
        "train.threads": 1, "train.device": "cpu", "run.log_every": 1, "run.ckpt_every": 4}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny(**kw) -> RunConfig:
    return RunConfig().with_overrides({**TINY, **kw})


def curve(run_dir):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


class Interrupt(Exception):
    pass


def stop_at(step):
    def progress(row):
        if row["step"] >= step:
            raise Interrupt
    return progress


# ---- checkpoints restored for another device; precision pinned -------------------

def test_a_cpu_run_restored_for_a_cuda_device_loads_on_the_cpu_and_keeps_fp32(tmp_path):
    cfg = tiny().resolved()
    with pytest.raises(Interrupt):
        train_run(cfg, tmp_path / "run", progress=stop_at(10))
    saved = ckpt.load_checkpoint(tmp_path / "run" / "ckpt" / "step_00000008.pt")
    assert saved["dtype"] == "float32"
    # the device a GPU host would hand the trainer; nothing is placed on it here
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.optim, torch.device("cpu"))
    torch.manual_seed(123)
    book, step = train.loop.restore(cfg, tmp_path / "run", model, optimizer, torch.device("cuda"))
    assert step == 8
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved["model"].items())
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])   # RNG states set from CPU tensors
    assert book.dtype == "float32"   # train.dtype=auto would be bf16 on CUDA: the run keeps its precision
    assert train.loop.precision("auto", torch.device("cuda")) == "bfloat16"
    book.close()


def test_rng_state_written_with_more_gpus_restores_on_fewer(monkeypatch):
    """A checkpoint from an older trainer holds one CUDA state per visible GPU; resuming where
    fewer GPUs are visible must not ask for the missing ones."""
    calls = []

    def fake_set(state, device="cuda"):
        index = torch.device(device).index or 0 if not isinstance(device, int) else device
        if index >= 1:
            raise RuntimeError(f"invalid device ordinal {index}")
        calls.append((state.device.type, state.dtype))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake_set)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", fake_set)
    state = {"python": __import__("random").getstate(), "numpy": __import__("numpy").random.get_state(),
             "torch": torch.get_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    ckpt.set_rng_state(state)
    assert calls == [("cpu", torch.uint8)]


def test_summary_records_the_precision():
    assert train.loop.precision("float32", torch.device("cuda"), "bfloat16") == "float32"
    assert train.loop.precision("auto", torch.device("cpu")) == "float32"


# ---- the LSTM under bf16 autocast --------------------------------------------------

def test_lstm_under_bf16_autocast_runs_its_recurrence_in_fp32(tmp_path):
    model = build_model(ModelConfig(kind="lstm", width=32, depth=2, context=16, vocab_size=50))
    seen = []
    model.lstm.register_forward_hook(lambda m, inp, out: seen.append((inp[0].dtype, out[0].dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(torch.randint(0, 50, (2, 16)))
    assert seen == [(torch.float32, torch.float32)]
    assert logits.dtype == torch.bfloat16   # the head still runs in bf16
    s = train_run(tiny(**{"model.kind": "lstm", "train.dtype": "bfloat16"}), tmp_path / "run")
    assert s["status"] == "completed" and s["dtype"] == "bfloat16"
    assert s["final_val_loss"] < math.log(64)


# ---- honest timing -------------------------------------------------------------

def test_tokens_per_s_counts_the_wait_at_the_host_sync(tmp_path, monkeypatch):
    """On CUDA the step's kernels finish while the host waits at the loss read-back; that wait
    is simulated here as a sleep inside the all-reduce of the losses, and must count as step time."""
    real = train.ddp.all_mean

    def slow_device(t, info):
        time.sleep(0.05)
        return real(t, info)
    monkeypatch.setattr(train.ddp, "all_mean", slow_device)
    s = train_run(tiny(), tmp_path / "run")
    assert s["tokens_per_s"] <= 512 / 0.05


# ---- DDP and compile ---------------------------------------------------------------

def test_ddp_is_compiled_as_a_whole_and_does_not_rebroadcast_buffers(tmp_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cfg = tiny(**{"model.pos": "rope"}).resolved()
        model = build_model(cfg.model)
        book = train.book.RunBook(cfg, tmp_path / "run", 0.0, write=False)
        stepper = train.loop.SingleStep(book, model, build_optimizer(model, cfg.optim, torch.device("cpu")),
                                        plan_batches(cfg), lambda: torch.autocast("cpu", enabled=False),
                                        DistInfo(0, 2, 0), torch.device("cpu"), compile=True)
        ddp_module = stepper.model._orig_mod
        assert isinstance(ddp_module, torch.nn.parallel.DistributedDataParallel)
        assert ddp_module.module is model
        assert not getattr(ddp_module, "forward_sync_buffers", getattr(ddp_module, "broadcast_buffers", True))
    finally:
        dist.destroy_process_group()


@pytest.fixture
def compiles(monkeypatch):
    """torch.compile with the eager backend (graph capture only, fast on CPU); yields a function
    returning the number of graphs compiled since the fixture started."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    # count every graph: past dynamo's recompile limit a function silently runs eager and stops counting
    with torch._dynamo.config.patch(recompile_limit=64):
        yield lambda: counters["stats"]["unique_graphs"]
    torch._dynamo.reset()


def test_a_compiled_run_compiles_once_for_training_and_once_for_eval(tmp_path, compiles):
    # 40 val windows in chunks of 16: a short last chunk of 8
    s = train_run(tiny(**{"train.compile": True, "eval.tokens": 40 * 32}), tmp_path / "run")
    assert s["status"] == "completed"
    assert compiles() == 2
    train_run(tiny(**{"eval.tokens": 40 * 32}), tmp_path / "eager")
    assert curve(tmp_path / "run") == curve(tmp_path / "eager")


@pytest.mark.slow
def test_a_compiled_pack_recompiles_a_logarithmic_number_of_times(tmp_path, compiles):
    budgets = [6, 7, 8, 9, 10, 11, 12, 13]   # every run leaves the pack at its own step
    cfgs = [tiny(**{"run.seed": i, "train.tokens": 512 * n, "train.compile": True}) for i, n in enumerate(budgets)]
    summaries = train_packed(cfgs, [tmp_path / f"c{i}" for i in range(8)])
    assert all(s["status"] == "completed" for s in summaries)
    assert compiles() <= 2 * 4    # packs of 8, 4, 2, 1 models: train and eval graphs each
    eager = [tiny(**{"run.seed": i, "train.tokens": 512 * n}) for i, n in enumerate(budgets)]
    train_packed(eager, [tmp_path / f"e{i}" for i in range(8)])
    for i in range(8):
        assert curve(tmp_path / f"c{i}") == curve(tmp_path / f"e{i}")


# ---- batches, micro-batches, out of memory ----------------------------------------

def test_the_next_batch_is_built_while_the_current_step_runs():
    built = []

    class Data:
        def train_batch(self, index, rows):
            built.append(index)
            return torch.full((rows, 3), index)

    cfg = tiny().resolved()
    batches = train.loop.Batches(Data(), plan_batches(cfg), 0, torch.device("meta"), last=3)
    assert batches.get(0).device.type == "meta" and built == [0]
    batches.prefetch(1)                  # called right after the step's kernels are queued
    assert built == [0, 1]
    batches.get(1)
    assert built == [0, 1]               # not built twice
    batches.prefetch(3)                  # past the last step: nothing to build
    assert built == [0, 1]


def test_a_pack_on_cuda_divides_the_micro_batch_by_its_models():
    cfg = RunConfig().with_overrides({"model.context": 256, "train.batch_tokens": 65536, "data.vocab_size": 512})
    plan = plan_batches(cfg.resolved())
    assert plan.micro_rows == 256
    packed = pack_plan(plan, 32, "cuda")
    assert packed.micro_rows == 8 and packed.micro_rows * packed.accum_steps == 256
    assert pack_plan(plan, 32, "cpu") == plan
    assert pack_plan(plan, 3, "cuda").micro_rows == 64   # the largest divisor of 256 at most 256 / 3


def _oom_above(monkeypatch, module, name, rows):
    real = getattr(module, name)

    def limited(model, batch, amp):
        if torch.is_grad_enabled() and len(batch) > rows:
            raise torch.OutOfMemoryError(f"simulated: {len(batch)} sequences do not fit")
        return real(model, batch, amp)
    monkeypatch.setattr(module, name, limited)


def test_out_of_memory_retries_the_step_with_smaller_micro_batches(tmp_path, monkeypatch, capsys):
    _oom_above(monkeypatch, train.loop, "lm_loss", 4)
    s = train_run(tiny(), tmp_path / "run")
    assert s["status"] == "completed"
    assert "out of memory" in capsys.readouterr().err
    monkeypatch.undo()
    train_run(tiny(**{"train.micro_batch_tokens": 4 * 32}), tmp_path / "ref")
    assert curve(tmp_path / "run") == curve(tmp_path / "ref")


def test_one_out_of_memory_does_not_fail_a_pack(tmp_path, monkeypatch):
    _oom_above(monkeypatch, train.packed, "packed_lm_loss", 2)
    cfgs = [tiny(**{"run.seed": s}) for s in range(3)]
    summaries = train_packed(cfgs, [tmp_path / f"p{i}" for i in range(3)])
    assert [s["status"] for s in summaries] == ["completed"] * 3
    monkeypatch.undo()
    train_packed([tiny(**{"run.seed": s, "train.micro_batch_tokens": 2 * 32}) for s in range(3)],
                 [tmp_path / f"r{i}" for i in range(3)])
    for i in range(3):
        assert curve(tmp_path / f"p{i}") == curve(tmp_path / f"r{i}")


def test_out_of_memory_at_one_sequence_exits_with_its_own_code(tmp_path, monkeypatch, capsys):
    _oom_above(monkeypatch, train.loop, "lm_loss", 0)
    out = tmp_path / "run"
    assert main(["--out", str(out), *(f"{k}={v}" for k, v in TINY.items())]) == EXIT_OUT_OF_MEMORY
    assert "out of device memory even at one sequence" in capsys.readouterr().err
    assert read_run(out)[2]["status"] == "failed"


# ---- devices -----------------------------------------------------------------------

def test_an_explicit_cuda_device_under_torchrun_is_refused():
    with pytest.raises(ConfigError, match="torchrun"):
        train.loop.resolve_device("cuda:1", DistInfo(rank=1, world_size=2, local_rank=1))
    assert train.loop.resolve_device("cpu", DistInfo(rank=1, world_size=2, local_rank=1)).type == "cpu"


# ---- benchmarks ------------------------------------------------------------------------

def _bench(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_throughput_benchmark_knows_h100_variants_and_counts_causal_attention_once():
    tp = _bench("throughput")
    assert tp.peak_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert tp.peak_for_name("NVIDIA H100 NVL") == 835e12
    assert tp.peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert tp.peak_for_name("NVIDIA H200") == 989e12
    assert tp.peak_for_name("Some GPU") is None
    cfg = ModelConfig(width=768, depth=12, heads=12, context=1024, vocab_size=50257)
    attention = 3 * 12 * 2 * (2 * 1024 * 768)
    assert flops_per_token(cfg, "exact") - useful_flops_per_token(cfg) == pytest.approx(attention * 1023 / 2048)
    args = tp.parse_args(["--sizes", "gpt:768x12", "--compile", "--dtype", "bfloat16", "--vocab-pad", "64",
                          "--arch", "rmsnorm,rope,swiglu"])
    assert args.compile and args.dtype == "bfloat16" and args.vocab_pad == 64 and args.arch == "rmsnorm,rope,swiglu"


def test_sustained_rate_syncs_once_around_many_repetitions():
    tp = _bench("throughput")
    syncs = []
    rate = tp.sustained_rate(lambda: time.sleep(0.001), flops=1e6, reps=20, sync=lambda: syncs.append(1))
    assert len(syncs) == 2 * 3             # one sync before and after each block of 20 calls, 3 blocks
    assert 1e6 / rate > 0.0009             # seconds per call: the sleep, not the sync


def test_packing_benchmark_waits_for_its_workers_with_a_timeout():
    import queue
    pk = _bench("packing")
    assert pk.parse_args(["--procs", "--compile", "--timeout", "30"]).timeout == 30
    q = queue.Queue()
    q.put(1.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="1 of 2"):
        pk.collect(q, 2, 0.2, "workers")     # one worker never answers
    assert time.monotonic() - t0 < 5


# ---- on a GPU --------------------------------------------------------------------------

GPU = {"train.device": "cuda", "train.threads": 0}


@pytest.mark.gpu
@cuda
def test_gpu_resume_after_an_interruption_tracks_the_uninterrupted_run(tmp_path):
    with pytest.raises(Interrupt):
        train_run(tiny(**GPU), tmp_path / "a", progress=stop_at(10))
    assert train_run(tiny(**GPU), tmp_path / "a")["status"] == "completed"
    b = train_run(tiny(**GPU), tmp_path / "b")
    a = read_run(tmp_path / "a")[2]
    assert a["final_val_loss"] == pytest.approx(b["final_val_loss"], abs=0.02)   # bf16 kernels: not bitwise


@pytest.mark.gpu
@cuda
def test_gpu_run_uses_bf16_and_the_summary_says_so(tmp_path):
    s = train_run(tiny(**GPU), tmp_path / "run")
    assert s["dtype"] == "bfloat16" and s["device"].startswith("cuda")
    model = build_model(tiny().resolved().model).cuda()
    with train.loop.autocast(torch.device("cuda"), s["dtype"]):
        logits, _ = model(torch.randint(0, 64, (2, 32), device="cuda"))
    assert logits.dtype == torch.bfloat16


@pytest.mark.gpu
@cuda
def test_gpu_compiled_run_compiles_twice_and_matches_eager(tmp_path):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    c = train_run(tiny(**GPU, **{"train.compile": True, "eval.tokens": 40 * 32}), tmp_path / "c")
    assert counters["stats"]["unique_graphs"] == 2
    e = train_run(tiny(**GPU, **{"eval.tokens": 40 * 32}), tmp_path / "e")
    assert c["final_val_loss"] == pytest.approx(e["final_val_loss"], abs=0.02)


@pytest.mark.gpu
@cuda
def test_gpu_lstm_in_bf16_keeps_the_recurrence_in_fp32(tmp_path):
    model = build_model(ModelConfig(kind="lstm", width=64, depth=2, context=32, vocab_size=64)).cuda()
    seen = []
    model.lstm.register_forward_hook(lambda m, inp, out: seen.append(out[0].dtype))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(torch.randint(0, 64, (2, 32), device="cuda"))
    assert seen == [torch.float32]
    s = train_run(tiny(**GPU, **{"model.kind": "lstm"}), tmp_path / "run")
    assert s["status"] == "completed" and s["final_val_loss"] < math.log(64)
