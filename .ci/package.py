"""Build the Lambda zips that tf/lambda.tf deploys: `function.zip` and `layer.zip`.

Why Python and not Terraform's archive provider: only the aws provider is available offline, and
a zip built here with fixed timestamps, modes and order, its entries stored uncompressed, has the
same bytes on every machine and under every Python, so `filebase64sha256()` changes only when the
code does (no spurious redeploys, no plan drift). Stored, not deflated: deflate's output depends on
the zlib each Python was built with, so a compressed zip could differ between two interpreters
(the layer is ~27 MB stored, well inside Lambda's 50 MB upload limit).

- `function.zip`: the `totesys_etl` package without the local runtime (`local/`, `bench/`) and the command
  line (`cli.py`, `__main__.py`): Lambda code never imports them (STYLE: the handlers know nothing
  of the local runtime).
- `layer.zip`, under `python/`:
  - `pycountry` (currency names), which the AWS SDK for pandas managed layer lacks (that layer
    ships pandas, pyarrow and pg8000). Its `locales/` (translations, ~20 MB) are left out: the
    pipeline uses English names only.
  - `boto3`, `botocore`, `s3transfer` and `jmespath`, at the versions requirements.txt pins and the
    tests run with. The managed layer leaves boto3 to the Lambda runtime, whose botocore may
    predate calls the code makes (CopyObject with `IfNoneMatch`, added late 2025); a layer comes
    before the runtime's own copy on `sys.path`. (`python-dateutil`, which botocore accepts in a
    wide range, comes from the runtime.)
  - `urllib3`, which the FX rates client imports (fx/client.py), at the pinned, tested version too.
  - `pgpq`, the loader's binary COPY encoder (load/files.py): native code, but one `abi3` build for
    every CPython from 3.10 on x86_64 Linux (Lambda's architecture, tf/lambda.tf), so the layer's
    bytes still do not depend on the Python that builds it.
  Copied from the installed, pinned distributions, so no network is needed.
- With `--ca-bundle FILE` (or `RDS_CA_BUNDLE=FILE` in the environment, which `make package` passes
  through), `function.zip` also carries FILE as `totesys_etl/certs/rds-ca-bundle.pem`: the CA
  certificates a connection with `sslmode` verify-full or verify-ca trusts besides the system's
  (adapters/postgres.py). Lambda's system store lacks the RDS CAs, and nothing is downloaded at
  run time: CI fetches AWS's bundle before it builds (readme_files/deployment.md has the step). Of each
  `.dist-info` only what describes the release (METADATA, licences, top_level.txt) is kept: RECORD
  and INSTALLER describe this machine's install (its Python's .pyc names), so they would make the
  bytes depend on the Python that built the zip.

Usage: `python .ci/package.py [--out DIR] [--ca-bundle FILE]` (default `build/`); prints the two paths.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import ssl
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "src" / "totesys_etl"

#: Parts of the package that only the local runtime and the command line use.
FUNCTION_EXCLUDES = ("local/", "bench/", "cli.py", "__main__.py")
#: Distributions the layer carries (see above); each must be installed (`make requirements`).
LAYER_DISTRIBUTIONS = ("pycountry", "boto3", "botocore", "s3transfer", "jmespath", "urllib3", "pgpq")
#: Parts of pycountry that the pipeline never reads.
LAYER_EXCLUDES = ("pycountry/locales/", "pycountry/tests/")
#: Files of a `.dist-info` that describe this machine's install rather than the release.
INSTALL_RECORDS = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
#: Zip's earliest representable time: every entry gets it, so the bytes do not depend on mtimes.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _skipped(relative: str, excludes: tuple[str, ...]) -> bool:
    parts = PurePosixPath(relative).parts
    return ("__pycache__" in parts or relative.endswith((".pyc", ".pyo"))
            or any(relative == e or relative.startswith(e) for e in excludes))


def write_zip(target: Path, entries: dict[str, Path]) -> Path:
    """Write `entries` (archive name -> file) in sorted order with fixed times and modes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, so the mode above is honoured everywhere
            archive.writestr(info, entries[name].read_bytes())
    partial.replace(target)
    return target


def function_entries() -> dict[str, Path]:
    entries = {}
    for path in PACKAGE_DIR.rglob("*"):
        relative = path.relative_to(PACKAGE_DIR).as_posix()
        if path.is_file() and not _skipped(relative, FUNCTION_EXCLUDES):
            entries[f"totesys_etl/{relative}"] = path
    if "totesys_etl/__init__.py" not in entries:
        raise SystemExit(f"package.py: no package at {PACKAGE_DIR}")
    return entries


def layer_entries() -> dict[str, Path]:
    entries = {}
    for name in LAYER_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"package.py: {name} is not installed in this interpreter (run `make requirements`)")
        for file in dist.files or ():
            relative = PurePosixPath(file)
            path = Path(dist.locate_file(file))
            if (".." in relative.parts or not path.is_file()  # scripts installed outside site-packages
                    or (relative.parts[0].endswith(".dist-info") and relative.name in INSTALL_RECORDS)
                    or _skipped(relative.as_posix(), LAYER_EXCLUDES)):
                continue
            entries[f"python/{relative.as_posix()}"] = path
    return entries


#: Where the function zip carries a CA bundle (adapters/postgres.py looks there).
CA_BUNDLE_ENTRY = "totesys_etl/certs/rds-ca-bundle.pem"


def checked_ca_bundle(path: Path) -> Path:
    """`path`, once it is known to hold PEM CA certificates (a download error page must not ship)."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as e:
        raise SystemExit(f"package.py: {path} is not a PEM CA bundle ({e})")
    return path


def build(out: Path, ca_bundle: Path | None = None) -> tuple[Path, Path]:
    """Build both zips into `out`, the function's with `ca_bundle` if given; returns (function zip, layer zip)."""
    out = out.resolve()
    function = function_entries()
    if ca_bundle is not None:
        function[CA_BUNDLE_ENTRY] = checked_ca_bundle(ca_bundle)
    return (write_zip(out / "function.zip", function),
            write_zip(out / "layer.zip", layer_entries()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Lambda function and layer zips.")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="output folder (default: build/)")
    parser.add_argument("--ca-bundle", type=Path, default=os.environ.get("RDS_CA_BUNDLE") or None,
                        help="PEM CA bundle to ship for sslmode verify-full (default: $RDS_CA_BUNDLE)")
    args = parser.parse_args(argv)
    for path in build(args.out, args.ca_bundle):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
