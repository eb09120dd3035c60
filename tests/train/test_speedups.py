"""--compile and --cuda_graph: the trainer's fast paths train exactly what the plain eager path trains.

The GPU tests compare runs that differ only in the speed settings, step by step. Where both run in fp32 the
difference is summation order (the graphed loss sums every row with ignored rows weighted 0, rows are padded to
bucket lengths): bound GRAPH_FP32 on every step's loss and gradient norm. The learning rate is tiny there because
Adam turns gradient components at rounding-noise level into full-size updates, which would make two exact runs
drift apart for reasons unrelated to what is tested. Under bf16 with compiled blocks the kernels differ (fused
elementwise work rounds differently): bound BF16 on the loss curve.
"""

import pytest
import torch

from rwkv_peft.ops import fla as fla_backend
from rwkv_peft.train.session import slow_start_note

from .helpers import losses, records, run_cli, train_args

GRAPH_FP32 = 1e-5   # relative, per step loss
BF16 = 2e-2         # relative, per step loss

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and the GPU fast paths need a GPU")


def gpu_args(base, data, proj, *extra):
    args = train_args(base, data, proj, *extra, steps=12)
    at = args.index("--accelerator")
    args[at + 1] = "gpu"
    return args


def test_cuda_graph_on_cpu_is_a_clear_error(base, data, tmp_path):
    r = run_cli(*train_args(base, data, tmp_path / "p", "--peft", "lora", "--cuda_graph", "1", steps=2))
    assert r.rc == 2 and "--cuda_graph 1 is not possible here: it needs a CUDA device" in r.err


def test_a_named_wkv_backend_that_cannot_run_here_fails_before_training(base, data, tmp_path):
    r = run_cli(*train_args(base, data, tmp_path / "p", "--peft", "lora", "--op", "triton", steps=2))
    assert r.rc == 2 and "backend 'triton' for wkv7: it needs a CUDA device" in r.err
    assert "Traceback" not in r.err and not (tmp_path / "p" / "metrics.jsonl").exists()


def test_rwkv6_compiles_when_asked(base_v6, data, tmp_path):
    r = run_cli(*train_args(base_v6, data, tmp_path / "p", "--peft", "lora", "--compile", "1", steps=3))
    assert r.rc == 0, r.err
    assert "on cpu, compile," in r.err and losses(tmp_path / "p")[-1] < losses(tmp_path / "p")[0]


def test_the_slow_start_note_names_what_takes_the_time():
    assert slow_start_note(False, "torch", False) is None
    assert slow_start_note(True, "triton", True) == ("the first steps are slow: they compile the blocks (a minute or "
                                                     "two on a fresh machine) and capture CUDA graphs")
    assert "autotune fla's WKV kernels" in slow_start_note(False, "fla", False)


def test_auto_is_off_on_cpu(base, data, tmp_path):
    r = run_cli(*train_args(base, data, tmp_path / "p", "--peft", "lora", steps=2))
    assert r.rc == 0 and "precision fp32 on cpu, WKV torch," in r.err
    assert "cuda_graph" not in r.err and "compile," not in r.err


@cuda
# No dropout: its masks are drawn per padded shape, and the graphed run pads rows to other lengths.
@pytest.mark.parametrize("method", [("--peft", "lora", "--lora_config", '{"lora_dropout":0}'),
                                    ("--train_type", "state")])
def test_graphed_steps_equal_eager_steps(base, data, tmp_path, method):
    """Graphed runs keep the frozen embedding table on the host (rows gathered one step ahead), eager ones on the
    GPU: the same steps either way."""
    runs = {}
    for graph in ("0", "1"):
        proj = tmp_path / f"graph{graph}"
        r = run_cli(*gpu_args(base, data, proj, *method, "--op", "torch", "--compile", "0", "--cuda_graph", graph,
                              "--accumulate_grad_batches", "2", "--lr_init", "1e-6", "--lr_final", "1e-6"))
        assert r.rc == 0, r.err
        assert ("embedding table stays in host memory" in r.err) == (graph == "1")
        runs[graph] = records(proj)
    assert "cuda_graph" in (tmp_path / "graph1" / "train_log.txt").read_text()
    for eager, graphed in zip(runs["0"], runs["1"], strict=True):
        for key in ("loss", "grad_norm"):
            assert abs(graphed[key] - eager[key]) <= GRAPH_FP32 * abs(eager[key]), (key, eager["step"])


LORA = ("--peft", "lora", "--lora_config", '{"lora_dropout":0}')
STATE = ("--train_type", "state", "--lr_init", "0.05", "--lr_final", "0.05")


