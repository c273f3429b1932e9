#!/usr/bin/env bash
# Bundles the GPU check and benchmark for the GPU machine (it has no Node.js or npm): .device/ holds
# a compressed node binary (../shared/device/pack.sh), .gpu/ the bundled script, koffi and the
# fixture. Carry both with the command, which starts with `source .device/boot.sh &&`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/device/pack.sh >/dev/null
grep -qxF '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/node_modules .gpu/fixtures
cp -r node_modules/koffi node_modules/@koromix node_modules/@resvg .gpu/node_modules/
cp -r ../shared/fixtures/tnl-ref-small .gpu/fixtures/
node_modules/esbuild/bin/esbuild scripts/gpu-check.ts --bundle --platform=node --format=esm --log-level=warning \
  --outfile=.gpu/gpu-check.mjs --external:koffi --external:@resvg/resvg-js \
  --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
du -sh .device .gpu
