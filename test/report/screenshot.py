"""Screenshot a written report in Debian's Chromium, as the browser test opens it (readme_files/report.png).

    totesys-etl demo            # or: totesys-etl report, on any loaded warehouse
    .venv/bin/python test/report/screenshot.py .local/report.html readme_files/report.png
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main(page_path: str, png_path: str, width: int = 1280, height: int = 1500) -> None:
    spec = importlib.util.spec_from_file_location("totesys_test_report_conftest", Path(__file__).parent /
                                                  "conftest.py")
    browser_kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(browser_kit)
    chromium = browser_kit.Chromium()
    try:
        page = chromium.page()
        page.open(Path(page_path).resolve().as_uri(), width=width, height=height)
        page.screenshot(Path(png_path), width=width, height=height)
        page.close()
    finally:
        chromium.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
