"""charlm's benchmarks, run from the repository root so that they measure this checkout:

    python -m benchmarks.bench            # charlm against plain PyTorch (see bench.py)
    python -m benchmarks.threads          # training speed by thread count, quiet and busy
    python -m benchmarks.folder_prepare   # preparing a folder of many files

harness.py measures and prints, references.py holds the plain PyTorch loops, rows.py the rows
of the table, learning.py the learning curve and the gain of dynamic evaluation, loadtime.py
times a corpus load in a fresh process.
"""
