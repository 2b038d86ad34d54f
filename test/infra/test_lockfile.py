"""The provider lock file is committed, so every init (CI's plan and apply, the tests) gets the same provider."""
from __future__ import annotations

import re
import subprocess  # nosec B404: git, a fixed executable, with fixed arguments
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lock_file_is_committed_and_pins_one_aws_provider_with_hashes():
    lock = ROOT / "tf" / ".terraform.lock.hcl"
    text = lock.read_text()
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "tf/.terraform.lock.hcl"],  # nosec B603 B607
                             cwd=ROOT, capture_output=True, text=True)
    assert tracked.returncode == 0, "tf/.terraform.lock.hcl must be committed (git add -f: .gitignore lists it)"
    providers = re.findall(r'provider "([^"]+)"', text)
    assert providers == ["registry.terraform.io/hashicorp/aws"]
    assert re.search(r'version\s+=\s+"5\.\d+\.\d+"', text)
    assert re.search(r'"h1:[A-Za-z0-9+/=]{44}"', text)
