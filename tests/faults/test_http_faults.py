"""The HTTP teacher through a fault-injecting proxy: 200 requests at a 20% fault rate.

prompts -> generate with `teacher.backend: openai`, 100 prompts x 2 samples, through
tests/faults/fault_proxy.py (429 with Retry-After, 500, a body cut mid-way, a stall past the
1 s timeout, a 400 that echoes the API key) in front of the seeded fixture server. Every request
ends answered, with the answer an undisturbed run gets, or failed with its reason; none is
lost or doubled; the key is in no file of either run and not in what the runner printed.
"""
from __future__ import annotations

import pandas as pd
import pytest

from tests.faults.fault_proxy import KINDS, FaultProxy
from tests.faults.record import files_holding, record, rows_lost_doubled
from tests.faults.runs import KEY, KEY_ENV, run_stages_in_process, stage_frames, write_recipe
from tests.teachers.http_server import ChatServer

pytestmark = pytest.mark.timeout(300)
ANSWER = ["text", "reasoning", "prompt_tokens", "completion_tokens", "finish_reason"]


def test_200_requests_at_a_20_percent_fault_rate(tmp_path, distill_home, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with ChatServer(seeded=True) as server:
        calm = write_recipe(tmp_path / "calm.yaml", server.base_url, prompts=100)
        run_stages_in_process(calm, tmp_path / "calm", upto="generate")
        with FaultProxy(server.base_url, rate=0.2, stall_s=3.0) as proxy:
            faulty = write_recipe(tmp_path / "faulty.yaml", proxy.base_url, prompts=100,
                                  timeout_s=1.0, max_retries=3, concurrency=8)
            printed = run_stages_in_process(faulty, tmp_path / "faulty", upto="generate")
    assert {r.authorization for r in server.received} == {f"Bearer {KEY}"}
    expected, _ = stage_frames(tmp_path / "calm")["generate"]
    kept, failed = stage_frames(tmp_path / "faulty")["generate"]
    assert len(expected) == 200
    ids = pd.concat([kept["request_id"], failed["request_id"]])
    lost, doubled = rows_lost_doubled(ids, expected["request_id"])
    injected = sum(proxy.injected.values())
    record(f"HTTP teacher via proxy, 20% of attempts ({', '.join(f'{k} x{proxy.injected[k]}' for k in KINDS)})",
           injected=injected, completed=1, lost=lost, doubled=doubled)
    assert (lost, doubled, len(ids)) == (0, 0, 200)
    assert all(proxy.injected[k] > 0 for k in KINDS), proxy.injected
    assert 0.1 < injected / (injected + proxy.forwarded) < 0.3
    # answered rows are the undisturbed run's answers; failed ones say why
    same = expected.set_index("request_id").loc[kept["request_id"], ANSWER].reset_index(drop=True)
    assert kept[ANSWER].reset_index(drop=True).equals(same)
    assert set(failed["reject_reason"]) <= {"teacher_error"}
    assert failed["error"].str.len().gt(0).all()
    assert failed["error"].str.contains("HTTP 400: Bad request with Authorization: Bearer "
                                        "[redacted]", regex=False).any()
    assert files_holding(tmp_path, KEY) == [] and KEY not in printed
