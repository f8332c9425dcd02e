"""metrics.jsonl read back (run.read_rows): every kind of row checked against its schema; a row
that is not one is a one-line error (strict) or left out, never a traceback in `plot` or
`info`, whatever a line holds (hypothesis mutates a real run's file)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.cli import main
from charlm.errors import CharLMError
from charlm.meter import Progress, epoch_row, eval_row, train_row
from charlm.run import KINDS, METRICS, SCHEMA, read_rows
from charlm.train import TrainConfig, train
from tests.conftest import TEXT

E = 41


def written(tmp_path: Path, rows: list, end: str = "\n") -> Path:
    path = tmp_path / METRICS
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + end)
    return path


def rows_of_each_kind() -> list[dict]:
    """The rows meter.py writes, one of each kind."""
    p = Progress(epoch=0, batch=20, step=20, elapsed_s=3.5, epoch_loss=40.0, epoch_batches=20,
                 epoch_time_s=3.0, window_loss=10.0, window_grad_norm=2.0, window_batches=5,
                 window_time_s=0.5)  # fmt: skip
    return [
        train_row(p, 0.01, 128, E),
        eval_row(p, 1.9, 0.01, 8192, E),
        epoch_row(p, None, 0.01, 128, True, E),
    ]


def test_each_kind_is_read_with_its_schema(tmp_path) -> None:
    rows = rows_of_each_kind()
    got = read_rows(written(tmp_path, rows))
    assert [r["kind"] for r in got] == ["train", "eval", "epoch"] and set(KINDS) == set(SCHEMA)
    for row, read in zip(rows, got, strict=True):
        assert set(read) == {"kind", *SCHEMA[row["kind"]]}  # every field, None where absent
        assert all(read[k] == v for k, v in row.items() if k in read)
    assert got[0]["train_loss"] == 2.0 and got[0]["chars_per_sec"] == 5 * 128 / 0.5
    assert got[2]["val_loss"] is None and got[2]["partial"] is True
    assert read_rows(written(tmp_path, rows), kinds=("eval",)) == [got[1]]


def test_a_row_without_a_kind_is_an_epoch_row(tmp_path) -> None:
    old = {"epoch": 3, "step": 30, "train_loss": 1.5, "val_loss": 1.6, "elapsed_s": 9.0}
    (row,) = read_rows(written(tmp_path, [old]))
    assert row["kind"] == "epoch" and row["epochs"] == 3.0 and row["lr"] is None


def test_what_cannot_be_drawn_reads_as_no_value(tmp_path) -> None:
    """A diverged run's infinity, NaN or 1e308: a gap where the curve is drawn."""
    base = {"epoch": 1, "step": 1, "elapsed_s": 1.0}
    lines = [{**base, "train_loss": bad} for bad in (1e308, math.inf, math.nan, -math.inf)]
    lines.append('{"epoch": 1, "step": 1, "elapsed_s": 1.0, "train_loss": ' + "9" * 400 + "}")
    assert [r["train_loss"] for r in read_rows(written(tmp_path, lines))] == [None] * 5


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"train_loss": "1.5"}, "train_loss '1.5'"),
        ({"train_loss": [1.5]}, "train_loss '[1.5]'"),
        ({"lr": -0.1}, "lr '-0.1'"),
        ({"step": 3.0}, "step '3.0'"),
        ({"step": True}, "step 'True'"),
        ({"step": 2**64}, "step"),
        ({"elapsed_s": math.nan}, "elapsed_s 'nan'"),
        ({"partial": "yes"}, "partial 'yes'"),
        ({"kind": 7}, "kind 7"),
        ({"train_loss": None, "elapsed_s": None}, "elapsed_s 'None'"),
    ],
)
def test_a_row_that_is_not_one_names_its_line(tmp_path, change, problem) -> None:
    good = {"epoch": 1, "step": 1, "train_loss": 1.0, "elapsed_s": 1.0}
    path = written(tmp_path, [good, {**good, **change}, good])
    with pytest.raises(CharLMError, match=r"line 2: not a charlm metrics row \((.*)\)") as e:
        read_rows(path)
    assert problem in str(e.value) and "\n" not in str(e.value)
    assert len(read_rows(path, strict=False)) == 2  # left out where that is the policy


