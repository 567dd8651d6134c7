import { defineConfig } from "vite";

// The app loads the UI from its embedded build (ui/dist) over tauri://; there is no dev server
// in the loop. `base: "./"` keeps asset URLs relative.
export default defineConfig({
  base: "./",
  clearScreen: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 2048,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
} as import("vite").UserConfig & { test: unknown });
