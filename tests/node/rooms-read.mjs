// Joins a room with a stock y-websocket client, waits for sync, prints the room as JSON.
// Usage: node rooms-read.mjs <serverUrl> <room> [expectedFileCount]
import { connect, synced, until, roomJson } from './rooms-common.mjs'

const [serverUrl, room, count] = process.argv.slice(2)
const { doc, provider } = connect(serverUrl, room)
await synced(provider, 30000)
if (count !== undefined) {
  const files = doc.getMap('files')
  await until(doc, () => files.size >= Number(count), 30000, `${count} files`)
}
console.log(JSON.stringify(roomJson(doc)))
provider.destroy()
process.exit(0)
