/**
 * Drops two received frames without close() (in one process, so the
 * once-per-process warning is observable), lets the garbage collector find
 * them, and shows that the pool gets the surfaces back: prints `reacquired`.
 *
 * Usage: deno run --allow-ffi --v8-flags=--expose-gc drop_frame.ts NAME
 */
import { connect, listen, SurfacePool } from "../../mod.ts";

const name = Deno.args[0];
const listener = listen(name);
const accepted = listener.accept();
const client = await connect(name, { timeout: 5000 });
const server = await accepted;
const pool = new SurfacePool({ width: 64, height: 64, maxSurfaces: 2 });
for (let i = 0; i < 2; i++) {
  const surface = await pool.acquire();
  await client.send(surface);
  surface.close();
  await server.receive({ timeout: 5000 }); // dropped without close()
}
const gc = (globalThis as { gc?: () => void }).gc!;
for (let i = 0; i < 200 && pool.stats.inUseElsewhere > 0; i++) {
  gc();
  await new Promise((resolve) => setTimeout(resolve, 20));
}
const a = await pool.acquire({ timeout: 2000 });
const b = await pool.acquire({ timeout: 2000 });
console.log("reacquired");
a.close();
b.close();
pool.close();
client.close();
server.close();
listener.close();
