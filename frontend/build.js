#!/usr/bin/env node
// Bundle the borrower's signer (frontend/signer/, ES module) with esbuild into static/loans/vendor/signer.js.
//
//   node frontend/build.js           write static/loans/vendor/signer.js
//   node frontend/build.js --check   exit 1 if the committed bundle differs from a fresh build
//
// The build is deterministic: fixed esbuild options, paths relative to the repository, no timestamps, and the
// exact versions of esbuild and of every bundled package pinned in package.json (checked here against what is
// installed, from package-lock.json by `npm ci`). So `--check` proves that the committed bundle is exactly what
// the source and the lock file's packages produce, as `node contracts/compile.js --check` does for the contracts.
'use strict';

const fs = require('fs');
const path = require('path');

const REPO_ROOT = path.resolve(__dirname, '..');
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');
const ENTRY = 'frontend/signer/index.js';
const OUTPUT = 'static/loans/vendor/signer.js';
// The packages whose versions the bundle depends on: each must be installed at its package.json pin.
const PINNED = ['esbuild', '@scure/btc-signer', '@scure/base', '@noble/curves', '@noble/hashes'];

function installedVersion(name) {
  const file = path.join(NODE_MODULES, name, 'package.json');
  if (!fs.existsSync(file)) throw new Error(`${name} is not installed: run \`npm ci\``);
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
}

function pinnedVersions() {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
  const versions = {};
  for (const name of PINNED) {
    const pin = (pkg.devDependencies || {})[name];
    if (!pin || !/^\d+\.\d+\.\d+$/.test(pin)) throw new Error(`package.json must pin ${name} to an exact version`);
    const installed = installedVersion(name);
    if (installed !== pin) throw new Error(`${name} ${pin} required, ${installed} installed: run \`npm ci\``);
    versions[name] = pin;
  }
  return versions;
}

async function build() {
  const versions = pinnedVersions();
  const esbuild = require(path.join(NODE_MODULES, 'esbuild'));
  const banner = [
    '// The borrower\'s signer, bundled by `node frontend/build.js` from frontend/signer/ (do not edit: rebuild).',
    '// ' + PINNED.map((name) => `${name} ${versions[name]}`).join(', '),
  ].join('\n');
  const result = await esbuild.build({
    absWorkingDir: REPO_ROOT,
    entryPoints: [ENTRY],
    bundle: true,
    write: false,
    outfile: OUTPUT,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    charset: 'utf8',
    legalComments: 'inline',
    minify: false,
    sourcemap: false,
    treeShaking: true,
    preserveSymlinks: true, // paths in the bundle's comments stay inside the repository, whatever links to it
    logLevel: 'silent',
    banner: { js: banner },
  });
  if (result.warnings.length) {
    const messages = await esbuild.formatMessages(result.warnings, { kind: 'warning' });
    throw new Error('esbuild warnings:\n' + messages.join('\n'));
  }
  return result.outputFiles[0].text;
}

async function main() {
  const check = process.argv.includes('--check');
  const fresh = await build();
  const abs = path.join(REPO_ROOT, OUTPUT);
  if (check) {
    const committed = fs.existsSync(abs) ? fs.readFileSync(abs, 'utf8') : null;
    if (committed !== fresh) {
      process.stderr.write(`${OUTPUT}: ${committed === null ? 'missing' : 'differs from a fresh build'}\n`);
      process.stderr.write('the bundle is out of date: run `node frontend/build.js`\n');
      process.exit(1);
    }
    process.stdout.write(`bundle up to date (${OUTPUT})\n`);
  } else {
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, fresh);
    process.stdout.write(`wrote ${OUTPUT}\n`);
  }
}

main().catch((err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
});
