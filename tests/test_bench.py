"""The benchmarks keep working: `python -m benchmarks.bench --quick` runs, its table and JSON hold
every row, and the learning curve reads a run's validation losses.

No timing is asserted: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import charlm
from benchmarks import bench, harness, learning, load, loadtime, rows, tune_cells
from charlm.meter import Progress
from tests.conftest import ROOT, epoch_rows


def test_zipf_corpus_has_exactly_the_asked_vocabulary(tmp_path):
    path = rows.zipf_corpus(tmp_path / "z.txt", 5000, vocab=300)
    text = path.read_text(encoding="utf-8")
    assert len(text) == 5000
    assert len(set(text)) == 300
    counts = sorted((text.count(c) for c in set(text)), reverse=True)
    assert counts[0] > 10 * counts[-1]  # Zipf-like: a few frequent, many rare


def test_side_by_side_drops_the_warm_up_and_takes_the_median_round():
    ours, ref = iter([99.0, 10.0, 30.0, 20.0]), iter([1.0, 10.0, 10.0, 10.0])  # 1st: warm-up
    a, b, ratio = harness.side_by_side(lambda: next(ours), lambda: next(ref), rounds=3)
    assert (a, b, ratio) == (20.0, 10.0, 2.0)


def test_ceilings_keep_the_best_rate_measured(monkeypatch):
    measured = iter([100.0, 80.0, 50.0, 90.0])
    monkeypatch.setattr(harness, "matmul_rate", lambda *args: next(measured))
    rates: dict[str, float] = {}
    harness.measure_ceilings(rates, ["cpu float32", "cpu bfloat16"], 0.1)
    harness.measure_ceilings(rates, ["cpu float32", "cpu bfloat16"], 0.1)  # a busier second
    assert rates == {"cpu float32": 100.0, "cpu bfloat16": 90.0}


def test_table_marks_pass_fail_and_skip():
    table = [
        harness.Row("fast", ">= 2x", 300.0, 100.0, ratio=3.0, passed=True, gflops=1.0),
        harness.Row("slow", ">= 2x", 100.0, 100.0, ratio=1.0, passed=False),
        harness.Row("gpu", "-", skipped="no CUDA device"),
    ]
    lines = harness.table(table).splitlines()
    assert lines[0].startswith("row")
    assert "PASS" in lines[2] and "3.00x" in lines[2]
    assert "FAIL" in lines[3]
    assert "skip" in lines[4] and "no CUDA device" in lines[4]


def test_quick_mode_prints_the_table_and_writes_json(tmp_path):
    """In a plain clone (no tiny Shakespeare anywhere) --quick runs on the built-in corpus."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHARLM_DATA": str(tmp_path / "no-corpora")}
    md = tmp_path / "table.md"
    args = ["--quick", "--json", str(out), "--markdown", str(md)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    corpus = [line for line in proc.stdout.splitlines() if line.startswith("corpus: ")]
    assert len(corpus) == 1 and corpus[0].endswith("/builtin.txt"), corpus
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["rows"]]
    expected = [
        "rnn one-hot V=1000 H=256 vs textbook loop",
        "rnn emb 64 H=256 vs nn.RNN",
        "lstm emb 64",
        "gru emb 64",
        "mingru 2x192 vs lstm 1x448",
        "minlstm 2x184 vs lstm 1x448",
        "generate 1 stream",
        "generate 32 streams (aggregate)",
        "generate 32 streams --int8",
        "load_corpus 10 MB: first call",
        "load_corpus 10 MB: second call",
    ]
    for prefix in expected:
        assert any(n.startswith(prefix) for n in names), (prefix, names)
        assert prefix in proc.stdout
    assert not any("1000 MB" in n for n in names)  # the 1 GB row stays out of --quick
    rates = result["matmul_gflops"]  # the better of before and after the rows
    assert rates["cpu float32"] > 0 and rates["cpu bfloat16"] > 0 and rates["cpu int8"] > 0
    for row in result["rows"]:
        if row["skipped"]:
            continue
        assert row["charlm"] > 0 and isinstance(row["passed"], bool)
        if row["ratio"] is not None:
            assert row["ratio"] == pytest.approx(row["charlm"] / row["reference"], rel=1e-9)
        if row["gflops"] is not None:
            pct = 100 * row["gflops"] / rates[row["ceiling"]]
            assert row["pct_peak"] == pytest.approx(pct, rel=1e-9)
    cuda_rows = [r for r in result["rows"] if "cuda" in r["name"]]
    assert cuda_rows, "CUDA rows are listed (run, or skipped without a device)"
    assert result["machine"]["torch"]
    table = md.read_text().splitlines()
    assert table[0].startswith("| row | charlm |") and len(table) == 2 + len(result["rows"])


