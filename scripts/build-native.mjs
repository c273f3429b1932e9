// Builds the native CPU kernels (native/*.cc → build/Release/tnl_cpu.node) with node-gyp.
// The package's `install` script and `npm run build:native` (which passes --force).
// - Never downloads Node headers: passes --nodedir=<prefix of node> when its headers are there.
// - Skips the build when the addon is newer than every native source (unless --force).
// - A failed build prints one line and exits 0: the slower reference backend is used instead.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');
const addon = join(root, 'build', 'Release', 'tnl_cpu.node');

function newestSource() {
  let t = statSync(join(root, 'binding.gyp')).mtimeMs;
  const dir = join(root, 'native');
  for (const f of readdirSync(dir)) if (/\.(cc|h)$/.test(f)) t = Math.max(t, statSync(join(dir, f)).mtimeMs);
  return t;
}

function main() {
  if (!existsSync(join(root, 'binding.gyp')) || !existsSync(join(root, 'native'))) return;
  if (!force && existsSync(addon) && statSync(addon).mtimeMs > newestSource()) {
    if (!quiet) console.log('tnl: native CPU kernels are up to date (build/Release/tnl_cpu.node)');
    return;
  }
  let gyp;
  try {
    gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    console.warn('tnl: native CPU kernels not built (node-gyp is not installed): the slower reference backend will be used');
    return;
  }
  const args = [gyp, 'rebuild', '-j', '2'];
  const env = { ...process.env };
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
    // Node's own headers: never let node-gyp try to download them (there may be no network).
    args.push(`--nodedir=${prefix}`);
    env.npm_config_nodedir = prefix;
  }
  const t0 = Date.now();
  const r = spawnSync(process.execPath, args, {
    cwd: root,
    env,
    stdio: quiet ? ['ignore', 'ignore', 'pipe'] : ['ignore', 'inherit', 'pipe'],
    encoding: 'utf8',
  });
  const stderr = r.stderr ?? '';
  if (r.status === 0 && existsSync(addon)) {
    if (!quiet) console.log(`tnl: native CPU kernels built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return;
  }
  if (!quiet) process.stderr.write(stderr);
  const why = r.error ? r.error.message
    : (stderr.split('\n').find((l) => /error/i.test(l) && !/gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l)) ?? `node-gyp exited with ${r.status}`).trim();
  console.warn(`tnl: native CPU kernels failed to build (${why.slice(0, 200)}): the slower reference backend will be used`);
}

try {
  main();
} catch (e) {
  console.warn(`tnl: native CPU kernels not built (${e instanceof Error ? e.message : e}): the slower reference backend will be used`);
}
process.exit(0);
