"""Keras 3's optimizers: ``keras.optimizers.<Name>`` (TF >= 2.16's ``tf.keras.optimizers``).

``kerasopt.optimizers`` follows TensorFlow's optimizer_v2 (``tf.keras.optimizers.legacy``);
``kerasopt.keras3`` follows Keras 3: the same class names with Keras 3's numbers, arguments,
defaults, variable names and sparse-gradient semantics. Where the two agree the class or rule is
shared (``SGD``, ``Adam``'s rule, the newer optimizers); where they differ (Nadam's ``u_product``,
RMSprop's and Adagrad's epsilon inside the square root, Adadelta's exact ``rho``) the rule is
written once here. docs/keras3.md has the table of differences.

``kerasopt.keras3.optim.<Name>`` is each class behind the ``torch.optim`` protocol.

Example:
    >>> import torch, kerasopt as ko
    >>> var = ko.Variable([1.0, 2.0])
    >>> opt = ko.keras3.RMSprop(learning_rate=0.1)
    >>> _ = opt.apply_gradients([(torch.tensor([1.0, 1.0]), var)])
    >>> sorted(opt.get_config())[:4]
    ['centered', 'clipnorm', 'clipvalue', 'ema_momentum']
"""

from . import optim
from ._base import CLASSES as _CLASSES
from ._base import Keras3Base
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .ftrl import Ftrl
from .loss_scale import LossScaleOptimizer
from .multi import MultiOptimizer, OptimizerMap
from .nadam import Nadam
from .newer import Adafactor, Lamb, Lion, Muon, ScheduleFreeAdamW
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Ftrl",
    "Keras3Base",
    "Lamb",
    "Lion",
    "LossScaleOptimizer",
    "MultiOptimizer",
    "Muon",
    "Nadam",
    "OptimizerMap",
    "RMSprop",
    "ScheduleFreeAdamW",
    "optim",
]

# the classes by name (the wrappers' from_config reads inner optimizers with them)
_CLASSES.update(
    (cls.__name__, cls)
    for cls in (
        SGD,
        Adadelta,
        Adafactor,
        Adagrad,
        Adam,
        AdamW,
        Adamax,
        Ftrl,
        Lamb,
        Lion,
        LossScaleOptimizer,
        MultiOptimizer,
        Muon,
        Nadam,
        RMSprop,
        ScheduleFreeAdamW,
    )
)
