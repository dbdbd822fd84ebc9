/**
 * The from-gst pipelines' supervisor (`src/gst/from_gst_supervisor.ts`)
 * with a fake launcher whose pipelines fail at once: how often it launches
 * them again. No GStreamer runs here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { GstSourceSupervisor } from "../src/gst/from_gst_supervisor.ts";
import { privateSocketName } from "../src/gst/launcher.ts";
import type { GstLauncher } from "../src/gst/launcher.ts";

Deno.test({
  name: "gst supervisor: a pipeline restarted at once (its error asked for it) that fails " +
    "again waits the backoff, never a loop of launches",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const launched: number[] = [];
    // Each pipeline ends at once with an error; its unixfdsink never appears.
    const launch: GstLauncher = () => {
      launched.push(performance.now());
      return {
        exited: Promise.resolve(1),
        errorText: () => "ERROR: from element /GstPipeline:pipeline0/GstPipeWireSrc:pipewiresrc0",
        stop: () => Promise.resolve(),
      };
    };
    let askedAtOnce = 0;
    const supervisor = new GstSourceSupervisor(launch, {
      address: privateSocketName("supervisor-test"),
      pipeline: () => ["fakesrc", "!", "fakesink"],
      connectTimeout: 10_000,
      maxBackoff: 1000,
      // The first ended pipeline asks for the next at once (as a copy-mode switch does).
      ended: () => askedAtOnce++ === 0,
    });
    const running = supervisor.run({ send: () => Promise.resolve() }, () => undefined, undefined);
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } finally {
      await supervisor.close();
      await running;
    }
    const gaps = launched.slice(1).map((at, i) => Math.round(at - launched[i]));
    console.log(`  ${launched.length} launches in 1 s, gaps ${gaps.join(", ")} ms`);
    // (the pause is a timer: >= 100 ms; "at once" is a launch and a refused connect, ~20 ms here)
    assert.ok(gaps[0] < gaps[1], `the restart asked for at once waited ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 90, `the next failure waited ${gaps[1]} ms, not the backoff`);
    assert.ok(
      launched.length <= 6,
      `${launched.length} launches in 1 s (0, 100, 200, 400 ms pauses)`,
    );
    assert.ok(
      supervisor.restarts >= launched.length - 1,
      `${supervisor.restarts} restarts counted`,
    );
  },
});
