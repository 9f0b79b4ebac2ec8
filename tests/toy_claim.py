"""A claim defined in one file, as a user would add one: its spec, its statistic and one registration."""

from __future__ import annotations

import numpy as np
import xarray as xr

from lewc.stats.claims import ClaimSpec, ClaimType, Resampler, register_claim


def stat_endpoints_agree(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    """|Acc_A − Acc_B| in percentage points, over the (resampled) test images."""
    correct = 100.0 * res["correct"].transpose("lam", "image").values.astype(np.float64)
    lams = [float(v) for v in res["lam"].values]
    diff = correct[lams.index(0.0)] - correct[lams.index(1.0)]  # (image,)
    if rs is None:
        return np.abs(diff.mean())[None], ""
    w = rs.counts(len(diff))
    return np.abs(w @ diff / w.sum(1)), ""


ENDPOINTS_AGREE = register_claim(
    ClaimType(
        ClaimSpec(
            "endpoints_agree",
            "The two endpoints reach the same test accuracy",
            "|Acc_A − Acc_B| in percentage points",
            "the seeds give models of different quality",
            100.0,  # any pair passes: the test checks the plumbing, not a finding
            "below",
            "pp",
            "a toy claim for tests/test_registry.py",
            False,
        ),
        stat_endpoints_agree,
        requires="correct",  # the per-image variable it resamples
    )
)
