/**
 * The GStreamer bridges in a Node or Bun (or Deno) process, for
 * `tests/gst_runtimes_test.ts`, which runs the real `gst-launch-1.0` on the
 * other side and checks what this prints. Written against `node:process`
 * only, so every runtime runs it as it is.
 *
 * - `from-gst SOCKET FRAMES`: connects a GstSourceBridge to the abstract `@SOCKET`
 *   (a `unixfdsink`), forwards into a channel received in this process;
 *   prints `frame N WxH FORMAT B,G,R,A wrong=K` per frame (the first pixel
 *   and how many pixels differ from it), holds frame 0 while ten more come
 *   and go (`holding released=… reused=…`), lets it go (`returned
 *   released=…`), takes frames up to FRAMES, waits until every closed one
 *   went back, stops the bridge and prints its `stats {…}` as they were then.
 * - `to-gst SOCKET FRAMES WIDTH`: listens with a GstSinkBridge on
 *   `@SOCKET` (prints `listening`), serves FRAMES BGRA frames of
 *   WIDTHx16 painted with byte `(i * 7 + frame * 13) & 255` to the
 *   `unixfdsrc` that connects, and per frame prints `sent N inUse=…`
 *   right after GStreamer took it and `returned N` once it gave it back;
 *   then `stats {…}`.
 *
 * Exits 0 after `done`; any error is printed to stderr with exit code 1.
 */

import process from "node:process";
import { connect, GstSinkBridge, GstSourceBridge, listen, Surface } from "../../mod.ts";
import { runtime } from "../../ffi/runtime.ts";

const [mode, socket, framesArg, widthArg] = process.argv.slice(2);
const say = (line: string) => process.stdout.write(`${line}\n`);

/** Polls `condition` every 5 ms for at most `ms`, else throws naming `what`. */
async function waitUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`${runtime.name}: timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function channelPair(name: string) {
  const listener = listen(name);
  const accepted = listener.accept({ timeout: 5000 });
  const producer = await connect(name, { timeout: 5000 });
  const consumer = await accepted;
  listener.close();
  return { producer, consumer };
}

/** `frame N WxH FORMAT B,G,R,A wrong=K`: the first pixel and how many differ from it. */
function describe(n: number, surface: Surface): string {
  const bytes = surface.bytes(0);
  const stride = surface.planes[0].bytesPerRow;
  let wrong = 0;
  for (let y = 0; y < surface.height; y++) {
    for (let x = 0; x < surface.width; x++) {
      const o = y * stride + x * 4;
      for (let c = 0; c < 4; c++) {
        if (bytes[o + c] !== bytes[c]) {
          wrong++;
          break;
        }
      }
    }
  }
  return `frame ${n} ${surface.width}x${surface.height} ${surface.format} ${
    [...bytes.subarray(0, 4)].join(",")
  } wrong=${wrong}`;
}

async function fromGst(): Promise<void> {
  const total = Number(framesArg);
  const { producer, consumer } = await channelPair(`gstrt-${process.pid}`);
  // Room for every frame this takes and a queue behind: none is dropped at maxOutstanding.
  const bridge = await GstSourceBridge.connect(`@${socket}`, {
    timeout: 10_000,
    maxOutstanding: 4 * total,
  });
  try {
    const running = bridge.run(producer);
    const first = await consumer.receive({ timeout: 10_000 });
    say(describe(0, first.surface));
    const heldId = first.surface.id;
    let reused = 0;
    let n = 1;
    for (; n <= 10; n++) {
      const frame = await consumer.receive({ timeout: 10_000 });
      say(describe(n, frame.surface));
      if (frame.surface.id === heldId) reused++;
      frame.close();
    }
    // Frames 1..10 went back; frame 0, still held, must not (nor its memory come back filled).
    await waitUntil(() => bridge.stats.released >= 10, 5000, "frames 1..10 to go back");
    await new Promise((resolve) => setTimeout(resolve, 100));
    say(`holding released=${bridge.stats.released} reused=${reused}`);
    first.close();
    // Released now (and nothing else closed meanwhile): exactly one more goes back.
    await waitUntil(() => bridge.stats.released >= 11, 5000, "frame 0 to go back");
    say(`returned released=${bridge.stats.released}`);
    // The source is live and endless (a finite one may reach EOS and exit before a slow process
    // has closed its frames, and nothing can go back then): take the rest, then stop here.
    for (; n < total; n++) {
      const frame = await consumer.receive({ timeout: 10_000 });
      say(describe(n, frame.surface));
      frame.close();
    }
    await waitUntil(() => bridge.stats.released >= total, 5000, "every closed frame to go back");
    const stats = bridge.stats;
    bridge.close();
    await running;
    say(`stats ${JSON.stringify(stats)}`);
  } finally {
    bridge.close();
    producer.close();
    consumer.close();
  }
}

async function toGst(): Promise<void> {
  const frames = Number(framesArg);
  const width = Number(widthArg);
  const bridge = GstSinkBridge.listen(`@${socket}`);
  const { producer, consumer } = await channelPair(`gstrt-${process.pid}`);
  try {
    say("listening");
    await bridge.waitForClient(10_000);
    const running = bridge.run(consumer);
    for (let f = 0; f < frames; f++) {
      using surface = Surface.create({ width, height: 16, format: "BGRA" });
      const bytes = surface.bytes(0);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + f * 13) & 0xff;
      await producer.send(surface);
      await waitUntil(() => bridge.stats.zeroCopy === f + 1, 5000, `frame ${f} to reach GStreamer`);
      // GStreamer (an identity that sleeps) holds it now: the producer must see it in use.
      say(`sent ${f} inUse=${surface.inUse} outstanding=${bridge.stats.outstanding}`);
      await waitUntil(() => !surface.inUse, 5000, `GStreamer to give frame ${f} back`);
      say(`returned ${f} outstanding=${bridge.stats.outstanding}`);
    }
    producer.close();
    await running;
    say(`stats ${JSON.stringify(bridge.stats)}`);
  } finally {
    bridge.close();
    producer.close();
    consumer.close();
  }
}

try {
  if (mode === "from-gst") await fromGst();
  else if (mode === "to-gst") await toGst();
  else throw new Error(`unknown mode ${mode}`);
  say(`done ${runtime.name}`);
  process.exit(0);
} catch (error) {
  process.stderr.write(`${runtime.name}: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
}
