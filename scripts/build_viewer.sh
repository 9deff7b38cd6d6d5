#!/usr/bin/env bash
# Rebuilds the vendored viewer bundle tf_facetex/viewer/facetex_viewer.js from tf_facetex/viewer/src/viewer.mjs and
# three.js (npm, MIT; its licence is copied beside the bundle). Only maintainers need this: the bundle is committed
# and the product never downloads anything. Uses the npm tools of scripts/install_tools.sh npm.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TF_FACETEX_TOOLS:-$HOME/.cache/tf_facetex}"
bash "$ROOT/scripts/install_tools.sh" npm
NODE_MODULES="$TOOLS/npm/node_modules"
VERSION=$(node -p "require('$NODE_MODULES/three/package.json').version")
NODE_PATH="$NODE_MODULES" "$NODE_MODULES/.bin/esbuild" "$ROOT/tf_facetex/viewer/src/viewer.mjs" \
  --bundle --minify --format=iife --target=es2020 --legal-comments=none \
  --banner:js="/* tf_facetex viewer + three.js ${VERSION} (MIT, see LICENSE.three.txt) */" \
  --outfile="$ROOT/tf_facetex/viewer/facetex_viewer.js"
cp "$NODE_MODULES/three/LICENSE" "$ROOT/tf_facetex/viewer/LICENSE.three.txt"
ls -l "$ROOT/tf_facetex/viewer/facetex_viewer.js"
