"""Times FastChat's compute_bt and compute_bootstrap_bt on an Arena battles file and writes the
ratings and 95% percentile bounds as JSON, for examples/bench_bt.rs to compare against.

Usage: python fastchat_bt.py BATTLES.jsonl ROUNDS OUT.json
FastChat's rating_systems.py must be importable (bench/run.sh puts it on PYTHONPATH); its code is
not part of this repository.
"""
import json
import math
import sys
import time

import numpy as np
import pandas as pd
from scipy.optimize import minimize

import rating_systems  # fastchat/serve/monitor/rating_systems.py


def main():
    path, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    battles = pd.read_json(path, lines=True)
    start = time.perf_counter()
    ratings = rating_systems.compute_bt(battles)
    seconds_fit = time.perf_counter() - start
    start = time.perf_counter()
    bootstrap = rating_systems.compute_bootstrap_bt(battles, num_round=rounds)
    seconds_bootstrap = time.perf_counter() - start
    # Not timed: the same likelihood minimised to tight tolerances, to show how far FastChat's
    # default stopping rule (maxiter=100, gtol=1e-6) leaves compute_bt from the exact optimum.
    matchups, outcomes, models, weights = rating_systems.preprocess_for_bt(battles)
    tight = minimize(
        rating_systems.bt_loss_and_grad,
        np.zeros(len(models)),
        args=(matchups, outcomes, weights, math.log(10.0)),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10000, "gtol": 1e-10, "ftol": 1e-15},
    )
    result = {
        "rating": {m: float(r) for m, r in ratings.items()},
        "rating_tight": {m: float(r) * 400.0 + 1000.0 for m, r in zip(models, tight.x)},
        "lower": {m: float(v) for m, v in bootstrap.quantile(0.025).items()},
        "upper": {m: float(v) for m, v in bootstrap.quantile(0.975).items()},
        "seconds_fit": seconds_fit,
        "seconds_bootstrap": seconds_bootstrap,
        "rounds": rounds,
    }
    with open(out, "w") as f:
        json.dump(result, f)
    print(f"FastChat: compute_bt {seconds_fit:.2f} s, compute_bootstrap_bt ({rounds} rounds) {seconds_bootstrap:.2f} s")


if __name__ == "__main__":
    main()
