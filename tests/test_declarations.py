"""Each default is written three times: the declaration, the constructor and the docstring.

``Hyper.default`` / ``Param.default`` (and a schedule's ``arg(default=...)``) are what the
declaration documents; the constructor's signature is what actually applies; the class
docstring's ``Args`` entry says "Defaults to X". Nothing else checks that they agree, so these
tests do, for every optimizer of ``kerasopt.optimizers`` and every schedule.
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import pytest
import torch

import kerasopt as ko
from kerasopt._hyper import Hyper, Param, declared
from kerasopt._schedules import LearningRateSchedule, declared_args
from tests.specs import OPTIMIZERS as _SPECS

OPTIMIZERS = [
    cls
    for cls in (getattr(ko.optimizers, name) for name in ko.optimizers.__all__)
    if isinstance(cls, type) and issubclass(cls, ko.Optimizer) and cls is not ko.Optimizer
]
SCHEDULES = [
    cls
    for cls in (getattr(ko.optimizers.schedules, name) for name in ko.optimizers.schedules.__all__)
    if isinstance(cls, type)
    and issubclass(cls, LearningRateSchedule)
    and cls is not LearningRateSchedule
]


def _builds_without_arguments(cls: type) -> bool:
    parameters = inspect.signature(cls).parameters.values()
    return all(p.default is not p.empty or p.kind is p.VAR_KEYWORD for p in parameters)


# Disagreements that cannot be fixed in the declaration without changing behaviour (strict: a
# fix makes the test pass, and then this entry must go).
KNOWN: dict[tuple[str, str], str] = {}


def _known(cls: type, name: str) -> Any:
    reason = KNOWN.get((cls.__name__, name))
    return () if reason is None else pytest.mark.xfail(strict=True, reason=reason)


# Every declaration of every optimizer its constructor builds with no argument (the wrappers
# need an optimizer to wrap).
BUILT = [
    pytest.param(cls, decl.name, id=f"{cls.__name__}.{decl.name}", marks=_known(cls, decl.name))
    for cls in OPTIMIZERS
    if _builds_without_arguments(cls)
    for decl in declared(cls)
]

_DEFAULT = re.compile(
    r"[Dd]efaults to (?:``)?"
    r"(?P<literal>\"[^\"]*\"|'[^']*'|None|True|False|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
    r"(?:``)?(?![\w*(])"
)


def _args_section(cls: type) -> dict[str, str]:
    """The class docstring's ``Args`` entries, by argument name, each on one line."""
    doc = inspect.getdoc(cls) or ""
    section = re.search(r"^Args:\n(.*?)(?=^\S|\Z)", doc, re.S | re.M)
    if section is None:
        return {}
    entries = re.finditer(r"^    \**(\w+): (.*?)(?=^    \S|\Z)", section.group(1), re.S | re.M)
    return {e.group(1): " ".join(e.group(2).split()) for e in entries}


def _documented_default(entry: str) -> Any:
    """The literal of "Defaults to X" in an Args entry; ``inspect.Parameter.empty`` when none."""
    if "defaults to" not in entry.lower():
        return inspect.Parameter.empty
    match = _DEFAULT.search(entry)
    assert match is not None, f"'Defaults to' without a literal value: {entry!r}"
    return ast.literal_eval(match.group("literal"))


def _same(a: Any, b: Any) -> bool:
    # 0 == 0.0 == False: the type matters too (a config would report it).
    return type(a) is type(b) and a == b


def _check_against_signature(cls: type, name: str, default: Any) -> None:
    parameter = inspect.signature(cls).parameters[name]
    assert _same(parameter.default, default), (
        f"{cls.__name__}: `{name}` is declared with default {default!r}, but the constructor's "
        f"default is {parameter.default!r}"
    )
    entry = _args_section(cls).get(name)
    assert entry is not None, f"{cls.__name__}'s docstring has no Args entry for `{name}`"
    documented = _documented_default(entry)
    if documented is not inspect.Parameter.empty:
        # The documented number is compared as written (1e-3 is 0.001).
        assert documented == default and isinstance(documented, bool) == isinstance(
            default, bool
        ), (
            f"{cls.__name__}'s docstring says `{name}` defaults to {documented!r}, the "
            f"declaration and constructor say {default!r}"
        )


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_optimizer_declarations_agree_with_the_constructor_and_the_docstring(cls: type) -> None:
    parameters = inspect.signature(cls).parameters
    for decl in declared(cls):
        if decl.name in parameters:
            _check_against_signature(cls, decl.name, decl.default)
        else:
            # Not a constructor argument: a base keyword reached through **kwargs (`decay`;
            # Nadam redeclares it with its own default, which the test below checks) or, for a
            # wrapper, not an argument at all.
            base = inspect.getattr_static(ko.Optimizer, decl.name, None)
            assert type(base) is type(decl), (
                f"{cls.__name__} declares `{decl.name}`, which its constructor does not take"
            )


