"""Evaluation by the R1 protocol: sample answers, score them with math-verify, summarise with
intervals and paired comparisons (`distill.evaluation.evaluate`, `distill.evaluation.metrics`)."""
