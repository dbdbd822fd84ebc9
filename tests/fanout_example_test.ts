import assert from "node:assert/strict";
import { EXAMPLE_FLAGS, runRepoScript } from "./helpers.ts";

Deno.test({
  name: "example fanout: one camera, a fast and a deliberately slow consumer, neither stalls it",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { code, stdout: out, stderr } = await runRepoScript(
      EXAMPLE_FLAGS,
      "examples/fanout.ts",
      ["--seconds", "1"],
    );
    assert.equal(code, 0, `${out}\n${stderr}`);
    const camera = /camera: (\d+) frames at 60 fps/.exec(out);
    assert.ok(camera, out);
    const sent = Number(camera[1]);
    const report = (role: string) => {
      const m = new RegExp(`${role}: (\\d+) frames, (\\d+) with wrong pixels, (\\d+) skipped`)
        .exec(out);
      assert.ok(m, out);
      return { frames: Number(m[1]), wrong: Number(m[2]), skipped: Number(m[3]) };
    };
    const preview = report("preview"), model = report("model");
    assert.equal(preview.wrong, 0, out);
    assert.equal(model.wrong, 0, out);
    // The slow one got only some frames, the newest each time; together with the ones it
    // skipped they account for every frame the camera sent.
    assert.ok(model.frames > 0 && model.frames < preview.frames, out);
    assert.ok(model.skipped > 0, out);
    assert.ok(
      model.frames + model.skipped <= sent && preview.frames + preview.skipped <= sent,
      out,
    );
    // The model reached (nearly) the camera's last frame although it was far behind.
    assert.ok(model.frames + model.skipped >= sent - 6, out);
    // The publisher dropped frames for the slow subscriber instead of waiting for it.
    const dropped = [...out.matchAll(/(\d+) sent \/ (\d+) dropped/g)].map((m) => Number(m[2]));
    assert.equal(dropped.length, 2, out);
    assert.ok(Math.max(...dropped) >= sent / 3, out);
  },
});
