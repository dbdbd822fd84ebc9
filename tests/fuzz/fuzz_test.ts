import assert from "node:assert/strict";
import { decodeHeader, HEADER_SIZE } from "../../src/wire/wire.ts";
import { ProtocolError } from "../../src/core/errors.ts";
import { fuzz, TARGETS } from "./fuzz.ts";
import { mutate, Xorshift } from "./mutate.ts";

// The normal suite runs a slice of `deno task fuzz` (which runs 100,000 per decoder).
const ITERATIONS = 4000;

for (const target of TARGETS) {
  Deno.test(`fuzz: ${target.name} holds its contract on ${ITERATIONS} mutated inputs`, () => {
    // Fixed (deterministic), and not the task's seed 1, so the slice adds coverage; FUZZ_SEED overrides.
    const seed = Number(Deno.env.get("FUZZ_SEED") ?? 2);
    const [report] = fuzz({ iterations: ITERATIONS, seed, only: target.name })
      .filter((r) => r.name === target.name);
    assert.ok(report.inputs >= ITERATIONS, `ran ${report.inputs} inputs (seed ${seed})`);
  });
}

Deno.test("fuzz: the PRNG and the mutations are deterministic for a seed", () => {
  const a = new Xorshift(42), b = new Xorshift(42);
  const seed = new Uint8Array(64).map((_, i) => i);
  for (let i = 0; i < 100; i++) assert.deepEqual(mutate(seed, [], a), mutate(seed, [], b));
  assert.notEqual(new Xorshift(1).next(), new Xorshift(2).next());
  assert.notEqual(new Xorshift(0).next(), 0, "seed 0 does not stick at 0");
});

Deno.test("fuzz: a header truncated at every length is a ProtocolError (regression: 8 and 9 bytes)", () => {
  const [seed] = TARGETS.find((t) => t.name === "wire.decodeHeader")!.seeds();
  for (let length = 0; length < HEADER_SIZE; length++) {
    assert.throws(
      () => decodeHeader(seed.subarray(0, length), 1 << 30),
      ProtocolError,
      `${length} bytes`,
    );
  }
});
