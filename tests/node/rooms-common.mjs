// Shared helpers of the rooms scripts: a seeded PRNG, y-websocket clients in Node, waiting.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

/** mulberry32: a small seeded PRNG, so a failing run can be replayed from its seed. */
export function rng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A stock y-websocket client on a fresh Y.Doc. */
export function connect (serverUrl, room, clientID) {
  const doc = new Y.Doc()
  if (clientID !== undefined) doc.clientID = clientID
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true
  })
  return { doc, provider }
}

/** Resolves when `pred()` holds, checking after every document update; rejects after `ms`. */
export function until (doc, pred, ms, what) {
  return new Promise((resolve, reject) => {
    if (pred()) return resolve()
    const timer = setTimeout(() => {
      doc.off('update', check)
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`))
    }, ms)
    const check = () => {
      if (pred()) {
        clearTimeout(timer)
        doc.off('update', check)
        resolve()
      }
    }
    doc.on('update', check)
  })
}

export function synced (provider, ms) {
  return new Promise((resolve, reject) => {
    if (provider.synced) return resolve()
    const timer = setTimeout(() => reject(new Error(`not synced after ${ms} ms`)), ms)
    provider.once('sync', () => { clearTimeout(timer); resolve() })
  })
}

/** The Spike room layout as JSON: files (path → text) and meta. */
export function roomJson (doc) {
  return { files: doc.getMap('files').toJSON(), meta: doc.getMap('meta').toJSON() }
}

/** UTF-16 offsets of `text` that do not split a surrogate pair. */
export function boundaries (text) {
  const out = [0]
  let i = 0
  for (const ch of text) {
    i += ch.length
    out.push(i)
  }
  return out
}
