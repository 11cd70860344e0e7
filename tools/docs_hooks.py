"""mkdocs hook: one page per optimizer of ``kerasopt.optimizers``, generated at build time.

What the code declares is read from the code, so it cannot drift: the constructor's defaults
(``inspect.signature``), which arguments are float32 hyperparameters (``Hyper``) and which plain
attributes (``Param``), the slots each configuration creates (``slot_names()``), their initial
values and Keras 3 aliases, whether the rule is elementwise and how sparse gradients are routed,
and the docstring's "Update rule" block, shown verbatim under its rendering as math. What the code
cannot say — the rule as LaTeX, the sparse semantics in words and the table of differences from
TF's optimizer_v2, Keras 3 and torch.optim — is written below, once per optimizer. A class of
``kerasopt.optimizers`` without an entry here fails the (strict) build.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.optimizers")

KERAS3 = "Keras 3 (TF ≥ 2.16)"
TF_LEGACY = "TF ≤ 2.10 (optimizer_v2)"

# name -> LaTeX lines (an aligned block), the notation used, slot configurations to show
# ({constructor kwargs}, "when"), sparse behaviour, and differences (aspect, kerasopt = TF,
# Keras 3, torch.optim).
PAGES: dict[str, dict[str, Any]] = {
    "SGD": {
        "math": r"""
\text{momentum} = 0:&\quad \theta \leftarrow \theta - \eta\, g \\
\text{otherwise}:&\quad a \leftarrow \mu\, a - \eta\, g \\
&\quad \theta \leftarrow \theta + a \qquad (\text{nesterov: } \theta \leftarrow \theta + \mu\, a - \eta\, g)
""",
        "notation": r"$a$ is the slot `momentum` (TF's `accum`), $\mu$ = `momentum`, $\eta$ the learning rate.",
        "configs": [({}, "`momentum=0`"), ({"momentum": 0.9}, "`momentum > 0`")],
        "sparse": "Lazy: only the indexed rows of the variable (and of `momentum`) change, after duplicate indices are summed (plain SGD scatter-adds).",
        "diffs": [
            ("default learning rate", "0.01", "0.01", "0.001"),
            (
                "momentum",
                "$a \\leftarrow \\mu a - \\eta g$; $\\theta \\leftarrow \\theta + a$: the learning rate is **inside** the velocity",
                "same",
                "$b \\leftarrow \\mu b + g$; $\\theta \\leftarrow \\theta - \\eta b$: a schedule rescales the whole velocity at once",
            ),
            (
                "nesterov",
                "$\\theta \\leftarrow \\theta + \\mu a - \\eta g$",
                "same",
                "$\\theta \\leftarrow \\theta - \\eta (g + \\mu b)$",
            ),
            ("state key", "`momentum`", "`momentum`", "`momentum_buffer`"),
            ("`dampening`", "—", "—", "yes (default 0)"),
        ],
    },
    "Adam": {
        "math": r"""
\alpha &= \eta\, \frac{\sqrt{1 - \beta_2^{\,t}}}{1 - \beta_1^{\,t}} \\
m &\leftarrow m + (g - m)(1 - \beta_1) \\
v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
\hat v &\leftarrow \max(\hat v, v) \quad (\text{amsgrad; } \hat v \text{ replaces } v \text{ below}) \\
\theta &\leftarrow \theta - \frac{m\, \alpha}{\sqrt{v} + \epsilon}
""",
        "notation": r"$t$ = `iterations + 1`; slots $m$, $v$, $\hat v$ = `m`, `v`, `vhat`.",
        "configs": [({}, "default"), ({"amsgrad": True}, "`amsgrad=True`")],
        "sparse": "Dense-equivalent: `m` and `v` decay over all rows, the summed gradient is added at its rows, and the whole variable is updated (the dense rule with zero gradient rows).",
        "diffs": [
            (
                "epsilon",
                '1e-7, TF\'s "epsilon hat": added to $\\sqrt{v}$ after the bias correction is folded into $\\alpha$',
                "same (1e-7, same placement)",
                "1e-8, added to $\\sqrt{\\hat v}$ of the bias-corrected $v$",
            ),
            (
                "order of operations",
                "$m + (g - m)(1 - \\beta_1)$",
                "same math, last-bit rounding may differ",
                "`lerp` / `addcmul`",
            ),
            (
                "slot / state names",
                "`m`, `v`, `vhat`",
                "`momentum`, `velocity`, `velocity_hat` (kerasopt answers to both)",
                "`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, per-parameter `step`",
            ),
            (
                "`weight_decay`",
                "decoupled, before the update (`None`)",
                "same",
                "L2 added to the gradient (0)",
            ),
        ],
    },
    "Adagrad": {
        "math": r"""
