/**
 * The list of `deno task mutants` fits the code: every row's text occurs
 * exactly once in its file and every test file it names exists. A change that
 * moves code a row names fails here, at land time, not only when CI runs the
 * mutations themselves.
 */
import assert from "node:assert/strict";
import { applyMutant, checkMutantList, REPO_ROOT } from "../tools/mutants.ts";
import { type Mutant, MUTANTS } from "../tools/mutants_list.ts";

Deno.test("mutants: every row's text occurs exactly once in its file (else: the code moved, update tools/mutants_list.ts)", () => {
  assert.deepEqual(checkMutantList(REPO_ROOT), []);
  assert.ok(
    MUTANTS.length >= 20,
    `issue 23 asks for at least 20 mutations, the list has ${MUTANTS.length}`,
  );
});

Deno.test("mutants: the list check refuses a row whose text moved, is doubled, or names a missing test", () => {
  const good = MUTANTS[0];
  const rows: Mutant[] = [
    { ...good, id: "moved", find: "this text is in no file of surfaceport \u0000" },
    { ...good, id: "doubled", file: "tools/mutants_list.ts", find: "find:" },
    { ...good, id: "no-test", tests: ["tests/no_such_test.ts"] },
    { ...good, id: "no-filter-match", filter: "no test is named like this \u0000" },
    { ...good, id: "twice" },
  ];
  const problems = checkMutantList(REPO_ROOT, rows);
  for (const id of ["moved", "doubled", "no-test", "no-filter-match", "twice"]) {
    assert.ok(
      problems.some((p) => p.startsWith(`mutation ${id}:`)),
      `${id}: ${problems.join("\n")}`,
    );
  }
  assert.match(problems.join("\n"), /the code moved: update the list/);
});

Deno.test("mutants: applyMutant changes exactly the named text, every edit of a row, or nothing", () => {
  const row: Mutant = {
    id: "x",
    file: "f",
    find: "b",
    replace: "B",
    also: [{ find: "d", replace: "D" }],
    tests: [],
    why: "test",
  };
  assert.equal(applyMutant("abcd", row), "aBcD");
  assert.equal(applyMutant("abcb", row), undefined, "b twice");
  assert.equal(applyMutant("abc", row), undefined, "no d");
});
