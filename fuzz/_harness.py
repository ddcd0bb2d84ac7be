# fuzz/_harness
#
# What every harness in fuzz/ shares: instrumenting smtpbee (and only smtpbee)
# and starting libFuzzer in a way that its child processes work too.
#
# * Instrumentation. atheris.instrument_imports() with no argument instruments
#   every module imported inside the block, stdlib included (base64, hashlib,
#   dataclasses, logging ...): coverage feedback from code we do not test, and
#   a slower run. include=["smtpbee"] limits it to the package under test, and
#   every core module is imported here, inside the block, because smtpbee
#   imports some of them lazily (AUTH, SCRAM, SASLprep): a module first
#   imported after the block would run uninstrumented, invisible to the fuzzer.
#   smtpbee.transports and smtpbee.cli do I/O and are not fuzzed.
#
# * Child processes. libFuzzer's -merge=1, -fork=N and -jobs=N re-run the
#   target as a shell command built from argv. Python's argv[0] is the .py
#   file, which is not executable, so the children would fail ("Permission
#   denied") and a merge would silently add nothing. main() hands libFuzzer an
#   argv[0] that is "<this python> <this script>" (quoted), which the shell
#   runs as intended.
#
# * Snapshots. Several harnesses start each input from the same prepared
#   object (a Connection after the greeting, EHLO and a pipelined envelope).
#   Building it runs instrumented code, the same every time, and cost more than
#   half of each input. clone() copies the prepared object instead, in plain
#   Python: every mutable object in its graph is copied, and shared are only
#   immutable values (bytes, str, numbers, enums, frozen dataclasses,
#   read-only mappings, tuples of these) and what smtpbee's module globals
#   reach (the compiled declarations: tables every connection shares). Any
#   other kind of object (a generator, a file) is refused with TypeError, so
#   a change in the core can make a harness fail loudly, never share state
#   silently. The harnesses still build the object afresh now and then and
#   check that it behaves as its clone does.
"""Shared atheris setup for the smtpbee harnesses."""

from __future__ import annotations

import contextlib
import enum
import importlib
import os
import pkgutil
import shlex
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import atheris  # type: ignore[import-untyped]

__all__ = ["clone", "instrumented", "main"]

T = TypeVar("T")

# Modules of the package that take no untrusted input, or do I/O.
_NOT_FUZZED = frozenset({"__main__", "cli", "transports"})


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Import every module of the smtpbee core instrumented; import from it in the block.

    Use it before anything imports smtpbee: a module already imported stays as it was.
    """
    if "smtpbee" in sys.modules:
        raise RuntimeError("smtpbee was imported before the harness could instrument it")
    with atheris.instrument_imports(include=["smtpbee"]):
        import smtpbee

        for module in pkgutil.iter_modules(smtpbee.__path__):
            if module.name not in _NOT_FUZZED:
                importlib.import_module(f"smtpbee.{module.name}")
        yield


def main(test_one_input: Callable[[bytes], None]) -> None:
    """atheris.Setup and Fuzz, with an argv[0] that libFuzzer's child processes can run."""
    script = os.path.abspath(sys.argv[0])
    command = f"{shlex.quote(sys.executable)} {shlex.quote(script)}"
    atheris.Setup([command, *sys.argv[1:]], test_one_input)
    atheris.Fuzz()


_ATOMIC: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        type,
        range,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.MappingProxyType,
    }
)
_SHARED: dict[int, Any] = {}


def _smtpbee_globals() -> dict[int, Any]:
    """Every container reachable from smtpbee's module globals, by id: never copied."""
    found: dict[int, Any] = {}
    stack: list[Any] = [
        vars(module)
        for name, module in list(sys.modules.items())
        if name == "smtpbee" or name.startswith("smtpbee.")
    ]
    while stack:
        obj = stack.pop()
        if id(obj) in found:
            continue
        found[id(obj)] = obj
        if isinstance(obj, dict | types.MappingProxyType):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            stack.extend(obj)
    return found


def _is_frozen_dataclass(cls: type) -> bool:
    params = getattr(cls, "__dataclass_params__", None)
    return params is not None and bool(params.frozen)


def _slot_names(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        names.extend((slots,) if isinstance(slots, str) else slots)
    return tuple(name for name in names if name not in ("__dict__", "__weakref__"))


# How each type is copied, decided once per type: None for "shared as it is", else the
# slots of a mutable smtpbee object (() for an object with a __dict__ only).
_HOW: dict[type, tuple[str, ...] | None] = {cls: None for cls in _ATOMIC}
_CONTAINERS = (tuple, frozenset, list, dict, deque, bytearray)


def _how(cls: type) -> tuple[str, ...] | None:
    if issubclass(cls, enum.Enum) or _is_frozen_dataclass(cls):
        return None
    if cls.__module__.split(".")[0] != "smtpbee":
        raise TypeError(f"clone() does not know how to copy a {cls.__qualname__}")
    return _slot_names(cls)


def _clone(obj: Any, memo: dict[int, Any]) -> Any:
    cls = type(obj)
    if cls not in _CONTAINERS:
        how = _HOW.get(cls, ())
        if how == ():
            how = _HOW[cls] = _how(cls)
        if how is None:
            return obj
    copied = memo.get(id(obj))
    if copied is not None:
        return copied
    if id(obj) in _SHARED:
        return obj
    if cls is tuple or cls is frozenset:
        items = [_clone(item, memo) for item in obj]
        same = all(a is b for a, b in zip(items, obj, strict=True))
        return obj if same else cls(items)
    if cls is list:
        new_list: list[Any] = []
        memo[id(obj)] = new_list
        new_list.extend(_clone(item, memo) for item in obj)
        return new_list
    if cls is dict:
        new_dict: dict[Any, Any] = {}
        memo[id(obj)] = new_dict
        for key, value in obj.items():
            new_dict[_clone(key, memo)] = _clone(value, memo)
        return new_dict
    if cls is deque:
        new_deque: deque[Any] = deque(maxlen=obj.maxlen)
        memo[id(obj)] = new_deque
        new_deque.extend(_clone(item, memo) for item in obj)
        return new_deque
    if cls is bytearray:
        return memo.setdefault(id(obj), bytearray(obj))
    # A mutable smtpbee object: a new instance, each attribute (dict or slot) cloned.
    slots = _HOW[cls]
    assert slots is not None
    new = object.__new__(cls)
    memo[id(obj)] = new
    for name, value in getattr(obj, "__dict__", {}).items():
        object.__setattr__(new, name, _clone(value, memo))
    for name in slots:
        if hasattr(obj, name):
            object.__setattr__(new, name, _clone(getattr(obj, name), memo))
    return new


def clone(obj: T) -> T:
    """A copy of obj that shares no mutable state with it (see the notes at the top)."""
    if not _SHARED:
        _SHARED.update(_smtpbee_globals())
    copied: T = _clone(obj, {})
    return copied