\mathit{acc} &\leftarrow \mathit{acc} + g^2 \\
\theta &\leftarrow \theta - \frac{\eta\, g}{\sqrt{\mathit{acc}} + \epsilon}
""",
        "notation": r"$\mathit{acc}$ is the slot `accumulator`, starting at `initial_accumulator_value`.",
        "configs": [({}, "always")],
        "sparse": "Lazy: only the indexed rows of the variable and the accumulator change.",
        "diffs": [
            ("initial accumulator", "**0.1**", "0.1 (a negative value is not refused)", "0"),
            (
                "epsilon",
                "1e-7, **outside** the square root",
                "1e-7, **inside**: $\\eta g / \\sqrt{acc + \\epsilon}$",
                "1e-10, outside",
            ),
            ("default learning rate", "0.001", "0.001", "0.01 (and `lr_decay`)"),
            (
                "sparse duplicates",
                "summed before the rule",
                "not summed: squares per entry",
                "coalesced (duplicates summed) first",
            ),
            ("state key", "`accumulator`", "`accumulator`", "`sum`"),
        ],
    },
    "Adadelta": {
        "math": r"""
\mathit{ag} &\leftarrow \mathit{ag}\, \rho + g^2 (1 - \rho) \\
u &= \sqrt{\mathit{av} + \epsilon}\; \frac{1}{\sqrt{\mathit{ag} + \epsilon}}\; g \\
\mathit{av} &\leftarrow \mathit{av}\, \rho + u^2 (1 - \rho) \\
\theta &\leftarrow \theta - \eta\, u
""",
        "notation": r"$\mathit{ag}$, $\mathit{av}$ are the slots `accum_grad`, `accum_var`; $\frac{1}{\sqrt{\cdot}}$ is TF's `rsqrt`.",
        "configs": [({}, "always")],
        "sparse": "Lazy: only the indexed rows change.",
        "diffs": [
            (
                "default learning rate",
                "**0.001**",
                "0.001",
                "1.0 (pass `learning_rate=1.0` for torch's step size)",
            ),
            ("`rho`, epsilon", "0.95, 1e-7", "0.95, 1e-7", "0.9, 1e-6"),
            (
                "slot / state names",
                "`accum_grad`, `accum_var`",
                "`accumulated_grad`, `accumulated_delta_var`",
                "`square_avg`, `acc_delta`",
            ),
        ],
    },
    "Adamax": {
        "math": r"""
m &\leftarrow m + (g - m)(1 - \beta_1) \\
v &\leftarrow \max(\beta_2\, v,\ |g|) \\
\theta &\leftarrow \theta - \frac{\eta}{1 - \beta_1^{\,t}}\, \frac{m}{v + \epsilon}
""",
        "notation": r"$t$ = `iterations + 1`.",
        "configs": [({}, "always")],
        "sparse": "Lazy: only the indexed rows of the variable, `m` and `v` change ($m_i \\leftarrow m_i \\beta_1 + g_i (1 - \\beta_1)$).",
        "diffs": [
            (
                "epsilon",
                "1e-7, added to $v$ (outside the max)",
                "same",
                "1e-8, inside: $\\max(\\beta_2 u, |g| + \\epsilon)$",
            ),
            ("default learning rate", "0.001", "0.001", "0.002"),
            ("slot / state names", "`m`, `v`", "`momentum`, `norm`", "`exp_avg`, `exp_inf`"),
            ("sparse", "lazy rows", "every row updated", "—"),
        ],
    },
    "Nadam": {
        "math": r"""
