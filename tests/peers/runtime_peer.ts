/**
 * One peer for the cross-runtime tests (`tests/interop_test.ts`), written
 * against `node:process` only so that Deno, Node and Bun run it as it is:
 *
 * - `publish NAME FRAMES NV12|BGRA`: publishes, waits for a subscriber, sends FRAMES patterned frames
 * - `subscribe NAME FRAMES`: subscribes ("queue"), checks every byte of every frame
 * - `produce NAME FRAMES NV12|BGRA`: connects a channel and sends FRAMES patterned frames
 * - `listen NAME FRAMES`: listens, accepts one channel, checks every byte of every frame
 * - `listen-parks NAME FRAMES`: as `listen`, then prints how its receives parked:
 *   `parks {"bell":B,"poll":P}` (run with `SURFACEPORT_DOORBELL=1` to be rung)
 * - `subscribe-parks NAME FRAMES`: as `subscribe`, then prints `parks ...` as `listen-parks`
 * - `hold NAME`: listens under NAME until killed (for `list()`)
 * - `list`: prints `list()` as JSON
 *
 * Prints `ready`, then `ok N` per verified frame (or `bad ...`), then `done`.
 */

import process from "node:process";
import { connect, list, listen, publish, subscribe, Surface } from "../../mod.ts";
import { runtime } from "../../ffi/runtime.ts";
import { fillPattern, verifyPattern } from "../../examples/pattern.ts";
import { doorbellStats } from "../../src/linux/doorbell.ts";

const [mode, name, framesArg, formatArg] = process.argv.slice(2);
const frames = Number(framesArg ?? 0);
const format = (formatArg ?? "BGRA") as "BGRA" | "NV12";
const say = (line: string) => process.stdout.write(`${line}\n`);

async function verifyFrames(
  receive: () => Promise<{ surface: Surface; meta: unknown; close(): void }>,
): Promise<void> {
  for (let n = 0; n < frames; n++) {
    const frame = await receive();
    const { seed } = frame.meta as { seed: number };
    const wrong = verifyPattern(frame.surface, seed);
    say(
      wrong
        ? `bad ${wrong}`
        : `ok ${seed} ${frame.surface.width}x${frame.surface.height} ${frame.surface.format} ${runtime.name}`,
    );
    frame.close();
  }
}

switch (mode) {
  case "publish": {
    using publisher = publish(name);
    say("ready");
    while (publisher.subscribers.length === 0) await new Promise((r) => setTimeout(r, 5));
    for (let seed = 0; seed < frames; seed++) {
      using surface = Surface.create({ width: 320, height: 240, format });
      fillPattern(surface, seed);
      await publisher.send(surface, { seed });
    }
    // Until the subscriber has every frame (it hangs up when done).
    while (publisher.subscribers.length > 0) await new Promise((r) => setTimeout(r, 5));
    break;
  }
  case "subscribe": {
    using subscription = await subscribe(name, { timeout: 10000, policy: "queue", depth: 2 });
    say("ready");
    await verifyFrames(() => subscription.receive({ timeout: 10000 }));
    break;
  }
  case "subscribe-parks": {
    using subscription = await subscribe(name, { timeout: 10000, policy: "queue", depth: 2 });
    say("ready");
    await verifyFrames(() => subscription.receive({ timeout: 10000 }));
    say(
      `parks ${JSON.stringify({ bell: doorbellStats.bellWaits, poll: doorbellStats.pollWaits })}`,
    );
    break;
  }
  case "produce": {
    using channel = await connect(name, { timeout: 10000 });
    say("ready");
    for (let seed = 0; seed < frames; seed++) {
      using surface = Surface.create({ width: 320, height: 240, format });
      fillPattern(surface, seed);
      await channel.send(surface, { seed });
    }
    await channel.receive({ timeout: 10000 }).catch(() => {}); // until the listener hangs up
    break;
  }
  case "listen": {
    using listener = listen(name);
    say("ready");
    using channel = await listener.accept({ timeout: 10000 });
    await verifyFrames(() => channel.receive({ timeout: 10000 }));
    break;
  }
  case "listen-parks": {
    using listener = listen(name);
    say("ready");
    using channel = await listener.accept({ timeout: 10000 });
    await verifyFrames(() => channel.receive({ timeout: 10000 }));
    say(
      `parks ${JSON.stringify({ bell: doorbellStats.bellWaits, poll: doorbellStats.pollWaits })}`,
    );
    break;
  }
  case "hold": {
    using _listener = listen(name);
    say("ready");
    await new Promise(() => setInterval(() => {}, 1000));
    break;
  }
  case "list":
    say(JSON.stringify(await list()));
    break;
  default:
    throw new Error(`unknown mode ${mode}`);
}
say("done");
