import assert from "node:assert/strict";
import { formatSoakReport, runSoak } from "./soak.ts";

Deno.test({
  name: "soak: 20,000 handoffs through a pool between two processes; fds and RSS stay flat",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // Descriptors must be exactly as flat as in the full run. RSS is judged loosely here: in the
    // first ~100,000 handoffs V8's heap is still growing towards its steady size (see
    // `deno task soak` for the 1,000,000-handoff verdict), so a slice only catches gross leaks
    // (a mapping or a buffer per frame would be hundreds of MiB).
    const report = await runSoak({
      handoffs: 20_000,
      samples: 20,
      rssToleranceBytes: 96 * 1048576,
    });
    const text = formatSoakReport(report);
    assert.equal(report.corrupt, 0, text);
    assert.deepEqual(report.problems, [], text);
  },
});
