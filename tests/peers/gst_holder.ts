/**
 * A surfaceport consumer that hoards frames, for the GStreamer bridge's
 * in-use test: listens on channel `NAME`, keeps the first `HOLD` frames
 * open (printing `held OFFSET ID CHECKSUM` for each, then `holding`),
 * closes every later frame at once, and on each stdin line `verify`
 * re-checksums the held frames and prints `intact N` or `changed OFFSET`.
 * It never lets go: the test SIGKILLs it.
 *
 * Usage: gst_holder.ts NAME HOLD
 *
 * @module
 */

import { type Frame, listen } from "../../mod.ts";

const [name, holdArg] = Deno.args;
const hold = Number(holdArg);

function checksum(frame: Frame): number {
  let sum = 0;
  for (let p = 0; p < frame.surface.planes.length; p++) {
    const bytes = frame.surface.bytes(p);
    for (let i = 0; i < bytes.length; i += 7) sum = (Math.imul(sum, 31) + bytes[i]) >>> 0;
  }
  return sum;
}

const held: { offset: number; frame: Frame; sum: number }[] = [];
const listener = listen(name);
console.log("ready");
const channel = await listener.accept();

(async () => {
  const decoder = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    if (!decoder.decode(chunk).includes("verify")) continue;
    const changed = held.find((h) => checksum(h.frame) !== h.sum);
    console.log(changed ? `changed ${changed.offset}` : `intact ${held.length}`);
  }
})();

for await (const frame of channel) {
  const offset = (frame.meta as { offset: number }).offset;
  if (held.length < hold) {
    const sum = checksum(frame);
    held.push({ offset, frame, sum });
    console.log(`held ${offset} ${frame.surface.id} ${sum}`);
    if (held.length === hold) console.log("holding");
  } else {
    frame.close();
  }
}
