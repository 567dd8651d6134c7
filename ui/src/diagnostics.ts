// The diagnostics panel: the connection, queued error reports, recent problems, and the store,
// AI and connection figures, refreshed every two seconds while the panel is open.

import type { Shell } from "./shell";
import type { Diagnostics, Figure } from "./types";

/** A figure as the panel lists it: `spike_store_hits_total{tier="sqlite"} 3`. */
export function figureLine(f: Figure): string {
  const value = Number.isInteger(f.value) ? String(f.value) : f.value.toFixed(3);
  return `${f.name}${f.labels ? `{${f.labels}}` : ""} ${value}`;
}

function section(title: string, lines: string[]): HTMLElement {
  const box = document.createElement("section");
  const h = document.createElement("h3");
  h.textContent = title;
  const ul = document.createElement("ul");
  for (const line of lines.length ? lines : ["(none)"]) {
    const li = document.createElement("li");
    li.textContent = line;
    ul.append(li);
  }
  box.append(h, ul);
  return box;
}

export function render(d: Diagnostics): HTMLElement[] {
  const group = (prefix: string) => d.figures.filter((f) => f.name.startsWith(prefix)).map(figureLine);
  return [
    section("Connection", [
      `${d.state}${d.unconfirmed ? " (saving…)" : ""} — room ${d.room} on ${d.server}`,
      ...(d.denied ? [`refused: ${d.denied}`] : []),
      `Spike ${d.version}; ${d.reportsQueued} error report(s) waiting to be sent`,
      ...d.figures.filter((f) => f.name === "spike_connections" || f.name === "spike_rooms_open").map(figureLine),
    ]),
    section("Recent problems", d.recent),
    section("Store", group("spike_store_")),
    section("Assistant", group("spike_ai_")),
    section("Reports", group("spike_report_")),
  ];
}

export function bindDiagnostics(shell: Shell): void {
  const panel = document.getElementById("diagnostics");
  if (!panel) throw new Error("#diagnostics is missing from index.html");
  const refresh = async () => {
    if (panel.hidden) return;
    try {
      panel.replaceChildren(...render(await shell.diagnostics()));
    } catch (e) {
      panel.textContent = String(e);
    }
  };
  document.getElementById("diagnostics-tab")?.addEventListener("click", () => void refresh());
  setInterval(() => void refresh(), 2000);
}
