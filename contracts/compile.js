#!/usr/bin/env node
// Compile the Solidity contracts with solc-js into deterministic JSON artifacts that evm/ loads.
//
//   node contracts/compile.js           write contracts/build/*.json (and contracts/build/test/*.json)
//   node contracts/compile.js --check   exit 1 if the committed artifacts differ from a fresh compile
//
// Settings are fixed here (Rootstock target): solc 0.8.30, evmVersion istanbul, optimizer 200 runs, no viaIR,
// metadata hash "none" so the bytecode does not depend on source paths or comments' IPFS hashes.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const REPO_ROOT = path.resolve(__dirname, '..');
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');
const solc = require(path.join(NODE_MODULES, 'solc'));

const EXPECTED_SOLC = '0.8.30';
const SETTINGS = {
  evmVersion: 'istanbul',
  optimizer: { enabled: true, runs: 200 },
  viaIR: false,
  metadata: { bytecodeHash: 'none', appendCBOR: true },
  outputSelection: {
    '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'evm.methodIdentifiers'] },
  },
};

// Each target: the source file (key inside the compiler input), the contracts to emit, and the output dir.
const TARGETS = [
  { source: 'contracts/EtherSwap.sol', contracts: ['EtherSwap'], outDir: 'contracts/build' },
  { source: 'contracts/BtcCollateralLoan.sol', contracts: ['BtcCollateralLoan'], outDir: 'contracts/build' },
  // Test-only contracts: never deployed outside the test suite.
  { source: 'contracts/tests/ReentrantBorrower.sol', contracts: ['ReentrantBorrower'], outDir: 'contracts/build/test' },
];

function findImports(importPath) {
  const candidates = [path.join(REPO_ROOT, importPath), path.join(NODE_MODULES, importPath)];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, 'utf8') };
  }
  return { error: `File not found: ${importPath}` };
}

// The interface fixes these parameter names, which equal the names of the public getters `loanContract()` and
// `etherSwap()`: solc warns (8760) that the declarations share a name. Harmless and deliberate; every other warning
// fails the build.
const EXPECTED_WARNINGS = [
  { errorCode: '8760', file: 'contracts/EtherSwap.sol', text: 'address loanContract' },
  { errorCode: '8760', file: 'contracts/BtcCollateralLoan.sol', text: 'address etherSwap' },
];

function isExpectedWarning(e) {
  if (e.severity !== 'warning' || !e.sourceLocation) return false;
  const { file, start, end } = e.sourceLocation;
  const content = fs.readFileSync(path.join(REPO_ROOT, file), 'utf8');
  const text = Buffer.from(content, 'utf8').subarray(start, end).toString('utf8');
  return EXPECTED_WARNINGS.some((w) => w.errorCode === e.errorCode && w.file === file && w.text === text);
}

function compileTarget(target, version) {
  const sources = { [target.source]: { content: fs.readFileSync(path.join(REPO_ROOT, target.source), 'utf8') } };
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

  const errors = (output.errors || []).filter((e) => e.severity === 'error' || !isExpectedWarning(e));
  if (errors.length) {
    for (const e of errors) process.stderr.write(e.formattedMessage + '\n');
    throw new Error(`${target.source}: compilation failed with ${errors.length} error(s) or unexpected warning(s)`);
  }

  // Every source the compiler read for this target (ours and imported OpenZeppelin files), hashed in a fixed order.
  const usedSources = Object.keys(output.sources).sort();
  const hash = crypto.createHash('sha256');
  for (const name of usedSources) {
    const content = sources[name] ? sources[name].content : findImports(name).contents;
    hash.update(name + '\0' + content + '\0');
  }
  const sourceHash = '0x' + hash.digest('hex');

  const artifacts = {};
  for (const name of target.contracts) {
    const compiled = output.contracts[target.source][name];
    artifacts[path.join(target.outDir, `${name}.json`)] = {
      contractName: name,
      sourceName: target.source,
      abi: compiled.abi,
      bytecode: '0x' + compiled.evm.bytecode.object,
      deployedBytecode: '0x' + compiled.evm.deployedBytecode.object,
      methodIdentifiers: compiled.evm.methodIdentifiers,
      compiler: {
        name: 'solc-js',
        version,
        evmVersion: SETTINGS.evmVersion,
        optimizer: SETTINGS.optimizer,
        viaIR: SETTINGS.viaIR,
        metadataBytecodeHash: SETTINGS.metadata.bytecodeHash,
      },
      sources: usedSources,
      sourceHash,
    };
  }
  return artifacts;
}

function compile() {
  const version = solc.version();
  if (!version.startsWith(EXPECTED_SOLC + '+')) {
    throw new Error(`solc ${EXPECTED_SOLC} required, found ${version}`);
  }
  const artifacts = {};
  for (const target of TARGETS) Object.assign(artifacts, compileTarget(target, version));
  return artifacts;
}

function serialize(artifact) {
  return JSON.stringify(artifact, null, 2) + '\n';
}

function main() {
  const check = process.argv.includes('--check');
  const artifacts = compile();
  let stale = 0;
  for (const [file, artifact] of Object.entries(artifacts)) {
    const abs = path.join(REPO_ROOT, file);
    const fresh = serialize(artifact);
    if (check) {
      const committed = fs.existsSync(abs) ? fs.readFileSync(abs, 'utf8') : null;
      if (committed !== fresh) {
        stale += 1;
        process.stderr.write(`${file}: ${committed === null ? 'missing' : 'differs from a fresh compile'}\n`);
      }
    } else {
      fs.mkdirSync(path.dirname(abs), { recursive: true });
      fs.writeFileSync(abs, fresh);
      process.stdout.write(`wrote ${file}\n`);
    }
  }
  if (check) {
    if (stale) {
      process.stderr.write(`${stale} artifact(s) out of date: run \`node contracts/compile.js\`\n`);
      process.exit(1);
    }
    process.stdout.write(`artifacts up to date (${Object.keys(artifacts).length} contracts)\n`);
  }
}

try {
  main();
} catch (err) {
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}
