"""Independent reference values for stats/tests/reference.rs.

Fits Bradley-Terry (ties as half a win) and Davidson's tie model to the fixture below with
scipy.optimize.minimize (BFGS on the plain likelihood, no prior), and computes the sandwich standard
errors with numpy from a finite-difference Hessian. Run with numpy and scipy installed:

    python stats/reference/bt_reference.py

and paste the printed constants into stats/tests/reference.rs.
"""
import numpy as np
from scipy.optimize import minimize

MODELS = ["alpha", "bravo", "charlie", "delta", "echo"]
# (first, second, first wins, second wins, ties, both bad): same as FIXTURE in reference.rs
FIXTURE = [
    (0, 1, 30, 18, 10, 2),
    (0, 2, 41, 12, 9, 3),
    (0, 3, 25, 25, 12, 0),
    (0, 4, 50, 8, 6, 1),
    (1, 2, 22, 17, 11, 4),
    (1, 3, 14, 29, 7, 2),
    (1, 4, 33, 15, 10, 0),
    (2, 3, 9, 31, 8, 1),
    (2, 4, 27, 20, 12, 3),
    (3, 4, 38, 9, 5, 2),
]
SCALE = 400 / np.log(10)
n = len(MODELS)
i = np.array([f[0] for f in FIXTURE])
j = np.array([f[1] for f in FIXTURE])
wi = np.array([f[2] for f in FIXTURE], float)
wj = np.array([f[3] for f in FIXTURE], float)
t = np.array([f[4] + f[5] for f in FIXTURE], float)


def bt_nll(free):
    theta = np.append(free, -free.sum())  # ratings sum to zero
    d = theta[i] - theta[j]
    return -np.sum((wi + t / 2) * -np.logaddexp(0, -d) + (wj + t / 2) * -np.logaddexp(0, d))


def davidson_nll(params):
    theta = np.append(params[: n - 1], -params[: n - 1].sum())
    log_nu = params[-1]
    x = (theta[i] - theta[j]) / 2
    log_z = np.logaddexp(np.logaddexp(x, -x), log_nu)
    return -np.sum(wi * x - wj * x + t * log_nu - (wi + wj + t) * log_z)


bt = minimize(bt_nll, np.zeros(n - 1), method="BFGS", options={"gtol": 1e-12})
theta = np.append(bt.x, -bt.x.sum())
print("BT ratings (mean 1000):", [round(v, 6) for v in theta * SCALE + 1000])

# Sandwich: H^-1 M H^-1 on the free parameters (last = -sum), H by central differences.
def scores(theta):
    q = 1 / (1 + np.exp(-(theta[i] - theta[j])))
    # per-pair sum of squared per-battle scores of the first model
    return wi * (1 - q) ** 2 + wj * q**2 + t * (0.5 - q) ** 2, q


def full_from_free(free):
    return np.append(free, -free.sum())


eps = 1e-5
H = np.zeros((n - 1, n - 1))
for a in range(n - 1):
    for b in range(n - 1):
        e_a = np.eye(n - 1)[a] * eps
        e_b = np.eye(n - 1)[b] * eps
        H[a, b] = (bt_nll(bt.x + e_a + e_b) - bt_nll(bt.x + e_a - e_b) - bt_nll(bt.x - e_a + e_b) + bt_nll(bt.x - e_a - e_b)) / (4 * eps * eps)
# M in free coordinates: each pair contributes s * g g^T with g = d(theta_i - theta_j)/d free.
J = np.vstack([np.eye(n - 1), -np.ones(n - 1)])  # full = J free
s, _ = scores(theta)
M = np.zeros((n - 1, n - 1))
for k in range(len(FIXTURE)):
    g = J[i[k]] - J[j[k]]
    M += s[k] * np.outer(g, g)
Hinv = np.linalg.inv(H)
cov_free = Hinv @ M @ Hinv
cov_full = J @ cov_free @ J.T
print("BT sandwich SE (points):", [round(v, 6) for v in np.sqrt(np.diag(cov_full)) * SCALE])

dv = minimize(davidson_nll, np.append(np.zeros(n - 1), 0.0), method="BFGS", options={"gtol": 1e-12})
theta_d = np.append(dv.x[: n - 1], -dv.x[: n - 1].sum())
print("Davidson ratings (mean 1000):", [round(v, 6) for v in theta_d * SCALE + 1000])
print("Davidson nu:", round(float(np.exp(dv.x[-1])), 8))
