/**
 * A receiver whose only pending work is one parked receive, for
 * `tests/poll_thread_test.ts`: connects to NAME, prints `connected`, parks
 * in `receive()` with no timeout and no timer of its own, prints
 * `received WxH (poll: thread|calls)` and closes everything, then ends without `Deno.exit`: it
 * lives exactly as long as something keeps it alive. With LIBRARY, the
 * shared poll's thread loads that library instead of libc (one that does
 * not exist makes the thread fail).
 *
 * Usage: deno run --allow-ffi --allow-read --allow-write --allow-env
 * parked_receiver.ts NAME [LIBRARY]
 */
import { connect } from "../../mod.ts";
import { setPollThreadLibrary, sharedPollRunner } from "../../src/linux/poller.ts";

const [name, library] = Deno.args;
if (library) setPollThreadLibrary(library);
const channel = await connect(name, { timeout: 10_000 });
console.log("connected");
const frame = await channel.receive();
console.log(`received ${frame.width}x${frame.height} (poll: ${sharedPollRunner()})`);
frame.close();
channel.close();
