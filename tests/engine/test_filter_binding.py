"""A filter called with its value alone binds as ``inspect.Signature.bind`` would: the
checks that read a filter's arguments see exactly the same ones either way."""

import inspect
from typing import Any

import pytest
from jinja2.filters import FILTERS
from jinja2.utils import _PassArg

from app.engine.sandbox.filters import _binding_of_value_alone


def value_signature(function: Any) -> inspect.Signature:
    """A filter's signature without the context or environment Jinja2 passes first."""
    unwrapped = inspect.unwrap(function)
    parameters = list(inspect.signature(unwrapped).parameters.values())
    takes_first = _PassArg.from_obj(unwrapped) is not None
    return inspect.Signature(parameters[1:] if takes_first else parameters)


def example(a: Any, b: int = 2, *rest: Any, c: str = "c", **more: Any) -> None: ...


def needs_two(a: Any, b: Any) -> None: ...


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_each_filter_binds_its_value_alone_as_bind_does(name: str) -> None:
    signature = value_signature(FILTERS[name])
    fast = _binding_of_value_alone(signature)
    try:
        bound = signature.bind("value")
    except TypeError:
        assert fast is None  # it needs more than the value: bind() says so, as before
        return
    bound.apply_defaults()
    assert fast is not None
    arguments = fast("value")
    assert arguments == bound.arguments
    assert list(arguments) == list(bound.arguments)


def test_every_kind_of_parameter_binds_as_bind_does() -> None:
    signature = inspect.signature(example)
    fast = _binding_of_value_alone(signature)
    assert fast is not None
    bound = signature.bind(1)
    bound.apply_defaults()
    first, second = fast(1), fast(1)
    assert first == bound.arguments and list(first) == list(bound.arguments)
    assert first["more"] is not second["more"]  # a new dict each call, as bind makes
    assert _binding_of_value_alone(inspect.signature(needs_two)) is None