\mu_t &= \beta_1 \left(1 - \tfrac12\, u^{\,d t}\right), \qquad \mu_{t+1} = \beta_1 \left(1 - \tfrac12\, u^{\,d (t+1)}\right) \\
\Pi_t &= \Pi_{t-1}\, \mu_t \quad (\text{stored in } \texttt{momentum\_cache}), \qquad \Pi_{t}' = \Pi_t\, \mu_{t+1} \\
g' &= \frac{g}{1 - \Pi_t} \\
m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad m' = \frac{m}{1 - \Pi_t'} \\
v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2, \qquad v' = \frac{v}{1 - \beta_2^{\,t}} \\
\bar m &= (1 - \mu_t)\, g' + \mu_{t+1}\, m' \\
\theta &\leftarrow \theta - \frac{\eta\, \bar m}{\sqrt{v'} + \epsilon}
""",
        "notation": r"$u = 0.96$, $d$ = `schedule_decay` (stored as `decay`, default 0.004), $t$ = `iterations + 1`; $\Pi$ is TF's `m_schedule`.",
        "configs": [({}, "always")],
        "sparse": "`m` and `v` decay over all rows and the summed gradient is added at its rows; only the indexed rows of the variable change.",
        "diffs": [
            (
                "momentum schedule",
                "$0.96^{\\,0.004\\, t}$ (`schedule_decay`)",
                "$0.96^{\\,t}$: no decay factor, no `schedule_decay`",
                "$0.96^{\\,0.004\\, t}$ (`momentum_decay`)",
            ),
            ("learning-rate schedules", "refused (`ValueError`)", "allowed", "any scheduler"),
            ("defaults", "lr 0.001, epsilon 1e-7", "lr 0.001, epsilon 1e-7", "lr 0.002, eps 1e-8"),
            (
                "state",
                "`momentum_cache` (optimizer weight), `m`, `v`",
                "`u_product`, `momentum`, `velocity`",
                "`mu_product`, `exp_avg`, `exp_avg_sq`, `step`",
            ),
        ],
    },
    "RMSprop": {
        "math": r"""
&\textbf{momentum} > 0 \text{ (TF's fused kernel, } \epsilon \text{ inside the root):} \\
&\quad \mathit{rms} \leftarrow \mathit{rms} + (g^2 - \mathit{rms})(1 - \rho) \\
&\quad \text{centered: } \mathit{mg} \leftarrow \mathit{mg} + (g - \mathit{mg})(1 - \rho),\ D = \mathit{rms} - \mathit{mg}^2 + \epsilon; \quad \text{else } D = \mathit{rms} + \epsilon \\
&\quad \mathit{mom} \leftarrow \mathit{mom}\, \mu + \frac{\eta\, g}{\sqrt{D}}, \qquad \theta \leftarrow \theta - \mathit{mom} \\
&\textbf{momentum} = 0 \ (\epsilon \text{ outside the root):} \\
&\quad \mathit{rms} \leftarrow \rho\, \mathit{rms} + (1 - \rho)\, g^2 \\
&\quad \text{centered: } \mathit{mg} \leftarrow \rho\, \mathit{mg} + (1 - \rho)\, g,\ D = \mathit{rms} - \mathit{mg}^2; \quad \text{else } D = \mathit{rms} \\
&\quad \theta \leftarrow \theta - \frac{\eta\, g}{\sqrt{D} + \epsilon}
""",
        "notation": r"slots `rms`, `momentum` ($\mathit{mom}$), `mg`; $\mu$ = `momentum`. The path is fixed at the first step, as TF fixes it at construction.",
        "configs": [
            ({}, "default"),
            ({"momentum": 0.9}, "`momentum > 0`"),
            ({"momentum": 0.9, "centered": True}, "`momentum > 0, centered=True`"),
        ],
        "sparse": "With momentum: lazy rows of the fused-kernel lines. Without: `rms` (and `mg`) decay over all rows, the gradient is added at its rows, and only the indexed rows of the variable change.",
        "diffs": [
            (
                "epsilon",
                "**inside** the root with momentum, **outside** without (TF's two kernels)",
                "always inside",
                "outside (`eps=1e-8`)",
            ),
            (
                "momentum",
                "the learning rate is inside the momentum buffer",
                "same",
                "$b \\leftarrow \\mu b + g/(\\sqrt{D}+\\epsilon)$; $\\theta \\leftarrow \\theta - \\eta b$",
            ),
            (
                "defaults",
                "lr 0.001, `rho` 0.9, epsilon 1e-7",
                "same",
                "lr 0.01, `alpha` 0.99, eps 1e-8",
            ),
            (
                "slot / state names",
                "`rms`, `momentum`, `mg`",
                "`velocity`, `momentum`, `average_gradient`",
                "`square_avg`, `momentum_buffer`, `grad_avg`",
            ),
        ],
    },
    "Ftrl": {
        "math": r"""
&p = -\texttt{learning\_rate\_power}, \qquad \lambda_2' = \lambda_2 + \frac{\beta}{2\eta} \\
&g_s = g + 2\, \lambda_{2s}\, \theta \\
&\mathit{acc}' = \mathit{acc} + g^2 \\
&\mathit{linear} \leftarrow \mathit{linear} + g_s - \frac{\mathit{acc}'^{\,p} - \mathit{acc}^{\,p}}{\eta}\, \theta \\
&q = \frac{\mathit{acc}'^{\,p}}{\eta} + 2 \lambda_2' \\
&\theta \leftarrow \begin{cases} \dfrac{\operatorname{sign}(\mathit{linear})\, \lambda_1 - \mathit{linear}}{q} & |\mathit{linear}| > \lambda_1 \\ 0 & \text{otherwise} \end{cases} \\
&\mathit{acc} \leftarrow \mathit{acc}'
""",
        "notation": r"$\lambda_1$, $\lambda_2$, $\lambda_{2s}$ = `l1_regularization_strength`, `l2_regularization_strength`, `l2_shrinkage_regularization_strength`; $\beta$ = `beta`.",
        "configs": [({}, "always (created per variable in turn)")],
        "sparse": "Lazy: only the indexed rows of the variable, `accumulator` and `linear` change.",
        "diffs": [
            ("availability", "yes", "yes, same dense math", "no torch.optim equivalent"),
            ("sparse", "lazy rows", "every row updated; never-indexed rows set to 0", "—"),
            ("slot names", "`accumulator`, `linear`", "`accumulator`, `linear`", "—"),
        ],
    },
    "AdamW": {
        "math": r"""
\theta &\leftarrow \theta - \eta\, \lambda\, \theta \quad (\text{the base's decoupled weight decay, before the step}) \\
m &\leftarrow m + (g - m)(1 - \beta_1) \\
v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
\hat v &\leftarrow \max(\hat v, v) \quad (\text{amsgrad; } \hat v \text{ replaces } v \text{ below}) \\
\alpha &= \eta\, \frac{\sqrt{1 - \beta_2^{\,t}}}{1 - \beta_1^{\,t}} \\
\theta &\leftarrow \theta - \frac{\alpha\, m}{\sqrt{v} + \epsilon}
""",
        "notation": r"$\lambda$ = `weight_decay` (default 0.004, must not be `None`); $t$ = `iterations + 1`.",
        "configs": [({}, "default"), ({"amsgrad": True}, "`amsgrad=True`")],
        "sparse": "Sparse gradients are densified (Keras 3 semantics): the dense rule runs.",
        "diffs": [
            ("TF ≤ 2.10", "—", "", ""),
            (
                "weight decay",
                "$\\theta (1 - \\eta\\lambda)$, default 0.004",
                "same",
                "$\\theta (1 - \\eta\\lambda)$, default **0.01**",
            ),
            (
                "epsilon",
                "1e-7, epsilon hat (as Adam)",
                "same",
                "1e-8, on the bias-corrected $\\sqrt{\\hat v}$",
            ),
            (
                "state names",
                "`m`, `v`, `vhat`",
                "`momentum`, `velocity`, `velocity_hat`",
                "`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`",
            ),
        ],
    },
    "Lion": {
        "math": r"""
c &= \beta_1\, m + (1 - \beta_1)\, g \\
\theta &\leftarrow \theta - \eta\, \operatorname{sign}(c) \qquad (\operatorname{sign}(0) = 0) \\
m &\leftarrow \beta_2\, m + (1 - \beta_2)\, g
""",
        "notation": r"decoupled weight decay (the base's `weight_decay`) runs before the step.",
        "configs": [({}, "always")],
        "sparse": "Sparse gradients are densified: the dense rule runs.",
        "diffs": [
            ("TF ≤ 2.10", "—", "", ""),
            (
                "default learning rate",
                "1e-3 (Keras 3's; tf_keras: 1e-4)",
                "1e-3",
                "no `torch.optim.Lion`",
            ),
            ("slot names", "`m` (also `momentum`)", "`momentum`", "—"),
        ],
    },
    "Lamb": {
        "math": r"""
m &\leftarrow m + (g - m)(1 - \beta_1), \qquad v \leftarrow v + (g^2 - v)(1 - \beta_2) \\
u &= \frac{m / (1 - \beta_1^{\,t})}{\sqrt{v / (1 - \beta_2^{\,t})} + \epsilon} \\
r &= \begin{cases} \lVert\theta\rVert / \lVert u\rVert & \lVert\theta\rVert > 0 \text{ and } \lVert u\rVert > 0 \\ 1 & \text{otherwise} \end{cases} \\
\theta &\leftarrow \theta - r\, \eta\, u
""",
        "notation": r"norms are L2 over the whole tensor; $t$ = `iterations + 1`. Weight decay is the base's decoupled one, applied before the step and **not** folded into $u$ (unlike the LAMB paper).",
        "configs": [({}, "always")],
        "sparse": "Sparse gradients are densified; the rule needs whole tensors (trust ratio), so it runs tensor by tensor (gathered under FSDP2).",
        "diffs": [
            ("TF ≤ 2.10", "— (TF Addons' LAMB folded weight decay into the update)", "", ""),
            ("weight decay", "decoupled, before the step", "same", "no `torch.optim.Lamb`"),
            ("slot names", "`m`, `v` (also `momentum`, `velocity`)", "`momentum`, `velocity`", "—"),
        ],
    },
    "Adafactor": {
        "math": r"""
&\rho_t = \min\!\left(\eta, \tfrac{1}{\sqrt t}\right), \qquad \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta))\, \rho_t, \qquad G_2 = g^2 + \epsilon_1, \qquad \hat\beta_{2,t} = 1 - t^{\,d} \\
&\text{rank} \ge 2: \\
&\quad r \leftarrow \hat\beta_{2,t}\, r + (1 - \hat\beta_{2,t})\, \operatorname{mean}(G_2, \text{axis}=-1) \\
&\quad c \leftarrow \hat\beta_{2,t}\, c + (1 - \hat\beta_{2,t})\, \operatorname{mean}(G_2, \text{axis}=-2) \\
&\quad v \leftarrow \frac{r}{\operatorname{mean}(r, \text{axis}=-1)}[\ldots, :, \text{None}] \cdot c[\ldots, \text{None}, :] \\
&\text{rank} < 2: \quad v \leftarrow \hat\beta_{2,t}\, v + (1 - \hat\beta_{2,t})\, G_2 \\
&u = \frac{g}{\sqrt v}, \qquad \hat u = \frac{u}{\max(1, \operatorname{RMS}(u) / \texttt{clip\_threshold})} \\
&\theta \leftarrow \theta - \alpha_t\, \hat u
""",
        "notation": r"$\operatorname{RMS}(x) = \sqrt{\operatorname{mean}(x^2)}$, $d$ = `beta_2_decay`, $\epsilon_1$, $\epsilon_2$ = `epsilon_1`, `epsilon_2`; $\operatorname{RMS}(\theta)$ is taken after the base's weight decay; $t$ = `iterations + 1`.",
        "configs": [({}, "rank ≥ 2 variables: `r`, `c`, `v`; rank < 2: `v` only")],
        "sparse": "Sparse gradients are densified; the rule needs whole tensors, so it runs tensor by tensor (gathered under FSDP2).",
        "diffs": [
            ("TF ≤ 2.10", "— (tf_keras's newer optimizer; kerasopt follows its numbers)", "", ""),
            (
                "$\\epsilon_1$",
                "added to $g^2$ (1e-30)",
                "same",
                "a floor of the denominator (`eps=(None, 1e-3)`)",
            ),
            ("$\\operatorname{RMS}(\\theta)$", "after weight decay", "same", "before weight decay"),
            ("default learning rate", "0.001", "0.001", "0.01"),
            (
                "precision",
                "the variable's dtype (float32 for half types)",
                "the torch backend takes some means in float32",
                "—",
            ),
        ],
    },
    "Muon": {
        "math": r"""
&\theta \leftarrow \theta - \eta\, \lambda\, \theta \quad (\lambda = \texttt{weight\_decay} \text{ on the Muon path, } \texttt{adam\_weight\_decay} \text{ on the AdamW path; None skips}) \\
&\textbf{Muon path:}\quad m \leftarrow \mu\, m + g, \qquad G = \begin{cases} g + \mu\, m & \text{nesterov} \\ m & \text{otherwise} \end{cases} \\
&\quad \theta \leftarrow \theta - \eta\, \operatorname{NS}(G)\, \sqrt{\max(n_\text{rows}, n_\text{cols})}\; \texttt{rms\_rate} \\
&\textbf{NS}(G):\quad X = G \ (X^\top \text{ if rows > cols}), \quad X \leftarrow X / (\lVert X\rVert_F + 10^{-7}) \\
&\quad \text{repeat ns\_steps: } A = X X^\top,\ B = b A + c A A,\ X \leftarrow a X + B X \quad (\text{transpose back}) \\
&\textbf{AdamW path:}\quad m \leftarrow m + (g - m)(1 - \beta_{1a}), \qquad v \leftarrow v + (g^2 - v)(1 - \beta_{2a}) \\
&\quad \theta \leftarrow \theta - \eta\, r_a\, \frac{\sqrt{1 - \beta_{2a}^{\,t}}}{1 - \beta_{1a}^{\,t}}\, \frac{m}{\sqrt v + \epsilon}
""",
        "notation": r"$\mu$ = `momentum`, $(a, b, c)$ = (`muon_a`, `muon_b`, `muon_c`), $r_a$ = `adam_lr_ratio`, $\beta_{1a}, \beta_{2a}$ = `adam_beta_1`, `adam_beta_2`. A variable takes the AdamW path if its rank is not 2, or its name contains \"embedding\" (`exclude_embeddings`), or matches a pattern of `exclude_layers`; the `rms_rate` factor is omitted when it is `None`.",
        "configs": [({}, "`momentum` for every variable, `velocity` for AdamW-path variables")],
        "sparse": "Sparse gradients are densified; the Muon path needs whole matrices, so the rule runs tensor by tensor (gathered under FSDP2).",
        "diffs": [
            ("TF ≤ 2.10", "—", "", ""),
            (
                "other variables",
                "routed to AdamW (by rank and name)",
                "same",
                "`torch.optim.Muon` takes 2-D parameters only",
            ),
            ("momentum", "$m \\leftarrow \\mu m + g$", "same", "an EMA (`lerp`)"),
            ("Newton-Schulz precision", "the variable's dtype", "the variable's dtype", "bfloat16"),
            (
                "scale",
                "$\\sqrt{\\max(\\text{rows}, \\text{cols})}\\cdot$`rms_rate` (0.2)",
                "same",
                "$\\sqrt{\\max(1, \\text{rows}/\\text{cols})}$",
            ),
            ("weight decay", "0.004 (both paths)", "same", "0.1"),
        ],
    },
    "ScheduleFreeAdamW": {
        "math": r"""
\eta_t &= \eta \min(t / \texttt{warmup\_steps}, 1) \quad (\eta \text{ if warmup\_steps} = 0) \\
z_\text{old} &= z \\
v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
z &\leftarrow z - \frac{\eta_t\, g}{\sqrt{v / (1 - \beta_2^{\,t})} + \epsilon} \\
x_\text{old} &= \frac{y - (1 - \beta_1)\, z_\text{old}}{\beta_1}, \qquad w = \frac1t \\
x &= (1 - w)\, x_\text{old} + w\, z \\
y &\leftarrow (1 - \beta_1)\, z + \beta_1\, x \quad (\text{assigned to the variable})
""",
        "notation": r"the variable holds the training point $y$; $z$ is the slot `momentum` (initialised to the variable), $v$ the slot `velocity`; the evaluation weights $x$ are not stored (`opt.eval_params()`, `opt.swap_eval_params()`).",
        "configs": [({}, "always")],
        "sparse": "Sparse gradients are densified: the dense rule runs.",
        "diffs": [
            ("TF ≤ 2.10", "—", "", ""),
            (
                "train/eval weights",
                "`eval_params()`, `swap_eval_params()` (a kerasopt addition)",
                "none",
                "no `torch.optim` schedule-free optimizer; the `schedulefree` package weights its average by $\\eta^2$ and decays $z$ too",
            ),
            ("defaults", "lr 0.0025, epsilon 1e-8", "same", "—"),
        ],
    },
}

LEGACY = {"SGD", "Adam", "Adagrad", "Adadelta", "Adamax", "Nadam", "RMSprop", "Ftrl"}


def optimizer_classes() -> dict[str, type]:
    """Every optimizer class of ``kerasopt.optimizers`` (not the base or the wrappers)."""
    import kerasopt.optimizers as opts
    from kerasopt.optimizer import Optimizer

    out = {}
    for name in opts.__all__:
        obj = getattr(opts, name)
        if (
            inspect.isclass(obj)
            and issubclass(obj, Optimizer)
            and obj is not Optimizer
            and obj.__module__.startswith("kerasopt.optimizers.")
        ):
            out[name] = obj
    return out


def update_rule_block(cls: type) -> str:
    """The class docstring's "Update rule" paragraph and its literal block, verbatim."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Update rule")), None)
    if start is None:
        raise ValueError(f"{cls.__name__}'s docstring has no 'Update rule' block")
    end = start
    while not lines[end].rstrip().endswith("::"):
        end += 1
    block = []
    for line in lines[end + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    while block and not block[-1].strip():
        block.pop()
    head = " ".join(s.strip() for s in lines[start : end + 1]).rstrip(":")
    body = inspect.cleandoc("\n".join(block))
    return f"{head}:\n\n```text\n{body}\n```\n"


def _fmt(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    return f"`{value!r}`"


def defaults_table(cls: type) -> str:
    from kerasopt._hyper import Hyper, Param

    rows = ["| argument | default | stored as |", "|---|---|---|"]
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        decl = inspect.getattr_static(cls, name, None)
        if isinstance(decl, Hyper):
            kind = (
                "hyperparameter: a float32 variable (`opt."
                + name
                + "`), may be a tensor, callable"
                + (" or schedule" if name == "learning_rate" else "")
            )
        elif isinstance(decl, Param):
            kind = "plain attribute (not a variable; numbers are converted exactly to the variable's dtype)"
        else:
            kind = ""
        rows.append(f"| `{name}` | {_fmt(p.default)} | {kind} |")
    rows.append(
        "| `**kwargs` | | the base-class keywords: `clipnorm`, `clipvalue`, `global_clipnorm`, `weight_decay`, `use_ema`, `gradient_accumulation_steps`, `loss_scale_factor`, `jit_compile`, `implementation`, ... ([Features](../features.md)) |"
    )
    return "\n".join(rows) + "\n"


def slots_table(cls: type, configs: list[tuple[dict[str, Any], str]]) -> str:
    rows = ["| configuration | slots (creation order) | initial value |", "|---|---|---|"]
    for kwargs, when in configs:
        opt = cls(**kwargs)
        names = opt.slot_names()
        init = ", ".join(f"`{n}`: {_init(opt.slot_initializer(n))}" for n in names) or "—"
        rows.append(f"| {when} | {', '.join(f'`{n}`' for n in names) or '—'} | {init} |")
    aliases = getattr(cls, "slot_aliases", {})
    out = "\n".join(rows) + "\n"
    if aliases:
        out += (
            "\n`get_slot` also answers to Keras 3's names: "
            + ", ".join(f"`{k}` → `{v}`" for k, v in aliases.items())
            + ".\n"
        )
    return out


def _init(value: Any) -> str:
    if isinstance(value, str):
        return value
    if callable(value):
        return "computed from the variable"
    return f"`{value!r}`"


def page(name: str, cls: type) -> str:
    data = PAGES[name]
    doc = inspect.getdoc(cls) or ""
    summary = doc.splitlines()[0] if doc else ""
    family = (
        "Legacy family: TensorFlow's optimizer_v2 numerics (`tf.keras.optimizers.legacy."
        f"{name}`, TF ≤ 2.10's `tf.keras.optimizers.{name}`)."
        if name in LEGACY
        else "Newer optimizer: Keras 3 numerics (tf_keras's for Adafactor)."
    )
    mode = getattr(cls, "sparse_mode", "lazy")
    elementwise = getattr(cls, "elementwise", True)
    legacy = name in LEGACY
    tf_note = next((d[1] for d in data["diffs"] if d[0].startswith("TF ≤")), "—")
    diff_rows = [
        f"| | kerasopt (`kerasopt.optimizers.{name}`) | {TF_LEGACY} | {KERAS3} | torch.optim |",
        "|---|---|---|---|---|",
    ]
    for aspect, ours, k3, torch_ in data["diffs"]:
        if aspect.startswith("TF ≤"):
            continue
        tf = "same" if legacy else "—"
        diff_rows.append(f"| {aspect} | {ours} | {tf} | {k3} | {torch_} |")
    if legacy:
        tf_line = (
            "TensorFlow ≤ 2.10's optimizer_v2 (`tf.keras.optimizers.legacy` from TF 2.11) computes "
            "exactly this rule: kerasopt's numbers are its numbers in float32 and float64 (see "
            "[Tolerances](../tolerances.md)); float16/bfloat16 are computed in float32 here, in "
            "the half type there ([Features](../features.md#low-precision-float16-bfloat16))."
        )
    else:
        extra = "" if tf_note == "—" else " " + tf_note.removeprefix("— ")
        tf_line = f"TensorFlow ≤ 2.10's optimizer_v2 has no {name}{extra}."
    return f"""# {name}

{summary}

{family} `from kerasopt.optimizers import {name}`; the torch.optim-protocol twin is
`kerasopt.optim.{name}` ([Coming from torch.optim](../from-torch-optim.md)).

## Update rule

$$
\\begin{{aligned}}
{data["math"].strip()}
\\end{{aligned}}
$$

{data["notation"]} $\\eta$ is the learning rate after its schedule (and the legacy `decay`) at
`iterations`; $g$ the gradient after clipping; everything is elementwise.

??? note "As written in the class docstring"
{_indent(update_rule_block(cls))}

## Defaults

{defaults_table(cls)}
## Slots

{slots_table(cls, data["configs"])}
## Sparse gradients

{data["sparse"]} (Routing declared by the class: `sparse_mode = "{mode}"`{"" if elementwise else ", `elementwise = False`"}.)

## Where TF, Keras 3 and torch.optim differ

{tf_line}

{chr(10).join(diff_rows)}

## API

::: kerasopt.optimizers.{name}
    options:
      show_root_heading: false
      heading_level: 3
"""


def _indent(text: str) -> str:
    return "\n".join(("    " + line) if line else "" for line in text.splitlines())


def index_page(classes: dict[str, type]) -> str:
    rows = ["| optimizer | numerics | defaults | slots |", "|---|---|---|---|"]
    for name, cls in sorted(classes.items(), key=lambda kv: kv[0].lower()):
        sig = inspect.signature(cls.__init__)
        shown = [
            f"{k}={p.default!r}"
            for k, p in sig.parameters.items()
            if k not in ("self", "name") and p.default is not inspect.Parameter.empty
        ][:3]
        slots = (
            ", ".join(f"`{s}`" for s in cls().slot_names()) or "— (`momentum` with momentum > 0)"
        )
        family = "TF optimizer_v2" if name in LEGACY else "Keras 3"
        if name == "Adafactor":
            family = "tf_keras (newer optimizers)"
        rows.append(f"| [{name}]({name.lower()}.md) | {family} | `{', '.join(shown)}` | {slots} |")
    return (
        "# Optimizers\n\n"
        "Every optimizer of `kerasopt.optimizers`, with its update rule as implemented, its slots, "
        "defaults, sparse behaviour, and where TensorFlow's legacy optimizers, Keras 3 and "
        "`torch.optim` differ. The pages are generated from the classes at build time "
        "(`tools/docs_hooks.py`): defaults and slots are read from the code.\n\n"
        + "\n".join(rows)
        + "\n\nWrappers: `LossScaleOptimizer` and `MultiOptimizer` ([Features](../features.md), "
        "[API reference](../api.md)).\n"
    )


def on_files(files: Files, config: Any) -> Files:
    """Adds ``optimizers/index.md`` and ``optimizers/<name>.md`` to the site."""
    classes = optimizer_classes()
    missing = sorted(set(classes) - set(PAGES))
    if missing:
        raise ValueError(f"docs: no page data for {missing} (tools/docs_hooks.py PAGES)")
    for name, cls in classes.items():
        files.append(
            File.generated(config, f"optimizers/{name.lower()}.md", content=page(name, cls))
        )
    files.append(File.generated(config, "optimizers/index.md", content=index_page(classes)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Links the mentions of the ``kerasopt.keras3`` page once ``docs/keras3.md`` exists.

    The page is written on another branch; until it is merged the mention stays plain text, so
    the strict build has no broken link.
    """
    if files.get_file_from_path("keras3.md") is None:
        return markdown
    return markdown.replace("(its own page, `keras3.md`)", "([its own page](keras3.md))")
