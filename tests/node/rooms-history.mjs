// Writes a multi-client Yjs history (map keys and text edits by several client ids, exchanged
// in a scrambled order) and prints it as one update plus the JSON Yjs reads from it.
// Usage: node rooms-history.mjs <seed>
// Output: {"update": base64 of Y.encodeStateAsUpdate, "json": {files, meta}}
import * as Y from 'yjs'
import { rng, boundaries, roomJson } from './rooms-common.mjs'

const random = rng(Number(process.argv[2] ?? 1))
const docs = [11, 22, 33, 44].map(id => { const d = new Y.Doc(); d.clientID = id; return d })
const pieces = ['const ', 'x', ' = 1;\n', '😀', '漢', 'e\u0301', '🎉🎉', '\t']
const pending = []
for (const d of docs) d.on('update', u => pending.push(u))

const first = docs[0]
first.getMap('files').set('App.tsx', new Y.Text('export default 1\n'))
first.getMap('meta').set('entry', 'App.tsx')
for (const u of pending.splice(0)) for (const d of docs.slice(1)) Y.applyUpdate(d, u)

for (let step = 0; step < 300; step++) {
  const d = docs[Math.floor(random() * docs.length)]
  const files = d.getMap('files')
  const r = random()
  if (r < 0.05) {
    files.set(`f${Math.floor(random() * 5)}.ts`, new Y.Text(`// ${d.clientID}\n`))
  } else if (r < 0.08) {
    d.getMap('meta').set('title', `title by ${d.clientID} at ${step}`)
  } else if (r < 0.1 && files.size > 1) {
    const keys = [...files.keys()].filter(k => k !== 'App.tsx')
    if (keys.length) files.delete(keys[Math.floor(random() * keys.length)])
  } else {
    const keys = [...files.keys()]
    const text = files.get(keys[Math.floor(random() * keys.length)])
    const cuts = boundaries(text.toString())
    if (random() < 0.25 && cuts.length > 2) {
      const k = Math.floor(random() * (cuts.length - 2))
      text.delete(cuts[k], cuts[k + 2] - cuts[k])
    } else {
      text.insert(cuts[Math.floor(random() * cuts.length)], pieces[Math.floor(random() * pieces.length)])
    }
  }
  // Deliver some pending updates, in a scrambled order, to everyone.
  if (random() < 0.3) {
    const batch = pending.splice(0)
    batch.sort(() => random() - 0.5)
    for (const u of batch) for (const o of docs) Y.applyUpdate(o, u)
  }
}
for (const u of pending.splice(0)) for (const o of docs) Y.applyUpdate(o, u)
const merged = Y.mergeUpdates(docs.map(d => Y.encodeStateAsUpdate(d)))
const check = new Y.Doc()
Y.applyUpdate(check, merged)
console.log(JSON.stringify({
  update: Buffer.from(Y.encodeStateAsUpdate(docs[0])).toString('base64'),
  json: roomJson(check)
}))
