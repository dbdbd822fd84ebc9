// examples/use_consumer.ts — run: deno run --allow-ffi examples/use_consumer.ts camera
import { listen } from "@surfaceport/surfaceport";

const name = Deno.args[0] ?? "camera";
using listener = listen(name);
using channel = await listener.accept();
for await (const frame of channel) {
  const luma = frame.surface.bytes(0); // zero-copy view of the producer's memory
  console.log(frame.sequence, frame.meta, luma[0]);
  frame.close(); // the producer's pool may reuse it once every holder let go
}
