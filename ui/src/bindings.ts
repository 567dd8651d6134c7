// Generated from the Rust types by src-tauri/src/bindings.rs (ts-rs). Do not edit:
// run `SPIKE_BLESS=1 cargo test -p spike-desktop bindings` after changing them.

/** A Yjs relative position in its JSON form (`Y.relativePositionToJSON`). */
export type RelativePositionJSON = Record<string, unknown>;

export type Severity = "error" | "warning";

export type Diagnostic = { 
/**
 * Error or warning.
 */
severity: Severity, 
/**
 * What is wrong, in a sentence a person can act on.
 */
message: string, 
/**
 * The file name given to the transpiler or formatter.
 */
file: string, 
/**
 * 1-based line number.
 */
line: number, 
/**
 * 1-based column, in characters.
 */
column: number, 
/**
 * The text of the offending line (empty when the position is the end of the file).
 */
source_line: string, };

export type User = { 
/**
 * Display name.
 */
name: string, 
/**
 * CSS colour, `#rrggbb`.
 */
color: string, };

export type Selection = { 
/**
 * Where the selection started.
 */
anchor: RelativePositionJSON, 
/**
 * Where the cursor is.
 */
head: RelativePositionJSON, };

export type RoomLink = { 
/**
 * The server's base URL, `ws://` or `wss://`, without a trailing slash.
 */
server: string, 
/**
 * The room's name (see [`validate_room`]).
 */
room: string, 
/**
 * An access token the server asked for (sent as the `token` query parameter).
 */
token?: string, };

export type PreviewReport = { "type": "console", 
/**
 * The console method.
 */
level: string, 
/**
 * The arguments, each rendered as text.
 */
args: Array<string>, } | { "type": "error", 
/**
 * The error's message.
 */
message: string, 
/**
 * Where it happened, as the page saw it (`/g3/App.tsx:12:5`), if known.
 */
location: string | null, } | { "type": "rendered", 
/**
 * The generation rendered.
 */
generation: number, 
/**
 * Whether the entry module imported and ran without throwing.
 */
ok: boolean, 
/**
 * When the page had painted this render (two animation frames after React's commit),
 * in epoch milliseconds (`performance.timeOrigin + performance.now()`, a clock the
 * editor's webview shares); 0 when the page did not say. For latency measurements.
 */
paintedAt: number, };

export type Peer = { 
/**
 * Their replica's client id (a Yjs client id, below 2^53).
 */
id: number, 
/**
 * Name and colour.
 */
user: User, 
/**
 * Their selection per open file, as Yjs relative positions.
 */
cursors: { [key in string]?: Selection }, };

export type ShellEvent = { "type": "diagnostics", 
/**
 * The file.
 */
path: string, 
/**
 * Its errors, 1-based lines and character columns.
 */
diagnostics: Array<Diagnostic>, } | { "type": "preview", 
/**
 * The report.
 */
report: PreviewReport, } | { "type": "peers", 
/**
 * Every other peer, by client id order.
 */
peers: Array<Peer>, } | { "type": "status", 
/**
 * `offline`, `connecting`, `syncing` or `synced`.
 */
state: "offline" | "connecting" | "syncing" | "synced", 
/**
 * Whether some local change is not confirmed by the server yet.
 */
unconfirmed: boolean, 
/**
 * The server's base URL.
 */
server: string, 
/**
 * The room's name.
 */
room: string, 
/**
 * This user's name and colour, as peers see them.
 */
user: User, 
/**
 * The link grants `view` only: the editor must not change the room.
 */
readOnly: boolean, 
/**
 * Why the server refused this connection, when it did (the session stops trying).
 */
denied: string | null, } | { "type": "mirror", 
/**
 * The event, for a person.
 */
line: string, };

export type ShareInfo = { 
/**
 * The room and its server, as a collaborator should use them.
 */
link: RoomLink, 
/**
 * `spike://room/…`, for the clipboard.
 */
spikeLink: string, 
/**
 * The URL a y-websocket client connects to.
 */
websocketUrl: string, 
/**
 * Whether the room lives on this app's embedded server.
 */
embedded: boolean, 
/**
 * Whether that embedded server only accepts connections from this computer.
 */
loopbackOnly: boolean, };

export type SkippedFile = { 
/**
 * Its path relative to the folder, `/`-separated.
 */
path: string, 
/**
 * Why it is not mirrored (binary, too large, ignored by `.gitignore`, …).
 */
reason: string, };

