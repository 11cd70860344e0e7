"""kerasopt's optimizers as ``torch.optim.Optimizer`` subclasses: TF's numbers, torch's protocol.

``kerasopt.optim.<Name>`` is ``kerasopt.optimizers.<Name>`` behind ``step()`` / ``zero_grad()``
/ ``param_groups`` / ``state`` / ``state_dict()``, so everything in the PyTorch ecosystem that
drives a ``torch.optim`` optimizer drives it: the ``loss.backward(); opt.step()`` loop,
``torch.optim.lr_scheduler``, ``torch.amp.GradScaler``, ``ZeroRedundancyOptimizer``,
``_apply_optimizer_in_backward``, ``torch.distributed.checkpoint``, Lightning. The update is the
Keras class's own rule and engines (one inner Keras optimizer per param group), so the weights
and slots are bit-identical to ``apply_gradients`` on the same gradients.

``kerasopt.optim.lr_scheduler.KerasSchedule`` goes the other way: a Keras
``LearningRateSchedule`` as a torch ``LRScheduler``, for any torch optimizer.

Example:
    >>> import torch, kerasopt as ko
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = ko.optim.Adam(model.parameters(), lr=0.01)
    >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    >>> for _ in range(2):
    ...     opt.zero_grad()
    ...     model(torch.ones(4, 3)).pow(2).mean().backward()
    ...     opt.step()
    ...     sched.step()
    >>> opt.param_groups[0]["lr"], sorted(opt.state[model.bias])
    (0.0025, ['m', 'step', 'v'])
"""

from .. import optimizers as _k
from . import lr_scheduler
from ._adapter import KerasOptimizer

__all__ = [
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Ftrl",
    "KerasOptimizer",
    "Lamb",
    "Lion",
    "Muon",
    "Nadam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "lr_scheduler",
]


class SGD(KerasOptimizer, keras=_k.SGD):
    """TF's SGD (``kerasopt.optimizers.SGD``): the learning rate is inside the velocity.

    ``accum = momentum * accum - lr * g; p += accum`` (torch: ``buf = momentum * buf + g;
    p -= lr * buf``); slot ``"momentum"`` exists when ``momentum > 0``; default lr 0.01.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ko.optim.SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = torch.tensor([1.0]); opt.step(); opt.step()
        >>> round(w.item(), 4), sorted(opt.state[w])
        (0.71, ['momentum', 'step'])
    """


class Adam(KerasOptimizer, keras=_k.Adam):
    """TF's Adam (``kerasopt.optimizers.Adam``): epsilon-hat, default epsilon 1e-7.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = ko.optim.Adam([w], lr=0.1, betas=(0.9, 0.99))
        >>> (w * w).sum().backward(); opt.step()
        >>> [round(x, 4) for x in w.tolist()], sorted(opt.state[w])
        ([0.9, 1.9], ['m', 'step', 'v'])
        >>> opt.param_groups[0]["beta_2"]
        0.99
    """


class AdamW(KerasOptimizer, keras=_k.AdamW):
    """Keras's AdamW (``kerasopt.optimizers.AdamW``): decoupled decay, default 0.004.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = ko.optim.AdamW([w], lr=0.1, weight_decay=0.5)
        >>> (w * w).sum().backward(); opt.step()
        >>> [round(x, 4) for x in w.tolist()]
        [0.85, 1.8]
    """


class Adagrad(KerasOptimizer, keras=_k.Adagrad):
    """TF's Adagrad (``kerasopt.optimizers.Adagrad``): the accumulator starts at 0.1.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ko.optim.Adagrad([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0]); opt.step()
        >>> round(opt.state[w]["accumulator"].item(), 4)
        1.1
    """


class Adadelta(KerasOptimizer, keras=_k.Adadelta):
    """TF's Adadelta (``kerasopt.optimizers.Adadelta``): default lr 0.001, epsilon 1e-7.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ko.optim.Adadelta([w], lr=1.0, epsilon=1e-2)
        >>> w.grad = torch.tensor([1.0]); opt.step()
        >>> sorted(opt.state[w])
        ['accum_grad', 'accum_var', 'step']
    """


