// Spike's preview runtime. Served by the shell at preview://localhost/__spike/runtime.js.
//
// It imports the entry module of the current generation, re-imports a new generation when the
// shell calls window.__spike.render(n), shows transpile and runtime errors in an overlay over the
// last good render, and reports console output and errors back to the shell by POSTing to the
// scheme (the page has no IPC).

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.getAttribute("content") ?? "";
const entry = meta("spike-entry");
const loadedAt = Number(meta("spike-generation")) || 1;
// Module records of old generations stay in the module map; reload now and then to drop them.
const RELOAD_AFTER_GENERATIONS = 300;

function report(body) {
  try {
    fetch("/__spike/report", { method: "POST", body: JSON.stringify(body) }).catch(() => {});
  } catch {
    // Nowhere to report to; the overlay still shows errors.
  }
}

function show(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    const seen = new WeakSet();
    return JSON.stringify(value, (_k, v) => {
      if (typeof v === "object" && v !== null) {
        if (seen.has(v)) return "[circular]";
        seen.add(v);
      }
      if (typeof v === "function") return `[function ${v.name || "anonymous"}]`;
      if (typeof v === "bigint") return `${v}n`;
      return v;
    }) ?? String(value);
  } catch {
    return String(value);
  }
}

// console.log("%s has %d items", name, n): apply the substitutions as browsers do (React's own
// warnings use them), %c styles dropped.
function format(args) {
  if (typeof args[0] !== "string" || !args[0].includes("%")) return args.map(show);
  const rest = args.slice(1);
  const head = args[0].replace(/%([sdifoOc%])/g, (whole, k) => {
    if (k === "%") return "%";
    if (!rest.length) return whole;
    const v = rest.shift();
    if (k === "c") return "";
    if (k === "d" || k === "i") return String(Number.parseInt(v, 10));
    if (k === "f") return String(Number(v));
    return show(v);
  });
  return [head, ...rest.map(show)];
}

for (const level of ["log", "info", "warn", "error", "debug"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    original(...args);
    report({ type: "console", level, args: format(args).map((s) => s.slice(0, 4000)) });
  };
}

// The overlay: a fixed panel over the page, never replacing the last good render.
let overlay = null;
function showOverlay(title, lines) {
  if (!overlay) {
    overlay = document.createElement("div");
    overlay.id = "spike-overlay";
    overlay.setAttribute("role", "alert");
    document.documentElement.append(overlay);
  }
  overlay.replaceChildren();
  const h = document.createElement("div");
  h.className = "spike-overlay-title";
  h.textContent = title;
  overlay.append(h);
  for (const line of lines) {
    const pre = document.createElement("pre");
    pre.textContent = line;
    overlay.append(pre);
  }
}
function hideOverlay() {
  overlay?.remove();
  overlay = null;
}

// Module URLs are /g<generation>/<file>; show them as the room's file names.
function fileOf(url) {
  const m = /\/g\d+\/([^?#]+)/.exec(url ?? "");
  return m ? m[1] : url;
}
function describe(error) {
  const message = error instanceof Error ? `${error.name}: ${error.message}` : show(error);
  const bare = /Module name, '([^']+)' does not resolve|Failed to resolve module specifier "([^"]+)"/.exec(message);
  if (bare) {
    const name = bare[1] ?? bare[2];
    return `The package "${name}" is not available in the preview yet: only react and react-dom are bundled with Spike.`;
  }
  return message;
}
// Where an error was thrown, as the page sees it: a served module's URL path, line, column.
function stackLocation(error, event) {
  const stack = error instanceof Error ? error.stack ?? "" : "";
  const m = /(\/g\d+\/[^\s):@]+):(\d+):(\d+)/.exec(stack);
  if (m) return { path: m[1], line: Number(m[2]), column: Number(m[3]) };
  const url = event?.filename ? new URL(event.filename, location.href).pathname : "";
  if (/^\/g\d+\//.test(url)) return { path: url, line: event.lineno, column: event.colno };
  return null;
}

