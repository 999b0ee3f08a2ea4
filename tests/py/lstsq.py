"""Reference fits for tests/feeds.rs: numpy least squares of wall_time on the same
terms and iteration subsets as the exporter's online model.

stdin: {"rows": [[prefill_tokens, decode_requests, decode_kv_tokens, wall_time], ...]}
stdout: {"prefill"|"decode"|"aggregated": {"coefficients": [...], "r_squared": r2, "samples": n}}
Coefficients are in term order, intercept first. Subsets: prefill = rows with
prefill tokens and no decode request; decode = decode requests and no prefill token;
aggregated = every row.
"""
import json
import sys

import numpy as np


def fit(x: np.ndarray, y: np.ndarray) -> dict:
    a = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "coefficients": coef.tolist(),
        "r_squared": 1.0 - float((resid**2).sum()) / sst,
        "samples": int(len(y)),
    }


def main() -> int:
    rows = np.array(json.load(sys.stdin)["rows"], dtype=np.float64)
    p, d, k, y = rows.T
    pre = (p > 0) & (d == 0)
    dec = (d > 0) & (p == 0)
    out = {
        "prefill": fit(p[pre, None], y[pre]),
        "decode": fit(np.column_stack([d[dec], k[dec]]), y[dec]),
        "aggregated": fit(np.column_stack([p, d, k]), y),
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
