#!/usr/bin/env node
// Builds the native addon with cmake-js (CMakeLists.txt is the only build description).
// Runs as the package's "install" script. LibTorch is looked for in this order:
//   1. LIBTORCH or Torch_DIR in the environment
//   2. a Python torch install (torch.utils.cmake_prefix_path)
//   3. the system (Debian/Ubuntu libtorch-dev)
// When none is found and we run as root on Debian/Ubuntu, libtorch-dev is installed with apt
// (and said so); otherwise the script stops with what to do.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const force = process.argv.includes('--force');
// GAINRAG_BUILD_DIR lets several checkouts of work share one tree (the loader honours
// GAINRAG_ADDON to pick the result).
const buildDir = path.resolve(root, process.env.GAINRAG_BUILD_DIR || 'build');
const log = (msg) => process.stderr.write(`gainrag: ${msg}\n`);

const DEBIAN_TORCH = '/usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake';
const DEBIAN_TORCH_ARM = '/usr/lib/aarch64-linux-gnu/cmake/Torch/TorchConfig.cmake';

function pythonTorchPrefix() {
  for (const py of ['python3', 'python']) {
    const r = spawnSync(py, ['-c', 'import torch.utils; print(torch.utils.cmake_prefix_path)'], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return null;
}

function isDebianLike() {
  return existsSync('/etc/debian_version');
}

function dpkgInstalled(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

function aptInstall(pkgs) {
  log(`installing ${pkgs.join(' ')} with apt-get (LibTorch for the native engine)`);
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', ...pkgs], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

function findTorch() {
  if (process.env.LIBTORCH) return { source: `LIBTORCH=${process.env.LIBTORCH}` };
  if (process.env.Torch_DIR) return { source: `Torch_DIR=${process.env.Torch_DIR}` };
  const py = pythonTorchPrefix();
  if (py) return { source: `python torch (${py})` };
  if (existsSync(DEBIAN_TORCH) || existsSync(DEBIAN_TORCH_ARM)) return { source: 'system libtorch-dev', debian: true };
  return null;
}

function ensureTorch() {
  let torch = findTorch();
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!torch) {
    if (isDebianLike() && isRoot) {
      aptInstall(['libtorch-dev', 'libopenblas0-pthread']);
      torch = findTorch();
    }
    if (!torch) {
      throw new Error(
        'LibTorch not found. Do one of:\n' +
          '  - set LIBTORCH=/path/to/libtorch (an unpacked LibTorch) or Torch_DIR=/path/to/share/cmake/Torch\n' +
          '  - pip install torch (for the python3 on PATH)\n' +
          '  - on Debian/Ubuntu: sudo apt-get install libtorch-dev libopenblas0-pthread\n' +
          'then run `npm rebuild gainrag` (or `npm run build:native`).',
      );
    }
  }
  // Debian's LibTorch calls the generic libblas.so.3; without OpenBLAS behind it matrix
  // products run ~40x slower.
  if (torch.debian && !dpkgInstalled('libopenblas0-pthread')) {
    if (isRoot) aptInstall(['libopenblas0-pthread']);
    else log('warning: libopenblas0-pthread is not installed; CPU matrix products will be ~40x slower (sudo apt-get install libopenblas0-pthread)');
  }
  return torch;
}

function newestMtime(dir) {
  // An installed package has no test/ (package.json `files`): a missing directory is no source.
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function upToDate() {
  const out = path.join(buildDir, 'Release', 'gainrag.node');
  if (!existsSync(out)) return false;
  const built = statSync(out).mtimeMs;
  const sources = Math.max(newestMtime(path.join(root, 'native')), newestMtime(path.join(root, 'bindings')),
    newestMtime(path.join(root, 'test', 'native')),
    statSync(path.join(root, 'CMakeLists.txt')).mtimeMs);
  return built > sources;
}

// cmake-js configures only when the build tree has no CMakeCache.txt, and CMake re-runs a
// configure only when CMakeLists.txt changes. So a tree first configured before libdnnl-dev or
// libfaiss-dev was installed kept building without that backend (its cached NOTFOUND never
// searched again). An optional backend in AUTO mode that is cached as not found but whose header
// is now installed makes the tree stale; the configure that follows searches again, because
// find_path/find_package repeat a search whose cached result is NOTFOUND.
const INCLUDE_DIRS = ['/usr/include', '/usr/local/include', ...(process.env.CPATH || '').split(':').filter(Boolean)];
const OPTIONAL_BACKENDS = [
  { env: 'GAINRAG_WITH_DNNL', cacheKey: 'GAINRAG_DNNL_INCLUDE:PATH', header: 'dnnl.hpp', pkg: 'libdnnl-dev' },
  { env: 'GAINRAG_FAISS', cacheKey: 'faiss_DIR:PATH', header: 'faiss/Index.h', pkg: 'libfaiss-dev' },
];

function newlyInstalledBackends() {
  const cacheFile = path.join(buildDir, 'CMakeCache.txt');
  if (!existsSync(cacheFile)) return [];
  const cache = readFileSync(cacheFile, 'utf8').split('\n');
  return OPTIONAL_BACKENDS.filter((b) => {
    if ((process.env[b.env] || 'AUTO').toUpperCase() === 'OFF') return false;
    const line = cache.find((l) => l.startsWith(`${b.cacheKey}=`));
    if (!line || !line.endsWith('-NOTFOUND')) return false;
    return INCLUDE_DIRS.some((dir) => existsSync(path.join(dir, b.header)));
  }).map((b) => b.pkg);
}

function main() {
  if (process.env.GAINRAG_SKIP_NATIVE_BUILD === '1') {
    log('GAINRAG_SKIP_NATIVE_BUILD=1: not building the addon');
    return;
  }
  // A .node built elsewhere for this platform (CI caches, the packaging test): used as is, so an
  // install does not need a compiler or LibTorch headers.
  const prebuilt = process.env.GAINRAG_PREBUILT_ADDON;
  if (prebuilt) {
    if (!existsSync(prebuilt)) throw new Error(`GAINRAG_PREBUILT_ADDON=${prebuilt} does not exist`);
    const dest = path.join(buildDir, 'Release', 'gainrag.node');
    mkdirSync(path.dirname(dest), { recursive: true });
    copyFileSync(prebuilt, dest);
    log(`using the prebuilt addon ${prebuilt} (GAINRAG_PREBUILT_ADDON)`);
    return;
  }
  const newBackends = newlyInstalledBackends();
  if (!force && newBackends.length === 0 && upToDate()) {
    log(`native addon is up to date (${path.relative(root, buildDir)}/Release/gainrag.node)`);
    return;
  }
  const torch = ensureTorch();
  log(`LibTorch: ${torch.source}`);
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const jobs = String(Math.max(1, Number(process.env.GAINRAG_BUILD_JOBS) || cpus().length));
  const args = ['--directory', root, '--out', buildDir, '--config', 'Release', '--parallel', jobs];
  if (process.env.GAINRAG_CUDA) args.push(`--CDGAINRAG_CUDA=${process.env.GAINRAG_CUDA}`);
  // AUTO (default): the oneDNN backend when libdnnl-dev is installed; ON fails without it; OFF skips it.
  if (process.env.GAINRAG_WITH_DNNL) args.push(`--CDGAINRAG_WITH_DNNL=${process.env.GAINRAG_WITH_DNNL}`);
  // AUTO (default): FAISS index files when libfaiss is found; OFF / ON to force.
  if (process.env.GAINRAG_FAISS) args.push(`--CDGAINRAG_FAISS=${process.env.GAINRAG_FAISS}`);
  if (newBackends.length > 0) {
    log(`configuring again: ${newBackends.join(', ')} installed since this build tree was configured`);
    const c = spawnSync(process.execPath, [cmakeJs, 'configure', ...args], { stdio: 'inherit', cwd: root });
    if (c.status !== 0) throw new Error(`native configure failed (cmake-js exit ${c.status})`);
  }
  const r = spawnSync(process.execPath, [cmakeJs, 'build', ...args], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) throw new Error(`native build failed (cmake-js exit ${r.status})`);
}

try {
  // --stale-backends: print (JSON) the optional backends that would make the tree configure
  // again, and stop (test/build-config.test.ts).
  if (process.argv.includes('--stale-backends')) process.stdout.write(`${JSON.stringify(newlyInstalledBackends())}\n`);
  else main();
} catch (err) {
  log(err.message);
  process.exit(1);
}