@cuda
# triton's kernels are torch operators, traced into the compiled blocks (no graph break there); fla's break the graph.
# State tuning: the initial state is a graph input whose gradient leaves through the WKV operator's backward.
@pytest.mark.parametrize("op, method", [("fla", LORA), ("auto", LORA), ("auto", STATE)],
                         ids=["fla", "auto", "auto-state"])
def test_compiled_graphed_bf16_run_follows_the_eager_one(base, data, tmp_path, op, method):
    # LoRA at a tenth of the helpers' learning rate: at 1e-2 the two runs' bf16 roundings (1.5e-5 apart at step 1)
    # grow each step, to 0.6% at step 6 and 2.1-2.5% by step 12 (H200, session 21, with or without the partitioner's
    # activation budget): the comparison then measures the trajectory's sensitivity, not the fast path.
    if op == "fla" and not fla_backend.installed():
        pytest.skip("fla-core not installed")
    lr = ("--lr_init", "1e-3", "--lr_final", "1e-3") if method is LORA else ()
    runs = {}
    for name, fast in (("eager", "0"), ("fast", "auto")):
        proj = tmp_path / name
        r = run_cli(*gpu_args(base, data, proj, *method, *lr, "--precision", "bf16", "--compile", fast,
                              "--cuda_graph", fast, "--op", op))
        assert r.rc == 0, r.err
        runs[name] = losses(proj)
    log = (tmp_path / "fast" / "train_log.txt").read_text()
    assert "compile, cuda_graph, WKV " + ("fla" if op == "fla" else "triton") in log  # "auto" on CUDA in bf16: ours
    assert runs["fast"][-1] < runs["fast"][0]
    gaps = [abs(fast - eager) / abs(eager) for eager, fast in zip(runs["eager"], runs["fast"], strict=True)]
    assert max(gaps) <= BF16, [f"{g:.1e}" for g in gaps]


def test_the_captured_function_equals_the_eager_micro_step_on_cpu(base, data, tmp_path):
    """What a graph captures (dense loss, tensor normalizer, rows padded to a bucket) computes the eager micro-step's
    loss and gradients; checked on the CPU, where no graph is involved."""
    from rwkv_peft.data.batch import bucket_length
    from rwkv_peft.train import build_config
    from rwkv_peft.train.loop import Trainer

    cfg = build_config({"load_model": str(base), "data_file": data, "data_type": "binidx", "ctx_len": 64,
                        "micro_bsz": 4, "precision": "fp32", "accelerator": "cpu", "proj_dir": str(tmp_path / "p"),
                        "peft": "lora", "lora_config": '{"lora_dropout":0}', "progress": "none"})
    trainer = Trainer(cfg)
    params = trainer.s.trainable
    batch = next(iter(trainer.s.loader))
    n = batch.num_tokens
    eager_ce = trainer.forward_backward(batch, n)
    eager = [p.grad.clone() for p in params]
    for p in params:
        p.grad.zero_()  # the static gradient tensors a graph adds into
    padded = batch.pad_to(bucket_length(batch.input_ids.shape[1], 64) + 16)
    for accumulated in (1, 2):  # a second micro-batch adds to the first
        loss = trainer._dense_forward_backward(padded.input_ids, padded.labels, torch.tensor(float(n)))
        assert abs(float(loss) * n - eager_ce) <= GRAPH_FP32 * eager_ce
        for p, g in zip(params, eager, strict=True):
            assert torch.allclose(p.grad, accumulated * g, rtol=GRAPH_FP32, atol=1e-7)


@cuda
def test_launching_a_graphed_step_never_waits_for_the_device(base, data, tmp_path):
    """Launching a step whose shapes are all captured already (schedule, batch copy, replays, update, statistics
    copy) makes no implicit host sync, so the trainer can run a step ahead. torch's sync debug mode reports each
    sync as a warning ("error" would raise inside the replay, where the trainer takes it for a failed capture and
    goes on without graphs); launches that warm up or capture a new bucket shape synchronize on purpose and are
    not checked. The torch WKV: fla's fp32 kernels autotune for minutes on a fresh machine (session 8: past 300 s)."""
    import warnings

    from rwkv_peft.train import build_config
    from rwkv_peft.train.loop import Trainer

    cfg = build_config({"load_model": str(base), "data_file": data, "data_type": "binidx", "ctx_len": 64,
                        "micro_bsz": 4, "precision": "fp32", "accelerator": "gpu", "proj_dir": str(tmp_path / "p"),
                        "peft": "lora", "progress": "none", "plot": False, "compile": "0", "epoch_steps": 12,
                        "op": "torch"})
    trainer = Trainer(cfg)
    assert trainer.update is not None
    launch, checked, syncs = trainer._launch, [], []

    def progress():
        g, u = trainer.graphed, trainer.update
        if g is None or u is None:  # fell back to eager steps (asserted below)
            return None
        return len(g.graphs), sum(g.calls.values()), u._norm.graph is not None, u._apply.graph is not None

    def watched_launch(batches, index):
        before = progress()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                launched = launch(batches, index)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if before is not None and before == progress() and all(before[2:]):  # nothing warmed up or captured
            checked.append(index)
            syncs.extend(str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message))
        return launched

    trainer._launch = watched_launch
    trainer.fit()
    assert trainer.graphed is not None, "the run fell back to eager steps"
    assert len(checked) >= 4, checked
    assert not syncs, syncs


