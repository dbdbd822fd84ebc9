// examples/use_producer.ts — run: deno run --allow-ffi examples/use_producer.ts camera
import { connect, PeerClosedError, SurfacePool } from "@surfaceport/surfaceport";

const name = Deno.args[0] ?? "camera";
using channel = await connect(name, { timeout: 5000 }); // waits for the consumer to listen
using pool = new SurfacePool({ width: 1920, height: 1080, format: "NV12", maxSurfaces: 6 });
try {
  for (let pts = 0;; pts++) {
    using surface = await pool.acquire({ timeout: 1000 }); // never one a consumer still holds
    surface.bytes(0).fill(pts & 0xff); // Y
    surface.bytes(1).fill(0x80); // CbCr
    await channel.send(surface, { pts }); // the consumer gets the same memory
    await new Promise((resolve) => setTimeout(resolve, 1000 / 30)); // a 30 fps camera
  }
} catch (error) {
  if (!(error instanceof PeerClosedError)) throw error;
  console.log("the consumer went away"); // closed, exited or killed: not a crash here
}
