"""The Lambda zips of .ci/package.py: what goes in, and the same bytes on every build."""
from __future__ import annotations

import importlib.metadata
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
    assert not [n for n in names if n.startswith(("totesys_etl/local/", "totesys_etl/bench/")) or "__pycache__" in n
                or n.endswith(".pyc")]
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
    assert {i.compress_type for i in info} == {zipfile.ZIP_STORED}  # no zlib version in the bytes


def test_main_writes_to_the_folder_given(package, tmp_path, capsys):
    assert package.main(["--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["function.zip", "layer.zip"]
    assert str(tmp_path / "out" / "function.zip") in capsys.readouterr().out


def _layer_versions(layer_zip: Path) -> dict[str, str]:
    """Distribution name -> version, read from the METADATA files in the layer."""
    versions = {}
    with zipfile.ZipFile(layer_zip) as archive:
        for name in archive.namelist():
            if name.endswith(".dist-info/METADATA"):
                headers = dict(line.split(": ", 1) for line in archive.read(name).decode().splitlines()
                               if ": " in line and not line.startswith(" "))
                versions[headers["Name"].lower()] = headers["Version"]
    return versions


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[name.lower()] = version
    return pins


def test_layer_ships_the_sdk_the_tests_ran_with(package, tmp_path):
    """Lambda's runtime boto3 may predate calls the code makes (CopyObject with IfNoneMatch, late 2025):
    the layer carries boto3, botocore, s3transfer and jmespath at the versions pinned and tested here."""
    _, layer_zip = package.build(tmp_path)
    shipped = _layer_versions(layer_zip)
    for dist in ("boto3", "botocore", "s3transfer", "jmespath", "pycountry", "urllib3", "pgpq"):
        assert shipped.get(dist) == importlib.metadata.version(dist) == _pins()[dist], dist
    names = zipfile.ZipFile(layer_zip).namelist()
    assert "python/botocore/data/s3/2006-03-01/service-2.json.gz" in names
    assert "python/boto3/__init__.py" in names and "python/s3transfer/__init__.py" in names


def test_layer_names_no_interpreter_so_every_python_builds_the_same_bytes(package, tmp_path):
    """An installed distribution's RECORD lists its .pyc files (cpython-311 or -312) and scripts outside
    site-packages: none of that may reach the layer, or its bytes depend on the Python that built it."""
    _, layer_zip = package.build(tmp_path)
    names = zipfile.ZipFile(layer_zip).namelist()
    assert all(n.startswith("python/") and ".." not in n.split("/") for n in names)
    assert not [n for n in names if n.endswith(("/RECORD", "/INSTALLER", "/REQUESTED", "/direct_url.json"))
                or "cpython" in n or n.endswith((".pyc", ".pyo"))]


def test_a_ca_bundle_given_is_shipped_where_postgres_looks(package, tmp_path):
    """verify-full needs the RDS CAs, which Lambda's system store lacks: the build ships the bundle given."""
    import certifi  # a real PEM CA bundle to stand in for the one CI downloads from AWS

    function_zip, _ = package.build(tmp_path, ca_bundle=Path(certifi.where()))
    with zipfile.ZipFile(function_zip) as archive:
        assert archive.read(package.CA_BUNDLE_ENTRY) == Path(certifi.where()).read_bytes()
    from totesys_etl.adapters import postgres
    assert postgres.CA_BUNDLE.relative_to(ROOT / "src").as_posix() == package.CA_BUNDLE_ENTRY


def test_a_file_that_is_not_a_ca_bundle_is_refused(package, tmp_path):
    page = tmp_path / "bundle.pem"
    page.write_text("<html>403 Forbidden</html>")  # what a failed download leaves
    with pytest.raises(SystemExit, match="not a PEM CA bundle"):
        package.build(tmp_path / "out", ca_bundle=page)
    assert not (tmp_path / "out" / "function.zip").exists()


def test_main_reads_the_bundle_from_the_environment(package, tmp_path, monkeypatch):
    import certifi

    monkeypatch.setenv("RDS_CA_BUNDLE", certifi.where())
    assert package.main(["--out", str(tmp_path)]) == 0
    assert package.CA_BUNDLE_ENTRY in zipfile.ZipFile(tmp_path / "function.zip").namelist()
