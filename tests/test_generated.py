"""The blocking client is generated from the async one: the committed file must be current.

tools/generate_sync.py rewrites transports/_async/client.py without async and
await (unasync); a change to the async source that was not regenerated fails
here, so a new method cannot land in one I/O world and not the others.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._sync.client import SyncClient

ROOT = Path(__file__).resolve().parent.parent


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_sync", ROOT / "tools/generate_sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_sync"] = module
    spec.loader.exec_module(module)
    return module


def test_the_generated_sync_files_are_current() -> None:
    generated = load_generator().generate()
    assert set(generated) == {
        "hooks.py",
        "client.py",
        "one_call.py",
        "connections.py",
        "sending.py",
        "pool.py",
    }
    for name, text in generated.items():
        committed = (ROOT / "transports/_sync" / name).read_text(encoding="utf-8")
        assert committed == text, f"{name}: run python tools/generate_sync.py"


def test_both_clients_have_the_same_public_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") or name in ("__aenter__", "__enter__")
        }

    async_methods = public(AsyncClient)
    sync_methods = public(SyncClient)
    coroutines = [n for n in async_methods if inspect.iscoroutinefunction(getattr(AsyncClient, n))]
    assert sorted(coroutines) == sorted(async_methods)
    async_methods["__enter__"] = async_methods.pop("__aenter__")
    assert async_methods == sync_methods
    assert not any(inspect.iscoroutinefunction(getattr(SyncClient, n)) for n in sync_methods)
