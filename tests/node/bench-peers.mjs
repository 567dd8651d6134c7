// The Node peers of `cargo xtask bench`: esbuild's and @swc/core's transformSync and Prettier's
// format, each in a loop on one thread over the same files as Spike.
// Usage: node bench-peers.mjs <manifest.json>  where the manifest is
// {"iterations": N, "sets": {"<set>": ["<file>", ...]}}. Prints JSON: {"<set>": {"<tool>": ms}},
// ms being the best of N passes over the whole set (after one warm-up pass).
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { transformSync } from "esbuild";
import swc from "@swc/core";
import * as prettier from "prettier";

const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
const loaders = { ".ts": "ts", ".tsx": "tsx", ".js": "js", ".jsx": "jsx", ".mjs": "js" };

const tools = {
  esbuild: (f) =>
    transformSync(f.text, { loader: loaders[f.ext], format: "esm", target: "es2022", jsx: "automatic" }),
  "@swc/core": (f) =>
    swc.transformSync(f.text, {
      filename: f.path,
      jsc: {
        parser: f.ext.startsWith(".t")
          ? { syntax: "typescript", tsx: f.ext === ".tsx" }
          : { syntax: "ecmascript", jsx: true },
        target: "es2022",
        transform: { react: { runtime: "automatic" } },
      },
      module: { type: "es6" },
      sourceMaps: false,
    }),
  prettier: (f) =>
    prettier.format(f.text, { parser: f.ext.startsWith(".t") ? "typescript" : "babel", filepath: f.path }),
};

const result = {};
for (const [set, paths] of Object.entries(manifest.sets)) {
  const files = paths.map((path) => ({ path, ext: extname(path), text: readFileSync(path, "utf8") }));
  result[set] = {};
  for (const [name, run] of Object.entries(tools)) {
    let best = Infinity;
    for (let i = 0; i <= manifest.iterations; i++) {
      const start = performance.now();
      for (const f of files) await run(f);
      const ms = performance.now() - start;
      if (i > 0) best = Math.min(best, ms);
    }
    result[set][name] = best;
  }
}
console.log(JSON.stringify(result));
