// Transforms files with esbuild, the reference the semantic-equivalence tests compare against.
// Usage: node esbuild-transform.mjs <manifest.json>
// The manifest is an array of {input, output, target, decorators: "standard"|"legacy", jsx:
// "automatic"|"classic"}. Each output is written as an ES module.
import { readFileSync, writeFileSync } from "node:fs";
import { extname } from "node:path";
import { transformSync } from "esbuild";

const loaders = { ".ts": "ts", ".mts": "ts", ".cts": "ts", ".tsx": "tsx", ".jsx": "jsx", ".js": "jsx", ".mjs": "js", ".cjs": "js" };
const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const job of manifest) {
  const source = readFileSync(job.input, "utf8");
  const result = transformSync(source, {
    loader: loaders[extname(job.input)],
    format: "esm",
    target: job.target,
    sourcefile: job.input,
    jsx: job.jsx === "classic" ? "transform" : "automatic",
    tsconfigRaw: {
      compilerOptions: {
        experimentalDecorators: job.decorators === "legacy",
        useDefineForClassFields: true,
      },
    },
  });
  writeFileSync(job.output, result.code);
}
