"""Float64 NumPy references of Keras 3's optimizers (kerasopt.keras3), from Keras 3's math.

Written from Keras 3.15's ``update_step`` formulas (docs/reference-behaviour.md Part 2 and Appendix §6) and never
importing kerasopt or torch. Conventions of Keras 3 on the TensorFlow backend that they follow:

- ``ops.cast(python_float, dtype)`` goes through float32 (``_f32``); a bare Python float in an
  expression (``1 - beta``, ``rho * v``, ``epsilon``) is exact;
- a sparse gradient (``tf.IndexedSlices``) meets dense tensors as the row sums of its entries
  (``S``), while ``ops.square`` / ``ops.abs`` apply entry by entry before the rows add up
  (``Q`` = row sums of squares, ``A`` = row sums of absolute values). ``step`` receives
  ``sq``/``ab`` for those; ``None`` on a dense step.

Interface: ``ref = KERAS3_REFERENCES[name](**config)``; ``slots = ref.init_slots(var)`` (Keras 3
slot names); ``var = ref.step(var, g, slots, t, lr, sq=None, ab=None)`` for one variable
(``t = iterations + 1``; ``lr`` the float32 learning rate); ``ref.begin_step(t)`` once per step
before the variables (Nadam's ``u_product``); ``ref.sparse(var, indices, values, slots, t, lr)``.
Weight decay is the harness's (``var -= var * f32(wd) * lr``, before the step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KERAS3_REFERENCES: dict[str, type[K3Ref]] = {}


def _f32(x: float) -> float:
    return float(np.float32(x))


def register(cls: type[K3Ref]) -> type[K3Ref]:
    KERAS3_REFERENCES[cls.__name__.removesuffix("Ref")] = cls
    return cls


class K3Ref:
    slot_names: tuple[str, ...] = ()

    def init_slots(self, var: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.zeros_like(var, dtype=np.float64) for name in self.slot_names}

    def begin_step(self, t: int) -> None:
        pass

    def step(self, var, g, slots, t, lr, sq=None, ab=None) -> np.ndarray:
        raise NotImplementedError

    def sparse(self, var, indices, values, slots, t, lr) -> np.ndarray:
        shape = np.shape(var)
        s, q, a = (np.zeros(shape) for _ in range(3))
        np.add.at(s, indices, values)
        np.add.at(q, indices, np.square(values))
        np.add.at(a, indices, np.abs(values))
        return self.step(var, s, slots, t, lr, sq=q, ab=a)


def _sq(g, sq):
    return np.square(g) if sq is None else sq


@register
class SGDRef(K3Ref):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **_: Any):
        self.momentum, self.nesterov = momentum, nesterov
        self.slot_names = ("momentum",) if momentum != 0 else ()

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        if not self.slot_names:
            return var - g * lr
        mu = _f32(self.momentum)
        m = slots["momentum"]
        m[...] = m * mu - g * lr
        return var + (m * mu - g * lr if self.nesterov else m)


@register
class AdamRef(K3Ref):
    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **_: Any
    ):
        self.b1, self.b2, self.eps, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.slot_names = ("momentum", "velocity") + (("velocity_hat",) if amsgrad else ())

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        m, v = slots["momentum"], slots["velocity"]
        alpha = lr * np.sqrt(1 - _f32(self.b2) ** t) / (1 - _f32(self.b1) ** t)
        m[...] = m + (g - m) * (1 - self.b1)
        v[...] = v + (_sq(g, sq) - v) * (1 - self.b2)
        if self.amsgrad:
            slots["velocity_hat"][...] = np.maximum(slots["velocity_hat"], v)
            v = slots["velocity_hat"]
        return var - (m * alpha) / (np.sqrt(v) + self.eps)


@register
class AdamWRef(AdamRef):
    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kw: Any):
        super().__init__(**kw)


@register
class AdamaxRef(K3Ref):
    slot_names = ("momentum", "norm")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_: Any):
        self.b1, self.b2, self.eps = beta_1, beta_2, epsilon

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        m, u = slots["momentum"], slots["norm"]
        m[...] = m + (g - m) * (1 - self.b1)
        u[...] = np.maximum(self.b2 * u, np.abs(g) if ab is None else ab)
        return var - (lr * m) / ((1 - _f32(self.b1) ** t) * (u + self.eps))


@register
class AdagradRef(K3Ref):
    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **_: Any):
        self.init, self.eps = initial_accumulator_value, epsilon

    def init_slots(self, var):
        return {"accumulator": np.full(np.shape(var), _f32(self.init))}

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        acc = slots["accumulator"]
        acc[...] = acc + _sq(g, sq)
        return var - (lr * g) / np.sqrt(acc + self.eps)


@register
class AdadeltaRef(K3Ref):
    slot_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **_: Any):
        self.rho, self.eps = rho, epsilon

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        ag, ad = slots["accumulated_grad"], slots["accumulated_delta_var"]
        ag[...] = self.rho * ag + (1 - self.rho) * _sq(g, sq)
        ratio = np.sqrt(ad + self.eps) / np.sqrt(ag + self.eps)
        delta = -ratio * g
        # per entry: sum_k (ratio * g_k)^2 = ratio^2 * Q
        delta_sq = np.square(delta) if sq is None else np.square(ratio) * sq
        ad[...] = self.rho * ad + (1 - self.rho) * delta_sq
        return var + lr * delta


@register
class RMSpropRef(K3Ref):
    def __init__(
        self,
        learning_rate=0.001,
        rho=0.9,
        momentum=0.0,
        epsilon=1e-7,
        centered=False,
        **_: Any,
    ):
        self.rho, self.mu, self.eps, self.centered = rho, momentum, epsilon, centered
        self.slot_names = (
            ("velocity",)
            + (("momentum",) if momentum > 0 else ())
            + (("average_gradient",) if centered else ())
        )

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        v = slots["velocity"]
        v[...] = self.rho * v + (1 - self.rho) * _sq(g, sq)
        if self.centered:
            a = slots["average_gradient"]
            a[...] = self.rho * a + (1 - self.rho) * g
            denominator = v - np.square(a) + self.eps
        else:
            denominator = v + self.eps
        increment = lr * g / np.sqrt(denominator)
        if self.mu > 0:
            mom = slots["momentum"]
            mom[...] = self.mu * mom + increment
            return var - mom
        return var - increment


@register
class NadamRef(K3Ref):
    slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_: Any):
        self.b1, self.b2, self.eps = beta_1, beta_2, epsilon
        self.u_product = 1.0

    def begin_step(self, t):
        # Keras's _backend_update_step: Python floats meet the float64 variable (exact 0.96)
        self.u_product = self.u_product * self.b1 * (1.0 - 0.5 * 0.96**t)

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        b1, b2, d = _f32(self.b1), _f32(self.b2), _f32(0.96)
        u_t = b1 * (1.0 - 0.5 * d**t)
        u_t1 = b1 * (1.0 - 0.5 * d ** (t + 1))
        u_prod_t1 = self.u_product * u_t1
        m, v = slots["momentum"], slots["velocity"]
        m[...] = m + (g - m) * (1 - b1)
        v[...] = v + (_sq(g, sq) - v) * (1 - b2)
        m_hat = u_t1 * m / (1 - u_prod_t1) + (1 - u_t) * g / (1 - self.u_product)
        v_hat = v / (1 - b2**t)
        return var - m_hat * lr / (np.sqrt(v_hat) + self.eps)


@register
class FtrlRef(K3Ref):
    slot_names = ("accumulator", "linear")

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
        **_: Any,
    ):
        self.p, self.init = learning_rate_power, initial_accumulator_value
        self.l1, self.l2 = l1_regularization_strength, l2_regularization_strength
        self.l2s, self.beta = l2_shrinkage_regularization_strength, beta

    def init_slots(self, var):
        return {
            "accumulator": np.full(np.shape(var), _f32(self.init)),
            "linear": np.zeros(np.shape(var)),
        }

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        acc, lin = slots["accumulator"], slots["linear"]
        l2 = self.l2 + self.beta / (2.0 * lr)
        g_s = g + 2 * self.l2s * var
        new_acc = acc + _sq(g, sq)
        lin[...] = lin + g_s - (new_acc ** (-self.p) - acc ** (-self.p)) / lr * var
        quadratic = new_acc ** (-self.p) / lr + 2 * l2
        acc[...] = new_acc
        return (np.clip(lin, -self.l1, self.l1) - lin) / quadratic


@register
class LionRef(K3Ref):
    slot_names = ("momentum",)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **_: Any):
        self.b1, self.b2 = _f32(beta_1), _f32(beta_2)

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        m = slots["momentum"]
        new = var - lr * np.sign(self.b1 * m + (1 - self.b1) * g)
        m[...] = self.b2 * m + (1 - self.b2) * g
        return new


@register
class LambRef(K3Ref):
    slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_: Any):
        self.b1, self.b2, self.eps = beta_1, beta_2, epsilon

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        m, v = slots["momentum"], slots["velocity"]
        m[...] = m + (g - m) * (1 - self.b1)
        v[...] = v + (_sq(g, sq) - v) * (1 - self.b2)
        u = (m / (1 - _f32(self.b1) ** t)) / (np.sqrt(v / (1 - _f32(self.b2) ** t)) + self.eps)
        wn, un = np.linalg.norm(var), np.linalg.norm(u)
        ratio = wn / un if wn > 0 and un > 0 else 1.0
        return var - ratio * lr * u


@register
class AdafactorRef(K3Ref):
    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay=-0.8,
        epsilon_1=1e-30,
        epsilon_2=1e-3,
        clip_threshold=1.0,
        relative_step=True,
        **_: Any,
    ):
        self.d, self.e1, self.e2, self.clip = beta_2_decay, epsilon_1, epsilon_2, clip_threshold

    def init_slots(self, var):
        shape = np.shape(var)
        slots = {"velocity": np.zeros(shape)}
        if len(shape) >= 2:
            slots["r"] = np.zeros(shape[:-1])
            slots["c"] = np.zeros(shape[:-2] + shape[-1:])
        return slots

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        rho = min(lr, 1 / np.sqrt(t))
        alpha = max(_f32(self.e2), np.sqrt(np.mean(np.square(var)))) * rho
        g2 = _sq(g, sq) + self.e1
        b2 = 1 - t**self.d
        v = slots["velocity"]
        if np.ndim(var) >= 2:
            r, c = slots["r"], slots["c"]
            r[...] = b2 * r + (1 - b2) * g2.mean(axis=-1)
            c[...] = b2 * c + (1 - b2) * g2.mean(axis=-2)
            v[...] = (r / r.mean(axis=-1, keepdims=True))[..., :, None] * c[..., None, :]
        else:
            v[...] = b2 * v + (1 - b2) * g2
        u = g / np.sqrt(v)
        # sparse: ops.mean(ops.square(u)) over the entries u_k = g_k / sqrt(v_row)
        rms_u = np.sqrt(np.mean(np.square(u) if sq is None else sq / v))
        return var - alpha * u / max(1.0, rms_u / self.clip)


@register
class ScheduleFreeAdamWRef(K3Ref):
    slot_names = ("momentum", "velocity")

    def __init__(
        self,
        learning_rate=0.0025,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        warmup_steps=0,
        **_: Any,
    ):
        self.b1, self.b2, self.eps, self.warmup = (
            _f32(beta_1),
            _f32(beta_2),
            _f32(epsilon),
            warmup_steps,
        )

    def init_slots(self, var):
        return {"momentum": np.array(var, dtype=np.float64), "velocity": np.zeros(np.shape(var))}

    def step(self, var, g, slots, t, lr, sq=None, ab=None):
        if self.warmup > 0:
            lr = lr * min(t / self.warmup, 1.0)
        z, v = slots["momentum"], slots["velocity"]
        v[...] = v + (_sq(g, sq) - v) * (1 - self.b2)
        z[...] = z - lr * g / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        # Keras on TF reads the momentum variable after its assign_sub: x_old from the new z
        x = (var - (1 - self.b1) * z) / self.b1
        w = 1.0 / t
        x = (1 - w) * x + w * z
        return (1 - self.b1) * z + self.b1 * x
