"""A quicker ``__init__`` for the frozen dataclasses a ``connect()`` makes by the dozen.

A frozen dataclass's generated ``__init__`` stores each field with
``object.__setattr__(self, name, value)``, looked up afresh per field: a global read, an
attribute read and a store that finds the field by name. :func:`quick_init` gives the class an
``__init__`` with the same signature (names, order, defaults) that stores each field through
its slot's descriptor (a slotted class), or straight into the instance's ``__dict__`` (any
other; where ``object.__setattr__`` puts it too): the same values without the lookups, about
2.5x (slots) and 3x quicker.
Everything else the dataclass made is left as it is: assignment still raises
FrozenInstanceError, equality, repr, hash, pickling, ``fields`` and ``replace`` are the
dataclass's.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """The default of a field with a ``default_factory`` (shown as the dataclass shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def quick_init(cls: type[T]) -> type[T]:
    """Replace the generated ``__init__`` of the frozen dataclass ``cls`` (applied above the
    ``@dataclass``): only for one whose fields are all positional ``__init__`` arguments (no
    keyword-only or ``init=False`` field) and that has no ``__post_init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not params.init:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with an __init__")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    setters: list[Any] = []
    for f in fields:
        if not f.init or f.kw_only or f.name.startswith("__"):
            raise TypeError(f"{cls.__name__}.{f.name} is not a positional __init__ argument")
        attr = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
        if isinstance(attr, types.MemberDescriptorType):
            setters.append(attr.__set__)  # (value) stored in the slot
        elif hasattr(type(attr), "__set__"):
            setters.append(object.__setattr__)  # a data descriptor: it stores the value
        else:
            setters.append(None)  # stored in the instance's __dict__
    args, body = ["self"], []
    if None in setters:
        body.append("    __dict = self.__dict__")
    env: dict[str, Any] = {"__object_setattr": object.__setattr__, "__factory": _FACTORY}
    for i, (f, setter) in enumerate(zip(fields, setters, strict=True)):
        value = f.name
        if f.default_factory is not dataclasses.MISSING:  # made per call, as the dataclass's
            env[f"__factory_{i}"] = f.default_factory
            args.append(f"{f.name}=__factory")
            value = f"__factory_{i}() if {f.name} is __factory else {f.name}"
        elif f.default is not dataclasses.MISSING:
            env[f"__default_{i}"] = f.default
            args.append(f"{f.name}=__default_{i}")
        else:
            args.append(f.name)
        if setter is None:
            body.append(f"    __dict[{f.name!r}] = {value}")
        elif setter is object.__setattr__:
            body.append(f"    __object_setattr(self, {f.name!r}, {value})")
        else:
            env[f"__set_{i}"] = setter
            body.append(f"    __set_{i}(self, {value})")
    names = ", ".join(env)
    source = (f"def __make({names}):\n  def __init__({', '.join(args)}) -> None:\n"
              + "\n".join("  " + line for line in body or ["    pass"])
              + "\n  return __init__\n")  # fmt: skip
    namespace: dict[str, Any] = {}
    exec(source, {}, namespace)  # (what dataclasses does to make its own __init__)
    init = namespace["__make"](**env)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


__all__ = ["quick_init"]
