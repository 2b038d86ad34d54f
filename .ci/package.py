"""Build the Lambda zips that tf/lambda.tf deploys: `function.zip` and `layer.zip`.

Why Python and not Terraform's archive provider: only the aws provider is available offline, and
a zip built here with fixed timestamps, modes and order has the same bytes on every machine, so
`filebase64sha256()` changes only when the code does (no spurious redeploys, no plan drift).

- `function.zip`: the `totesys_etl` package without the local runtime (`local/`) and the command
  line (`cli.py`, `__main__.py`): Lambda code never imports them (STYLE: the handlers know nothing
  of the local runtime).
- `layer.zip`: `python/pycountry` (currency names), the one runtime package the AWS SDK for pandas
  managed layer lacks (that layer ships pandas, pyarrow, awswrangler and pg8000; the runtime ships
  boto3). Copied from the installed, pinned distribution, so no network is needed. Its `locales/`
  (translations, ~20 MB) are left out: the pipeline uses English names only.

Usage: `python .ci/package.py [--out DIR]` (default `build/`); prints the two paths.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "src" / "totesys_etl"

#: Parts of the package that only the local runtime and the command line use.
FUNCTION_EXCLUDES = ("local/", "cli.py", "__main__.py")
#: Parts of pycountry that the pipeline never reads.
LAYER_EXCLUDES = ("pycountry/locales/", "pycountry/tests/")
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
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, so the mode above is honoured everywhere
            archive.writestr(info, entries[name].read_bytes(), compresslevel=9)
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
    dist = importlib.metadata.distribution("pycountry")
    entries = {}
    for file in dist.files or ():
        relative = PurePosixPath(file).as_posix()
        path = Path(dist.locate_file(file))
        if path.is_file() and not _skipped(relative, LAYER_EXCLUDES):
            entries[f"python/{relative}"] = path
    if "python/pycountry/__init__.py" not in entries:
        raise SystemExit("package.py: pycountry is not installed in this interpreter (run `make requirements`)")
    return entries


def build(out: Path) -> tuple[Path, Path]:
    """Build both zips into `out`; returns (function zip, layer zip)."""
    out = out.resolve()
    return (write_zip(out / "function.zip", function_entries()),
            write_zip(out / "layer.zip", layer_entries()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Lambda function and layer zips.")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="output folder (default: build/)")
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
