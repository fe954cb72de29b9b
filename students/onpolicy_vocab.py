"""Which teacher token is which student token: `vocab_map(student_tok, teacher_tok, name)`.

Same-tokenizer distillation needs the same ordinary vocabulary (every token that is not an
added token has the same id in both); otherwise the teacher is refused with a DistillError
(unless a cross-tokenizer method is chosen: students.onpolicy_teacher). Added tokens are
matched by their text, and the student's end-of-turn token stands for the teacher's: families
share their BPE vocabulary but not always their special tokens (R1-Distill-Qwen renamed
Qwen2.5's, so the student's `<|im_end|>` is the teacher's `<｜end▁of▁sentence｜>`). The two
distributions are compared over the tokens both have (`student_cols` / `teacher_cols`,
renormalised); a student token the teacher lacks (a special token an answer never holds) is
shown to the teacher as its end-of-turn token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from distill.pipeline.errors import DistillError


@dataclass
class VocabMap:
    """Matching columns of the two vocabularies, and student ids the teacher spells differently."""

    student_cols: list[int]
    teacher_cols: list[int]
    to_teacher: dict[int, int]
    teacher_fallback: int
    _known: set[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._known = set(self.student_cols)

    def teacher_ids(self, ids: list[int]) -> list[int]:
        """The student's token ids as the teacher reads them."""
        return [self.to_teacher.get(i, i if i in self._known else self.teacher_fallback)
                for i in ids]


def _ordinary(tok) -> dict[str, int]:
    added = tok.get_added_vocab()
    return {t: i for t, i in tok.get_vocab().items() if t not in added}


def vocab_map(student_tok, teacher_tok, teacher_name: str) -> VocabMap:
    """The map for a teacher of the student's family; DistillError when the ordinary
    vocabularies differ (see the module docstring)."""
    from distill.students.chat import end_of_turn_token

    s_vocab, t_vocab = _ordinary(student_tok), _ordinary(teacher_tok)
    differ = [t for t, i in s_vocab.items() if t_vocab.get(t) != i]
    if differ or len(s_vocab) != len(t_vocab):
        raise DistillError(
            f"onpolicy: the teacher {teacher_name} does not share the student's tokenizer "
            f"({len(differ)} of {len(s_vocab)} ordinary student tokens are missing or numbered "
            f"differently, e.g. {differ[:3]}; vocabularies of {len(s_vocab)} and {len(t_vocab)}), "
            "so it cannot score the student's tokens",
            fix="use a teacher of the student's family (same tokenizer), or set "
                "onpolicy.cross_tokenizer: uld (compares sorted distributions where both "
                "tokenizations align)")
    t_all = teacher_tok.get_vocab()
    t_eot = t_all[end_of_turn_token(teacher_tok)]
    pairs = {i: i for i in s_vocab.values()}
    for text, i in student_tok.get_added_vocab().items():
        if text in t_all:
            pairs[i] = t_all[text]
    s_eot = student_tok.convert_tokens_to_ids(end_of_turn_token(student_tok))
    pairs = {i: j for i, j in pairs.items() if j != t_eot} | {s_eot: t_eot}  # one column each
    cols = sorted(pairs)
    return VocabMap(student_cols=cols, teacher_cols=[pairs[i] for i in cols],
                    to_teacher={i: j for i, j in pairs.items() if i != j}, teacher_fallback=t_eot)
