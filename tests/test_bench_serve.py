"""benchmarks/serve.py: its arguments, its summary of timings, and its verdicts on the targets
(the measurement itself is too long for the suite: `python -m benchmarks.serve`)."""

from __future__ import annotations

import pytest

from benchmarks.serve import Timing, parse_args, summary, verdicts


def test_the_defaults_are_the_issues_measurement() -> None:
    args = parse_args([])
    assert args.clients == [1, 8, 32, 64] and args.precision == ["float32", "amp"]
    assert (args.tokens, args.prompt_chars, args.checkpoint) == (200, 200, None)


def test_lists_are_parsed_and_bad_values_refused(capsys) -> None:
    args = parse_args(["--clients", "1,4", "--precision", "int8", "--tokens", "50"])
    assert (args.clients, args.precision, args.tokens) == ([1, 4], ["int8"], 50)
    for bad, said in [
        (["--clients", "1,x"], "expected numbers like 1,8,32"),
        (["--clients", "0,8"], "client counts must be >= 1"),
        (["--precision", "fp16"], "unknown precision 'fp16'"),
        (["--tokens", "0"], "must be >= 1, got 0"),
    ]:
        with pytest.raises(SystemExit) as e:
            parse_args(bad)
        assert e.value.code == 2
        assert said in capsys.readouterr().err


def test_summary_counts_the_wall_from_the_first_request_to_the_last_character() -> None:
    timings = [Timing(0.0, 0.1, 1.0, 100), Timing(0.5, 0.9, 2.0, 300), Timing(0.2, 0.4, 1.5, 0)]
    s = summary(timings)
    assert s["chars_per_s"] == pytest.approx(400 / 2.0)
    assert s["ttfc_median"] == pytest.approx(0.2)
    assert s["ttfc_p99"] == pytest.approx(0.4)


def test_verdicts_compare_32_clients_with_one() -> None:
    row = {"precision": "float32", "ttfc_median": 0.1, "one_after_another_chars_per_s": 1.0}
    rows = [
        {**row, "clients": 1, "chars_per_s": 1000.0, "ttfc_p99": 0.01},
        {**row, "clients": 32, "chars_per_s": 4500.0, "ttfc_p99": 0.3},
    ]
    assert verdicts(rows) == [
        "float32: 32 clients x4.5 one client's rate (target x4), p99 first character 300 ms "
        "(target < 500): met"
    ]
    rows[1]["ttfc_p99"] = 0.6
    assert verdicts(rows)[0].endswith("NOT met")
    assert verdicts(rows[:1]) == []
