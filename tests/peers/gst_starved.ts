/**
 * A to-gst bridge on `@NAME` that runs out of descriptors: it opens
 * `/dev/null` until the table is full, prints `full FDS`, and sends a frame
 * every 20 ms (failures ignored); stdin `free` closes the filler (`freed`).
 */
import { Surface } from "../../mod.ts";
import { GstSinkBridge } from "../../src/gst/to_gst.ts";
import { libc } from "../../ffi/linux.ts";
import { openProcFdDirectory } from "../../src/linux/libc.ts";
import { openPollerControlFd } from "../../src/linux/poller.ts";

const [name] = Deno.args;
openProcFdDirectory();
openPollerControlFd();
using bridge = GstSinkBridge.listen(`@${name}`);
using surface = Surface.create({ width: 64, height: 4 });
const timer = setInterval(() => {
  bridge.send({ surface, close: () => {} }).catch(() => {});
}, 20);
const filler: number[] = [];
const devNull = new TextEncoder().encode("/dev/null\0");
for (;;) {
  const fd = libc().open(devNull, 0o2000000, /* O_RDONLY | O_CLOEXEC */ 0);
  if (fd < 0) break;
  filler.push(fd);
}
console.log(`full ${filler.length}`);
const decoder = new TextDecoder();
for await (const chunk of Deno.stdin.readable) {
  if (decoder.decode(chunk).includes("free")) {
    for (const fd of filler.splice(0)) libc().close(fd);
    console.log("freed");
  }
}
clearInterval(timer);
