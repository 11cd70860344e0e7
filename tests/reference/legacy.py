"""Float64 references of the legacy (optimizer_v2) family, from docs/reference-behaviour.md Part 1 §1.10–§1.11.

Each ``dense`` follows docs/reference-behaviour.md's order of operations; slots are updated in place (``s[...] = ...``)
and a new variable array is returned.
"""

from __future__ import annotations

import numpy as np

from . import Reference, register, sum_duplicates


def _f64(x: np.ndarray) -> np.ndarray:
    """float64, or complex128 for complex input (SGD, Adagrad, Adadelta, RMSprop take complex)."""
    return np.asarray(x, dtype=np.complex128 if np.iscomplexobj(x) else np.float64)


def _eps(epsilon: float | None) -> float:
    """Legacy quirk: ``epsilon or 1e-7`` (None and 0 both become 1e-7)."""
    return epsilon or 1e-7


@register
class SGDRef(Reference):
    """SGD: ``var -= lr*g``; momentum: ``accum = accum*momentum - lr*g``, ``var += accum``
    (nesterov: ``var += accum*momentum - lr*g``). Sparse: lazy rows (base default)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **_):
        self.momentum = momentum
        self.nesterov = nesterov
        self.slot_names = ("momentum",) if momentum > 0 else ()

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        if not self.slot_names:
            return var - lr * g
        accum = slots["momentum"]
        accum[...] = accum * self.momentum - lr * g
        if self.nesterov:
            return var + (accum * self.momentum - lr * g)
        return var + accum


@register
class AdamRef(Reference):
    """Adam ("epsilon hat"): ``alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)``;
    ``m += (g-m)(1-beta_1)``; ``v += (g*g-v)(1-beta_2)``; (amsgrad ``vhat = max(vhat, v)``);
    ``var -= (m*alpha)/(sqrt(v)+eps)``.
    Sparse: m, v decayed over all rows then added at the indexed rows; var updated everywhere."""

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **_
    ):
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.epsilon = _eps(epsilon)
        self.amsgrad = amsgrad
        self.slot_names = ("m", "v", "vhat") if amsgrad else ("m", "v")

    def _alpha(self, t, lr):
        return lr * np.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)

    def _apply(self, var, slots, alpha):
        v = slots["v"]
        if self.amsgrad:
            slots["vhat"][...] = np.maximum(slots["vhat"], v)
            v = slots["vhat"]
        return var - (slots["m"] * alpha) / (np.sqrt(v) + self.epsilon)

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        m, v = slots["m"], slots["v"]
        m[...] = m + (g - m) * (1 - self.beta_1)
        v[...] = v + (g * g - v) * (1 - self.beta_2)
        return self._apply(var, slots, self._alpha(t, lr))

    def sparse(self, var, indices, values, slots, t, lr):
        idx, g = sum_duplicates(indices, values)
        m, v = slots["m"], slots["v"]
        m[...] = m * self.beta_1
        m[idx] += g * (1 - self.beta_1)
        v[...] = v * self.beta_2
        v[idx] += (g * g) * (1 - self.beta_2)
        return self._apply(_f64(var), slots, self._alpha(t, lr))


@register
class AdamaxRef(Reference):
    """Adamax: ``m += (g-m)(1-beta_1)``; ``v = max(beta_2*v, |g|)``;
    ``var -= lr/(1-beta_1^t) * (m/(v+eps))``.
    Sparse: lazy rows, with the m line written ``m_i*beta_1 + g_i*(1-beta_1)`` as in docs/reference-behaviour.md."""

    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_):
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.epsilon = _eps(epsilon)

    def _step(self, var, g, slots, t, lr, lazy):
        m, v = slots["m"], slots["v"]
        if lazy:
            m[...] = m * self.beta_1 + g * (1 - self.beta_1)
        else:
            m[...] = m + (g - m) * (1 - self.beta_1)
        v[...] = np.maximum(self.beta_2 * v, np.abs(g))
        return var - lr / (1 - self.beta_1**t) * (m / (v + self.epsilon))

    def dense(self, var, grad, slots, t, lr):
        return self._step(_f64(var), _f64(grad), slots, t, lr, lazy=False)

    def sparse(self, var, indices, values, slots, t, lr):
        idx, g = sum_duplicates(indices, values)
        var = _f64(var).copy()
        rows = {k: s[idx].copy() for k, s in slots.items()}
        var[idx] = self._step(var[idx], g, rows, t, lr, lazy=True)
        for k, s in rows.items():
            slots[k][idx] = s
        return var


@register
class AdagradRef(Reference):
    """Adagrad: ``acc += g*g``; ``var -= lr*g/(sqrt(acc)+eps)``; ``acc`` starts at
    ``initial_accumulator_value`` (0.1). Sparse: lazy rows (base default)."""

    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **_):
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = _eps(epsilon)

    def init_slots(self, var):
        dtype = np.complex128 if np.iscomplexobj(var) else np.float64
        return {"accumulator": np.full(np.shape(var), self.initial_accumulator_value, dtype)}

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        acc = slots["accumulator"]
        acc[...] = acc + g * g
        return var - lr * g / (np.sqrt(acc) + self.epsilon)


@register
class AdadeltaRef(Reference):
    """Adadelta: ``ag = ag*rho + g*g*(1-rho)``;
    ``update = sqrt(av+eps) * rsqrt(ag+eps) * g``; ``av = av*rho + update^2*(1-rho)``;
    ``var -= lr*update``. Sparse: lazy rows (base default)."""

    slot_names = ("accum_grad", "accum_var")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **_):
        self.rho = rho
        self.epsilon = _eps(epsilon)

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        ag, av = slots["accum_grad"], slots["accum_var"]
        ag[...] = ag * self.rho + g * g * (1 - self.rho)
        update = np.sqrt(av + self.epsilon) * (1 / np.sqrt(ag + self.epsilon)) * g
        av[...] = av * self.rho + update * update * (1 - self.rho)
        return var - lr * update


@register
class RMSpropRef(Reference):
    """RMSprop. momentum > 0 (fused kernel, eps INSIDE the sqrt):
    ``rms += (g*g-rms)(1-rho)``; centered ``mg += (g-mg)(1-rho)``, ``denom = rms - mg*mg + eps``
    else ``rms + eps``; ``mom = mom*momentum + lr*g/sqrt(denom)``; ``var -= mom``.
    momentum = 0 (eps OUTSIDE): ``rms = rho*rms + (1-rho)*g*g``; centered
    ``mg = rho*mg + (1-rho)*g``, ``denom = rms - mg*mg``; ``var -= lr*g/(sqrt(denom)+eps)``.
    Sparse: momentum > 0 lazy rows (base default); momentum = 0 rms (and mg) decayed over all
    rows, added at the indexed rows, var rows only."""

    def __init__(
        self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **_
    ):
        self.rho, self.momentum = rho, momentum
        self.epsilon = _eps(epsilon)
        self.centered = centered
        names = ["rms"] + (["momentum"] if momentum > 0 else []) + (["mg"] if centered else [])
        self.slot_names = tuple(names)

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        rms, rho = slots["rms"], self.rho
        if self.momentum > 0:
            rms[...] = rms + (g * g - rms) * (1 - rho)
            if self.centered:
                mg = slots["mg"]
                mg[...] = mg + (g - mg) * (1 - rho)
                denom = rms - mg * mg + self.epsilon
            else:
                denom = rms + self.epsilon
            mom = slots["momentum"]
            mom[...] = mom * self.momentum + lr * g / np.sqrt(denom)
            return var - mom
        rms[...] = rho * rms + (1 - rho) * g * g
        if self.centered:
            mg = slots["mg"]
            mg[...] = rho * mg + (1 - rho) * g
            denom = rms - mg * mg
        else:
            denom = rms
        return var - lr * g / (np.sqrt(denom) + self.epsilon)

    def sparse(self, var, indices, values, slots, t, lr):
        if self.momentum > 0:
            return super().sparse(var, indices, values, slots, t, lr)
        idx, g = sum_duplicates(indices, values)
        rms, rho = slots["rms"], self.rho
        rms[...] = rms * rho
        rms[idx] += (g * g) * (1 - rho)
        denom = rms[idx]
        if self.centered:
            mg = slots["mg"]
            mg[...] = mg * rho
            mg[idx] += g * (1 - rho)
            denom = denom - mg[idx] * mg[idx]
        var = _f64(var).copy()
        var[idx] = var[idx] - lr * g / (np.sqrt(denom) + self.epsilon)
        return var


@register
class NadamRef(Reference):
    """Legacy Nadam (``u = 0.96`` as float32, ``d = schedule_decay``), per step:
    ``mu_t = beta_1*(1 - 0.5*u^(d*t))``, ``mu_next = beta_1*(1 - 0.5*u^(d*(t+1)))``,
    ``m_sched = momentum_cache*mu_t`` (stored back), ``m_sched_next = m_sched*mu_next``.
    Dense: ``g' = g/(1-m_sched)``; ``m = beta_1*m + (1-beta_1)*g``; ``m' = m/(1-m_sched_next)``;
    ``v = beta_2*v + (1-beta_2)*g*g``; ``v' = v/(1-beta_2^t)``;
    ``m_bar = (1-mu_t)*g' + mu_next*m'``; ``var -= lr*m_bar/(sqrt(v')+eps)``.
    Sparse: m, v decayed over all rows then added at the indexed rows; var rows only.

    ``momentum_cache`` is optimizer-level state kept on the instance (starts at 1.0). The harness
    must call ``begin_step(t)`` exactly once per optimizer step, before the per-variable
    ``dense``/``sparse`` calls, which use the coefficients of the last ``begin_step``. (As a
    fallback, ``dense``/``sparse`` call ``begin_step(t)`` themselves if it was not called for
    this ``t``.) ``lr`` is the raw learning rate (Nadam does not use legacy lr decay).

    TF's constructor takes the momentum-schedule decay as ``schedule_decay`` or ``decay``
    (``schedule_decay`` wins), default 0.004; both are accepted here.
    """

    slot_names = ("m", "v")

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, schedule_decay=None, **kw
    ):
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.epsilon = _eps(epsilon)
        if schedule_decay is None:
            schedule_decay = kw.get("decay", 0.004)
        self.schedule_decay = schedule_decay
        self.momentum_cache = 1.0
        self._step_t = None

    def begin_step(self, t):
        # TF's `tf.cast(0.96, dtype)` goes through float32: u = float32(0.96) even in float64.
        u, d, b1 = float(np.float32(0.96)), self.schedule_decay, self.beta_1
        self.mu_t = b1 * (1 - 0.5 * u ** (d * t))
        self.mu_next = b1 * (1 - 0.5 * u ** (d * (t + 1)))
        self.m_sched = self.momentum_cache * self.mu_t
        self.momentum_cache = self.m_sched
        self.m_sched_next = self.m_sched * self.mu_next
        self._step_t = t

    def _ensure_step(self, t):
        if self._step_t != t:
            self.begin_step(t)

    def _apply(self, var, g, m, v, t, lr):
        """var update from the new m, v rows and the gradient rows."""
        g_prime = g / (1 - self.m_sched)
        m_prime = m / (1 - self.m_sched_next)
        v_prime = v / (1 - self.beta_2**t)
        m_bar = (1 - self.mu_t) * g_prime + self.mu_next * m_prime
        return var - lr * m_bar / (np.sqrt(v_prime) + self.epsilon)

    def dense(self, var, grad, slots, t, lr):
        self._ensure_step(t)
        var, g = _f64(var), _f64(grad)
        m, v = slots["m"], slots["v"]
        m[...] = self.beta_1 * m + (1 - self.beta_1) * g
        v[...] = self.beta_2 * v + (1 - self.beta_2) * g * g
        return self._apply(var, g, m, v, t, lr)

    def sparse(self, var, indices, values, slots, t, lr):
        self._ensure_step(t)
        idx, g = sum_duplicates(indices, values)
        m, v = slots["m"], slots["v"]
        m[...] = m * self.beta_1
        m[idx] += g * (1 - self.beta_1)
        v[...] = v * self.beta_2
        v[idx] += (g * g) * (1 - self.beta_2)
        var = _f64(var).copy()
        var[idx] = self._apply(var[idx], g, m[idx], v[idx], t, lr)
        return var


@register
class FtrlRef(Reference):
    """Ftrl, with ``p = -learning_rate_power`` and ``l2' = l2 + beta/(2*lr)``:
    ``g_s = g + 2*l2_shrinkage*var``; ``acc_new = acc + g*g`` (plain gradient);
    ``linear += g_s - (acc_new^p - acc^p)/lr*var``; ``quad = acc_new^p/lr + 2*l2'``;
    ``var = (sign(linear)*l1 - linear)/quad`` where ``|linear| > l1`` else 0; ``acc = acc_new``.
    Sparse: lazy rows (base default)."""

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
        **_,
    ):
        self.learning_rate_power = learning_rate_power
        self.initial_accumulator_value = initial_accumulator_value
        self.l1 = l1_regularization_strength
        self.l2 = l2_regularization_strength
        # TF's `_prepare_local` does `tf.cast(l2_shrinkage, dtype)`: float32-rounded.
        self.l2_shrinkage = float(np.float32(l2_shrinkage_regularization_strength))
        self.beta = beta

    def init_slots(self, var):
        shape = np.shape(var)
        return {
            "accumulator": np.full(shape, self.initial_accumulator_value, np.float64),
            "linear": np.zeros(shape, np.float64),
        }

    def _pow(self, x):
        p = -self.learning_rate_power
        return np.sqrt(x) if p == 0.5 else np.power(x, p)

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        acc, linear = slots["accumulator"], slots["linear"]
        l2 = self.l2 + self.beta / (2 * lr)
        g_s = g + 2 * self.l2_shrinkage * var
        acc_new = acc + g * g
        linear[...] = linear + (g_s - (self._pow(acc_new) - self._pow(acc)) / lr * var)
        quad = self._pow(acc_new) / lr + 2 * l2
        new_var = np.where(
            np.abs(linear) > self.l1, (np.sign(linear) * self.l1 - linear) / quad, 0.0
        )
        acc[...] = acc_new
        return new_var
