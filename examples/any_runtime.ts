// examples/any_runtime.ts — run: node examples/any_runtime.ts | bun examples/any_runtime.ts |
//                                 deno run --allow-ffi examples/any_runtime.ts
// One process, both ends: a surface goes out on a channel and comes back as a frame over the
// same memory. Written against node:process only, so every runtime runs it as it is.
import process from "node:process";
import { connect, listen, Surface } from "../mod.ts";

const name = `any-runtime-${process.pid}`;
using listener = listen(name);
const accepted = listener.accept({ timeout: 5000 });
using producer = await connect(name, { timeout: 5000 });
using consumer = await accepted;

using surface = Surface.create({ width: 1920, height: 1080, format: "BGRA" });
surface.bytes().fill(0x80);
await producer.send(surface, { pts: 0 });

using frame = await consumer.receive({ timeout: 1000 });
const runtime = "Deno" in globalThis ? "Deno" : "Bun" in globalThis ? "Bun" : "Node";
console.log(
  `${runtime}: frame ${frame.sequence}, ${frame.surface.width}x${frame.surface.height}, ` +
    `same memory: ${frame.surface.id === surface.id}, first byte ${frame.surface.bytes()[0]}`,
);
