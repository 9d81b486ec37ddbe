"""The logistic regressor's trainer: L-BFGS on analytic gradients, in an exactly equivalent small space.

Used by MLImageClassifier's default classifier (`ClassifierType.logistic_regressor()`).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import SessionError
from .heads import LinearHead

STATE_FORMAT = "createml_widgets.logistic-lbfgs/1"


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None) -> float:
    """Minimiser of the cubic through two points with values and slopes (torch.optim.lbfgs's)."""
    xmin, xmax = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    with np.errstate(all="ignore"):
        d1 = np.float64(g1) + g2 - 3 * (f1 - f2) / np.float64(x1 - x2)
        d2_square = d1 ** 2 - g1 * g2
        if d2_square >= 0:
            d2 = np.sqrt(d2_square)
            if x1 <= x2:
                pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
            else:
                pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
            if np.isfinite(pos):
                return float(min(max(pos, xmin), xmax))
    return float((xmin + xmax) / 2.0)


def _strong_wolfe(obj, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Line search for the strong Wolfe conditions: torch.optim.lbfgs._strong_wolfe on numpy vectors.

    `obj(x, t, d) -> (f, g)` at x + t d. Returns (f, g, t, evaluations).
    """
    d_norm = float(np.abs(d).max())
    f_new, g_new = obj(x, t, d)
    evals = 1
    gtd_new = float(g_new @ d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj(x, t, d)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
        bracket_gtd = [gtd, gtd_new]

    insuf_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        hi_t, lo_t = max(bracket), min(bracket)
        eps = 0.1 * (hi_t - lo_t)
        if min(hi_t - t, t - lo_t) < eps:
            if insuf_progress or t >= hi_t or t <= lo_t:
                t = hi_t - eps if abs(t - hi_t) < abs(t - lo_t) else lo_t + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj(x, t, d)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low] = t, f_new, g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run torch on `n` threads here. Small products are fastest on one (benchmarks/README.md,
    "Threads of the small trainers")."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(previous)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through torch (float64)."""
    return (torch.from_numpy(np.asarray(a, dtype=np.float64)) @ torch.from_numpy(np.asarray(b, dtype=np.float64))).numpy()


# One Create ML iteration of the logistic regressor is one solver iteration, as in Turi Create (whose
# max_iterations counts passes of the solver over the data), not an inner loop of 20: the same validation
# accuracy in a twentieth of the optimiser's time (benchmarks/README.md, "One solver iteration per
# Create ML iteration").
LBFGS_ITERATIONS_PER_STEP = 1
LBFGS_EVALUATIONS_PER_STEP = 5


def _lbfgs_memory(st: dict, vector) -> dict:
    """The optimiser's counters and memory from `st` (a trainer's or a saved state), vectors through `vector`."""
    scalar = lambda key: None if st.get(key) is None else float(st[key])  # noqa: E731
    return {"n_iter": int(st.get("n_iter", 0)), "func_evals": int(st.get("func_evals", 0)),
            "d": vector(st.get("d")), "t": scalar("t"), "H_diag": scalar("H_diag"),
            "prev_flat_grad": vector(st.get("prev_flat_grad")), "prev_loss": scalar("prev_loss"),
            "old_dirs": [vector(v) for v in st.get("old_dirs") or []],
            "old_stps": [vector(v) for v in st.get("old_stps") or []],
            "ro": [float(v) for v in st.get("ro") or []]}


class LogisticRegressionTrainer:
    """Multinomial logistic regression by L-BFGS: Create ML's logistic regressor, one `step()` per iteration.

    The objective (mean cross-entropy + weight_decay/2 * |W|^2, bias not penalised) and the
    optimiser (torch.optim.LBFGS's algorithm and settings: lr 1, one iteration and up to 5 evaluations per
    step, history 10, strong-Wolfe line search; tests/nets/test_logistic.py checks it against torch's),
    computed without autograd and without torch.optim, whose first use imports torch._dynamo.

    With fewer examples N than feature dimensions D it works in an exactly equivalent smaller space:
    X = A Q^T with Q (D x N) orthonormal, so the loss sees W only through C = W Q; the part of W
    outside span(Q) only decays under the penalty, and since L-BFGS's steps are combinations of
    gradients, it stays a multiple of its initial direction U. The coordinates (C, b, alpha) with
    W = C Q^T + alpha U are an orthonormal change of variables, so L-BFGS takes the same steps
    (the step-size start uses the full gradient's L1 norm; only the tiny stopping tolerances are
    measured in the new coordinates), on vectors of K(N+1)+1 numbers instead of K(D+1).
    Deterministic: the initial weights come from `seed` (nn.Linear's uniform initialisation).
    `reduce` forces the small space on (True) or off (False); by default it is used when N <= D / 2.
    """

    lr, max_iter, max_eval, history_size = 1.0, LBFGS_ITERATIONS_PER_STEP, LBFGS_EVALUATIONS_PER_STEP, 10
    state_dict_is_snapshot = True  # state_dict() shares nothing that later steps change
    tolerance_grad, tolerance_change = 1e-7, 1e-9

    def __init__(self, x: torch.Tensor, y: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, num_classes: int,
                 weight_decay: float = 1e-3, seed: int = 0, reduce: bool | None = None):
        # One thread unless the products are big (about 10,000 photos and more).
        self.threads = 1 if len(y) * min(len(y), x.shape[1]) < 20_000_000 else None
        with _torch_threads(self.threads):
            self._setup(x, y, vx, vy, num_classes, weight_decay, seed, reduce)

    def _setup(self, x, y, vx, vy, num_classes, weight_decay, seed, reduce) -> None:
        self.X = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        self.y = y.numpy().astype(np.int64)
        self.VX = np.ascontiguousarray(vx.numpy(), dtype=np.float32) if len(vy) else None
        self.vy = vy.numpy().astype(np.int64)
        self.n, self.dim = self.X.shape
        self.k = int(num_classes)
        self._true = np.arange(self.n) * self.k + self.y  # flat index of each example's true logit
        self.weight_decay = float(weight_decay)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.dim)
        w0 = rng.uniform(-bound, bound, (self.k, self.dim))
        b0 = rng.uniform(-bound, bound, self.k)
        basis = None
        if reduce if reduce is not None else self.n <= self.dim // 2:  # worth it: the QR costs about one step
            q, r = torch.linalg.qr(torch.from_numpy(self.X.T).double())
            signs = np.where(np.diag(r.numpy()) < 0, -1.0, 1.0)  # unique: R's diagonal > 0
            basis = np.ascontiguousarray(q.numpy() * signs)
            self._set_basis(basis, w0, a=torch.from_numpy(np.ascontiguousarray(r.numpy().T * signs)))  # X Q = R^T
        else:
            self._set_basis(None, w0)
        self.theta = self._reduce(np.concatenate([w0.ravel(), b0]))
        self._opt: dict = {"n_iter": 0, "func_evals": 0}
        self._fg = None  # (theta, f, g) at the current point, from the last line search
        self._net: LinearHead | None = None

    # -- coordinates ---------------------------------------------------------------------------
    # The matrix products run in torch (its BLAS is several times faster than numpy's on these sizes);
    # the L-BFGS bookkeeping on the short coordinate vectors stays in numpy.
    def _set_basis(self, basis: np.ndarray | None, w: np.ndarray, a: torch.Tensor | None = None) -> None:
        """Q (D x r) or None (work on W itself), A = X Q (given, or computed), and the unit direction U
        of w outside span(Q)."""
        self.Q = basis
        self.U = None
        if basis is None:
            # float64 unless that would be big (over 40 MB): then the products run in float32
            wide = torch.float64 if self.X.size <= 5_000_000 else torch.float32
            self.A = torch.from_numpy(self.X).to(wide)
            self.VA = None if self.VX is None else torch.from_numpy(self.VX).to(wide)
        else:
            q = torch.from_numpy(basis)
            self.A = a if a is not None else torch.from_numpy(self.X).double() @ q
            self.VA = None if self.VX is None else torch.from_numpy(self.VX).double() @ q
            perp = w - _mm(_mm(w, basis), basis.T)
            norm = float(np.linalg.norm(perp))
            if norm > 1e-12 * max(1.0, float(np.linalg.norm(w))):
                self.U = perp / norm
        self.r = self.dim if basis is None else basis.shape[1]
        self._vu = None if self.U is None or self.VX is None else _mm(self.VX.astype(np.float64), self.U.T)

    def _reduce(self, full: np.ndarray) -> np.ndarray:
        """A flat (W, b) vector in torch's parameter order -> (C, b[, alpha])."""
        full = np.asarray(full, dtype=np.float64)
        w, b = full[:self.k * self.dim].reshape(self.k, self.dim), full[self.k * self.dim:]
        if self.Q is None:
            return np.concatenate([w.ravel(), b])
        parts = [_mm(w, self.Q).ravel(), b]
        if self.U is not None:
            parts.append([float(np.vdot(w, self.U))])
        return np.concatenate(parts)

    def _unpack(self, theta: np.ndarray):
        kr = self.k * self.r
        c = theta[:kr].reshape(self.k, self.r)
        b = theta[kr:kr + self.k]
        alpha = float(theta[kr + self.k]) if self.U is not None else 0.0
        return c, b, alpha

    def _full_weight(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, b, alpha = self._unpack(theta)
        if self.Q is None:
            return c, b
        w = _mm(c, self.Q.T)
        if self.U is not None:
            w = w + alpha * self.U
        return w, b

    # -- objective -----------------------------------------------------------------------------
    @staticmethod
    def _logits(a: torch.Tensor, c: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = a @ torch.from_numpy(c).to(a.dtype).T
        return z.numpy().astype(np.float64, copy=False) + b

    def _objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and gradient at `theta` (this runs once or a few times a step: kept to few operations)."""
        c, b, alpha = self._unpack(theta)
        z = self._logits(self.A, c, b)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1)
        lam = self.weight_decay
        loss = (float(np.log(s).sum()) - float(z.take(self._true).sum())) / self.n
        loss += 0.5 * lam * (float(np.vdot(c, c)) + alpha * alpha)
        e /= s[:, None]
        e.ravel()[self._true] -= 1.0  # softmax - one-hot
        gc = (torch.from_numpy(e.T).to(self.A.dtype) @ self.A).numpy().astype(np.float64, copy=False)
        parts = [(gc / self.n + lam * c).ravel(), e.sum(axis=0) / self.n]
        if self.U is not None:
            parts.append([lam * alpha])
        return loss, np.concatenate(parts)

    def _directional(self, x, t, d):
        return self._objective(x + t * d)

    # -- the Trainer interface the engine uses ---------------------------------------------------
    def step(self) -> dict[str, float]:
        """One Create ML iteration: one L-BFGS iteration (up to 5 evaluations in its line search)."""
        with _torch_threads(self.threads):
            return self._step()

    def _step(self) -> dict[str, float]:
        st = self._opt
        x = self.theta
        if self._fg is not None and self._fg[0] is x:
            loss, g = self._fg[1], self._fg[2]  # the line search ended here: same point, same values
        else:
            loss, g = self._objective(x)
        evals = 1
        st["func_evals"] += 1
        if np.abs(g).max() <= self.tolerance_grad:
            self._fg = (x, loss, g)
            return self._train_metrics()
        d, t = st.get("d"), st.get("t")
        old_dirs, old_stps, ro = st.get("old_dirs"), st.get("old_stps"), st.get("ro")
        h_diag, prev_g = st.get("H_diag"), st.get("prev_flat_grad")
        prev_loss = st.get("prev_loss")
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            st["n_iter"] += 1
            if st["n_iter"] == 1:
                d = -g
                old_dirs, old_stps, ro = [], [], []
                h_diag = 1.0
            else:
                yv = g - prev_g
                sv = d * t
                ys = float(yv @ sv)
                if ys > 1e-10:
                    if len(old_dirs) == self.history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(yv)
                    old_stps.append(sv)
                    ro.append(1.0 / ys)
                    h_diag = ys / float(yv @ yv)
                al = [0.0] * len(old_dirs)
                q = -g
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = float(old_stps[i] @ q) * ro[i]
                    q = q - al[i] * old_dirs[i]
                d = q * h_diag
                for i in range(len(old_dirs)):
                    be_i = float(old_dirs[i] @ d) * ro[i]
                    d = d + (al[i] - be_i) * old_stps[i]
            prev_g = g.copy()
            prev_loss = loss
            if st["n_iter"] == 1:
                t = min(1.0, 1.0 / self._full_l1(g)) * self.lr
            else:
                t = self.lr
            gtd = float(g @ d)
            if gtd > -self.tolerance_change:
                break
            loss, g, t, ls_evals = _strong_wolfe(self._directional, x, t, d, loss, g, gtd,
                                                 max_ls=self.max_eval - evals)
            x = x + t * d
            evals += ls_evals
            st["func_evals"] += ls_evals
            if n_iter == self.max_iter or evals >= self.max_eval:
                break
            if np.abs(g).max() <= self.tolerance_grad:
                break
            if np.abs(d * t).max() <= self.tolerance_change or abs(loss - prev_loss) < self.tolerance_change:
                break
        st.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag, prev_flat_grad=prev_g,
                  prev_loss=prev_loss)
        self.theta = x
        self._fg = (x, loss, g)
        self._net_dirty = True
        return self._train_metrics()

    def _full_l1(self, g: np.ndarray) -> float:
        """|g|_1 in the original (W, b) coordinates (torch's first step size depends on it)."""
        gw, gb = self._full_weight(g)
        return float(np.abs(gw).sum() + np.abs(gb).sum())

    @staticmethod
    def _ce(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return {"loss": float(-logp[np.arange(len(y)), y].mean()), "accuracy": float((z.argmax(1) == y).mean())}

    def _train_metrics(self) -> dict[str, float]:
        c, b, _ = self._unpack(self.theta)
        return self._ce(self._logits(self.A, c, b), self.y)

    def validation_metrics(self) -> dict[str, float]:
        """Loss and accuracy on the validation set ({} without one)."""
        if self.VX is None or not len(self.vy):
            return {}
        with _torch_threads(self.threads):
            return self._validation_metrics()

    def _validation_metrics(self) -> dict[str, float]:
        c, b, alpha = self._unpack(self.theta)
        z = self._logits(self.VA, c, b)
        if self._vu is not None:
            z = z + alpha * self._vu
        m = self._ce(z, self.vy)
        return {"validation_loss": m["loss"], "validation_accuracy": m["accuracy"]}

    @property
    def net(self) -> LinearHead:
        """The trained weights as the LinearHead the model predicts and exports with."""
        if self._net is None:
            self._net = LinearHead(self.dim, self.k)
            self._net_dirty = True
        if self._net_dirty:
            with _torch_threads(self.threads):
                w, b = self._full_weight(self.theta)
            with torch.no_grad():
                self._net.fc.weight.copy_(torch.from_numpy(w))
                self._net.fc.bias.copy_(torch.from_numpy(np.asarray(b)))
            self._net_dirty = False
        return self._net

    def state_dict(self) -> dict:
        """A snapshot (nothing in it changes later) that round-trips through torch.load(weights_only=True)."""
        with _torch_threads(self.threads):
            w, b = self._full_weight(self.theta)
        vec = lambda v: None if v is None else torch.from_numpy(np.array(v, dtype=np.float64))  # noqa: E731
        opt = {"format": STATE_FORMAT, "theta": vec(self.theta),
               "basis": None if self.Q is None else torch.from_numpy(self.Q),  # never modified: shared, not copied
               "perp": None if self.U is None else torch.from_numpy(self.U),
               **_lbfgs_memory(self._opt, vec)}
        return {"net": {"fc.weight": torch.from_numpy(w.astype(np.float32)),
                        "fc.bias": torch.from_numpy(np.asarray(b, dtype=np.float32))},
                "optimizer": opt}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` (SessionError for a state of another format)."""
        with _torch_threads(self.threads):
            self._load(state)

    def _load(self, state: dict) -> None:
        w = state["net"]["fc.weight"].double().numpy()
        opt = state.get("optimizer") or {}
        arr = lambda v: None if v is None else np.asarray(v.numpy() if hasattr(v, "numpy") else v,  # noqa: E731
                                                          dtype=np.float64)
        if opt.get("format") != STATE_FORMAT:
            raise SessionError(f"this checkpoint's logistic regressor state is not of the format {STATE_FORMAT!r} "
                               f"(it has {opt.get('format')!r}); it cannot be resumed: train again")
        basis, perp = arr(opt.get("basis")), arr(opt.get("perp"))
        if (basis is None) != (self.Q is None) or (basis is not None and basis.shape != self.Q.shape):
            raise SessionError("this checkpoint was made on other training features; it cannot be resumed")
        if basis is not None and not np.array_equal(basis, self.Q):
            self._set_basis(basis, w)
        self.U = perp
        if self.Q is not None:
            self._vu = None if perp is None or self.VX is None else _mm(self.VX, perp.T)
        self.theta = arr(opt["theta"])
        self._opt = _lbfgs_memory(opt, arr)
        self._fg = None
        self._net_dirty = True

