"""The layering the README promises, checked on the code's own imports (every import statement,
also those inside functions): flows -> tasks -> models -> configs -> storage, never upward, no
import circles, models/ never imports prefect, storage/ never imports prefect or torch; and every
module imports on its own (a circle hidden by import order fails only for some first import)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "models", "configs", "storage")  # top to bottom
RANK = {p: i for i, p in enumerate(reversed(PACKAGES))}  # storage 0 ... flows 4
# inside models/, by role, bottom to top: the IC-LoRA model knows nothing of the judge; the judge
# knows nothing of the layer tasks (what every task shares); a task (models/domains/<task>/) builds
# on both; the round and pretraining use all of them
MODELS_RANK = {"iclora": 0, "judge": 1, "domains": 2, "loop": 3, "pretrain": 3}
FORBIDDEN = {"models": ("prefect",), "storage": ("prefect", "torch"), "configs": ("prefect", "torch")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in `path` names (the project uses absolute imports only)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: relative import; name the module in full"
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def project_graph() -> dict[str, set[str]]:
    return {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_the_graph_sees_the_known_edges():
    graph = project_graph()
    assert len(MODULES) > 50
    assert "flows.cli.common" in graph["flows.cli.rounds"] and "flows.cli.judge" in graph["flows.cli"]
    assert "storage.overrides" in graph["storage.store"]


def test_imports_only_point_down_and_models_storage_stay_free_of_prefect_and_torch():
    upward, forbidden = [], []
    for m, p in MODULES.items():
        top = m.split(".")[0]
        for i in imports_of(p):
            other = i.split(".")[0]
            if other in RANK and RANK[other] > RANK[top]:
                upward.append(f"{m} imports {i}")
            if top == other == "models" and len(m.split(".")) > 2 and len(i.split(".")) > 1:
                here, there = m.split(".")[1], i.split(".")[1]
                if there in MODELS_RANK and here in MODELS_RANK and (
                        MODELS_RANK[there] > MODELS_RANK[here] or (MODELS_RANK[there] == MODELS_RANK[here] and there != here)):
                    upward.append(f"{m} imports {i}")
            if other in FORBIDDEN.get(top, ()):
                forbidden.append(f"{m} imports {i}")
    assert not upward, upward
    assert not forbidden, forbidden


def test_no_import_circles():
    graph = project_graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def test_every_module_imports_on_its_own():
    """One interpreter; before each module, every project module is dropped from sys.modules, so
    each is imported first, as a user's `python -c "import flows.cli.judge"` would."""
    script = f"""
import importlib, sys, traceback
failed = []
for name in {sorted(MODULES)!r}:
    for loaded in [k for k in sys.modules if k.split(".")[0] in {PACKAGES!r}]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=1).strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize("bad", ["cycle", "upward", "upward_in_models"])
def test_the_checks_catch_what_they_look_for(bad, monkeypatch):
    """The two graph checks fail on a graph that has the fault (so a pass means something)."""
    real = imports_of
    extra = {"cycle": ("storage.hashing", "storage.store"), "upward": ("storage.hashing", "flows.cli"),
             "upward_in_models": ("models.iclora.grid", "models.judge.base")}[bad]
    monkeypatch.setattr(sys.modules[__name__], "imports_of",
                        lambda p: real(p) | ({extra[1]} if module_name(p) == extra[0] else set()))
    check = test_no_import_circles if bad == "cycle" else test_imports_only_point_down_and_models_storage_stay_free_of_prefect_and_torch
    with pytest.raises(AssertionError):
        check()


def test_every_import_inside_functions_names_something_that_exists():
    """Imports inside functions (kept there so `--help` stays fast) run only when their command
    does: a renamed or moved name must fail here, not in a user's hands."""
    import importlib

    missing = []
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in PACKAGES:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in MODULES:
                        missing.append(f"{m}:{node.lineno} imports {alias.name} from {node.module}, which has none")
    assert not missing, missing
