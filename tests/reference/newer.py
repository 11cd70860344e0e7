"""Float64 references of the newer-generation optimizers, from docs/reference-behaviour.md Part 2 §3.1–§3.6.

Weight decay (including Muon's two coefficients), clipping, EMA etc. are the harness's job: these
rules are the ``update_step`` only. None of them has sparse semantics of its own: ``sparse``
densifies the gradient and runs ``dense``.
"""

from __future__ import annotations

import re

import numpy as np

from . import Reference, dense_from_sparse, register


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _tf_cast(x: float) -> float:
    """A Python float as TF's ``tf.cast(x, dtype)`` gives it: via a float32 tensor.

    tf_keras and Keras 3 (TF backend) cast some Python-float hyperparameters this way (Adam's and
    Lamb's beta powers, Lion's betas, Adafactor's epsilon_2), which shows in float64.
    """
    return float(np.float32(x))


def _rms(x: np.ndarray) -> float:
    return np.sqrt(np.mean(np.square(x)))


class _DenseOnly(Reference):
    def sparse(self, var, indices, values, slots, t, lr):
        grad = dense_from_sparse(np.shape(var), indices, values)
        return self.dense(var, grad, slots, t, lr)


@register
class AdamWRef(_DenseOnly):
    """AdamW update step (decay is the harness's): ``m += (g-m)(1-beta_1)``;
    ``v += (g^2-v)(1-beta_2)``; (amsgrad ``vhat = max(vhat, v)``, used for v);
    ``alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)``; ``var -= (m*alpha)/(sqrt(v)+eps)``.
    The powers use the betas float32-rounded (TF's ``tf.cast``); ``1 - beta`` is exact."""

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **_
    ):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.amsgrad = amsgrad
        self.slot_names = ("m", "v", "vhat") if amsgrad else ("m", "v")

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        m, v = slots["m"], slots["v"]
        b1p, b2p = _tf_cast(self.beta_1) ** t, _tf_cast(self.beta_2) ** t
        alpha = lr * np.sqrt(1 - b2p) / (1 - b1p)
        m[...] = m + (g - m) * (1 - self.beta_1)
        v[...] = v + (np.square(g) - v) * (1 - self.beta_2)
        if self.amsgrad:
            slots["vhat"][...] = np.maximum(slots["vhat"], v)
            v = slots["vhat"]
        return var - (m * alpha) / (np.sqrt(v) + self.epsilon)


@register
class LionRef(_DenseOnly):
    """Lion: ``c = beta_1*m + (1-beta_1)*g``; ``var -= lr*sign(c)`` (sign(0) = 0);
    ``m = beta_2*m + (1-beta_2)*g``, with both betas float32-rounded (TF's ``tf.cast``)."""

    slot_names = ("m",)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **_):
        self.beta_1, self.beta_2 = _tf_cast(beta_1), _tf_cast(beta_2)

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        m = slots["m"]
        c = self.beta_1 * m + (1 - self.beta_1) * g
        new_var = var - lr * np.sign(c)
        m[...] = self.beta_2 * m + (1 - self.beta_2) * g
        return new_var


@register
class LambRef(_DenseOnly):
    """Lamb: ``m += (g-m)(1-beta_1)``; ``v += (g^2-v)(1-beta_2)``;
    ``u = (m/(1-beta_1^t)) / (sqrt(v/(1-beta_2^t)) + eps)``;
    ``r = ||var||/||u||`` if both norms > 0 else 1 (L2 over the whole tensor);
    ``var -= r*lr*u``. The powers use the betas float32-rounded (TF's ``tf.cast``)."""

    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        m, v = slots["m"], slots["v"]
        m[...] = m + (g - m) * (1 - self.beta_1)
        v[...] = v + (np.square(g) - v) * (1 - self.beta_2)
        b1p, b2p = _tf_cast(self.beta_1) ** t, _tf_cast(self.beta_2) ** t
        u = (m / (1 - b1p)) / (np.sqrt(v / (1 - b2p)) + self.epsilon)
        w_norm, u_norm = np.sqrt(np.sum(np.square(var))), np.sqrt(np.sum(np.square(u)))
        r = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        return var - r * lr * u


