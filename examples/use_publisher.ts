// examples/use_publisher.ts — run: deno run --allow-ffi --allow-read --allow-write examples/use_publisher.ts camera
import { publish, SurfacePool } from "@surfaceport/surfaceport";

const name = Deno.args[0] ?? "camera";
using publisher = publish(name); // any number of subscribers, in any process, at any time
// As many surfaces as its subscribers may hold (their budgets), plus the one painted here.
const maxSurfaces = publisher.surfaceBudget + 1;
using pool = new SurfacePool({ width: 1280, height: 720, maxSurfaces });
for (let pts = 0;; pts++) {
  using surface = await pool.acquire({ timeout: 1000 }); // never one a subscriber still holds
  surface.bytes().fill(pts & 0xff);
  await publisher.send(surface, { pts }); // never waits for a "latest" subscriber
  await new Promise((resolve) => setTimeout(resolve, 1000 / 30)); // a 30 fps camera
}
