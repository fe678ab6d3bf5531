"""The architecture rules that keep nnx portable: nothing in nnx/ imports a concrete array library (rule 1),
and every public name is documented."""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest

import nnx
import nnx.functional
import nnx.init
import nnx.optim
import nnx_backends as backends
from nnx.optim import lr_scheduler

ROOT = pathlib.Path(__file__).resolve().parent.parent
NNX_FILES = sorted((ROOT / "nnx").rglob("*.py"))
BANNED = {"numpy", "cupy", "cupyx", "torch"}
IMPORTERS = {"import_module", "__import__"}  # importlib.import_module("numpy"), __import__("torch")


def banned_imports(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, module) for every import of a banned library anywhere in ``source`` (functions included)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in BANNED]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in BANNED:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if name in IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and node.args[0].value.split(".")[0] in BANNED:
                found.append((node.lineno, node.args[0].value))
    return found


def test_the_scanner_catches_every_form():
    src = """
import os
import numpy as np
import numpy.linalg
from torch import nn
from cupyx.scipy import special
def f():
    import cupy
    from numpy.lib import stride_tricks
    importlib.import_module("torch.nn")
    return __import__("cupyx")
from . import numpy_helpers
from .numpy import x
import numpyish
"""
    assert [m for _, m in banned_imports(src)] == [
        "numpy", "numpy.linalg", "torch", "cupyx.scipy", "cupy", "numpy.lib", "torch.nn", "cupyx"]


def test_nnx_files_exist():
    names = {p.relative_to(ROOT).as_posix() for p in NNX_FILES}
    assert {"nnx/__init__.py", "nnx/module.py", "nnx/functional/linear.py", "nnx/optim/sgd.py"} <= names


@pytest.mark.parametrize("path", NNX_FILES, ids=[p.relative_to(ROOT).as_posix() for p in NNX_FILES])
def test_no_array_library_imports_in_nnx(path):
    found = banned_imports(path.read_text(), str(path))
    assert not found, (f"{path.relative_to(ROOT)} imports {', '.join(f'{m} (line {n})' for n, m in found)}; "
                       "nnx/ must use the Array API namespace from backends.backend_of(x).xp or a backend adapter "
                       "method (backends/base.py) instead")


def _public(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(module, n)
        home = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
        if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj):
            if home.split(".")[0] in ("nnx", "nnx_backends"):
                out.append((f"{module.__name__}.{n}", obj))
    return out


PUBLIC = [item for mod in (nnx, nnx.functional, nnx.optim, lr_scheduler, nnx.init, backends) for item in _public(mod)]


def test_public_api_is_not_empty():
    names = {n for n, _ in PUBLIC}
    for expected in ("nnx.Linear", "nnx.CrossEntropyLoss", "nnx.optim.Adam", "nnx.functional.gelu_forward",
                     "nnx.optim.lr_scheduler.CosineAnnealingLR", "nnx.init.kaiming_uniform_", "nnx_backends.register"):
        assert expected in names
    assert set(nnx.__all__) <= set(dir(nnx)), "every name in nnx.__all__ exists"


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_name_has_docstring(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.strip()) >= 10, f"{name} has no docstring"


CORE_CLASSES = [nnx.Module, nnx.Parameter, nnx.Sequential, nnx.ModuleList, nnx.ModuleDict, nnx.optim.Optimizer,
                *[getattr(lr_scheduler, n) for n in ("LRScheduler", "LambdaLR", "StepLR", "MultiStepLR",
                                                      "ExponentialLR", "CosineAnnealingLR", "LinearLR",
                                                      "SequentialLR", "ReduceLROnPlateau")]]


@pytest.mark.parametrize("cls", CORE_CLASSES, ids=[c.__name__ for c in CORE_CLASSES])
def test_core_classes_public_methods_documented(cls):
    """Every public method and property of the classes users touch in every program (inherited documentation
    counts)."""
    missing = [name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name, None))
               or isinstance(inspect.getattr_static(cls, name, None), property)]
    missing = [name for name in missing if not name.startswith("_") and not inspect.getdoc(getattr(cls, name))]
    assert not missing, f"{cls.__name__}: undocumented {missing}"