class Adamax(KerasOptimizer, keras=_k.Adamax):
    """TF's Adamax (``kerasopt.optimizers.Adamax``).

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ko.optim.Adamax([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0]); opt.step()
        >>> round(w.item(), 4), sorted(opt.state[w])
        (0.9, ['m', 'step', 'v'])
    """


class Nadam(KerasOptimizer, keras=_k.Nadam, keywords={"schedule_decay": 0.004}):
    """TF's Nadam (``kerasopt.optimizers.Nadam``), with its momentum-schedule ``schedule_decay``.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([10.0]))
        >>> opt = ko.optim.Nadam([w], lr=0.2)
        >>> w.grad = w.detach().clone(); opt.step()
        >>> round(w.item(), 1), sorted(opt.state[w])
        (9.8, ['m', 'momentum_cache', 'step', 'v'])
    """


class RMSprop(KerasOptimizer, keras=_k.RMSprop):
    """TF's RMSprop (``kerasopt.optimizers.RMSprop``): ``rho`` (torch's alpha), epsilon 1e-7.

    With momentum > 0 (chosen at construction, as in TF) epsilon is inside the square root.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([10.0]))
        >>> opt = ko.optim.RMSprop([w], lr=0.1)
        >>> w.grad = w.detach().clone(); opt.step()
        >>> round(w.item(), 6), sorted(opt.state[w])
        (9.683772, ['rms', 'step'])
    """


class Ftrl(KerasOptimizer, keras=_k.Ftrl):
    """TF's FTRL-proximal (``kerasopt.optimizers.Ftrl``).

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ko.optim.Ftrl([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0]); opt.step()
        >>> sorted(opt.state[w])
        ['accumulator', 'linear', 'step']
    """


class Lion(KerasOptimizer, keras=_k.Lion):
    """Keras's Lion (``kerasopt.optimizers.Lion``).

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        >>> opt = ko.optim.Lion([w], lr=0.1)
        >>> w.grad = torch.tensor([2.0, -3.0]); opt.step()
        >>> [round(x, 4) for x in w.tolist()]
        [0.9, -0.9]
    """


class Lamb(KerasOptimizer, keras=_k.Lamb):
    """Keras's Lamb (``kerasopt.optimizers.Lamb``): Adam with a layer-wise trust ratio.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> opt = ko.optim.Lamb([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, 1.0]); opt.step()
        >>> sorted(opt.state[w])
        ['m', 'step', 'v']
    """


class Adafactor(KerasOptimizer, keras=_k.Adafactor):
    """Keras's Adafactor (``kerasopt.optimizers.Adafactor``): factored second moments.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.ones(2, 3))
        >>> opt = ko.optim.Adafactor([w], lr=0.1)
        >>> w.grad = torch.ones(2, 3); opt.step()
        >>> {k: tuple(v.shape) for k, v in opt.state[w].items() if k != "step"}
        {'r': (2,), 'c': (3,), 'v': (2, 3)}
    """


class Muon(KerasOptimizer, keras=_k.Muon):
    """Keras's Muon (``kerasopt.optimizers.Muon``): Newton–Schulz for 2-D weights, AdamW else.

    Routing is by rank and by name: pass ``model.named_parameters()`` so ``exclude_layers`` and
    ``exclude_embeddings`` see the parameters' names.

    Example:
        >>> import torch, kerasopt as ko
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = ko.optim.Muon(model.named_parameters(), lr=0.1)
        >>> model(torch.ones(1, 2)).sum().backward(); opt.step()
        >>> sorted(opt.state[model.weight]), sorted(opt.state[model.bias])
        (['momentum', 'step'], ['momentum', 'step', 'velocity'])
    """


class ScheduleFreeAdamW(KerasOptimizer, keras=_k.ScheduleFreeAdamW):
    """Keras's ScheduleFreeAdamW (``kerasopt.optimizers.ScheduleFreeAdamW``).

    The parameters hold the training point y; ``opt.keras_optimizers[i].swap_eval_params()``
    gives the evaluation weights x for a ``with`` block.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = ko.optim.ScheduleFreeAdamW([w], lr=0.1)
        >>> (w * w).sum().backward(); opt.step()
        >>> [round(x, 4) for x in w.tolist()], sorted(opt.state[w])
        ([0.9, -1.9], ['momentum', 'step', 'velocity'])
    """
