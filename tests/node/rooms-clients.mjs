// Two stock y-websocket clients edit one Spike room concurrently with a Spike client.
//
// Usage: node rooms-clients.mjs '<json>' with {serverUrl, room, path, edits, seed, peers}
// `peers` names every participant that writes meta key `done-<name>` when it has finished
// (the Rust side's Spike client included). Each client inserts emoji, CJK, combining
// sequences and ZWJ emoji at code-point boundaries, often right after an emoji, and deletes a
// little. When every `done-*` key is visible, every participant's edits are (causally before
// its done key, hence) integrated, and the script prints {"texts": {name: text}} and exits 0.
import { connect, synced, until, rng, boundaries } from './rooms-common.mjs'

const opts = JSON.parse(process.argv[2])
const pieces = ['😀', '漢字', 'e\u0301', '👩‍👩‍👧', 'ａ', 'x', '🎉!', 'ñ', '中']
const names = ['node-a', 'node-b']

async function client (name, index) {
  const { doc, provider } = connect(opts.serverUrl, opts.room, 1000 + index)
  await synced(provider, 30000)
  const files = doc.getMap('files')
  await until(doc, () => files.get(opts.path) instanceof Object, 30000, `${opts.path} to exist`)
  const text = files.get(opts.path)
  const random = rng(opts.seed * 31 + index)
  for (let i = 0; i < opts.edits; i++) {
    const s = text.toString()
    const cuts = boundaries(s)
    if (random() < 0.2 && cuts.length > 2) {
      const k = Math.floor(random() * (cuts.length - 1))
      doc.transact(() => text.delete(cuts[k], cuts[k + 1] - cuts[k]))
    } else {
      // Half the time, insert right after an emoji if there is one.
      let at = cuts[Math.floor(random() * cuts.length)]
      const emoji = s.search(/\p{Extended_Pictographic}/u)
      if (random() < 0.5 && emoji >= 0) at = emoji + 2
      text.insert(at, pieces[Math.floor(random() * pieces.length)])
    }
    if (i % 5 === 0) await new Promise(resolve => setTimeout(resolve, 1))
  }
  doc.getMap('meta').set(`done-${name}`, '1')
  const meta = doc.getMap('meta')
  await until(doc, () => opts.peers.every(p => meta.get(`done-${p}`) === '1'), 60000, 'every done key')
  return { name, doc, provider, text }
}

const clients = await Promise.all(names.map((n, i) => client(n, i)))
const texts = {}
for (const c of clients) texts[c.name] = c.text.toString()
console.log(JSON.stringify({ texts }))
for (const c of clients) c.provider.destroy()
process.exit(0)
