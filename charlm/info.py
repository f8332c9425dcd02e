"""What a run is: its model, size, data, progress and settings, read from its checkpoint.

`charlm info RUN` prints this for a person, or (--json) for a script. A run folder is read
from its latest checkpoint, so the progress shown is where training stands now; its
metrics.jsonl adds how many rows of each kind it holds and the latest validation (a line that
is not a row is left out: the checkpoint is what `info` reports).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from charlm import checkpoint
from charlm.budget import Plan
from charlm.checkpoint import load_model
from charlm.config import read_run_config, saved_config
from charlm.errors import CharLMError
from charlm.meter import Progress
from charlm.metrics import bits, perplexity
from charlm.run import CONFIG, KINDS, METRICS, read_rows
from charlm.storage import ANY, look, shown


def run_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts about a run folder (or one checkpoint file), as plain JSON-ready data: each
    file read by its checked reader (the checkpoint's, config.json's as a settings file's)."""
    missing = f"no such run folder or checkpoint file: {shown(path)}"
    st = look(path, ANY, "run", missing=missing)
    path = Path(path)
    folder = path if stat.S_ISDIR(st.st_mode) else path.parent
    file = path / checkpoint.LATEST if os.path.lexists(path / checkpoint.LATEST) else path
    model, vocab, ckpt = load_model(file, "cpu")
    where = f"{shown(file)}: the checkpoint's training settings are damaged"
    cfg = saved_config(ckpt.get("config"), where)
    p = Progress.from_record(ckpt.get("progress"), f"{where}: progress")
    settings, progress = asdict(cfg), asdict(p)
    record = {}
    if os.path.lexists(folder / CONFIG):
        record = read_run_config(folder / CONFIG)[1]
    best = progress["best_val_loss"]
    return {
        "checkpoint": os.fspath(checkpoint.resolve(file)),
        "model": model.cfg.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(vocab),
        "unit": "byte" if vocab.is_bytes else "char",
        "corpus": settings["corpus"],
        "corpus_source": record.get("corpus_source"),
        "epochs_done": progress["epoch"],
        "epochs_planned": settings["epochs"],
        "batches_into_epoch": progress["batch"],
        "steps": progress["step"],
        "elapsed_s": progress["elapsed_s"],
        "best_val_ppl": perplexity(best) if math.isfinite(best) else None,
        "best_val_bpc": bits(best) if math.isfinite(best) else None,
        "plan": _plan(ckpt.get("plan"), f"{shown(file)}: plan"),
        "metrics": _metrics(folder),
        "settings": settings,
    }


def _plan(record: Any, source: str) -> dict[str, Any] | None:
    """A budget's plan as the checkpoint holds it (None: none), checked as budget.PLAN."""
    if record is None:
        return None
    plan = Plan.from_record(record, source)
    return {"steps": plan.total, "set_by": plan.set_by, "revisions": len(plan.revisions)}


def _metrics(folder: Path) -> dict[str, Any]:
    """The rows of each kind in the folder's metrics.jsonl and its latest validation (a line
    that is not a row is left out)."""
    try:
        rows = read_rows(folder / METRICS, strict=False)
    except CharLMError:  # unreadable: the checkpoint says the rest
        rows = []
    validated = [r for r in rows if r["kind"] != "train" and r["val_loss"] is not None]
    last = validated[-1] if validated else None
    return {
        "rows": {kind: sum(r["kind"] == kind for r in rows) for kind in KINDS},
        "last_val": last and {
            "kind": last["kind"], "step": last["step"],
            "val_ppl": perplexity(last["val_loss"]), "val_bpc": bits(last["val_loss"]),
        },
    }  # fmt: skip


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h {m:02d}m" if h else f"{m}m {s % 60:02d}s" if m else f"{seconds:.1f}s"


def format_info(info: dict[str, Any]) -> str:
    """The report for a person: the headline facts first, then every setting."""
    s = info["settings"]
    layers = f"{s['num_layers']} layer{'s' if s['num_layers'] > 1 else ''}"
    embed = f"embedding {s['embedding_dim']}" if s["embedding_dim"] else "one-hot input"
    extra = f" (+{info['batches_into_epoch']} batches)" if info["batches_into_epoch"] else ""
    corpus = info["corpus"] if isinstance(info["corpus"], str) else " ".join(info["corpus"])
    source = info["corpus_source"]
    if source and source != corpus:  # the built-in corpus's source already begins with its name
        corpus = source if source.startswith(corpus) else f"{corpus} ({source})"
    best = (
        f"perplexity {info['best_val_ppl']:.4f}, {info['best_val_bpc']:.4f} bits per {info['unit']}"
        if info["best_val_ppl"] is not None
        else "none (no validation yet)"
    )
    lines = [
        ("checkpoint", info["checkpoint"]),
        ("model", f"{info['model']}, {layers} of {s['hidden_size']} units, {embed}"),
        ("parameters", f"{info['parameters']:,}"),
        (
            "vocabulary",
            f"{info['vocab_size']} {'byte values' if info['unit'] == 'byte' else 'characters'}",
        ),
        ("corpus", corpus),
        (
            "trained",
            f"{info['epochs_done']} of {info['epochs_planned']} epochs{extra}, "
            f"{info['steps']:,} steps, {_duration(info['elapsed_s'])}",
        ),
        ("best val", best),
        ("metrics", _metrics_line(info["metrics"])),
    ]
    if info["plan"]:
        plan = info["plan"]
        n = plan["revisions"]
        revised = f", revised {'once' if n == 1 else f'{n} times'}" if n else ""
        lines.append(("plan", f"{plan['steps']:,} steps (set by {plan['set_by']}){revised}"))
    width = max(len(k) for k in s) + 2
    out = [f"{k:<14} {v}" for k, v in lines] + ["settings"]
    out += [f"  {k:<{width}} {v}" for k, v in s.items()]
    return "\n".join(out)


def _metrics_line(metrics: dict[str, Any]) -> str:
    n = metrics["rows"]
    line = f"{n['epoch']} epoch rows, {n['eval']} evaluations, {n['train']} training rows"
    last = metrics["last_val"]
    if last:
        where = "evaluation" if last["kind"] == "eval" else "full validation"
        line += f"; last validation at step {last['step']:,} ({where}): ppl {last['val_ppl']:.4f}"
    return line
