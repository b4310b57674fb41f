"""Layers run one way (issue 14): a worker that counts hits needs only `transforms/`.

    transforms/  imports libraries and itself
    stack/       the local stack: libraries and itself
    runners/     may import stack/
    pipelines/   may import transforms/ and runners/
    hitstream/   (CLI, dashboard, progress records, generator) may import any of them

Every import is checked, those inside functions included: a deferred import that only hides an arrow the wrong way
is still that arrow.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {
    "transforms": {"transforms"},
    "stack": {"stack"},
    "runners": {"runners", "stack"},
    "pipelines": {"pipelines", "transforms", "runners"},
    "hitstream": {"hitstream", "pipelines", "transforms", "runners", "stack"},
}


def imports(path: Path):
    """(line, imported module) for every absolute import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def wrong_way_arrows(root: Path = REPO) -> list:
    arrows = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in imports(path):
                target = module.split(".")[0]
                if target in ALLOWED and target not in allowed:
                    arrows.append(f"{path.relative_to(root)}:{line} imports {module}")
    return arrows


def test_every_layer_imports_only_the_layers_below_it():
    assert wrong_way_arrows() == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_the_layer_has_modules_to_check(layer):
    assert list((REPO / layer).rglob("*.py")), f"{layer}/ holds no module: the check would pass on nothing"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "read.py").write_text("def f():\n    from hitstream import progress\n")
    assert wrong_way_arrows(tmp_path) == ["transforms/read.py:2 imports hitstream"]
