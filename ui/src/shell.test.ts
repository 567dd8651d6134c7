// The UI replica against a stand-in for the shell built on a real Y.Doc, with Tauri's IPC mocked
// by @tauri-apps/api/mocks.
import { beforeEach, describe, expect, it } from "vitest";
import * as Y from "yjs";

(globalThis as unknown as { window: unknown }).window = globalThis;
const { clearMocks, mockIPC } = await import("@tauri-apps/api/mocks");
const { Shell, SHELL_ORIGIN } = await import("./shell");

interface ChannelLike {
  id: number;
}
type Internals = { runCallback: (id: number, data: unknown) => void };
const internals = () => (globalThis as unknown as { __TAURI_INTERNALS__: Internals }).__TAURI_INTERNALS__;

/** The shell's side: an authoritative doc, and the UI channel it pushes updates into. */
function fakeShell() {
  const doc = new Y.Doc();
  doc.getMap<Y.Text>("files").set("App.tsx", new Y.Text("export default 1;\n"));
  const pushed: unknown[] = [];
  let updates: ChannelLike | null = null;
  let index = 0;
  const send = (update: Uint8Array) => {
    if (updates) internals().runCallback(updates.id, { index: index++, message: update.slice().buffer });
  };
  mockIPC((cmd, args) => {
    const a = args as Record<string, unknown>;
    switch (cmd) {
      case "open_room":
        updates = a.updates as ChannelLike;
        return Y.encodeStateAsUpdate(doc).slice().buffer;
      case "push_update":
        pushed.push(args);
        Y.applyUpdate(doc, args as unknown as Uint8Array, "ui");
        return null;
      case "create_file": {
        const before = Y.encodeStateVector(doc);
        doc.getMap<Y.Text>("files").set(a.path as string, new Y.Text(a.text as string));
        send(Y.encodeStateAsUpdate(doc, before));
        return null;
      }
      default:
        throw new Error(`unexpected command ${cmd}`);
    }
  });
  return { doc, pushed };
}

describe("Shell", () => {
  beforeEach(() => clearMocks());

  it("starts from the shell's state and sends local edits as raw bytes", async () => {
    const shell = fakeShell();
    const ui = new Y.Doc();
    await Shell.connect(ui, () => {});
    const text = ui.getMap<Y.Text>("files").get("App.tsx");
    expect(text?.toString()).toBe("export default 1;\n");

    text?.insert(0, "// hi\n");
    await new Promise((r) => setTimeout(r, 0));
    expect(shell.pushed).toHaveLength(1);
    expect(shell.pushed[0]).toBeInstanceOf(Uint8Array);
    expect(shell.doc.getMap<Y.Text>("files").get("App.tsx")?.toString()).toBe("// hi\nexport default 1;\n");
  });

  it("applies the shell's updates without echoing them back", async () => {
    const shell = fakeShell();
    const ui = new Y.Doc();
    const origins: unknown[] = [];
    ui.on("update", (_u: Uint8Array, origin: unknown) => origins.push(origin));
    const connection = await Shell.connect(ui, () => {});
    await connection.createFile("lib/util.ts", "export const u = 2;\n");
    expect(ui.getMap<Y.Text>("files").get("lib/util.ts")?.toString()).toBe("export const u = 2;\n");
    expect(origins.every((o) => o === SHELL_ORIGIN)).toBe(true);
    expect(shell.pushed).toHaveLength(0);
  });
});