@cuda
def test_graphed_run_stops_before_a_diverging_update(base, data, tmp_path):
    """The graphed update refuses the non-finite step on the device; the host reads that back (a step later) and
    stops with the divergence message; a checkpoint taken before stays finite (every 3 steps, so that the trainer
    runs ahead in between). The torch WKV: the backend is not what is tested, and fla's fp32 kernels autotune for
    minutes on a fresh machine."""
    proj = tmp_path / "p"
    r = run_cli(*gpu_args(base, data, proj, "--peft", "none", "--lr_init", "1e30", "--lr_final", "1e30", "--op",
                          "torch", "--warmup_steps", "0", "--gradient_clip_val", "0", "--checkpoint_every", "3"))
    assert r.rc == 2 and "cuda_graph" in (proj / "train_log.txt").read_text(), r.err
    assert "without applying the update" in r.err
    from rwkv_peft.train.checkpoint import read_checkpoint_folder

    if (proj / "checkpoint-last").exists():  # none if the run diverged before step 3
        point = read_checkpoint_folder(proj / "checkpoint-last")
        assert all(torch.isfinite(v).all() for v in point.trainable.values())


@cuda
@pytest.mark.parametrize("max_norm", [0.05, float("inf")])
def test_graphed_update_equals_the_eager_one(max_norm):
    """Clip + AdamW + zeroed gradients replayed from graphs, with the rate changing every step (written into the
    captured rate tensors), give the parameters eager AdamW gives: same kernels, so bound GRAPH_FP32 is loose."""
    from rwkv_peft.train.graph import GraphedUpdate
    from rwkv_peft.train.optim import GroupRates, apply_schedule, build_optimizer
    from rwkv_peft.train.schedule import Schedule

    torch.manual_seed(0)
    start = {"a.lora_A": torch.randn(8, 32), "b.lora_B": torch.randn(32, 8), "ln.weight": torch.randn(32)}
    runs = {}
    for graphed in (False, True):
        named = {k: torch.nn.Parameter(v.clone().cuda()) for k, v in start.items()}
        params = list(named.values())
        opt = build_optimizer(named, GroupRates(1e-2, 1e-3, 1.0, 0.01), (0.9, 0.99), 1e-8, 0.1, fused=True,
                              capturable=graphed)
        update = GraphedUpdate(opt, params, max_norm) if graphed else None
        schedule, norms = Schedule("cos_decay", 6, warmup_steps=2), []
        for step in range(6):
            apply_schedule(opt, schedule, step)
            g = torch.Generator().manual_seed(step)
            for p in params:
                grad = torch.randn(p.shape, generator=g).cuda()
                if p.grad is None:
                    p.grad = grad
                else:
                    p.grad.add_(grad)
            if graphed:
                norms.append(float(update.grad_norm()))
                update.apply(torch.ones((), device="cuda"))
            else:
                norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)))
                opt.step()
                opt.zero_grad(set_to_none=False)
        runs[graphed] = ([p.detach().cpu() for p in params], norms)
        if graphed:
            assert update._apply.graph is not None and update._norm.graph is not None
    for eager, graphed in zip(runs[False][0], runs[True][0]):
        assert torch.allclose(graphed, eager, rtol=GRAPH_FP32, atol=1e-7)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=GRAPH_FP32)


@cuda
def test_quantized_base_keeps_its_embedding_on_the_host(base, data, tmp_path):
    """--quant on a GPU: the frozen table stays in host memory; the graphed run (rows gathered before each replay)
    and the eager one (gathered inside the forward) train the same steps."""
    runs = {}
    for graph in ("0", "1"):
        proj = tmp_path / f"graph{graph}"
        r = run_cli(*gpu_args(base, data, proj, "--peft", "lora", "--lora_config", '{"lora_dropout":0}',
                              "--quant", "nf4", "--op", "torch", "--compile", "0", "--cuda_graph", graph,
                              "--lr_init", "1e-6", "--lr_final", "1e-6"))
        assert r.rc == 0, r.err
        assert "embedding table stays in host memory" in r.err
        runs[graph] = records(proj)
    for eager, graphed in zip(runs["0"], runs["1"], strict=True):
        assert abs(graphed["loss"] - eager["loss"]) <= GRAPH_FP32 * abs(eager["loss"]), eager["step"]
