/**
 * A second process for the publish/subscribe tests. Roles:
 *
 * - `sub NAME POLICY DEPTH COUNT`: subscribes, prints `frame SEQ ID OK`
 *   for COUNT frames (OK: every byte equals `meta.fill`), then `done`.
 * - `stall NAME POLICY FLAG`: subscribes, receives one frame (`first SEQ`),
 *   then blocks its whole thread (no event loop) until the file FLAG exists,
 *   then receives once more and prints `after SEQ FILL OK`.
 * - `hold NAME`: subscribes, keeps the first frame (`holding SEQ ID`) until
 *   stdin says `close`, then prints `closed` and waits.
 * - `pub NAME GEN`: publishes a frame every 20 ms with `{ gen, i, fill }`
 *   until killed (`publishing PID` once bound).
 * - `listen-later NAME MS`: waits MS ms, then listens (`listening`),
 *   accepts one peer and prints `accepted`; waits until killed.
 */
import { listen, publish, subscribe, Surface } from "../../mod.ts";

const [mode, name, ...rest] = Deno.args;

function checkFill(bytes: Uint8Array, fill: number): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== fill) return false;
  return true;
}

function fillOf(meta: unknown): number {
  return (meta as { fill?: number } | undefined)?.fill ?? -1;
}

/** Blocks this thread — no event loop turn — until `path` exists. */
function blockUntilExists(path: string): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      Deno.statSync(path);
      return;
    } catch {
      Atomics.wait(cell, 0, 0, 10);
    }
  }
}

switch (mode) {
  case "sub": {
    const [policy, depth, count] = rest;
    using subscription = await subscribe(name, {
      policy: policy as "latest" | "queue",
      depth: Number(depth),
      timeout: 10000,
    });
    console.log("subscribed");
    for (let i = 0; i < Number(count); i++) {
      using frame = await subscription.receive({ timeout: 20000 });
      console.log(
        `frame ${frame.sequence} ${frame.surface.id} ${
          checkFill(frame.surface.bytes(), fillOf(frame.meta))
        }`,
      );
    }
    console.log("done");
    break;
  }
  case "stall": {
    const [policy, flag] = rest;
    using subscription = await subscribe(name, {
      policy: policy as "latest" | "queue",
      timeout: 10000,
    });
    console.log("subscribed");
    {
      using first = await subscription.receive({ timeout: 20000 });
      console.log(`first ${first.sequence}`);
    }
    blockUntilExists(flag);
    using frame = await subscription.receive({ timeout: 20000 });
    const fill = fillOf(frame.meta);
    console.log(`after ${frame.sequence} ${fill} ${checkFill(frame.surface.bytes(), fill)}`);
    break;
  }
  case "hold": {
    using subscription = await subscribe(name, { timeout: 10000 });
    const frame = await subscription.receive({ timeout: 20000 });
    console.log(`holding ${frame.sequence} ${frame.surface.id}`);
    const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
    for await (const chunk of lines) {
      if (chunk.includes("close")) break;
    }
    frame.close();
    console.log("closed");
    await new Promise((resolve) => setTimeout(resolve, 60000));
    break;
  }
  case "pub": {
    const [gen] = rest;
    using publisher = publish(name);
    using surface = Surface.create({ width: 64, height: 16 });
    console.log(`publishing ${Deno.pid}`);
    for (let i = 0;; i++) {
      const fill = i & 0xff;
      surface.bytes().fill(fill);
      await publisher.send(surface, { gen: Number(gen), i, fill });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  // falls through (never reached: pub runs until killed)
  case "listen-later": {
    const [ms] = rest;
    await new Promise((resolve) => setTimeout(resolve, Number(ms)));
    using listener = listen(name);
    console.log("listening");
    using channel = await listener.accept({ timeout: 20000 });
    console.log(`accepted ${channel.peer.pid}`);
    await new Promise((resolve) => setTimeout(resolve, 60000));
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
