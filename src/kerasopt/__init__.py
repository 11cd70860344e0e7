"""kerasopt: TensorFlow/Keras optimizers — the API and the numbers — on native PyTorch tensors.

Example:
    >>> import kerasopt as ko
    >>> var1, var2 = ko.Variable(2.0, name="var1"), ko.Variable(5.0, name="var2")
    >>> opt = ko.optimizers.SGD(learning_rate=0.1)
    >>> _ = opt.minimize(lambda: 3 * var1 * var1 + 2 * var2 * var2, var_list=[var1, var2])
    >>> round(float(var1), 4), round(float(var2), 4)
    (0.8, 3.0)
"""

from . import keras3, optimizers
from . import optim as optim
from ._state import StateError
from .checkpoint import load, save
from .in_backward import InBackward, apply_in_backward
from .optimizer import Optimizer
from .sparse import IndexedSlices
from .tape import GradientTape, UnconnectedGradients
from .variables import Variable

__all__ = [
    "GradientTape",
    "InBackward",
    "IndexedSlices",
    "Optimizer",
    "StateError",
    "UnconnectedGradients",
    "Variable",
    "apply_in_backward",
    "keras3",
    "load",
    "optimizers",
    "save",
]
__version__ = "0.1.0"
