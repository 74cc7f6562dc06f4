import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

// Each module of the package beside the file declaring its types. Read as
// text, since the bindings import frameworks that are only the app's peers.
const MODULES = [
  ["relay-client.js", "index.d.ts"],
  ["progress.js", "progress.d.ts"],
  ["vue.js", "vue.d.ts"],
  ["react.js", "react.d.ts"],
];

/** The values a module's source exports: its functions, constants, classes and re-exports. */
function exported(source, declared) {
  const own = declared
    ? /^export (?:declare )?(?:function|const|class) (\w+)/gm
    : /^export (?:async )?(?:function|const|class) (\w+)/gm;
  const names = [...source.matchAll(own)].map((match) => match[1]);
  for (const match of source.matchAll(/^export \{([^}]+)\} from/gm)) {
    names.push(...match[1].split(",").map((name) => name.trim()));
  }
  return names.sort();
}

for (const [module, declarations] of MODULES) {
  test(`${declarations} declares every export of ${module}`, () => {
    const read = (name) => readFileSync(new URL(`../${name}`, import.meta.url), "utf8");
    assert.deepEqual(exported(read(declarations), true), exported(read(module), false));
  });
}
