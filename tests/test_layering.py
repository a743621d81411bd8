"""The layers, as the package docstrings state them:

- utils/ (run machinery) imports none of datasets/, models/, glmc/;
- glmc/ (the method) imports neither datasets/ nor models/, and from utils/ only errors, the
  forward pass's precision setting and the per-class weights;
- models/ and datasets/ never import glmc/, nor each other;
- tools (scripts/, bench/) import library modules, never main.py.
"""
import ast
import glob
import os

import pytest

from tests.conftest import ROOT

GLMC_MAY_USE = {"utils.errors", "utils.speed", "utils.class_weights"}


def imported_modules(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def package_files(package):
    paths = sorted(glob.glob(os.path.join(ROOT, package, "*.py")))
    assert paths, f"no modules in {package}/"
    return paths


def forbidden_imports(path, packages):
    return [m for m in imported_modules(path) if m.split(".")[0] in packages]


@pytest.mark.parametrize("path", package_files("utils"), ids=os.path.basename)
def test_utils_import_no_library_package(path):
    assert not forbidden_imports(path, {"datasets", "models", "glmc"}), path


@pytest.mark.parametrize("path", package_files("glmc"), ids=os.path.basename)
def test_the_method_imports_no_data_no_network_and_little_machinery(path):
    assert not forbidden_imports(path, {"datasets", "models"}), path
    machinery = {m for m in imported_modules(path) if m.split(".")[0] == "utils"}
    assert machinery <= GLMC_MAY_USE, f"{path} imports {sorted(machinery - GLMC_MAY_USE)}"


@pytest.mark.parametrize("path", package_files("models"), ids=os.path.basename)
def test_models_import_neither_the_method_nor_the_data(path):
    assert not forbidden_imports(path, {"glmc", "datasets"}), path


@pytest.mark.parametrize("path", package_files("datasets"), ids=os.path.basename)
def test_datasets_import_neither_the_method_nor_the_networks(path):
    assert not forbidden_imports(path, {"glmc", "models"}), path


@pytest.mark.parametrize("path", package_files("bench") + package_files("scripts"), ids=os.path.basename)
def test_tools_do_not_import_the_training_script(path):
    assert "main" not in list(imported_modules(path)), path