// The shell maps a served position back to the room file through the module's source map.
async function sourceLocation(at) {
  if (!at) return null;
  try {
    const r = await fetch(`/__spike/locate${at.path}:${at.line}:${at.column}`);
    if (r.ok) {
      const j = await r.json();
      return `${j.file}:${j.line}:${j.column}`;
    }
  } catch {
    // Fall through to the unmapped position.
  }
  return `${fileOf(at.path)}:${at.line}:${at.column}`;
}

async function runtimeError(error, event) {
  const message = describe(error);
  const location = await sourceLocation(stackLocation(error, event));
  showOverlay("Runtime error", location ? [message, `at ${location}`] : [message]);
  report({ type: "error", message, location });
}
window.addEventListener("error", (e) => void runtimeError(e.error ?? e.message, e));
window.addEventListener("unhandledrejection", (e) => void runtimeError(e.reason));

// Where the time of the last renders went, for the benchmark (epoch milliseconds): when the host
// called render(), when the import (fetch, evaluate, schedule React's render) finished, when React
// had committed, when it was painted.
const TIMINGS_KEPT = 300;
const timings = [];
const epochMs = () => performance.timeOrigin + performance.now();

let latest = 0;
async function render(generation) {
  if (generation <= latest) return;
  latest = generation;
  if (generation - loadedAt > RELOAD_AFTER_GENERATIONS) {
    location.reload();
    return;
  }
  const calledAt = epochMs();
  hideOverlay();
  let ok = true;
  try {
    await import(`/g${generation}/${entry}`);
  } catch (error) {
    ok = false;
    if (generation === latest) await runtimeError(error);
  }
  const importedAt = epochMs();
  document.documentElement.dataset.generation = String(generation);
  const { committedAt, paintedAt } = await painted();
  document.documentElement.dataset.paintedAt = String(paintedAt);
  report({ type: "rendered", generation, ok, paintedAt });
  timings.push({ generation, calledAt, importedAt, committedAt, paintedAt });
  if (timings.length > TIMINGS_KEPT) timings.shift();
}

// When this render is on screen, in epoch milliseconds (a clock the editor's webview shares), for
// the keystroke-to-paint benchmark. React commits the root.render() that the import scheduled in
// a later task (MessagePort order across ports is not reliable in WebKit): the first change under
// #root after the import is the commit (a render that changes nothing counts as committed after
// NO_CHANGE_MS). The frame after the commit paints it; the callback of the frame after that one
// runs once it was. A window that does not paint (hidden, minimized) gets no animation frames:
// the report then goes after PAINT_TIMEOUT_MS anyway.
const NO_CHANGE_MS = 100;
const PAINT_TIMEOUT_MS = 1000;
function painted() {
  return new Promise((resolve) => {
    let committedAt = 0;
    const done = () => resolve({ committedAt, paintedAt: epochMs() });
    const timer = setTimeout(done, PAINT_TIMEOUT_MS);
    const committed = () => {
      if (committedAt) return;
      committedAt = epochMs();
      observer.disconnect();
      clearTimeout(unchanged);
      requestAnimationFrame(() =>
        requestAnimationFrame(() => {
          clearTimeout(timer);
          done();
        }),
      );
    };
    const observer = new MutationObserver(committed);
    observer.observe(document.getElementById("root") ?? document.body, {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
    });
    const unchanged = setTimeout(committed, NO_CHANGE_MS);
  });
}

function showErrors(diagnostics) {
  showOverlay(
    diagnostics.length === 1 ? "1 error" : `${diagnostics.length} errors`,
    diagnostics.map((d) => `${d.file}:${d.line}:${d.column}: ${d.message}\n  ${d.source_line}`),
  );
}

window.__spike = { render, showErrors, hideOverlay, timings };
render(loadedAt);