@pytest.mark.parametrize(("cls", "name"), BUILT)
def test_optimizer_built_without_arguments_holds_the_declared_default(cls: type, name: str) -> None:
    decl = next(d for d in declared(cls) if d.name == name)
    opt = cls()
    if isinstance(decl, Hyper):
        value = opt._hyper_source(name)
        want = decl.default
    else:
        assert isinstance(decl, Param)
        value = getattr(opt, name)
        want = decl.convert(decl.default) if decl.convert is not None else decl.default
    assert _same(value, want), f"{cls.__name__}().{name} is {value!r}, declared {want!r}"


@pytest.mark.parametrize("cls", SCHEDULES, ids=lambda c: c.__name__)
def test_schedule_declarations_agree_with_the_constructor_and_the_docstring(cls: type) -> None:
    args = declared_args(cls)
    assert [a.name for a in args] == list(inspect.signature(cls).parameters)
    for a in args:
        _check_against_signature(cls, a.name, a.default)


def test_the_docstring_parser_reads_the_forms_in_use() -> None:
    class Documented:
        """Doc.

        Args:
            a: float. Defaults to 0.001.
            b: defaults to 1e-7 (``None`` or 0 also mean 1e-7).
            c: spans
                two lines. Defaults to
                -0.5.
            d: defaults to ``"Adam"``.
            e: Defaults to ``None`` (none).
            f: no default stated.
            g: (dynamic: defaults to 2**15; static: required).

        Example:
            >>> 1
        """

    entries = _args_section(Documented)
    assert sorted(entries) == ["a", "b", "c", "d", "e", "f", "g"]
    got = {k: _documented_default(v) for k, v in entries.items() if k != "g"}
    assert got == {
        "a": 0.001,
        "b": 1e-7,
        "c": -0.5,
        "d": "Adam",
        "e": None,
        "f": inspect.Parameter.empty,
    }
    with pytest.raises(AssertionError, match="without a literal"):
        _documented_default(entries["g"])


def test_a_disagreement_is_reported() -> None:
    class Declared:
        """Doc.

        Args:
            beta: Defaults to 0.5.
            steps: a count.
        """

        def __init__(self, beta: float = 0.9, steps: int = 1) -> None:
            pass

    with pytest.raises(AssertionError, match=r"docstring says `beta` defaults to 0\.5"):
        _check_against_signature(Declared, "beta", 0.9)
    with pytest.raises(AssertionError, match=r"constructor's default is 0\.9"):
        _check_against_signature(Declared, "beta", 0.8)
    with pytest.raises(AssertionError, match=r"declared with default 1\.0"):
        _check_against_signature(Declared, "steps", 1.0)  # equal, but a config would say 1.0
    _check_against_signature(Declared, "steps", 1)


# -- rules name their slots ------------------------------------------------------------------
def _named_parameters(fn: Any) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds}


@pytest.mark.parametrize("spec", _SPECS, ids=lambda s: s.name)
def test_every_rule_takes_each_slot_as_a_named_parameter(spec: Any) -> None:
    """The engines pass slots by name; a rule that took ``*slots`` (and picked them by position,
    as RMSprop once did) or ``**slots`` would not say which slot it reads."""
    cls = getattr(ko.optimizers, spec.name)
    rules = [cls.update]
    if cls.update_sparse is not ko.Optimizer.update_sparse:
        rules.append(cls.update_sparse)
    for config in spec.configs:
        opt = cls(**config)
        variables = [ko.Variable(torch.zeros(3, 2)), ko.Variable(torch.zeros(4))]
        opt.build(variables)
        for var in variables:
            arguments = set(opt._rule_slots(opt._store.record_of(var)))
            assert len(arguments) == len(opt._store.record_of(var).slots)
            for rule in rules:
                missing = arguments - _named_parameters(rule)
                assert not missing, (
                    f"{spec.name}.{rule.__name__} does not name its slots {sorted(missing)} "
                    f"(config {config})"
                )
