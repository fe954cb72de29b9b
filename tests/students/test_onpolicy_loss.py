"""The on-policy losses against a direct computation (and TRL's GKD loss where TRL is installed)."""
from __future__ import annotations

import math

import pytest
import torch

from distill.students.onpolicy_loss import (
    generalized_jsd,
    sampled_reverse_kl_loss,
    token_logprobs,
    topk_generalized_jsd,
)


def _direct(s_logits: torch.Tensor, t_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """GKD eq. 1 written out with plain sums over the vocabulary, position by position."""
    out = torch.zeros(s_logits.shape[:2], dtype=torch.float64)
    for b in range(s_logits.shape[0]):
        for i in range(s_logits.shape[1]):
            s = torch.softmax(s_logits[b, i].double(), -1).tolist()
            t = torch.softmax(t_logits[b, i].double(), -1).tolist()
            m = [beta * tv + (1 - beta) * sv for sv, tv in zip(s, t)]
            kl = lambda p, q: sum(pv * math.log(pv / qv) for pv, qv in zip(p, q))
            out[b, i] = (kl(t, s) if beta == 0 else kl(s, t) if beta == 1
                         else beta * kl(t, m) + (1 - beta) * kl(s, m))
    return out


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 11, generator=g) * 2, torch.randn(2, 3, 11, generator=g) * 2


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_matches_the_definition(logits, beta):
    s, t = logits
    assert torch.allclose(generalized_jsd(s, t, beta).double(), _direct(s, t, beta), atol=1e-5)
    assert torch.allclose(generalized_jsd(t, t, beta), torch.zeros(2, 3), atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_topk_over_the_whole_vocabulary_is_exact_and_a_smaller_k_keeps_the_tail(logits, beta):
    s, t = logits
    t_log = torch.log_softmax(t, -1)
    top = t_log.topk(11, dim=-1)
    exact = generalized_jsd(s, t, beta)
    assert torch.allclose(topk_generalized_jsd(s, top.indices, top.values, beta), exact, atol=1e-5)
    top3 = t_log.topk(3, dim=-1)
    approx = topk_generalized_jsd(s, top3.indices, top3.values, beta)
    assert torch.isfinite(approx).all() and (approx >= -1e-6).all()
    assert torch.allclose(topk_generalized_jsd(t, top3.indices, top3.values, beta),
                          torch.zeros(2, 3), atol=1e-5)


def test_sampled_reverse_kl_has_the_reverse_kl_as_its_expected_value_and_gradient():
    g = torch.Generator().manual_seed(1)
    s_logits = torch.randn(5, generator=g, requires_grad=True)
    t_logits = torch.randn(5, generator=g)
    exact = generalized_jsd(s_logits.view(1, 1, 5), t_logits.view(1, 1, 5), 1.0).sum()
    (grad_exact,) = torch.autograd.grad(exact, s_logits)
    # expectation over the student's own samples, summed exactly over all 5 tokens
    probs = torch.softmax(s_logits, -1).detach()
    tokens = torch.arange(5).view(1, 5)
    s_lp = token_logprobs(s_logits.expand(5, 5).unsqueeze(0), tokens)
    t_lp = token_logprobs(t_logits.expand(5, 5).unsqueeze(0), tokens)
    estimate = (probs * (s_lp - t_lp).detach()).sum()
    surrogate = (probs * sampled_reverse_kl_loss(s_lp, t_lp)).sum()
    (grad_est,) = torch.autograd.grad(surrogate, s_logits)
    assert torch.allclose(estimate, exact.detach(), atol=1e-5)
    assert torch.allclose(grad_est, grad_exact, atol=1e-5)


def test_same_as_trl_gkd_loss(logits):
    gkd = pytest.importorskip("trl.experimental.gkd").GKDTrainer
    s, t = logits
    for beta in (0.0, 0.5, 1.0):
        ours = generalized_jsd(s, t, beta)
        theirs = gkd.generalized_jsd_loss(s, t, beta=beta, reduction="none").sum(-1)
        assert torch.allclose(ours, theirs, atol=1e-5), beta
