"""A 95 % confidence interval of a mean over seeds, from Student's t distribution.

The quantiles for 1 to 30 degrees of freedom are the standard table's (two-sided 95 %, so the
0.975 quantile); above 30 the Cornish-Fisher expansion around the normal quantile, which is
within 0.0002 of the exact value there. No scipy needed for a handful of seeds.
"""
import math
import statistics
from typing import Optional, Sequence, Tuple

T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)
Z_975 = 1.959964


def t_quantile_975(degrees: int) -> float:
    """The 0.975 quantile of Student's t with `degrees` degrees of freedom (1 or more)."""
    if degrees < 1:
        raise ValueError("Student's t needs at least one degree of freedom")
    if degrees <= len(T_975):
        return T_975[degrees - 1]
    z, v = Z_975, degrees
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def mean_interval(values: Sequence[float]) -> Optional[Tuple[float, float]]:
    """(low, high) of the 95 % interval of the mean of `values` (mean -+ t x sample std / sqrt(n)), or None
    for fewer than two values."""
    if len(values) < 2:
        return None
    mean, half = statistics.mean(values), t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(
        len(values))
    return mean - half, mean + half
