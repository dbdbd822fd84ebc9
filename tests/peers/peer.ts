/**
 * A second process for the two-process tests. It connects to the channel
 * named on its command line and plays one role:
 *
 * - `verify NAME`: checks every received frame byte for byte against the
 *   pattern for `meta.seed`, prints `ok SEQ FORMAT ID` (or `bad ...`), echoes
 *   the metadata as `meta JSON`, and exits after a frame with `meta.end`.
 * - `echo NAME`: verifies each frame, writes the pattern for `seed + 1`
 *   into the same surface and sends it back, then closes its frame.
 * - `produce NAME W H FORMAT COUNT`: sends COUNT frames of its own.
 * - `hold NAME`: keeps frames until told on stdin (`close SEQ`, `closeall`),
 *   printing `got SEQ ID`.
 * - `random NAME SEED`: holds each frame for a random while, stamping its
 *   pid into the first bytes and checking on release that no one else wrote
 *   there; prints `corrupt ...` if anyone did, `done N` at `meta.end`.
 */
import { connect, type Frame, type PixelFormat, Surface } from "../../mod.ts";
import { fillPattern, verifyPattern } from "../../examples/pattern.ts";

const [mode, name, ...rest] = Deno.args;
const channel = await connect(name, { timeout: 10000 });
console.log("connected");

function metaOf(frame: Frame): { seed?: number; end?: boolean; [key: string]: unknown } {
  return frame.meta instanceof Uint8Array
    ? { bytes: [...frame.meta] }
    : (frame.meta as never) ?? {};
}

switch (mode) {
  case "verify": {
    for await (const frame of channel) {
      const meta = metaOf(frame);
      console.log(
        `meta ${
          JSON.stringify(
            frame.meta instanceof Uint8Array ? { bytes: [...frame.meta] } : frame.meta ?? null,
          )
        }`,
      );
      if (meta.end) {
        frame.close();
        break;
      }
      const problem = typeof meta.seed === "number"
        ? verifyPattern(frame.surface, meta.seed)
        : undefined;
      console.log(
        problem
          ? `bad ${frame.sequence} ${problem}`
          : `ok ${frame.sequence} ${frame.surface.format} ${frame.surface.id} ${frame.surface.width}x${frame.surface.height}`,
      );
      frame.close();
    }
    console.log("done");
    break;
  }
  case "echo": {
    for await (const frame of channel) {
      const meta = metaOf(frame);
      if (meta.end) break;
      const problem = verifyPattern(frame.surface, meta.seed!);
      if (problem) console.log(`bad ${problem}`);
      fillPattern(frame.surface, meta.seed! + 1);
      await channel.send(frame.surface, { seed: meta.seed! + 1 });
      frame.close();
    }
    console.log("done");
    break;
  }
  case "produce": {
    const [w, h, format, count] = rest;
    using surface = Surface.create({ width: +w, height: +h, format: format as PixelFormat });
    for (let i = 0; i < +count; i++) {
      fillPattern(surface, i);
      await channel.send(surface, { seed: i });
      // Wait for the ack so the next fill does not race the reader.
      const ack = await channel.receive({ timeout: 10000 });
      ack.close();
    }
    await channel.send(surface, { end: true });
    console.log("done");
    break;
  }
  case "hold": {
    const held = new Map<number, Frame>();
    const commands = (async () => {
      const decoder = new TextDecoder();
      let buffer = "";
      for await (const chunk of Deno.stdin.readable) {
        buffer += decoder.decode(chunk);
        let i;
        while ((i = buffer.indexOf("\n")) >= 0) {
          const [command, arg] = buffer.slice(0, i).split(" ");
          buffer = buffer.slice(i + 1);
          if (command === "close") {
            held.get(+arg)?.close();
            held.delete(+arg);
            console.log(`closed ${arg}`);
          } else if (command === "closeall") {
            for (const f of held.values()) f.close();
            held.clear();
            console.log("closed all");
          }
        }
      }
    })();
    for await (const frame of channel) {
      held.set(frame.sequence, frame);
      console.log(`got ${frame.sequence} ${frame.surface.id}`);
    }
    await commands;
    break;
  }
  case "random": {
    let state = Number(rest[0]) >>> 0 || 1;
    const random = () => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 2 ** 32;
    };
    let corrupt = 0, count = 0;
    const pending: Promise<void>[] = [];
    for await (const frame of channel) {
      if (metaOf(frame).end) {
        frame.close();
        break;
      }
      count++;
      const stamp = new DataView(frame.surface.bytes().buffer, frame.surface.bytes().byteOffset, 8);
      stamp.setUint32(0, Deno.pid, true);
      stamp.setUint32(4, frame.sequence, true);
      pending.push(
        new Promise<void>((resolve) => {
          setTimeout(() => {
            if (
              stamp.getUint32(0, true) !== Deno.pid || stamp.getUint32(4, true) !== frame.sequence
            ) {
              corrupt++;
              console.log(`corrupt ${frame.sequence} ${stamp.getUint32(0, true)}`);
            }
            frame.close();
            resolve();
          }, random() * 20);
        }),
      );
    }
    await Promise.all(pending);
    console.log(`done ${count} ${corrupt}`);
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
channel.close();