@pytest.mark.parametrize(
    ("line", "problem"),
    [('{"epoch": 1, "step": 1, "elapsed_s": 0}', "no train_loss"), ("[1, 2]", "not a JSON object"),
     ("{nope", "not JSON"), ('{"kind": "eval", "step": 1, "epoch": 1}', "no elapsed_s")],
)  # fmt: skip
def test_other_lines_are_not_rows(tmp_path, line, problem) -> None:
    with pytest.raises(CharLMError) as e:
        read_rows(written(tmp_path, [line]))
    assert f", line 1: not a charlm metrics row ({problem})" in str(e.value)


def test_a_torn_last_line_is_left_out_and_a_later_kind_too(tmp_path) -> None:
    rows = rows_of_each_kind()
    later = {"kind": "gradients", "step": 3, "norms": [1, 2]}
    path = written(tmp_path, [*rows, later, '{"kind": "train", "ep'], end="")
    assert [r["kind"] for r in read_rows(path)] == ["train", "eval", "epoch"]
    path = written(tmp_path, [*rows, '{"kind": "train", "ep'], end="\n")  # a whole bad line
    with pytest.raises(CharLMError, match="line 4"):
        read_rows(path)


# --- any line in a real run's metrics.jsonl: `plot` and `info` end cleanly ----------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real run with rows of every kind."""
    folder = tmp_path_factory.mktemp("metrics")
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig(
        corpus=str(folder / "corpus.txt"), out=str(folder / "run"), hidden_size=8,
        embedding_dim=4, seq_len=16, batch_size=8, epochs=2, log_every=10, eval_every=15,
        sample_every=0, threads=1, device="cpu", amp="off",
    )  # fmt: skip
    train(cfg, progress_bar=False)
    return Path(cfg.out)


junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from(["1.5", "NaN", "1e308", -1.0, 1e308, 10**400]),
)  # fmt: skip
mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.text(max_size=12), junk),
    st.tuples(st.just("field"), st.integers(0, 10**6), st.sampled_from(
        sorted({f for fields in SCHEMA.values() for f in fields} | {"kind"})), junk),
    st.tuples(st.just("drop"), st.integers(0, 10**6), st.sampled_from(["step", "epoch", "kind",
              "elapsed_s", "train_loss", "val_loss", "epochs", "lr"]), st.none()),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.none(), st.none()),
    st.tuples(st.just("line"), st.integers(0, 10**6), st.text(max_size=30), st.none()),
)  # fmt: skip


def mutated(text: str, changes: list) -> str:
    lines = text.splitlines()
    for what, at, name, value in changes:
        i = at % len(lines)
        try:
            row = json.loads(lines[i])
        except ValueError:
            row = None
        if what == "cut":
            return text[: at % (len(text) + 1)]
        if what == "line":
            lines.insert(i, name)
        elif isinstance(row, dict) and what in ("set", "field"):
            row[name] = value
            lines[i] = json.dumps(row)
        elif isinstance(row, dict) and what == "drop":
            row.pop(name, None)
            lines[i] = json.dumps(row)
    return "\n".join(lines) + "\n"


def clean(result) -> None:
    """Exit 0, or exit 1 with one `error:` line: never a traceback."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert lines[0].startswith("error: "), result.output


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(mutation, min_size=1, max_size=3))
def test_any_line_in_metrics_ends_plot_and_info_cleanly(run, tmp_path_factory, changes) -> None:
    pytest.importorskip("matplotlib")
    copy = tmp_path_factory.mktemp("mutated") / "run"
    shutil.copytree(run, copy)
    (copy / METRICS).write_text(mutated((run / METRICS).read_text(), changes))
    for strict in (True, False):
        try:
            read_rows(copy / METRICS, strict)
        except CharLMError as e:
            assert strict and "\n" not in str(e)
    plotted = CliRunner().invoke(main, ["plot", str(copy), "-o", str(copy / "c.png"),
                                        "--dpi", "10", "--x-axis", "step"])  # fmt: skip
    clean(plotted)
    info = CliRunner().invoke(main, ["info", str(copy)])
    clean(info)
    assert info.exit_code == 0  # the checkpoint is what info reports: bad rows are left out