def test_the_learning_curve_is_every_validation_row_of_the_run(tmp_path, corpus):
    cfg = charlm.TrainConfig(
        corpus=str(corpus), out=str(tmp_path / "run"), hidden_size=16, embedding_dim=8,
        seq_len=16, batch_size=4, epochs=3, sample_every=0, device="cpu",
    )  # fmt: skip
    seen = learning.Curve()
    result = charlm.train(cfg, progress_bar=False, callbacks=[seen])
    rows = seen.rows
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    written = epoch_rows(result.out)
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in written]
    assert rows[-1]["val_loss"] == result.last_row["val_loss"]
    assert rows[-1]["step"] == result.progress.step
    assert all(0 < r["val_loss"] < 10 and r["partial"] is False for r in rows)


def test_learning_runs_each_model_side_by_side():
    """--models NAME[:LAYERS]: each a run at every budget, the auto values left to its cell."""
    assert learning.model_specs("lstm,mingru:2,minlstm") == [
        ("lstm", {"model": "lstm"}),
        ("mingru:2", {"model": "mingru", "num_layers": 2}),
        ("minlstm", {"model": "minlstm"}),
    ]
    assert bench.parse_args([]).models == "lstm"  # the LSTM defaults alone, as before


def test_the_learning_table_shows_each_run_against_its_target():
    settings = {"model": "lstm", "num_layers": 1, "hidden_size": 384, "seq_len": 64,
                "lr": 0.01, "dropout": 0.25}  # fmt: skip
    run = {"model": "lstm", "settings": settings, "budget_s": 30.0, "val_loss": 1.56426,
           "steps": 863, "planned_steps": 863, "elapsed_s": 31.88, "curve": [{}, {}],
           "target": 1.65, "pass": True}  # fmt: skip
    other = {**run, "model": "mingru:2", "val_loss": 1.9623, "target": None, "pass": None}
    head, rule, first, second = learning.table([run, other]).splitlines()
    assert "validation loss" in head and set(rule) <= {"-", "+"}
    assert "1 x 384, T=64, lr 0.01, dropout 0.25" in first and "1.5643" in first
    assert first.endswith("PASS") and "<= 1.65" in first and second.endswith("-")
    assert learning.table([run], markdown=True).count("\n") == 2


def test_tuning_searches_each_cell_then_runs_its_best_two_at_the_final_budgets(
    monkeypatch, tmp_path
):
    """The search's bookkeeping, on a stand-in for the training runs: every recipe of each cell
    at the search budget, the two lowest losses again at each final budget, the LSTM defaults
    at every budget; the table lists them by budget, best first."""
    calls = []

    def fake_run(args, work, budget, spec, model, **recipe):
        calls.append((budget, spec, recipe))
        loss = 1.5 + recipe.get("lr", 0.0) + (0.1 if spec == "lstm" else 0.0)
        settings = {**model, **recipe}
        return {"model": spec, "settings": settings, "budget_s": budget, "val_loss": loss,
                "steps": 10, "planned_steps": 10}  # fmt: skip

    monkeypatch.setattr(tune_cells, "learning_run", fake_run)
    args = tune_cells.parse_args(["--corpus", str(ROOT / "README.md"), "--recipes", "8"])
    runs = tune_cells.tune(args, tmp_path)
    searched = [c for c in calls if c[0] == 60.0 and c[1] == "mingru"]
    assert [c[2] for c in searched] == tune_cells.recipes()[:8]
    finals = [c[2]["lr"] for c in calls if c[0] == 180.0 and c[1] == "mingru"]
    assert finals == [2e-3, 3e-3]  # the two lowest learning rates, i.e. losses, best first
    assert [c[0] for c in calls if c[1] == "lstm"] == [60.0, 30.0, 180.0]
    table = tune_cells.markdown(runs).splitlines()
    assert table[2].startswith("| 30 s | mingru | --num-layers 2 --hidden-size 192")
    assert "| lstm (defaults) |" in "\n".join(table) and len(table) == 2 + len(runs)


def test_a_failed_corpus_load_is_a_failed_row_not_a_failed_benchmark(tmp_path):
    report = loadtime.in_child("corpus", tmp_path / "missing.txt", tmp_path / "cache")
    assert report["seconds"] == report["peak_rss_mb"] == float("inf")
    assert "missing.txt" in report["error"]


