// A stock y-websocket peer that stays in a room while it is attacked, publishing its presence,
// until the file `done.txt` appears; then prints what it saw as one JSON line and exits 0. Any
// exception the attack causes in Yjs, y-protocols or y-websocket (a stack overflow in
// JSON.parse, a throw in an awareness handler) kills the process with a non-zero status.
// Usage: node rooms-watch.mjs <serverUrl> <room> <token>
// First line: {"clientID": n} once synced.
import { synced, until } from './rooms-common.mjs'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import WebSocket from 'ws'

const [serverUrl, room, token] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
  params: { token }
})
let disconnects = 0
let awarenessChanges = 0
provider.on('status', ({ status }) => { if (status === 'disconnected') disconnects++ })
provider.awareness.on('change', () => { awarenessChanges++ })
provider.awareness.setLocalState({ user: { name: 'node', color: '#00aa00' } })
await synced(provider, 30000)
console.log(JSON.stringify({ clientID: doc.clientID }))
const files = doc.getMap('files')
await until(doc, () => files.has('done.txt'), 600000, 'done.txt')
const peers = {}
for (const [id, state] of provider.awareness.getStates()) peers[id] = state?.user?.name ?? null
console.log(JSON.stringify({
  local: provider.awareness.getLocalState(),
  peers,
  disconnects,
  awarenessChanges,
  files: [...files.keys()].sort()
}))
provider.destroy()
process.exit(0)
