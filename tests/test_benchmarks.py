"""The benchmark scripts: the profiling path attributes time to real ops, the reports
format the measured numbers.

Benchmarks are not timed in tests: ``--profile`` runs end to end on a tiny program (a
subprocess: the XLA flag must be set before JAX starts), and the report functions are
checked on chosen numbers (no PyTorch needed).
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_disentangle_train_profile_lists_the_step_ops():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.disentangle_train", "--profile", "--members=2",
         "--devices=1", "--steps=3", "--member_block=none"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "2 networks (2 per device on 1 device(s), blocks of 2), 3 steps traced" in text
    rows = [line.split() for line in text.splitlines()[3:] if line.strip()]
    assert len(rows) >= 10, text
    # Each row is one HLO op (a single name, not the runtime's "end: <op>" completion markers
    # or its "ThunkExecutor::..." events) with a positive time; the encoder's 100-wide hidden
    # layer over the 2 x 16 x 20 stimulus samples is among the profiled ops.
    for r in rows:
        assert re.fullmatch(r"[\w.\-]+", r[0]), text
        assert float(r[1]) > 0, text
    assert any(r[4].startswith("f32[2,320,100]") for r in rows), text


def _size_result(n, a, b, c, c2=None, a3=None):
    """What `inference_work.measure_size` returns, with chosen rates (latents/s)."""
    from benchmarks.inference_work import FLOPS_PER_LATENT_STEP

    r = {"n": n, "repeats": 3, "probe": {"b@1": 0.01, "b@2": 0.02}, "a": a, "b": b, "c": c,
         "os_a": 2 * a, "os_c": 2 * c, "b_thr": 1, "c_thr": 1, "os_c_thr": 2,
         "a_flops": a * 50 * FLOPS_PER_LATENT_STEP, "c_flops": c * 50 * FLOPS_PER_LATENT_STEP,
         "peak_jax": 40e9, "peak_torch": 50e9, "peak": 50e9, "os_agree": 1.0, "os_acc": 0.9,
         "os_a_rev": 1.5 * a, "os_c2": 3 * c, "os_c2_thr": 1, "os_rev_agree": 1.0,
         "os_c2_agree": 0.99,
         "os_flops": {"os_a": 1e6 * n, "os_a_rev": 5e5 * n, "os_c": 1.0752e6 * n,
                      "os_c2": 5.376e5 * n}}
    if c2 is not None:
        r.update(c2=c2, c2_thr=1)
    if a3 is not None:
        r["a3"] = a3
    return r


def test_inference_report_formats_the_measured_ratios(tmp_path):
    from benchmarks import common, inference_report as report
    from benchmarks.inference_work import Settings

    s = Settings(sizes=(100, 1000), chunk=250, torch_threads=2)
    results = [_size_result(100, 800.0, 16.0, 400.0, c2=300.0),
               _size_result(1000, 600.0, 10.0, 500.0, c2=450.0, a3=700.0)]
    n, ratios = report.ratios(results, s)
    assert n == 1000
    assert dict(ratios)["(a)/(b)"] == "60.0x" and dict(ratios)["(a)/(c)"] == "1.20x"
    # 600 latents/s x 50 steps x 1,075,200 FLOPs = 32.3 GFLOP/s of a 50 GFLOP/s peak
    assert dict(ratios)["(a) share of the matmul peak"].startswith("65% of 50 GFLOP/s")
    header, rows = report.iterative_table(results, s)
    assert len(header) == len(rows[0]) and rows[1][:3] == ["1,000", "600", "10.0 (1t)"]
    assert rows[0][header.index("(a*) jax chunked 250")] == "-"
    gemm = [{"direction": "forward", "n": 1000, "k_in": 10, "k_out": 256, "flops": 5.12e6,
             "t": {"jax": 1e-3, "t1": 5e-4, "t2": 2.5e-4}}]
    assert report.gemm_rows(gemm, [1, 2]) == [
        ["forward [1000,10]x[10,256]", "5", "10", "20", "0.25x"]]
    chk = {"dec_err": 1e-7, "errs": {"|a - b|": 6e-8}, "m": 5, "correct": True}
    md = report.markdown(results=results, s=s, chk=chk, gemm=gemm, info={"cpu": "x"},
                         command="python -m benchmarks.inference", elapsed=12.0, load_end="1.0")
    assert "## Ratios (N = 1,000)\n\n- (a)/best torch: 1.20x (best torch: (c))" in md
    assert "- (a)/(b): 60.0x" in md
    # one-step at N = 1,000: jax 1,200, reverse 900, torch.func grad 1,500 (the best torch)
    assert "- one-step jax/best torch: 0.80x (best torch: torch.func grad)" in md
    assert "- one-step jax reverse mode/best torch: 0.60x" in md
    os_header, os_rows = report.one_step_table(results)
    assert len(os_header) == len(os_rows[1])
    assert os_rows[1][os_header.index("predictions = jax (all other variants)")] == "99.0%"
    fl_header, fl_rows = report.flops_table(results, s)
    # torch.func grad: 1,500 latents/s x 537,600 FLOPs = 0.8 GFLOP/s
    assert ["1,000", "one-step torch.func grad", "0.8"] == fl_rows[-1][:3]
    assert "met" not in md.split("## Ratios")[1] and "MISSED" not in md
    page = tmp_path / "inference.md"
    page.write_text("old table\n" + common.NOTES_MARKER + "\nhand-written notes\n")
    common.write_page(str(page), md)
    text = page.read_text()
    assert text.startswith("# Latent inference") and "old table" not in text
    assert text.endswith(common.NOTES_MARKER + "\nhand-written notes\n")


def test_one_step_torch_flop_counts():
    from benchmarks.inference_work import BWD_FLOPS, FWD_FLOPS, K, one_step_torch_flops

    assert one_step_torch_flops("os_c", 100) == 100 * (FWD_FLOPS + BWD_FLOPS)
    assert one_step_torch_flops("os_c2", 100) == FWD_FLOPS + 100 * BWD_FLOPS
    assert one_step_torch_flops("os_c2_mp", 100, procs=2) == 2 * FWD_FLOPS + 100 * BWD_FLOPS
    assert one_step_torch_flops("os_c3", 100) == (1 + K) * FWD_FLOPS


def test_torch_func_one_step_peers_agree_with_batched_autograd():
    torch = pytest.importorskip("torch", reason="the PyTorch peers need pip install -e .[bench]")
    from benchmarks import inference_torch as T

    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(10, 16)).astype(np.float32), np.zeros(16, np.float32)),
              (rng.normal(size=(16, 12)).astype(np.float32), np.zeros(12, np.float32))]
    net = T.decoder_from_layers(layers)
    tin = torch.zeros((40, 0))
    tx = torch.from_numpy(rng.normal(size=(40, 12)).astype(np.float32))
    want = T.torch_one_step(net, tin, tx).numpy()
    for mode in ("reverse", "forward"):
        got = T.make_torch_func_one_step(net, mode)(tin, tx).numpy()
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="inputs without features"):
        T.make_torch_func_one_step(net)(torch.zeros((40, 3)), tx)


def test_disentangle_train_report_ratios():
    from benchmarks import common, disentangle_torch, disentangle_train

    rate = {"jax_vmapped": 6000.0, "torch_batched_1thread": 1500.0,
            "torch_batched_allthreads": 2000.0, "torch_batched_per_core": 3000.0,
            "torch_1thread": 300.0, "torch_allthreads": 250.0}
    per_step = disentangle_torch.FLOPS_PER_NETWORK_STEP
    res = {"rate": rate, "blocks": {"5": 6000.0, "none": 5000.0}, "block_sizes": {"5": "5/4/4",
           "none": "13"}, "block_label": "5", "block_config": "auto", "block_how": "cached",
           "peaks": common.Peaks(n=2048, fp32_jax=300e9, fp32_torch=200e9, bf16_jax=600e9),
           "flops": {"per_network_step": per_step,
                     "parts": disentangle_torch.network_step_flops(),
                     "first_layer": disentangle_torch.FIRST_ENCODER_LAYER_FLOPS,
                     "torch_counted": per_step - disentangle_torch.FIRST_ENCODER_LAYER_FLOPS,
                     "jax_jaxpr": 26426336.0,
                     "jax_terms": disentangle_torch.jax_program_flops_explained()},
           "quick": True, "members": 26, "padded": 26, "devices": 2, "steps": 400,
           "torch_steps": 100, "repeats": 3, "seconds": 3.0, "elapsed": 9.0, "estimate_s": 3.0,
           "grad_err": 0.0, "info": {"cpu": "x"}, "load_end": "1.0"}
    text = disentangle_train.report_text(res)
    assert "`python -m benchmarks.disentangle_train --quick`" in text
    assert ("per-network ratio gbi_jax / best PyTorch batched in one process: 3.00x "
            "(vs torch_batched_allthreads)") in text
    assert "whole-machine ratio gbi_jax / PyTorch batched, one process per core: 2.00x" in text
    assert "gbi_jax / PyTorch authors' style (one network): 20.0x" in text
    # 6000 network-steps/s x 24,285,696 FLOPs = 145.7 GFLOP/s: 49% of 300, 24% of 600
    assert "| jax_vmapped | " in text and "| 6,000 | 2.00x | 145.7 | 49% | 24% |" in text
    assert "| 5 (configured) | 5/4/4 | 6,000 | 1.00 |" in text
    assert "predicted vs jaxpr: equal" in text and "| **total** | **24,285,696** |" in text


def test_disentangle_flop_count_matches_the_jax_jaxpr_terms():
    from benchmarks import disentangle_torch

    assert disentangle_torch.FLOPS_PER_NETWORK_STEP == 24_285_696
    # the jaxpr count of the gbi_jax program (common.matmul_flops per network-step)
    assert disentangle_torch.jax_program_flops_explained()["total"] == 26_426_336


def test_process_pool_runs_every_worker_on_its_share():
    from benchmarks import common

    with common.ProcessPool({"share": (common_share_builder, (10,))}, procs=2) as pool:
        t = common.median_time(pool.fn("share"), repeats=2, warmup=1)
        assert t >= 0
        assert pool.fetch("share") == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
        assert len(pool.worker_times["share"]) == 3


def common_share_builder(rank, procs, n):
    from benchmarks import common

    a, b = common.split_range(n, procs, rank)
    return lambda: list(range(a, b))


def test_device_check_quick_measures_inference_and_training(tmp_path):
    """The device check's small mode on this CPU: every table row is a measured rate."""
    out = tmp_path / "check.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--quick", "--notests",
                        "--sizes=100,1000", f"--out={out}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    rows = re.findall(r"^\| ([\d,]+) \| ([\d,]+) \| ([\d.e+]+) \| ([\d.]+)% \|", text, re.M)
    assert [n for n, *_ in rows] == ["100", "1,000"]
    assert all(float(lat.replace(",", "")) > 0 and float(p) > 0 for _, lat, _, p in rows)
    rate = re.search(r"\*\*([\d,]+) network-steps/s\*\*", text)
    assert rate and int(rate.group(1).replace(",", "")) > 0
    share = re.search(r"network-steps/s\*\*, ([\d.e+]+) matmul FLOP/s = ([\d.]+)% of peak", text)
    assert share and float(share.group(1)) > 0 and float(share.group(2)) > 0, text
    assert "measured float32 matmul peak" in text and "backend: cpu" in text


