// Bundles React and react-dom (CommonJS on npm) into ES modules for the sandboxed preview, at UI
// build time, into public/vendor/ (Vite copies it into dist/vendor/, which the app embeds and the
// shell serves at preview://localhost/vendor/). One shared chunk holds React itself, so the
// preview's `react`, `react/jsx-runtime` and `react-dom/client` all see the same instance.
//
// Named exports are taken from the packages themselves (esbuild cannot see a CommonJS module's
// names), so the vendored modules export exactly what the installed version exports.

import { createRequire } from "node:module";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const ui = path.resolve(here, "..");
const out = path.join(ui, "public", "vendor");
const entries = path.join(ui, "node_modules", ".spike-vendor");
const require = createRequire(path.join(ui, "package.json"));
const mode = process.env.SPIKE_REACT_MODE === "production" ? "production" : "development";

// Output file name → package specifier.
const modules = {
  "react": "react",
  "react-jsx-runtime": "react/jsx-runtime",
  "react-jsx-dev-runtime": "react/jsx-dev-runtime",
  "react-dom": "react-dom",
  "react-dom-client": "react-dom/client",
};

const identifier = /^[A-Za-z_$][\w$]*$/;

await rm(out, { recursive: true, force: true });
await mkdir(entries, { recursive: true });
const entryPoints = {};
for (const [name, specifier] of Object.entries(modules)) {
  const names = Object.keys(require(specifier)).filter((n) => identifier.test(n) && n !== "default");
  const source = [
    `import * as m from ${JSON.stringify(specifier)};`,
    `const mod = m.default ?? m;`,
    `export default mod;`,
    ...names.map((n) => `export const ${n} = mod[${JSON.stringify(n)}];`),
    "",
  ].join("\n");
  const file = path.join(entries, `${name}.js`);
  await writeFile(file, source);
  entryPoints[name] = file;
}

await build({
  entryPoints,
  outdir: out,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: mode === "production",
  define: { "process.env.NODE_ENV": JSON.stringify(mode) },
  chunkNames: "chunk-[hash]",
  logLevel: "warning",
  absWorkingDir: ui,
});
console.log(`vendored React (${mode}) into ${path.relative(ui, out)}/`);