# ----------------------------------------------------------------------------- the public contract: torch's signatures
_NN = ["Linear", "Identity", "Flatten", "Dropout", "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Mish", "Softplus",
       "Hardtanh", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss",
       "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss"]
_OPTIM = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]
_SCHED = ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "SequentialLR", "LambdaLR",
          "ReduceLROnPlateau"]
#: deliberate differences, documented in the docstrings: nnx's backend argument; Softmax's dim defaults to the
#: last axis where torch guesses it (with a deprecation warning)
_NNX_ONLY = {"backend"}
_DIFFERENT_DEFAULTS = {("Softmax", "dim"), ("LogSoftmax", "dim")}


def _signature_pairs(torch):
    pairs = [(getattr(nnx, n), getattr(torch.nn, n)) for n in _NN]
    pairs += [(getattr(nnx.optim, n), getattr(torch.optim, n)) for n in _OPTIM]
    pairs += [(getattr(lr_scheduler, n), getattr(torch.optim.lr_scheduler, n)) for n in _SCHED]
    pairs += [(nnx.clip_grad_norm_, torch.nn.utils.clip_grad_norm_),
              (nnx.clip_grad_value_, torch.nn.utils.clip_grad_value_)]
    return pairs


def test_argument_names_and_defaults_match_torch(torch):
    problems = []
    for ours, theirs in _signature_pairs(torch):
        sig, tsig = inspect.signature(ours), inspect.signature(theirs)
        for name, p in sig.parameters.items():
            if name in _NNX_ONLY or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if name not in tsig.parameters:
                problems.append(f"{ours.__name__}: argument {name!r} is not torch's")
            elif p.default != tsig.parameters[name].default and (ours.__name__, name) not in _DIFFERENT_DEFAULTS:
                problems.append(f"{ours.__name__}({name}=...): default {p.default!r}, torch "
                                f"{tsig.parameters[name].default!r}")
    assert not problems, "\n".join(problems)


def test_a_users_own_backends_folder_does_not_shadow_the_adapters(tmp_path):
    """The adapters install as ``nnx_backends``: a project with its own ``backends/`` still imports nnx."""
    import subprocess
    import sys

    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "__init__.py").write_text("raise ImportError('the user project backends/ was imported')\n")
    code = "import nnx; print(nnx.available_backends()['numpy'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def _module_level_imports(path, modname):
    """Intra-package modules imported at module level (not under ``if TYPE_CHECKING``, not in functions)."""
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read())
    is_pkg = path.endswith("__init__.py")
    parts = modname.split(".")
    base = parts if is_pkg else parts[:-1]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            anchor = base[:len(base) - (node.level - 1)]
            target = ".".join(anchor + ([node.module] if node.module else []))
            names = [target] + [f"{target}.{a.name}" for a in node.names]
            out.update(names)
    return out


def test_the_package_has_no_import_cycle():
    """Imports read as a hierarchy: no module of nnx imports (at module level) one that imports it back."""
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nnx")
    modules = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(root))[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
    graph = {m: {t for t in _module_level_imports(p, m) if t in modules and t != m} for m, p in modules.items()}
    # a package's __init__ re-exports its children: edges into a package are not a hierarchy violation
    graph = {m: {t for t in ts if not modules[t].endswith("__init__.py")} for m, ts in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


MAX_LINES = 600
SOURCE_FILES = sorted([*NNX_FILES, *(ROOT / "backends").rglob("*.py")])


def test_no_source_file_over_the_line_budget():
    """One family per file: no module of nnx/ or backends/ grows past MAX_LINES lines."""
    over = {p.relative_to(ROOT).as_posix(): n for p in SOURCE_FILES
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not over, f"files over {MAX_LINES} lines (split them by family): {over}"