def test_matmul_flops_counts_dots_and_scan_lengths():
    import jax
    import jax.numpy as jnp

    from benchmarks import common

    a, w = jnp.ones((8, 4)), jnp.ones((4, 4))
    assert common.matmul_flops(lambda x: x @ w, a) == 2 * 8 * 4 * 4
    loop = lambda x: jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)[0]  # noqa: E731
    assert common.matmul_flops(jax.jit(jax.vmap(loop)), jnp.ones((3, 8, 4))) == 3 * 5 * 2 * 8 * 4 * 4


def test_sweep_packing_cuts_steps_and_compares_rows():
    from benchmarks import sweep_packing
    from launch.sweep import load_sweep

    spec = os.path.join(ROOT, "launch", "sweeps", "disentangle_packed.py") + ":fig5"
    packed = sweep_packing.reduced(load_sweep(spec), 50)
    assert len(packed.jobs) == 4
    for job in packed.jobs:
        assert job.overrides["train.steps"] == job.overrides["train.transformer_steps"] == 50
        assert job.overrides["pack"] == job.name
    assert sweep_packing.full_steps("transformer_D2_T20_fixed_linear_R24_relu") == 20_000
    assert sweep_packing.full_steps("rnn_D2_T5_free_linear") == 100_000

    def row(seed, ood, part=None):
        r = dict(core="rnn", dim=2, stim_steps=20, free_rt=False, boundary="linear",
                 n_tasks=2, sigma=0.2, rho=0.0, encoder="relu", seed=seed, ood_r2=ood,
                 id_r2=[0.9], angles=[90.0], accuracy=0.9, final_loss=0.7)
        return r if part is None else {**r, "part": part}

    figure = {sweep_packing.row_key(row(s, [0.5]), "fig1"): row(s, [0.5]) for s in (0, 1, 2)}
    rows = [row(0, [0.5], "fig1"), row(1, [0.75], "fig1"), row(5, [0.5], "fig1")]
    packed_rows = {sweep_packing.row_key(r, "prog"): r for r in rows}
    # seed 0 equal, seed 1 differs by 0.25, seed 5 has no per-figure row
    assert sweep_packing.compare_rows(packed_rows, figure) == (2, 1, 0.25)


