// examples/use_subscriber.ts — run: deno run --allow-ffi examples/use_subscriber.ts camera
import { subscribe } from "@surfaceport/surfaceport";

const name = Deno.args[0] ?? "camera";
using subscription = await subscribe(name, { policy: "latest", timeout: 5000 });
for await (const frame of subscription) {
  console.log(frame.sequence, frame.meta); // a gap: frames this consumer skipped
  frame.close();
}
console.log("the publisher went away");
