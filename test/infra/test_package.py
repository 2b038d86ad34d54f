"""The Lambda zips of .ci/package.py: what goes in, and the same bytes on every build."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def package():
    spec = importlib.util.spec_from_file_location("ci_package", ROOT / ".ci" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_function_zip_holds_the_package_without_the_local_runtime(package, tmp_path):
    function_zip, _ = package.build(tmp_path)
    names = zipfile.ZipFile(function_zip).namelist()
    assert "totesys_etl/__init__.py" in names and "totesys_etl/schema/warehouse.py" in names
    assert not [n for n in names if n.startswith("totesys_etl/local/") or "__pycache__" in n or n.endswith(".pyc")]
    assert "totesys_etl/cli.py" not in names and "totesys_etl/__main__.py" not in names
    assert names == sorted(names)


def test_layer_zip_holds_pycountry_under_python(package, tmp_path):
    _, layer_zip = package.build(tmp_path)
    with zipfile.ZipFile(layer_zip) as archive:
        names = archive.namelist()
        assert "python/pycountry/__init__.py" in names
        assert b'"Pound Sterling"' in archive.read("python/pycountry/databases/iso4217.json")
    assert not [n for n in names if "/locales/" in n or "/tests/" in n]


def test_builds_are_byte_identical_with_fixed_times_and_modes(package, tmp_path):
    first = [p.read_bytes() for p in package.build(tmp_path / "a")]
    second = [p.read_bytes() for p in package.build(tmp_path / "b")]
    assert first == second
    info = zipfile.ZipFile(tmp_path / "a" / "function.zip").infolist()
    assert {i.date_time for i in info} == {package.FIXED_TIME}  # file mtimes never reach the archive
    assert {i.external_attr >> 16 for i in info} == {0o100644}


def test_main_writes_to_the_folder_given(package, tmp_path, capsys):
    assert package.main(["--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["function.zip", "layer.zip"]
    assert str(tmp_path / "out" / "function.zip") in capsys.readouterr().out