@register
class AdafactorRef(_DenseOnly):
    """Adafactor (tf_keras numerics), RMS(x) = sqrt(mean(x^2)):
    ``rho_t = min(lr, 1/sqrt(t))``; ``alpha_t = max(epsilon_2, RMS(var))*rho_t``;
    ``G2 = g^2 + epsilon_1``; ``b = 1 - t^beta_2_decay``;
    rank >= 2 (factored over the last two axes): ``r = b*r + (1-b)*mean(G2, -1)``,
    ``c = b*c + (1-b)*mean(G2, -2)``, ``v = (r/mean(r, -1))[..., :, None] * c[..., None, :]``;
    rank < 2: ``v = b*v + (1-b)*G2``;
    ``u = g/sqrt(v)``; ``u_hat = u/max(1, RMS(u)/clip_threshold)``; ``var -= alpha_t*u_hat``.
    Slots ``r`` (shape[:-1]), ``c`` (shape[:-2]+shape[-1:]), ``v`` for rank >= 2; only ``v``
    otherwise. ``relative_step`` has no numerical effect (docs/reference-behaviour.md Part 2 §3.4)."""

    slot_names = ("r", "c", "v")

    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay=-0.8,
        epsilon_1=1e-30,
        epsilon_2=1e-3,
        clip_threshold=1.0,
        relative_step=True,
        **_,
    ):
        self.beta_2_decay = beta_2_decay
        self.epsilon_1, self.epsilon_2 = epsilon_1, _tf_cast(epsilon_2)  # tf.cast: float32
        self.clip_threshold = clip_threshold
        self.relative_step = relative_step

    def init_slots(self, var):
        shape = np.shape(var)
        if len(shape) < 2:
            return {"v": np.zeros(shape, np.float64)}
        return {
            "r": np.zeros(shape[:-1], np.float64),
            "c": np.zeros(shape[:-2] + shape[-1:], np.float64),
            "v": np.zeros(shape, np.float64),
        }

    def dense(self, var, grad, slots, t, lr):
        var, g = _f64(var), _f64(grad)
        rho_t = min(lr, 1 / np.sqrt(t))
        alpha_t = max(self.epsilon_2, _rms(var)) * rho_t
        g2 = np.square(g) + self.epsilon_1
        b = 1 - float(t) ** self.beta_2_decay
        v = slots["v"]
        if var.ndim >= 2:
            r, c = slots["r"], slots["c"]
            r[...] = b * r + (1 - b) * np.mean(g2, axis=-1)
            c[...] = b * c + (1 - b) * np.mean(g2, axis=-2)
            v[...] = (r / np.mean(r, axis=-1, keepdims=True))[..., :, None] * c[..., None, :]
        else:
            v[...] = b * v + (1 - b) * g2
        u = g / np.sqrt(v)
        u_hat = u / max(1.0, _rms(u) / self.clip_threshold)
        return var - alpha_t * u_hat


