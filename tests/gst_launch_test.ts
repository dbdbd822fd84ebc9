/**
 * The command line's GStreamer launcher: a bridge process that is killed
 * outright (SIGKILL: no `stop()` runs) takes its `gst-launch-1.0` with it,
 * instead of leaving a pipeline that serves a dead socket (for to-pipewire,
 * a PipeWire node that stays listed).
 *
 * @module
 */

import assert from "node:assert/strict";
import { Child, uniqueName } from "./helpers.ts";
import { GST } from "./gst_helpers.ts";

const PARENT = new URL("./peers/gst_launch_parent.ts", import.meta.url).pathname;

async function pidsOf(tag: string): Promise<number[]> {
  const out = await new Deno.Command("pgrep", { args: ["-f", `fakesink name=${tag}`] }).output();
  return new TextDecoder().decode(out.stdout).split(/\s+/).filter(Boolean).map(Number);
}

async function waitFor(condition: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return condition();
}

Deno.test({
  name: "gst launcher: a killed bridge process takes its gst-launch-1.0 with it" +
    (GST.root ? "" : ` (ignored: ${GST.reason})`),
  ignore: !GST.root,
  async fn() {
    const tag = uniqueName("orphan").replaceAll("-", "_");
    let pipeline: number[] = [];
    try {
      await using parent = new Child(Deno.execPath(), ["run", "-A", PARENT, tag], {
        SURFACEPORT_GST_LAUNCH: `chroot ${GST.root} gst-launch-1.0`,
      });
      await parent.line("launched");
      assert.ok(
        await waitFor(async () => (pipeline = await pidsOf(tag)).length > 0, 10_000),
        "the pipeline started",
      );
      parent.process.kill("SIGKILL");
      await parent.process.status;
      assert.ok(
        await waitFor(async () => (await pidsOf(tag)).length === 0, 5000),
        `gst-launch-1.0 (pid ${pipeline}) outlived the killed bridge process`,
      );
    } finally {
      for (const pid of await pidsOf(tag)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
      }
    }
  },
});
