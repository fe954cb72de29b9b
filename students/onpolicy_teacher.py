"""The local teacher of on-policy distillation: `load_teacher(folder, student_tok, cfg) ->
(model, tokenizer, vmap, align)`: for a teacher of the student's family `vmap` matches the
vocabularies (students.onpolicy_vocab) and `align` is None; else, with cfg.cross_tokenizer
"uld", `align` is a `CrossTokenizer` and `vmap` None (any other setting refuses the teacher).

CrossTokenizer is Universal Logit Distillation (Boizard et al. 2024) made token-exact where it
can be: the student's answer is decoded and re-tokenized by the teacher; a position is compared
only where both tokenizations start a token at the same character (both models then predict the
next piece of the same text), and there the distance is the L1 distance between the two
next-token distributions sorted by probability (vocabularies differ, so only their shapes are
compared). It is not a KL: the held-out figure is recorded with estimator "uld".
"""
from __future__ import annotations

import torch

from distill.students.onpolicy_config import OnPolicyConfig


def load_teacher(folder: str, student_tok, cfg: OnPolicyConfig):
    """The teacher model (eval, no gradients), its tokenizer, the vocabulary map and the aligner."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.pipeline.errors import DistillError
    from distill.students.chat import ensure_chat_template
    from distill.students.onpolicy_vocab import vocab_map

    tok = AutoTokenizer.from_pretrained(folder)
    ensure_chat_template(tok)
    vmap, align = None, None
    try:
        vmap = vocab_map(student_tok, tok, folder)
    except DistillError:
        if cfg.cross_tokenizer != "uld":
            raise
        align = CrossTokenizer(student_tok, tok)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval().requires_grad_(False)
    if torch.cuda.is_available():
        model.cuda()
    return model, tok, vmap, align


def char_starts(tokenizer, ids: list[int]) -> list[int]:
    """The character offset in decode(ids) at which each token starts (incremental decoding)."""
    return [len(tokenizer.decode(ids[:j])) for j in range(len(ids))]


def sorted_l1(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """ULD distance per position: L1 between probabilities sorted high to low;
    (N, Vs), (N, Vt) -> (N,)."""
    s = torch.softmax(s_logits.float(), -1).sort(-1, descending=True).values
    t = torch.softmax(t_logits.float(), -1).sort(-1, descending=True).values
    width = max(s.shape[-1], t.shape[-1])
    s = torch.nn.functional.pad(s, (0, width - s.shape[-1]))
    t = torch.nn.functional.pad(t, (0, width - t.shape[-1]))
    return (s - t).abs().sum(-1)


class CrossTokenizer:
    """ULD between a student and a teacher with different tokenizers (see the module docstring)."""

    def __init__(self, student_tok, teacher_tok):
        self.student_tok, self.teacher_tok = student_tok, teacher_tok

    def align(self, completion: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """The teacher's tokens of the answer's text, and (student index, teacher index) pairs of
        tokens that start at the same character."""
        text = self.student_tok.decode(completion)
        enc = self.teacher_tok(text, add_special_tokens=False, return_offsets_mapping=True)
        t_starts = {start: k for k, (start, _) in enumerate(enc["offset_mapping"])}
        pairs = [(j, t_starts[c]) for j, c in enumerate(char_starts(self.student_tok, completion))
                 if c in t_starts]
        return enc["input_ids"], pairs

    def divergence(self, student, teacher, prompts, completions):
        """(loss, per-token distance (B, T) detached, mask of the aligned positions)."""
        from distill.students.onpolicy_batch import completion_logits

        n = len(completions) // len(prompts)
        t_seqs, pairs = zip(*(self.align(c) for c in completions))
        s_logits, mask = completion_logits(student, [prompts[i // n].student for i in
                                                     range(len(completions))], completions,
                                           list(range(len(self.student_tok))))
        with torch.no_grad():
            t_logits, _ = completion_logits(teacher, [prompts[i // n].teacher for i in
                                                      range(len(completions))], list(t_seqs),
                                            list(range(len(self.teacher_tok))))
        per_token, aligned = torch.zeros_like(mask), torch.zeros_like(mask)
        rows = [(b, j, k) for b, ps in enumerate(pairs) for j, k in ps]
        if not rows:
            return s_logits.sum() * 0.0, per_token, aligned
        b, j, k = (torch.tensor(x, device=mask.device) for x in zip(*rows))
        dist = sorted_l1(s_logits[b, j], t_logits.to(s_logits.device)[b, k])
        aligned[b, j] = 1.0
        return dist.mean(), per_token.index_put((b, j), dist.detach()), aligned
