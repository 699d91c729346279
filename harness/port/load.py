"""The user's two models: ``FILE.py:FACTORY`` imported from its own folder, the factory called with the user's
arguments, every layer's source line noted; the input shape and class count worked out.

A file is imported as a module of its own (two files both named ``model.py`` do not collide) with its folder
first on ``sys.path`` so that its siblings import; sibling modules of one folder are forgotten before the
other folder's file is imported, so a ``layers.py`` beside each file is that file's own.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import HarnessError, one_line

# Square image sizes tried when the input shape is not given: a model that runs at exactly one of them (or at the
# dataset's own size) has an unambiguous input.
PROBE_SIZES = tuple(range(4, 65))
PROBE_SEED = 0x90_27


@dataclass
class UserModel:
    """One side of the port: where it came from, how to make it, the instance made first, its lines.

    Attributes:
        side: the backend name, ``pytorch`` or ``mindspore``.
        target: ``FILE.py:FACTORY`` as given.
        path: the file.
        make: calls the factory with the user's arguments (a fresh model each call).
        model: the first model made.
        lines: ``id(layer) -> "file.py:12"`` for the layers of ``model``.
        support: the framework's port support (``harness.backend.PortSupport``).
        kwargs: the factory arguments it took.
    """

    side: str
    target: str
    path: Path
    make: Callable[[], Any]
    model: Any
    lines: dict[int, str]
    support: Any
    kwargs: dict[str, Any]

    @property
    def framework(self) -> str:
        """What the console calls the framework: ``torch`` or ``mindspore``."""
        return self.support.FRAMEWORK


def parse_target(text: str, flag: str) -> tuple[Path, str]:
    """``FILE.py:FACTORY`` -> (file, factory name); HarnessError naming the flag unless it is that."""
    path, sep, name = text.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise HarnessError(f"{flag} {text!r} is not FILE.py:FACTORY; pass the Python file and the function (or class) "
                           f"in it that returns the model, e.g. {flag} my_model.py:build")
    file = Path(path)
    if not file.is_file():
        raise HarnessError(f"{flag} {text!r}: {file} is not a file; pass the path of your model's .py file")
    return file, name


def parse_factory_args(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs: each value a Python literal (``10``, ``0.5``, ``'relu'``, ``(3, 32, 32)``), else the
    text itself (``act=relu``)."""
    found = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise HarnessError(f"--factory-args {item!r} is not KEY=VALUE with KEY an identifier; e.g. "
                               "--factory-args num_classes=10 width=16")
        try:
            found[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            found[key] = value
    return found


def _accepted(factory: Callable, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``factory`` takes (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: pass everything, its error says what it refused
        return dict(args)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(args)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {key: value for key, value in args.items() if key in names}


@contextlib.contextmanager
def _importing_from(folder: Path):
    """``folder`` first on sys.path while the block runs (its siblings import)."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _forget_siblings(folder: Path, before: set[str]) -> None:
    """Drop modules imported from ``folder`` since ``before`` from sys.modules: the next file's folder may have
    its own module of the same name (the loaded user module keeps its references). Only the PyTorch side's are
    dropped: MindSpore's graph compiler looks a cell's module up in sys.modules."""
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        if file and Path(file).resolve().parent == folder:
            del sys.modules[name]


def load_user_model(target: str, flag: str, side: str, support: Any, args: dict[str, Any],
                    forget_after: bool) -> UserModel:
    """Import ``target``'s file, call its factory once (noting each layer's line), and check the result.

    Args:
        target: ``FILE.py:FACTORY``.
        flag: the flag it came from, for messages.
        side: the backend name.
        support: the framework's port support.
        args: the factory arguments given (each factory gets the ones it takes).
        forget_after: drop the folder's sibling modules afterwards (the other file lives elsewhere).

    Raises:
        HarnessError: a malformed target, a file that does not import, no such factory, a factory that raises or
            returns something other than the framework's model, or arguments neither factory takes.
    """
    path, name = parse_target(target, flag)
    folder = path.resolve().parent
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    before = set(sys.modules)
    with _importing_from(folder):
        module_name = f"harness_port_{side}_{digest}_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered as any imported module is: MindSpore's graph compiler finds a construct's globals through
        # sys.modules[cls.__module__].
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - the user's file may raise anything while importing
            del sys.modules[module_name]
            raise HarnessError(f"{flag} {target}: importing {path.name} failed ({one_line(error, 300)}); run "
                               f"`python {path}` to see the whole traceback") from None
        factory = getattr(module, name, None)
        if not callable(factory):
            found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise HarnessError(f"{flag} {target}: {path.name} has no callable {name!r}; its own callables: "
                               f"{', '.join(found) or 'none'}")
        kwargs = _accepted(factory, args)

        def make() -> Any:
            with _importing_from(folder):
                return factory(**kwargs)

        try:
            with support.recording_lines(folder) as lines:
                model = factory(**kwargs)
        except Exception as error:  # noqa: BLE001 - the user's factory may raise anything
            raise HarnessError(f"{flag} {target}: {name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                               f"raised {one_line(error, 300)}") from None
    if not support.is_model(model):
        raise HarnessError(f"{flag} {target}: {name}() returned {type(model).__name__}, not a {support.MODEL_CLASS}; "
                           "the factory must return the model")
    if forget_after:
        _forget_siblings(folder, before | {module_name})
    return UserModel(side, target, path, make, model, lines, support, kwargs)


def check_args_used(args: dict[str, Any], models: list[UserModel]) -> None:
    """HarnessError for a factory argument that no factory takes (a typo would otherwise be dropped silently)."""
    taken = {key for user in models for key in user.kwargs}
    unused = sorted(set(args) - taken)
    if unused:
        raise HarnessError(f"--factory-args {', '.join(unused)}: neither factory takes "
                           f"{'it' if len(unused) == 1 else 'them'}; check the names")


def probe_batch(shape: tuple[int, ...], count: int = 2) -> np.ndarray:
    """A fixed batch of standard-normal float32 images of ``shape``."""
    return np.random.default_rng(PROBE_SEED).standard_normal((count, *shape)).astype(np.float32)


def infer_input_shape(user: UserModel, given: tuple[int, ...] | None, data_size: tuple[int, int] | None) -> \
        tuple[int, ...]:
    """The (C, H, W) the PyTorch model takes: ``given``, else worked out from the model.

    Channels are the first convolution's ``in_channels``; the size is the dataset's own where the model runs
    at it, else the one square size of ``PROBE_SIZES`` it runs at.

    Raises:
        HarnessError: the model does not say (no convolution, or several sizes run): pass --input-shape.
    """
    if given is not None:
        return given
    channels = _first_channels(user)
    if channels is None:
        raise HarnessError("cannot tell the input shape from the PyTorch model (it has no Conv2d to give the "
                           "channels); pass --input-shape C,H,W")
    sizes = ([data_size] if data_size else []) + [(s, s) for s in PROBE_SIZES]
    working = []
    for height, width in dict.fromkeys(sizes):
        _, logits, error = user.support.trace(user.model, np.zeros((1, channels, height, width), np.float32),
                                              keep_values=False)
        if error is None and logits is not None and logits.ndim == 2:
            if data_size and (height, width) == data_size:
                return (channels, height, width)
            working.append((height, width))
    if len(working) == 1:
        return (channels, *working[0])
    shown = ", ".join(f"{h}x{w}" for h, w in working[:6]) + (" ..." if len(working) > 6 else "")
    raise HarnessError(f"cannot tell the input shape from the PyTorch model: it runs on "
                       f"{shown or 'none of 4x4 to 64x64'}; pass --input-shape {channels},H,W")


def _first_channels(user: UserModel) -> int | None:
    """The in_channels of the first convolution defined in the model (the input's channels)."""
    for child in _children(user.model):
        channels = getattr(child, "in_channels", None)
        if isinstance(channels, int) and hasattr(child, "kernel_size"):
            return channels
    return None


def _children(model: Any) -> list:
    if hasattr(model, "modules"):
        return list(model.modules())
    return [cell for _, cell in model.cells_and_names()]


def source_digest(users: list[UserModel], extra: str) -> str:
    """A digest of both files' bytes, the factories, their arguments and ``extra``: the port's run folders are
    kept per digest, so an edited port is trained again (a changed sibling module needs --fresh)."""
    digest = hashlib.sha256(extra.encode())
    for user in users:
        digest.update(user.target.encode())
        digest.update(user.path.read_bytes())
    return digest.hexdigest()[:16]
