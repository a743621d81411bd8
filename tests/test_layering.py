"""The layers: utils/ imports neither datasets/ nor models/; tools import library modules, never main.py."""
import ast
import glob
import os

import pytest

from tests.conftest import ROOT


def imported_modules(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "utils", "*.py"))), ids=os.path.basename)
def test_utils_import_neither_datasets_nor_models(path):
    bad = [m for m in imported_modules(path) if m.split(".")[0] in ("datasets", "models")]
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "bench", "*.py"))
                                        + glob.glob(os.path.join(ROOT, "scripts", "*.py"))), ids=os.path.basename)
def test_tools_do_not_import_the_training_script(path):
    assert "main" not in list(imported_modules(path)), path
