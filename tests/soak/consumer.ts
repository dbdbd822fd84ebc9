/**
 * The consumer process of the soak: connects to the channel named on the
 * command line, checks that every frame's first 8 bytes hold its sequence
 * number (the producer stamps them; a pool that handed out a surface still
 * held here would overwrite them), closes it, and every SAMPLE_EVERY frames
 * prints `sample FRAMES FDS RSS HEAP LIVE` (its own descriptor count,
 * resident set size, V8 heap size and live heap: see `Sample` in
 * tests/soak/soak.ts). Prints `done FRAMES CORRUPT` when the producer hangs up.
 *
 * `consumer.ts NAME SAMPLE_EVERY [MAPPING_CACHE_SIZE]`: the channel's
 * `mappingCacheSize` (default the channel's own).
 *
 * @module
 */

import { connect } from "../../mod.ts";
import { fdCount, settleRuntimeFds } from "../helpers.ts";
import { liveHeapBytes } from "./soak.ts";

const [name, sampleEvery, cacheSize] = Deno.args;
const every = Number(sampleEvery);
const mappingCacheSize = cacheSize === undefined ? undefined : Number(cacheSize);
await settleRuntimeFds(); // Deno opens two descriptors of its own shortly after start
const channel = await connect(name, { timeout: 10000, mappingCacheSize });
console.log("connected");
let frames = 0, corrupt = 0;
for await (const frame of channel) {
  const bytes = frame.surface.bytes();
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const stamped = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (stamped !== frame.sequence) {
    corrupt++;
    if (corrupt <= 10) console.log(`corrupt ${frame.sequence} ${stamped}`);
  }
  frame.close();
  frames++;
  if (frames % every === 0) {
    const live = liveHeapBytes();
    const { rss, heapTotal } = Deno.memoryUsage();
    console.log(`sample ${frames} ${fdCount()} ${rss} ${heapTotal} ${live}`);
  }
}
console.log(`done ${frames} ${corrupt}`);
channel.close();
