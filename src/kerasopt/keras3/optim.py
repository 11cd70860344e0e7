"""``kerasopt.keras3.optim.<Name>``: Keras 3's optimizers behind the ``torch.optim`` protocol.

The same machinery as ``kerasopt.optim`` (``KerasOptimizer``: one inner Keras optimizer per param
group behind ``step()`` / ``param_groups`` / ``state`` / ``state_dict()``), each class naming its
``kerasopt.keras3`` optimizer instead of its ``kerasopt.optimizers`` one, so the weights and slots
are bit-identical to ``kerasopt.keras3.<Name>.apply_gradients`` on the same gradients. Param-group
keys are Keras 3's arguments (``lr`` for ``learning_rate``; no ``decay``); ``state[p]`` holds the
Keras 3 slot names (``momentum``, ``velocity``, ...).

Example:
    >>> import torch, kerasopt as ko
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> opt = ko.keras3.optim.RMSprop([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> sorted(opt.state[w])
    ['step', 'velocity']
"""

from __future__ import annotations

from ..optim._adapter import KerasOptimizer
from .adadelta import Adadelta as _Adadelta
from .adagrad import Adagrad as _Adagrad
from .adam import Adam as _Adam
from .adam import AdamW as _AdamW
from .adamax import Adamax as _Adamax
from .ftrl import Ftrl as _Ftrl
from .nadam import Nadam as _Nadam
from .newer import Adafactor as _Adafactor
from .newer import Lamb as _Lamb
from .newer import Lion as _Lion
from .newer import Muon as _Muon
from .newer import ScheduleFreeAdamW as _ScheduleFreeAdamW
from .rmsprop import RMSprop as _RMSprop
from .sgd import SGD as _SGD

__all__ = [
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Ftrl",
    "Lamb",
    "Lion",
    "Muon",
    "Nadam",
    "RMSprop",
    "ScheduleFreeAdamW",
]


class SGD(KerasOptimizer, keras=_SGD):
    """Keras 3's SGD (``kerasopt.keras3.SGD``) as a ``torch.optim.Optimizer``."""


class Adam(KerasOptimizer, keras=_Adam):
    """Keras 3's Adam (``kerasopt.keras3.Adam``) as a ``torch.optim.Optimizer``.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = ko.keras3.optim.Adam([w], lr=0.1)
        >>> (w * w).sum().backward(); opt.step()
        >>> [round(x, 4) for x in w.tolist()], sorted(opt.state[w])
        ([0.9, 1.9], ['momentum', 'step', 'velocity'])
    """


class AdamW(KerasOptimizer, keras=_AdamW):
    """Keras 3's AdamW (``kerasopt.keras3.AdamW``) as a ``torch.optim.Optimizer``."""


class Adagrad(KerasOptimizer, keras=_Adagrad):
    """Keras 3's Adagrad (``kerasopt.keras3.Adagrad``) as a ``torch.optim.Optimizer``."""


class Adadelta(KerasOptimizer, keras=_Adadelta):
    """Keras 3's Adadelta (``kerasopt.keras3.Adadelta``) as a ``torch.optim.Optimizer``."""


class Adamax(KerasOptimizer, keras=_Adamax):
    """Keras 3's Adamax (``kerasopt.keras3.Adamax``) as a ``torch.optim.Optimizer``."""


class Nadam(KerasOptimizer, keras=_Nadam):
    """Keras 3's Nadam (``kerasopt.keras3.Nadam``) as a ``torch.optim.Optimizer``."""


class RMSprop(KerasOptimizer, keras=_RMSprop):
    """Keras 3's RMSprop (``kerasopt.keras3.RMSprop``) as a ``torch.optim.Optimizer``."""


class Ftrl(KerasOptimizer, keras=_Ftrl):
    """Keras 3's Ftrl (``kerasopt.keras3.Ftrl``) as a ``torch.optim.Optimizer``."""


class Lion(KerasOptimizer, keras=_Lion):
    """Keras 3's Lion (``kerasopt.keras3.Lion``) as a ``torch.optim.Optimizer``."""


class Lamb(KerasOptimizer, keras=_Lamb):
    """Keras 3's Lamb (``kerasopt.keras3.Lamb``) as a ``torch.optim.Optimizer``."""


class Adafactor(KerasOptimizer, keras=_Adafactor):
    """Keras 3's Adafactor (``kerasopt.keras3.Adafactor``) as a ``torch.optim.Optimizer``."""


class Muon(KerasOptimizer, keras=_Muon):
    """Keras 3's Muon (``kerasopt.keras3.Muon``) as a ``torch.optim.Optimizer``."""


class ScheduleFreeAdamW(KerasOptimizer, keras=_ScheduleFreeAdamW):
    """Keras 3's ScheduleFreeAdamW (``kerasopt.keras3.ScheduleFreeAdamW``) as a
    ``torch.optim.Optimizer``."""