def test_sweep_projection_builds_every_program_of_both_sweeps():
    """The programs the projection times are the sweeps' own: 49 per-figure programs of
    405 networks and 27 packed ones of 390, one per packed job."""
    from benchmarks import sweep_projection as sp
    from launch.sweeps import disentangle_packed

    per_figure, packed = sp.programs("per-figure"), sp.programs("packed")
    assert (len(per_figure), sum(len(p.members) for _, p, _ in per_figure)) == (49, 405)
    assert (len(packed), sum(len(p.members) for _, p, _ in packed)) == (27, 390)
    assert [name for *_, name in packed] == [j.name for j in disentangle_packed.get_sweep().jobs]
    assert sp._interleaved([[1, 2, 3], ["a"]]) == [1, "a", 2, 3]


def test_sweep_projection_times_one_panels_programs(monkeypatch):
    """Fig. 5's packed programs, built, compiled and timed (blocks of 2 instead of the
    CPU probe, to keep this short): every row a measured rate and its projection."""
    from benchmarks import sweep_projection as sp
    from gbi_jax import training

    monkeypatch.setattr(training, "resolve_member_block", lambda block: 2)
    result = sp.project(("packed",), "fig5", steps=5, repeats=1, log=lambda line: None)
    rows = result["sweeps"]["packed"]["rows"]
    assert [r["program"] for r in rows] == [name for *_, name in sp.programs("packed", "fig5")]
    for r in rows:
        assert r["member_block"] == 2 and r["full_steps"] == 100_000 and r["steps_per_s"] > 0
        assert r["projected_s"] == pytest.approx(r["setup_s"] + r["compile_s"]
                                                 + 100_000 / r["steps_per_s"])
    assert result["sweeps"]["packed"]["total_s"] == pytest.approx(
        sum(r["projected_s"] for r in rows))
    assert "**packed" not in sp.summary(result) and "| rnn_D2_T5_free" in sp.table(
        result, "packed")