@register
class MuonRef(Reference):
    """Muon (Keras 3). Routing (``adamw_path``): AdamW path if rank != 2, or
    ``exclude_embeddings`` and "embedding" in ``name.lower()``, or ``re.search(kw, name)`` for a
    ``kw`` in ``exclude_layers``; otherwise Muon path. Slots ``momentum`` for every variable,
    ``velocity`` only on the AdamW path; ``dense`` routes on the presence of ``velocity`` (as K3
    does) and ``init_slots``/``dense``/``sparse`` take the variable's ``name`` keyword.

    Muon path: ``m = momentum*m + g``; ``G = g + momentum*m`` (nesterov) else ``m``;
    ``var -= lr*NS(G)*sqrt(max(rows, cols))*rms_rate`` (factor omitted if rms_rate is None).
    AdamW path (no amsgrad, lr*adam_lr_ratio): ``m += (g-m)(1-b1)``; ``v += (g^2-v)(1-b2)``;
    ``var -= (m*alpha)/(sqrt(v)+eps)``, ``alpha = lr*ratio*sqrt(1-b2^t)/(1-b1^t)``, where the
    powers use the betas float32-rounded and ``lr*ratio`` is a float32 product (Keras 3 on TF).
    Both weight decays (``weight_decay``, ``adam_weight_decay``) are the harness's job."""

    slot_names = ("momentum", "velocity")  # velocity: AdamW-path variables only

    def __init__(
        self,
        learning_rate=0.001,
        adam_beta_1=0.9,
        adam_beta_2=0.999,
        adam_weight_decay=0.004,
        epsilon=1e-7,
        weight_decay=0.004,
        exclude_layers=None,
        exclude_embeddings=True,
        muon_a=3.4445,
        muon_b=-4.7750,
        muon_c=2.0315,
        adam_lr_ratio=1,
        momentum=0.95,
        ns_steps=5,
        nesterov=True,
        rms_rate=0.2,
        **_,
    ):
        self.adam_beta_1, self.adam_beta_2 = adam_beta_1, adam_beta_2
        self.adam_weight_decay, self.weight_decay = adam_weight_decay, weight_decay
        self.epsilon = epsilon
        self.exclude_layers = list(exclude_layers or [])
        self.exclude_embeddings = exclude_embeddings
        self.muon_a, self.muon_b, self.muon_c = muon_a, muon_b, muon_c
        self.adam_lr_ratio = adam_lr_ratio
        self.momentum, self.ns_steps, self.nesterov = momentum, ns_steps, nesterov
        self.rms_rate = rms_rate

    def adamw_path(self, var, name=""):
        if np.ndim(var) != 2:
            return True
        if self.exclude_embeddings and "embedding" in name.lower():
            return True
        return any(re.search(kw, name) for kw in self.exclude_layers)

    def init_slots(self, var, name=""):
        names = self.slot_names if self.adamw_path(var, name) else ("momentum",)
        return {k: np.zeros(np.shape(var), np.float64) for k in names}

    def newton_schulz(self, G):
        """docs/reference-behaviour.md's NS: transpose if rows > cols, X /= (||X||_F + 1e-7), then ns_steps times
        ``A = X X^T; B = b*A + c*A*A; X = a*X + B*X``; transpose back."""
        if G.ndim < 2:
            raise ValueError("Expected gradient or momentum to have at least 2 dimensions")
        a, b, c = self.muon_a, self.muon_b, self.muon_c
        transposed = G.shape[-2] > G.shape[-1]
        X = np.swapaxes(G, -1, -2) if transposed else G
        X = X / (np.sqrt(np.sum(np.square(X), axis=(-2, -1), keepdims=True)) + 1e-7)
        for _ in range(self.ns_steps):
            A = X @ np.swapaxes(X, -1, -2)
            B = b * A + (c * A) @ A
            X = a * X + B @ X
        return np.swapaxes(X, -1, -2) if transposed else X

    def dense(self, var, grad, slots, t, lr, name=""):
        var, g = _f64(var), _f64(grad)
        adamw = "velocity" in slots
        if name and adamw != self.adamw_path(var, name):
            raise ValueError(f"slots of {name!r} were created for the other Muon path")
        m = slots["momentum"]
        if adamw:
            b1, b2, v = self.adam_beta_1, self.adam_beta_2, slots["velocity"]
            adam_lr = float(np.float32(lr) * np.float32(self.adam_lr_ratio))
            alpha = adam_lr * np.sqrt(1 - _tf_cast(b2) ** t) / (1 - _tf_cast(b1) ** t)
            m[...] = m + (g - m) * (1 - b1)
            v[...] = v + (np.square(g) - v) * (1 - b2)
            return var - (m * alpha) / (np.sqrt(v) + self.epsilon)
        m[...] = self.momentum * m + g
        G = g + self.momentum * m if self.nesterov else m
        update = lr * self.newton_schulz(G)
        if self.rms_rate is not None:
            update = update * np.sqrt(max(var.shape[0], var.shape[1])) * self.rms_rate
        return var - update

    def sparse(self, var, indices, values, slots, t, lr, name=""):
        grad = dense_from_sparse(np.shape(var), indices, values)
        return self.dense(var, grad, slots, t, lr, name=name)


@register
class ScheduleFreeAdamWRef(_DenseOnly):
    """Schedule-Free AdamW (docs/reference-behaviour.md Part 2 §3.6), the variable holding y. Slots ``momentum`` (z,
    starts as a copy of the variable's initial value) and ``velocity`` (v, zeros); x is not
    stored. With ``t`` the step: ``lr_t = lr*min(t/warmup_steps, 1)`` if warmup_steps > 0;
    ``v += (g^2-v)(1-beta_2)``; ``z -= lr_t*g/(sqrt(v/(1-beta_2^t))+eps)``;
    ``x_old = (y-(1-beta_1)*z_old)/beta_1`` (z before this step); ``w = 1/t``;
    ``x = (1-w)*x_old + w*z``; ``y = (1-beta_1)*z + beta_1*x``. beta_1, beta_2 and epsilon are
    float32-rounded (Keras 3's ``ops.cast`` on TF), ``1 - beta`` taken from the rounded value."""

    slot_names = ("momentum", "velocity")

    def __init__(
        self,
        learning_rate=0.0025,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        warmup_steps=0,
        **_,
    ):
        self.beta_1, self.beta_2 = _tf_cast(beta_1), _tf_cast(beta_2)
        self.epsilon = _tf_cast(epsilon)
        self.warmup_steps = warmup_steps

    def init_slots(self, var):
        var = _f64(var)
        return {"momentum": var.copy(), "velocity": np.zeros_like(var)}

    def dense(self, var, grad, slots, t, lr):
        y, g = _f64(var), _f64(grad)
        z, v = slots["momentum"], slots["velocity"]
        if self.warmup_steps > 0:
            lr = lr * min(t / self.warmup_steps, 1.0)
        z_old = z.copy()
        v[...] = v + (np.square(g) - v) * (1 - self.beta_2)
        z[...] = z - lr * g / (np.sqrt(v / (1 - self.beta_2**t)) + self.epsilon)
        x_old = (y - (1 - self.beta_1) * z_old) / self.beta_1
        w = 1.0 / t
        x = (1 - w) * x_old + w * z
        return (1 - self.beta_1) * z + self.beta_1 * x
