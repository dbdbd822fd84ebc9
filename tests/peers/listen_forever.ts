/** Binds the channel name given and waits to be killed (for stale-socket tests). */
import { listen } from "../../mod.ts";

const listener = listen(Deno.args[0]);
console.log(`listening ${listener.address}`);
setInterval(() => {}, 1000); // stay alive until killed