def test_a_corpus_load_in_a_child_reports_the_corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcab" * 1000, encoding="utf-8")
    report = loadtime.in_child("corpus", path, tmp_path / "cache")
    assert (report["chars"], report["vocab"]) == (5000, 3)
    assert 0 < report["rss_before_mb"] <= report["peak_rss_mb"] < float("inf")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "-1"], "--rounds must be >= 1 (0: the default), got -1"),
        (["--only", "train,gpu"], "--only: unknown gpu (choose from train, generate, corpus"),
        (["--sizes", "10,x"], "--sizes takes comma-separated numbers, got '10,x'"),
        (["--sizes", "1.5"], "--sizes takes whole MB, got '1.5'"),
        (["--budgets", "30,0"], "--budgets takes positive numbers, got '30,0'"),
        (["--budgets", "inf"], "--budgets takes positive numbers, got 'inf'"),
        (["--corpus", "no/such.txt"], "no corpus at no/such.txt"),
        (["--models", "lstm,gpt"], "--models takes NAME[:LAYERS] with NAME in rnn, lstm, gru,"),
        (["--models", "mingru:0"], "--models takes NAME[:LAYERS] with NAME in rnn, lstm, gru,"),
    ],
)
def test_a_bad_command_line_is_one_error_line_before_any_measuring(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"python -m benchmarks.bench: error: {message}")


def test_the_load_benchmark_takes_its_own_budgets_and_competitors(capsys):
    assert bench.parse_args(["--load"]).budgets == "120,600"
    assert bench.parse_args(["--load", "--quick"]).budgets == "20"
    assert bench.parse_args(["--learning"]).budgets == "30,60,180"
    assert bench.parse_args(["--load", "--budgets", "300", "--competitors", "2"]).competitors == 2
    for argv, message in (
        (["--load", "--learning"], "--load runs alone: not with --learning or --dynamic"),
        (["--load", "--competitors", "0"], "--competitors must be >= 1, got 0"),
        (["--load", "--budgets", "-5"], "--budgets takes positive numbers, got '-5'"),
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_a_load_row_says_where_the_run_ended(tmp_path):
    """The row of a run that ended 6 s early with its rate at lr/20, and of one the clock cut."""
    (tmp_path / "config.json").write_text(json.dumps({
        "lr": 0.01, "lr_schedule": "cosine",
        "plan": {"steps": 900, "revisions": [{"step": 400, "steps": 640, "step_s": 0.1}]},
    }))  # fmt: skip
    progress = Progress(step=640, elapsed_s=114.0, planned_steps=640)
    result = charlm.TrainResult(tmp_path, progress, "time_budget", {"lr": 0.01 * 0.05})
    row = load.row(120.0, result, None, 60.0)
    assert (row["within"], row["lr_at_end"], row["end_s_early"]) == (True, True, 6.0)
    assert row["first_plan"] == 900 and len(row["revisions"]) == 1
    cut = charlm.TrainResult(tmp_path, progress, "time_budget", {"lr": 0.003})
    late = load.row(100.0, cut, None, 50.0)
    assert (late["within"], late["lr_at_end"]) == (False, False)  # 14 s past a 100 s budget
    assert late["past_s"] == 14.0 and row["past_s"] == 0.0
    over = load.row(110.0, result, None, 55.0)  # 4 s past: within the 10 s, and said to be past
    assert over["within"] and over["past_s"] == 4.0
    shown = load.table([row, late]).splitlines()
    assert len(shown) == 4 and shown[2].endswith("PASS") and shown[3].endswith("FAIL")
    assert load.table([row], markdown=True).splitlines()[1] == "|" + "---|" * 8


def test_a_competitor_is_started_and_ended(tmp_path):
    rival = load.Competition(1, at_s=1.0)
    trainer = type("T", (), {"p": Progress(elapsed_s=0.5)})()
    rival.on_step(trainer)
    assert rival.procs == []
    trainer.p.elapsed_s = 1.5
    rival.on_step(trainer)
    (proc,) = rival.procs
    assert proc.poll() is None and rival.started_s == 1.5
    rival.stop()
    assert proc.poll() is not None and rival.procs == []


def test_the_default_rounds_are_3_or_1_with_quick():
    assert bench.parse_args([]).rounds == 3
    assert bench.parse_args(["--quick"]).rounds == 1
    assert bench.parse_args(["--quick", "--rounds", "5", "--sizes", "10.0"]).rounds == 5
