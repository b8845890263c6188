// The package as a user gets it (issue #13, "Also: packaging"): `npm pack`, install the tarball
// into an empty project without the network, then `npx gainrag info` and `npx gainrag demo` run
// from the installed copy, and `npm rebuild gainrag` works there (it used to fail with ENOENT:
// the up-to-date check read test/native, which the package does not ship).
//
// Offline and fast: npm's cache holds tarballs but not registry metadata here, so the project's
// node_modules starts as a copy of this checkout's (npm then only adds gainrag), and the install
// script takes this checkout's built addon through GAINRAG_PREBUILT_ADDON instead of compiling.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { repoRoot } from './helpers.js';

const work = mkdtempSync(path.join(tmpdir(), 'gainrag-pack-'));
after(() => rmSync(work, { recursive: true, force: true }));
const version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, GAINRAG_ADDON: '', npm_config_update_notifier: 'false', ...env } });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', all: `${r.stdout}\n${r.stderr}` };
}

test('npm pack -> offline install -> npx gainrag info/demo and npm rebuild from the installed package', () => {
  const addon = process.env.GAINRAG_ADDON || path.join(repoRoot, 'build', 'Release', 'gainrag.node');
  assert.ok(existsSync(addon), `a built addon at ${addon}`);
  const prebuilt = path.join(work, 'gainrag.node');
  copyFileSync(addon, prebuilt); // a stable copy, even if the checkout is rebuilt meanwhile

  // dist/ is already compiled by `npm test`; --ignore-scripts keeps `prepare` from recompiling.
  const pack = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], repoRoot);
  assert.equal(pack.status, 0, pack.all);
  const info = (JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[])[0];
  const files = info.files.map((f) => f.path);
  for (const f of ['dist/lib/cli/main.js', 'scripts/build-native.js', 'CMakeLists.txt', 'native/core/error.h', 'models/bert-tiny/config.json', 'data/demo/PROVENANCE.md']) {
    assert.ok(files.includes(f), `the package ships ${f}`);
  }
  assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('build/')), 'no tests or build outputs in the package');

  const project = path.join(work, 'project');
  mkdirSync(project);
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  cpSync(path.join(repoRoot, 'node_modules'), path.join(project, 'node_modules'), {
    recursive: true,
    filter: (src) => path.basename(src) !== '.package-lock.json' && !src.includes(`${path.sep}.bin${path.sep}gainrag`),
  });
  const install = run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', path.join(work, info.filename)], project, {
    GAINRAG_PREBUILT_ADDON: prebuilt,
  });
  assert.equal(install.status, 0, install.all);
  assert.match(install.all, /using the prebuilt addon/);
  const installed = path.join(project, 'node_modules', 'gainrag');
  assert.ok(existsSync(path.join(installed, 'build', 'Release', 'gainrag.node')));

  const engine = run('npx', ['--offline', '--no-install', 'gainrag', 'info', '--json'], project);
  assert.equal(engine.status, 0, engine.all);
  assert.equal((JSON.parse(engine.stdout.trim().split('\n').pop()!) as { version: string }).version, version);

  // npm rebuild runs the install script again, now with no test/ directory beside it.
  const rebuild = run('npm', ['rebuild', 'gainrag', '--offline', '--foreground-scripts'], project);
  assert.equal(rebuild.status, 0, rebuild.all);
  assert.match(rebuild.all, /native addon is up to date/);

  // The main job from the installed package (bundled data and models come with it), kept small:
  // every stage runs, on fewer questions.
  const out = path.join(work, 'demo-out');
  const demo = run('npx', ['--offline', '--no-install', 'gainrag', 'demo', '--out', out, '--questions', '20', '--synthesize', '4', '--top-k', '5', '--max-new-tokens', '4'], project);
  assert.equal(demo.status, 0, demo.all);
  assert.ok(existsSync(path.join(out, 'index', 'manifest.json')), demo.all);
  assert.ok(existsSync(path.join(installed, 'models', 'bert-tiny', 'config.json')) && !existsSync(path.join(out, 'index.lock')));
});
