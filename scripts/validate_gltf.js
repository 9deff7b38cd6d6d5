// Validates .glb files with the Khronos glTF validator (npm package gltf-validator) and prints one JSON report
// per file on stdout: {"file", "errors", "warnings", "infos", "hints", "messages": [first 20]}.
// Usage: NODE_PATH=~/.cache/tf_facetex/npm/node_modules node scripts/validate_gltf.js a.glb [b.glb ...]
// (scripts/install_tools.sh npm installs the validator). Exits 1 when any file has an error.
const fs = require("fs");
const validator = require("gltf-validator");

async function main(files) {
  let failed = false;
  for (const file of files) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
      maxIssues: 200,
      externalResourceFunction: () => Promise.reject(new Error("external resources are not allowed")),
    });
    const issues = report.issues;
    console.log(JSON.stringify({
      file, errors: issues.numErrors, warnings: issues.numWarnings, infos: issues.numInfos,
      hints: issues.numHints, messages: issues.messages.slice(0, 20), info: report.info,
    }));
    failed = failed || issues.numErrors > 0;
  }
  process.exit(failed ? 1 : 0);
}

main(process.argv.slice(2)).catch((err) => { console.error(err); process.exit(2); });
