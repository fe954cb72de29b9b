"""bench/eval_intervals.py [REPS]: coverage and width of evaluation's 95% intervals, simulated.

    python bench/eval_intervals.py 2000

Questions are drawn from a population (logit difficulty ~ Normal(a, b)); each is sampled m
times by a base model and by a student whose logit is `shift` higher. For each setting it prints
how often the pass@1 interval (evaluation.metrics.mean_interval) and the paired difference
interval (paired_difference, MOVER) cover the population values, their mean widths, and a
paired t interval beside them for reference. This is the measurement behind the choice of
intervals in evaluation.metrics (INTERVAL, PAIRED).
"""
import math
import sys

import numpy as np
from scipy.stats import t as t_dist

SETTINGS = [  # questions, samples, a, b, shift
    (30, 4, -1.0, 2.0, 0.5), (64, 4, 0.0, 2.0, 0.5), (30, 64, -0.5, 1.5, 0.3),
    (500, 4, 1.0, 2.0, 0.3), (10, 1, -1.0, 1.0, 0.5), (64, 4, -3.0, 1.0, 1.0),
    (20, 4, -4.0, 1.0, 0.0),
]


def main() -> None:
    from distill.evaluation.metrics import mean_interval, paired_difference

    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rng = np.random.default_rng(0)
    print("q   m     a    b shift | pass@1 cover width | MOVER cover width | paired-t cover width")
    for q, m, a, b, shift in SETTINGS:
        z = rng.normal(a, b, 2_000_000)
        true_s = float(np.mean(1 / (1 + np.exp(-(z + shift)))))
        true_d = true_s - float(np.mean(1 / (1 + np.exp(-z))))
        hits = np.zeros(3)
        width = np.zeros(3)
        for _ in range(reps):
            z = rng.normal(a, b, q)
            base = rng.binomial(m, 1 / (1 + np.exp(-z))) / m
            student = rng.binomial(m, 1 / (1 + np.exp(-(z + shift)))) / m
            _, lo, hi = mean_interval(student, q * m)
            p = paired_difference(student, base, q * m, q * m)
            d = student - base
            half = t_dist.ppf(0.975, q - 1) * d.std(ddof=1) / math.sqrt(q)
            for i, (low, high) in enumerate([(lo, hi), (p["ci95_low"], p["ci95_high"]),
                                             (d.mean() - half, d.mean() + half)]):
                hits[i] += low <= (true_s if i == 0 else true_d) <= high
                width[i] += high - low
        c, w = hits / reps, width / reps
        print(f"{q:<4}{m:<3}{a:5.1f}{b:5.1f}{shift:6.1f} |  {c[0]:.3f}  {w[0]:.3f}    |"
              f" {c[1]:.3f}  {w[1]:.3f}     |  {c[2]:.3f}  {w[2]:.3f}")


if __name__ == "__main__":
    main()