export type MirrorInfo = { 
/**
 * The folder, absolute.
 */
dir: string, 
/**
 * The room it mirrors.
 */
room: string, 
/**
 * Files not mirrored, with the reason.
 */
skipped: Array<SkippedFile>, 
/**
 * The last events, oldest first, one line each (`disk → room  App.tsx: 1 edit(s)`).
 */
recent: Array<string>, };

export type ProposedFile = { 
/**
 * The file.
 */
path: string, 
/**
 * Whether the proposal creates it.
 */
created: boolean, 
/**
 * The change as a unified diff (3 lines of context).
 */
diff: string, };

export type Proposal = { 
/**
 * Its id, for `ai_apply` / `ai_reject`.
 */
id: number, 
/**
 * One entry per file changed.
 */
files: Array<ProposedFile>, };

export type AiEvent = { "type": "text", 
/**
 * The new text.
 */
delta: string, } | { "type": "reading", 
/**
 * The file.
 */
path: string, } | { "type": "proposal", 
/**
 * The changes.
 */
proposal: Proposal, } | { "type": "done", 
/**
 * Why it ended.
 */
stop: string, } | { "type": "error", 
/**
 * What went wrong, for a person.
 */
message: string, };

export type KeyStatus = { 
/**
 * `openai`, `anthropic` or `compatible`.
 */
provider: string, 
/**
 * `keychain`, `environment` or `none`.
 */
source: "keychain" | "environment" | "none", 
/**
 * Why the keychain could not be read, when it could not (no keychain service, locked).
 */
keychainError: string | null, };

export type Figure = { 
/**
 * The metric's name (`spike_store_hits_total`).
 */
name: string, 
/**
 * Its labels as Prometheus prints them (`tier="sqlite"`), or empty.
 */
labels: string, 
/**
 * Its value.
 */
value: number, };

export type Diagnostics = { 
/**
 * The app's version.
 */
version: string, 
/**
 * `offline`, `connecting`, `syncing` or `synced`.
 */
state: string, 
/**
 * The room server.
 */
server: string, 
/**
 * The room.
 */
room: string, 
/**
 * Whether some local change is not confirmed by the server yet.
 */
unconfirmed: boolean, 
/**
 * Why the server refused this room, if it did.
 */
denied: string | null, 
/**
 * Error reports waiting to be sent.
 */
reportsQueued: number, 
/**
 * The last warnings and errors, oldest first.
 */
recent: Array<string>, 
/**
 * Store, AI, report and connection figures.
 */
figures: Array<Figure>, };

export type Settings = { 
/**
 * The name peers see; empty means the login name.
 */
name: string, 
/**
 * The colour peers see, `#rrggbb`; empty means one picked by client id.
 */
color: string, 
/**
 * The room server new rooms are created on (`ws://…` or `wss://…`); empty means the app's
 * own embedded server.
 */
server: string, 
/**
 * Whether Ctrl/Cmd+S formats the file (edits are saved as they are typed either way).
 */
formatOnSave: boolean, 
/**
 * The room that was open last, reopened at start.
 */
lastRoom?: RoomLink, 
/**
 * The assistant's API: `openai`, `anthropic` or `compatible` (any OpenAI-compatible
 * server: Ollama, llama.cpp, LM Studio, vLLM).
 */
aiProvider: "openai" | "anthropic" | "compatible", 
/**
 * The assistant API's base URL; empty means the provider's own (Ollama's for
 * `compatible`).
 */
aiBaseUrl: string, 
/**
 * The assistant's model id; empty means the provider's default.
 */
aiModel: string, 
/**
 * The ESM CDN npm packages in the preview come from (esm.sh's interface).
 */
cdn: string, 
/**
 * Folder mirrors to resume when their room opens again (after a restart or a switch):
 * `<server>/<room>` → the absolute folder. Kept by the app, like `last_room`: a mirror
 * started from "Folder…" is added, one stopped there is removed.
 */
mirrors: { [key in string]?: string }, };

export type ErrorReply = { 
/**
 * Which kind of failure.
 */
kind: "transpile" | "format" | "collab" | "tauri" | "io" | "settings" | "bad-request" | "read-only" | "mirror" | "ai" | "keychain" | "store", 
/**
 * The error in a sentence.
 */
message: string, 
/**
 * The syntax errors behind a transpile or format failure (empty otherwise).
 */
diagnostics: Array<Diagnostic>, };
