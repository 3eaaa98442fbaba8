#!/usr/bin/env bash
# Installs and builds what Shale needs to run, on Debian 12 with Node.js >= 20, as root:
# pnpm (through corepack, else npx), the npm dependencies, and the build. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

node -e 'const major = Number(process.versions.node.split(".")[0]);
  if (major < 20) { console.error(`shale needs Node.js >= 20; this is ${process.version}`); process.exit(1); }'

PNPM_VERSION=$(node -p 'require("./package.json").packageManager.split("@")[1]')
# The registry reachable here serves no signing keys corepack can check; pnpm's own
# integrity hashes (in the lockfile) still guard every dependency.
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
pnpm() {
  if command -v corepack >/dev/null 2>&1; then corepack pnpm "$@"; else npx -y "pnpm@$PNPM_VERSION" "$@"; fi
}

echo "setup: pnpm $(pnpm --version), node $(node --version)"
CI=true pnpm install --frozen-lockfile
pnpm run build
echo "setup: built; ./bin/shale --help lists the commands"
