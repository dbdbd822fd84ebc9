/**
 * The curated mutations of `deno task mutants` (tools/mutants.ts): each one a
 * real regression, written as the exact text of `file` to change (it must
 * occur exactly once) and what to put instead, with the test files that must
 * catch it. Rows come from three places: the table of issue 23 (tests that
 * once passed whatever the code did), the defects fixed in this project's
 * history that got a test, and the README's promises that a test guards.
 *
 * When you change code that a row names, update the row in the same commit
 * (`tests/mutants_list_test.ts` fails when a row's text no longer occurs
 * exactly once). The suite does not run the mutations: before landing,
 * `deno task mutants --since main` runs the rows whose file or tests your
 * change touched (a stronger check elsewhere can make a test stop catching
 * its row: the preview's token made its Host test pass without the Host check). Keep `tests` minimal, with a `filter` where a file is large:
 * the whole list must run in a few minutes.
 *
 * @module
 */

/** One text replacement in a mutated file. */
export interface Edit {
  /** Exact text of the file; must occur exactly once. */
  find: string;
  /** What it becomes. */
  replace: string;
}

/** One mutation and the tests that must catch it. */
export interface Mutant extends Edit {
  /** Short kebab-case name (for `--only`). */
  id: string;
  /** The file to change, relative to the checkout. */
  file: string;
  /** Further edits of the same file, for a mutation that needs more than one place changed. */
  also?: Edit[];
  /** The test files to run (relative to the checkout); one of their tests must fail. */
  tests: string[];
  /** `deno test --filter`: only the tests whose names contain this text. */
  filter?: string;
  /** What the mutation breaks and where that was fixed or promised. */
  why: string;
}

/** Every mutation `deno task mutants` runs. */
export const MUTANTS: Mutant[] = [
  // --- Pipelines outlive no bridge ----------------------------------------------------------
  {
    id: "gst-launch-no-pdeathsig",
    file: "cli/gst_launch.ts",
    find: "  if (setpriv === null) setpriv = findSetpriv();",
    replace: "  setpriv = undefined;",
    tests: ["tests/gst_launch_test.ts"],
    why: "a SIGKILLed bridge left its gst-launch-1.0 serving a dead socket (a to-pipewire node " +
      "stayed listed; test daemons ran for an hour at 35% CPU each)",
  },
  {
    id: "from-gst-holds-8",
    file: "src/gst/from_gst.ts",
    find: "          maxOutstanding: options.maxOutstanding ?? heldForBudget(sink),",
    replace: "          maxOutstanding: options.maxOutstanding ?? 8,",
    tests: ["tests/gst_from_budget_test.ts"],
    why: "from-gst held at most 8 buffers, below its publisher's budget: subscribers keeping " +
      "frames within their own budgets starved every other one (witness: 2 frames in 2 s, not 60)",
  },

  // --- Issue 24: the doorbell ---------------------------------------------------------------
  {
    id: "bell-node-bun-not-listening",
    file: "ffi/runtime_node_files.ts",
    find: "  server.listen(path);",
    replace: "",
    tests: ["tests/doorbell_runtimes_test.ts"],
    why: "issue 24: a Node or Bun receiver must be rung through its own reactor (node:net), " +
      "not fall back to the shared poll",
  },
  {
    id: "bell-park-on-poll",
    file: "src/linux/channel_doorbell.ts",
    find: "if (bell !== undefined && bell.live) {\n      doorbellStats.bellWaits++;",
    replace: "if (bell !== undefined && !bell.live) {\n      doorbellStats.bellWaits++;",
    tests: ["tests/doorbell_runtimes_test.ts"],
    filter: "subscriber parks on its doorbell",
    why: "issue 24: with the doorbell bound, a subscription's receives and the publisher's " +
      "waits for credits and hang-ups park on it, not on the shared poll",
  },
  {
    id: "bell-deadline-timer-per-park",
    file: "src/linux/bell_tower.ts",
    find: "if (wait.deadline < this.#armedFor) this.#arm(wait.deadline);",
    replace: "this.#arm(wait.deadline);",
    tests: ["tests/doorbell_test.ts"],
    filter: "share one deadline timer",
    why: "issue 24: a setTimeout + clearTimeout per park costs ~4 µs in Deno; parks on a bell " +
      "share one deadline timer",
  },
  {
    id: "bell-deadline-never-expires",
    file: "src/linux/bell_tower.ts",
    find: "if (wait.deadline <= now) {",
    replace: "if (wait.deadline < 0) {",
    tests: ["tests/doorbell_test.ts"],
    filter: "share one deadline timer",
    why: "issue 24: the shared deadline timer must still end a wait on a bell that nothing wakes",
  },
  // --- Issue 23: mutations the named tests once let through (its table, and found by reading) -
  {
    id: "gst-release-unheld-kept",
    file: "src/gst/to_gst_clients.ts",
    find: 'if (!this.#release(client, releaseIdNumber(message))) throw new Error("not held");',
    replace: "if (!this.#release(client, releaseIdNumber(message))) continue;",
    tests: ["tests/gst_bridge_test.ts"],
    filter: "to-gst hands each client a locked descriptor",
    why: "issue 23: a RELEASE for an id the client does not hold must drop the client, as " +
      "unixfdsink does (the test took the TimeoutError of a live connection for the drop)",
  },
  {
    id: "received-cache-off",
    file: "src/linux/received.ts",
    find: "let cacheable = key !== Infinity;",
    replace: "let cacheable = false;",
    tests: ["tests/channel_mappings_test.ts"],
    filter: "a surface that returns is not remapped",
    why: "issue 23: with the mapping cache off every frame is mapped again (the test compared " +
      "addresses, and mmap hands back the one just freed)",
  },
  {
    id: "received-cache-evicts-through-map-iterator",
    file: "src/linux/received.ts",
    find: "      for (let i = 1; i < list.length; i++) {\n" +
      "        if (list[i].lastUsed < list[oldestAt].lastUsed) oldestAt = i;\n      }",
    replace: "      for (const m of this.#entries.values()) {\n" +
      "        if (m.lastUsed < list[oldestAt].lastUsed) oldestAt = list.indexOf(m);\n      }",
    tests: ["tests/mapping_cache_test.ts"],
    filter: "an eviction from a full cache of 1024 allocates",
    why: "1be6902: the scan for the least recently used mapping went through the map's " +
      "iterator, a result object per cached entry before V8 optimized it (~41 KB per eviction " +
      "from a full cache of 1024 unoptimized; 827 B per frame of from-gst in the CI run)",
  },
  {
    id: "received-cache-evicts-first-listed",
    file: "src/linux/received.ts",
    find: "if (list[i].lastUsed < list[oldestAt].lastUsed) oldestAt = i;",
    replace: "if (list[i].lastUsed < 0) oldestAt = i; // evicts whatever is listed first",
    tests: ["tests/mapping_cache_test.ts"],
    filter: "each new memfd evicts exactly one mapping, the least recently used",
    why: "the cache evicts the least recently used mapping, not the first one it listed (a " +
      "surface a pool keeps returning would be unmapped and mapped again)",
  },
  {
    id: "received-evicted-mapping-kept",
    file: "src/linux/received.ts",
    find: "      oldest.evict(); // unmapped now, or when its last frame closes",
    replace: "      // oldest.evict(): dropped from the cache, never unmapped",
    tests: ["tests/mapping_cache_test.ts"],
    why: "a mapping the cache lets go of for a new memfd is unmapped (now, or when its last " +
      "frame closes): kept, every new memfd past the cache's capacity leaked a mapping",
  },
  {
    id: "received-uncached-mapping-leaked",
    file: "src/linux/received.ts",
    find: "    this.#references--;\n    this.#unmapIfUnused();",
    replace: "    this.#references--; // a mapping the cache no longer keeps stays mapped",
    tests: ["tests/soak/soak_test.ts"],
    filter: "a consumer that caches no mapping",
    why: "issue 23: the soak's page-leak check (received-mapping-leaked, dropped in 26f21e9 as " +
      "equivalent): a frame whose mapping the cache does not keep leaves it mapped when it " +
      "closes, a page of the consumer's RSS per frame (4.2 KB per handoff against 1 KB); the " +
      "descriptors stay flat, so only the memory check sees it",
  },
  {
    id: "finalizer-no-unmap",
    file: "src/linux/surface.ts",
    find: "  r.spare.close();\n  unmap(r.pointer, r.size);\n  closeQuietly(r.fd);\n});",
    replace: "  r.spare.close();\n  closeQuietly(r.fd);\n});",
    tests: ["tests/surface_test.ts"],
    filter: "is unmapped and its fd closed by the finalizer",
    why: "issue 23: a surface dropped without close() must be unmapped by the finalizer (the " +
      "test counted descriptors only)",
  },
  {
    id: "pool-ignores-max",
    file: "src/surface/pool.ts",
    find: "    if (this.#entries.length < this.maxSurfaces) {",
    replace: "    if (true) {",
    tests: ["tests/pool_test.ts"],
    filter: "randomized consumers never see a surface reused",
    why: "README: a pool allocates at most maxSurfaces and then waits (issue 23 took the " +
      "test's ids.size <= maxSurfaces for an assertion that cannot fail)",
  },
  {
    id: "verify-named-tmpfs-file",
    file: "src/linux/verify.ts",
    find: "if ((stat.mode & LINUX.S_IFMT) !== LINUX.S_IFREG || stat.nlink > 0) {",
    replace: "if (false) {",
    tests: ["tests/rules_test.ts"],
    filter: "rules: the library judges every rule",
    why: "docs/protocol.md: a /dev/shm file is NOT_SHARED_MEMORY, not an unsealed memfd (the " +
      "rule ran nowhere: Deno refuses to stat /dev/shm without --allow-all, and it was dropped " +
      "silently)",
  },
  {
    id: "registry-leaves-foreign-dir",
    file: "src/channel/registry.ts",
    find: "      if (created) files.remove(path);\n",
    replace: "",
    tests: ["tests/darwin_pubsub_test.ts"],
    filter: "registry: a fake task's uid never gets a registry directory",
    why: "a directory made for a uid this process does not run as would lock that user out of " +
      "their registry (issue 23: the test returned early, reporting ok, where euid is 501)",
  },
  // --- Defects fixed in this project's history, each with its test ---------------------------
  {
    id: "gst-shared-record-buffer",
    file: "src/gst/to_gst.ts",
    find: "const rest = message.slice(Math.max(0, sent));",
    replace: "const rest = message.subarray(Math.max(0, sent));",
    tests: ["tests/gst_concurrent_send_test.ts"],
    why: "6a18dc0: overlapping to-gst sends shared one NEW_BUFFER record: the first queued send " +
      "read the second call's id",
  },
  {
    id: "gst-duplicate-id-released",
    file: "src/gst/from_gst_buffers.ts",
    find: "if (this.#held.holds(buffer)) {",
    replace: "if (false) {",
    tests: ["tests/gst_duplicate_id_test.ts"],
    why:
      "ee09d63: a NEW_BUFFER under a held id was answered with RELEASE_BUFFER, which GStreamer " +
      "takes as the held buffer's release",
  },
  {
    id: "publish-partial-send-orphaned",
    file: "src/pubsub/publish.ts",
    find:
      "      if (batch) {\n        batch.fail(error);\n        return batch.promise!;\n      }\n",
    replace: "",
    tests: ["tests/publish_partial_send_test.ts"],
    why: "988c13a: a send that failed part-way (EMFILE) left an orphaned batch whose timeout " +
      "rejected unobserved",
  },
  {
    id: "gst-export-fail-keeps-slot",
    file: "src/gst/to_gst.ts",
    find:
      "      if (!waiting) {\n        this.#frames.settle(entry);\n        throw error;\n      }\n",
    replace: "      if (!waiting) throw error;\n",
    tests: ["tests/gst_send_export_fail_test.ts"],
    why: "266972e: a send whose descriptor export threw kept its frame outstanding (and its " +
      "maxOutstanding slot) until close",
  },
  {
    id: "gst-framer-fd-count",
    file: "src/gst/framer.ts",
    find: "if (this.#fds.length > MAX_FDS_PER_MESSAGE) {",
    replace: "if (false) {",
    tests: ["tests/gst_framer_fds_test.ts"],
    why: "aae9775: a peer trickling descriptors with every piece of a large payload made the " +
      "bridge hold them all",
  },
  {
    id: "emfile-no-spare",
    file: "src/linux/listener.ts",
    find: "wakeFd, spare: openSpare(),",
    replace: "wakeFd, spare: -1,",
    tests: ["tests/hostile_connections_test.ts"],
    filter: "a listener out of descriptors refuses the waiting client",
    why: "91c4025: without a spare descriptor a listener at EMFILE cannot accept-and-refuse the " +
      "waiting client, which then waits forever",
  },
  {
    id: "timeout-names-backend-slice",
    file: "src/channel/channel.ts",
    find: 'throw callersTimeout(error, "receive", options.timeout);',
    replace: "throw error;",
    tests: ["tests/channel_connections_test.ts"],
    filter: "a TimeoutError names the caller's timeout",
    why: "70fa920: a TimeoutError named the backend's last wait slice, not the caller's timeout",
  },
  {
    id: "connect-timeout-no-retry",
    file: "src/channel/options.ts",
    find: "if (timeout === undefined || !over.nameAbsent(error)) throw error;",
    replace: "throw error;",
    tests: ["tests/pubsub_test.ts"],
    filter: "subscribe with a timeout waits for the publisher to appear",
    why: "8c7202d: connect/subscribe with a timeout wait for the name to appear (README: start " +
      "the consumer first)",
  },
  {
    id: "size-checked-before-seals",
    file: "src/linux/verify.ts",
    find: "  const lib = libc();\n  // 1. Seals.",
    replace:
      "  const lib = libc();\n  checkSize(Number(fstatx(fd).size), geometry); // the old order\n" +
      "  // 1. Seals.",
    tests: ["tests/verify_test.ts"],
    filter: "the order is seals, size, access mode",
    why: "4f05432: a size read before the seals is not final: a sender shrinks the memfd in " +
      "between and the receiver dies of SIGBUS (the race itself: tests/hostile_messages_test.ts, " +
      "too rare to be a mutation's verdict)",
  },
  {
    id: "created-memfd-unsealed",
    file: "src/linux/surface.ts",
    find: "LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL,",
    replace: "LINUX.F_SEAL_SEAL,",
    tests: ["tests/surface_test.ts"],
    filter: "the memfd is sealed",
    why: "README: a created surface is sealed against shrink and grow, so no holder can make " +
      "another fault with SIGBUS",
  },
  {
    id: "created-views-not-detached",
    file: "src/linux/surface.ts",
    find: "    r.spare.close();\n    detachBuffer(this.#buffer);\n",
    replace: "    r.spare.close();\n",
    tests: ["tests/surface_test.ts"],
    filter: "views taken before close() are detached",
    why: "b84e55b / README: views of a closed surface are detached before munmap, never dangling",
  },
  {
    id: "wire-sequence-past-2-53",
    file: "src/wire/wire.ts",
    find: "  if (sequence > MAX_SAFE) {",
    replace: "  if (false) {",
    tests: ["tests/wire_test.ts"],
    why: "2d0d8fe: sequence numbers past 2^53-1 are refused (docs/protocol.md)",
  },
  {
    id: "wire-decoder-sequence-past-2-53",
    file: "src/wire/wire.ts",
    find: "if (view.getUint32(36, true) >= 0x200000) {",
    replace: "if (false) {",
    tests: ["tests/rules_test.ts"],
    filter: "rules: the library judges every rule",
    why: "c4bf5e8: the reusing HeaderDecoder checks every message as decodeHeader does",
  },
  {
    id: "wire-unused-plane-records",
    file: "src/wire/wire.ts",
    find: "    if (view.getBigUint64(at, true) !== 0n) {",
    replace: "    if (false) {",
    tests: ["tests/wire_test.ts"],
    why: "2d0d8fe: plane records past planeCount must be zero (docs/protocol.md)",
  },
  {
    id: "registry-keeps-abandoned-tmp",
    file: "src/channel/registry.ts",
    find: "          removeIfAbandoned(file, dir);\n",
    replace: "",
    tests: ["tests/pubsub_test.ts"],
    filter: "list() removes an entry's .tmp abandoned",
    why:
      "78b4752: a .json.tmp of a process killed mid-write stayed in /tmp/surfaceport-UID forever",
  },
  {
    id: "preview-any-host",
    file: "cli/preview.ts",
    find: "  if (!own.includes(host)) {",
    replace: "  if (false) {",
    tests: ["tests/cli_preview_test.ts"],
    filter: "refuses foreign Hosts",
    why: "1a766ac: the preview served any Host header (DNS rebinding)",
  },
  {
    id: "from-gst-unbounded-holds",
    file: "src/gst/from_gst_buffers.ts",
    find: "if (this.#held.full) {",
    replace: "if (false) {",
    tests: ["tests/gst_bridge_test.ts"],
    filter: "from-gst holds at most maxOutstanding",
    why: "README: from-gst holds at most maxOutstanding buffers and gives the rest back at once",
  },
  {
    id: "to-gst-send-promise-per-frame",
    file: "src/gst/to_gst.ts",
    find: "      return this.#sendNow(frame, id) ?? SETTLED;",
    replace: "      return Promise.resolve(this.#sendNow(frame, id));",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "to-gst",
    why: "issue 20: a to-gst frame that every client's socket took returns one shared settled " +
      "promise, no promise (or async function) per frame",
  },
  {
    id: "to-gst-release-wait-per-release",
    file: "src/gst/to_gst_clients.ts",
    find: "      client.armReadable(this.#clients.get(client)!.onReadable);",
    replace:
      "      client.waitReadable().then((ready) => this.#clients.get(client)?.onReadable(ready, " +
      "undefined));",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "to-gst",
    why: "issue 20: to-gst waits for each client's RELEASE_BUFFERs by re-arming one wait record, " +
      "not with a promise, a reaction and a closure per release",
  },
  {
    id: "from-gst-adopted-with-token",
    file: "src/gst/adopt.ts",
    find: '    return new Surface(backing, backing, finalize, "adopted");',
    replace: '    return new Surface(backing, backing, finalize, "created");',
    tests: ["tests/gst_allocation_test.ts"],
    filter: "adopting a cached memfd",
    why: "issue 20: a surface adopted per GStreamer buffer registers its finalizer without an " +
      "unregister token (~52 B per frame)",
  },
  {
    id: "from-gst-adopts-with-finalizer",
    file: "src/gst/adopt.ts",
    find: "    return this.#adopt(fd, geometry, false);",
    replace: "    return this.#adopt(fd, geometry, true);",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "adopts a cached memfd in",
    why: "issue 20: the from-gst bridge owns and closes every surface it adopts, so it registers " +
      "no finalizer per frame (V8's ~72 B)",
  },
  {
    id: "from-gst-close-leaves-sending",
    file: "src/gst/from_gst.ts",
    find: "    this.#sending?.close();\n",
    replace: "",
    tests: ["tests/gst_owned_surfaces_test.ts"],
    why: "with no finalizer behind the surfaces it adopts, the from-gst bridge's close() must " +
      "close the one a sink's unsettled send still has (its descriptor and mapping leaked)",
  },
  {
    id: "from-gst-meta-double-fields",
    file: "src/gst/from_gst_options.ts",
    find: "  const meta: GstFrameMeta = { pts: null, duration: null, offset: null };\n" +
      '  meta.pts = bufferNumberOrNull(buffer, "pts");\n' +
      '  meta.duration = bufferNumberOrNull(buffer, "duration");\n' +
      '  meta.offset = bufferNumberOrNull(buffer, "offset");\n' +
      "  return meta;\n",
    replace: "  return {\n" +
      '    pts: bufferNumberOrNull(buffer, "pts"),\n' +
      '    duration: bufferNumberOrNull(buffer, "duration"),\n' +
      '    offset: bufferNumberOrNull(buffer, "offset"),\n' +
      "  };\n",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "default meta",
    why: "issue 20: the default meta's fields stay tagged; made of numbers, V8 gives it double " +
      "fields, each boxed apart per frame (~32 B)",
  },
  {
    id: "from-gst-park-promise",
    file: "src/gst/from_gst.ts",
    find: "            this.#connection.armReadable(run.onReadable);\n",
    replace: "            this.#connection.waitReadable(Infinity, this.#signal).then(\n" +
      "              (ready) => run.onReadable(ready, undefined),\n" +
      "              (error) => run.onReadable(false, error),\n" +
      "            );\n",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "live source",
    why: "issue 20: from-gst parks by re-arming the socket's one wait record and is called back, " +
      "with no promise per park for its loop to await (~460 B per frame behind a live source)",
  },
  {
    id: "from-gst-watch-promise-per-wake",
    file: "src/gst/held_buffers.ts",
    find: "    this.#continueWatch();\n  };\n",
    replace: "    void Promise.resolve().then(() => this.#continueWatch());\n  };\n",
    tests: ["tests/gst_held_allocation_test.ts"],
    why: "issue 20: the from-gst bridge's watch of its held buffers, woken per frame a consumer " +
      "lets go of, re-arms one wait record from its callback: no promise, reaction or closure " +
      "per wake",
  },
  {
    id: "to-gst-queued-sends",
    file: "src/gst/to_gst.ts",
    find: "      sent = client.trySend(message, message.length, handle);",
    replace: "      sent = -1;",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "to-gst",
    why: "issue 20: a to-gst frame goes to a client with room in one nonblocking sendmsg, not " +
      "through a queued send (a copy, promises and a chain per client per frame)",
  },
  {
    id: "to-gst-settles-mid-send",
    file: "src/gst/frame_slots.ts",
    find: "    if (entry.pending.length > 0 || entry.id === 0 || entry.sending) return;",
    replace: "    if (entry.pending.length > 0 || entry.id === 0) return;",
    tests: ["tests/gst_concurrent_send_test.ts"],
    filter: "fails mid-send",
    why: "a to-gst client whose send fails at once must not settle (close) the frame before the " +
      "clients still to be served got it",
  },
  {
    id: "from-gst-waits-to-release",
    file: "src/gst/from_gst.ts",
    find: "          this.#handedOver(surface, buffer);\n          continue;\n",
    replace: "          this.#handedOver(surface, buffer);\n" +
      "          return void this.#connection.waitWritable().then(() => this.#pump(run));\n",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "flat out",
    why: "issue 20: a from-gst bridge that stops reading until it may write its releases " +
      "deadlocks with unixfdsink, which writes NEW_BUFFER under the lock its release reader needs",
  },
  {
    id: "from-gst-geometry-per-frame",
    file: "src/gst/geometry_cache.ts",
    find: "      this.#geometry !== undefined && caps === this.#caps &&",
    replace: "      this.#geometry !== undefined && caps === this.#caps && Math.random() < 0 &&",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "from-gst allocates",
    why: "issue 20: a steady from-gst stream reuses the last buffer's geometry instead of " +
      "computing and validating a new one per frame (~650 B)",
  },
  {
    id: "from-gst-fresh-decode",
    file: "src/gst/unixfd_connection.ts",
    find: "decodeSinkMessage(framed.command, framed.payload, framed.fds, this.#reused)",
    replace: "decodeSinkMessage(framed.command, framed.payload, framed.fds)",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "from-gst",
    why: "issue 20: a NEW_BUFFER is decoded into one record per connection, not into fresh " +
      "objects, arrays and BigInts per frame",
  },
  {
    id: "socket-path-replaces-any-file",
    file: "src/linux/bind.ts",
    find: "    if ((entry.mode & LINUX.S_IFMT) !== LINUX.S_IFSOCK || entry.uid !== me) {",
    replace: "    if (false) {",
    tests: ["tests/socket_path_test.ts"],
    why: "issue 18 defect 3: listen/publish/to-gst unlinked a regular file (as root any file) " +
      "found at a socket path",
  },
  {
    id: "registry-live-by-name",
    file: "src/linux/backend.ts",
    find: "      return holdsSocket(pid, inodes);",
    replace: '      return "live";',
    tests: ["tests/registry_test.ts"],
    filter: "listed only for the pid that holds it",
    why: "issue 18 defect 6: list() judged an entry by its name, so a forged or reused-pid entry " +
      "was listed beside the live endpoint",
  },
  {
    id: "preview-without-token",
    file: "cli/preview.ts",
    find: "        refuseWithoutToken(request, url, actual, token);",
    replace: "        undefined;",
    tests: ["tests/cli_preview_test.ts"],
    filter: "refuses foreign Hosts",
    why: "issue 18 defect 4: the preview served any local user who forged Host and Origin",
  },
  {
    id: "preview-page-stops-asking",
    file: "cli/preview_page.ts",
    find: '    socket.send("ready");\n  };',
    replace: '    if (shown < 3) socket.send("ready");\n  };',
    tests: ["tests/cli_preview_test.ts"],
    filter: "headless Chromium",
    why: "the preview keeps showing frames (its counter moves on), judged within 20 s instead " +
      "of a fixed 500 ms a starved Chromium could miss",
  },
  {
    id: "linux-clock-monotonic",
    file: "src/linux/backend.ts",
    find: "  libc().clock_gettime(0, /* CLOCK_REALTIME */ timespecBytes);",
    replace: "  libc().clock_gettime(1, /* CLOCK_MONOTONIC */ timespecBytes);",
    tests: ["tests/channel_frames_test.ts"],
    filter: "the system real-time clock",
    why: "frames are stamped with the real-time clock, so that nowMicros() - timestamp is a " +
      "latency across processes and hosts; the test brackets it between two Date.now() readings " +
      "(its fixed 5 ms bound on one difference could fail under load)",
  },
  {
    id: "darwin-waitset-no-interrupt",
    file: "src/darwin/poller.ts",
    find: "    if (round.interruptPending) return;",
    replace: "    return;",
    tests: ["tests/darwin_waitset_test.ts"],
    filter: "timeouts, aborts and closes",
    why: "a receive with a nearer deadline than the shared wait's must interrupt it, not time " +
      "out when it ends (MAX_PARK_MS); judged against MAX_PARK_MS / 2, not a tight bound",
  },
  {
    id: "stats-latency-monotonic-clock",
    file: "cli/stats.ts",
    find: "  constructor(clockMicros: () => number = nowMicros) {",
    replace: "  constructor(clockMicros: () => number = () => performance.now() * 1000) {",
    tests: ["tests/cli_stats_test.ts"],
    filter: "receiver's nowMicros()",
    why: "watch and preview measure latency against the sender's nowMicros() (the real-time " +
      "clock): a process-local clock gives nonsense latencies",
  },
  {
    id: "stats-p50-off-by-one",
    file: "cli/stats.ts",
    find: "sorted[Math.floor(0.5 * (this.#count - 1))]",
    replace: "sorted[Math.floor(0.5 * this.#count)]",
    tests: ["tests/cli_stats_test.ts"],
    filter: "latency percentiles",
    why: "the p50 of watch and preview is the median; the test judges it exactly with a fixed " +
      "clock (its wall-clock bound was flaky under load)",
  },
  {
    id: "to-gst-stall-clock-from-last-release",
    file: "src/gst/to_gst_clients.ts",
    find: "if (state.held + 1 === this.#clientBudget) state.fullSince = now;",
    replace: "",
    tests: ["tests/gst_client_budget_test.ts"],
    filter: "filled its budget",
    why: "a client's stall was timed from its last release: after a pause in the stream longer " +
      "than stallTimeout, the frame that found it at its budget cut it off at once (the " +
      "gst_client_budget flake under load)",
  },
  {
    id: "to-gst-no-client-budget",
    file: "src/gst/to_gst_clients.ts",
    find: "      if (state.held < this.#clientBudget) {",
    replace: "      if (true) {",
    tests: ["tests/gst_client_budget_test.ts"],
    filter: "never releases",
    why: "issue 18 defect 2: a unixfdsrc that never released held every frame and drained the " +
      "producer's pool",
  },
  {
    id: "gst-copy-reads-whole-plane",
    file: "src/gst/caps.ts",
    find: "          Math.min(plane.height, Math.floor((COPY_READ_MAX - row) / stride) + 1),",
    replace: "          plane.height,",
    tests: ["tests/gst_stride_test.ts"],
    filter: "copied in bounded memory",
    why: "issue 18 defect 7: a lying GstVideoMeta stride made the copy path read (and allocate) " +
      "stride x height bytes",
  },
  {
    id: "wire-short-message-reads-past-end",
    file: "src/wire/wire.ts",
    find: "`message of ${message.length} bytes is shorter than the ${HEADER_SIZE}-byte header`",
    replace:
      "`message of ${view.getUint16(8, true)} bytes is shorter than the ${HEADER_SIZE}-byte " +
      "header`",
    tests: ["tests/wire_test.ts"],
    why: "c79dbef: an 8- or 9-byte message made decodeHeader read past its end (a RangeError " +
      "escaped instead of SHORT_MESSAGE; found by the fuzzer)",
  },
  {
    id: "pool-release-not-watched",
    file: "src/linux/surface.ts",
    find: "    if (this.#closed || !(surface instanceof MemfdSurface) || surface.fd < 0) return;",
    replace: "    return;",
    tests: ["tests/release_watch_test.ts"],
    why: "088cd82: a pool waiting for a release wakes on the kernel's close event (inotify), not " +
      "on its re-probe timer",
  },
  // --- README promises that a test guards ------------------------------------------------------
  {
    id: "keep-last-off",
    file: "src/pubsub/publish.ts",
    find: "      if (this.#keepLast) d.held.keepLast(message, backing.exportHandle());",
    replace: "      if (false) d.held.keepLast(message, backing.exportHandle());",
    tests: ["tests/pubsub_test.ts"],
    filter: "with keepLast (default) the last frame stays in use",
    why: "README: with keepLast (default) a late subscriber gets the last frame at once, so it " +
      "stays in use until the next one",
  },
  {
    id: "queue-subscriber-as-latest",
    file: "src/pubsub/publish.ts",
    find: 'if (subscriber.state === "subscribed" && subscriber.policy === "queue") {\n' +
      "            batch ??=",
    replace: "if (false) {\n            batch ??=",
    tests: ["tests/pubsub_test.ts"],
    filter: "a stalled 'queue' subscriber back-pressures the publisher, and loses nothing",
    why: "README: policy 'queue' gets every frame in order and send waits for it",
  },
  {
    id: "malformed-message-fds-kept",
    file: "src/linux/socket_receiver.ts",
    find: "        for (let i = 0; i < received.count; i++) closeQuietly(fds[i]);\n",
    replace: "",
    tests: ["tests/hostile_messages_test.ts"],
    filter: "every malformed message is a typed ProtocolError, its fds are closed",
    why: "README: no message, however malformed, leaks the descriptors it brought",
  },
  {
    id: "pool-reuses-held-surface",
    file: "src/surface/pool.ts",
    find: "      if (!entry.lent && !entry.backing.inUseElsewhere()) return this.#lend(entry);",
    replace: "      if (!entry.lent) return this.#lend(entry);",
    tests: ["tests/pool_test.ts"],
    filter: "a surface held by another process is not reused",
    why: "README: a pool never hands out a surface another process still holds",
  },
  {
    id: "latest-keeps-oldest",
    file: "src/pubsub/held_frames.ts",
    find: "      this.release(older);\n      subscriber.dropped++;\n    }\n",
    replace: "      this.release(item);\n      subscriber.dropped++;\n      return;\n    }\n",
    tests: ["tests/pubsub_test.ts"],
    filter: "a stalled 'latest' subscriber never slows the publisher, then gets the newest frame",
    why: "README: a 'latest' subscriber that falls behind gets the newest frame, not a stale one",
  },
  {
    id: "accept-returns-refused-peer",
    file: "src/linux/listener.ts",
    find: "        if (!this.#allowPeer(peer)) {\n          closeQuietly(fd); // refused",
    replace: "        if (false) {\n          closeQuietly(fd); // refused",
    tests: ["tests/channel_connections_test.ts"],
    filter: "peers are checked both ways; a refused client is skipped by accept()",
    why: "README: a peer allowPeer refuses (another uid by default) never comes out of accept()",
  },
  {
    id: "received-views-not-detached",
    file: "src/linux/received.ts",
    find: "    this.#unmapped = true;\n    detachBuffer(this.#buffer);\n",
    replace: "    this.#unmapped = true;\n",
    tests: ["tests/channel_mappings_test.ts"],
    filter: "received frames share one buffer per mapping, detached when the cache lets go",
    why: "README: views of a received frame are detached before its memory is unmapped, never " +
      "left dangling",
  },
  {
    id: "publish-depth-not-capped",
    file: "src/pubsub/delivery.ts",
    find: "      subscriber.depth = Math.min(depth, this.#budget.maxDepth);\n",
    replace: "      subscriber.depth = depth;\n",
    tests: ["tests/pubsub_budget_test.ts"],
    filter: "a depth-64 subscriber that never read",
    why: "issue 18: a SUBSCRIBE depth 64 that never reads took the whole pool",
  },
  {
    id: "plain-peer-unbounded",
    file: "src/pubsub/subscriber_state.ts",
    find: "    return connection.unreadByPeer === undefined || connection.unreadByPeer() === 0;\n",
    replace: "    return true;\n",
    tests: ["tests/pubsub_budget_test.ts"],
    filter: "a depth-64 subscriber that never read",
    why: "issue 18: a plain peer that never reads took every frame its socket had room for",
  },
  {
    id: "stalled-never-cut-off",
    file: "src/pubsub/budget.ts",
    find: '        this.#cutOff(subscriber, new TimeoutError("credit", this.#stallTimeout));\n',
    replace: "",
    tests: ["tests/pubsub_budget_test.ts"],
    filter: "a depth-64 subscriber that never read",
    why: "docs/protocol.md: a subscriber blocked for stallTimeout is cut off",
  },
  {
    id: "credit-blocks-receive",
    file: "src/pubsub/subscribe.ts",
    // (the reconnecting loop's call: the fast path in receive() is indented deeper, #wait's less)
    find: "      try {\n        this.#returnCredits(connection);\n",
    replace: "      try {\n        while (this.#unacknowledged > 0) {\n" +
      "          const count = Math.min(this.#unacknowledged, MAX_DEPTH);\n" +
      "          writeCredit(this.#creditView, count);\n" +
      "          await connection.sendControl(this.#credit, deadline, options.signal);\n" +
      "          this.#unacknowledged -= count;\n        }\n",
    also: [{
      // ... the common slow path (#wait) goes through that loop ...
      find: "      this.#returnCredits(connection);\n      // One #wait runs at a time",
      replace: "      return this.#settled(this.#receiveLoop(deadline, options));\n" +
        "      // One #wait runs at a time",
    }, {
      // ... and the fast path, which would otherwise return the frame: it leaves owed credits to it.
      find:
        "          this.#returnCredits(connection);\n          received = connection.tryReceive();\n",
      replace: '          if (this.#unacknowledged > 0) throw new Error("credits first");\n' +
        "          received = connection.tryReceive();\n",
    }],
    tests: ["tests/subscriber_credit_test.ts"],
    filter: "a publisher that stops reading CREDITs",
    why: "issue 18, defect 8: a receive timed out sending a credit with frames waiting",
  },
  // --- The macOS backend over the fakes (issues 19 and 23) ---------------------------------
  {
    id: "darwin-iosurface-width-height-swapped",
    file: "src/darwin/native.ts",
    find: 'set(dict, key("kIOSurfaceWidth"), scope.number(properties.width));\n' +
      '        set(dict, key("kIOSurfaceHeight"), scope.number(properties.height));',
    replace: 'set(dict, key("kIOSurfaceWidth"), scope.number(properties.height));\n' +
      '        set(dict, key("kIOSurfaceHeight"), scope.number(properties.width));',
    tests: ["tests/darwin_glue_test.ts"],
    filter: "property dictionary",
    why: "issue 23: the glue (wrapLibraries) did not run on Linux; the symbol-level fake " +
      "(tests/fakes/frameworks.ts) reads IOSurfaceCreate's dictionary as IOSurface does",
  },
  {
    id: "darwin-lock-options-swapped",
    file: "src/darwin/surface.ts",
    find: "return readOnly ? DARWIN.kIOSurfaceLockReadOnly : 0;",
    replace: "return readOnly ? 0 : DARWIN.kIOSurfaceLockReadOnly;",
    tests: ["tests/darwin_glue_test.ts"],
    filter: "read-only lock",
    why: "issue 23: the fake accepted any lock options; a write lock must bump IOSurface's " +
      "seed, a read-only one must neither write nor bump it",
  },
  {
    id: "darwin-ool-ports-count-kept",
    file: "src/darwin/mach.ts",
    find: "if (!ports || address === 0n) {",
    replace: "if (!ports) {",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 5",
    why: "issue 19 defect 5: a port array XNU could not map keeps its count at address 0; " +
      "mach_msg_destroy must not walk it",
  },
  {
    id: "darwin-no-senders-spoofable",
    file: "src/darwin/messages.ts",
    find: "    msghBitsLocal(bits) === DARWIN.MACH_MSG_TYPE_PORT_SEND_ONCE &&\n",
    replace: "",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 8",
    why: "issue 19 defect 8: a kernel's MIG bad-id reply (id 70) through a send right must " +
      "not pass for the peer's no-senders notification",
  },
  {
    id: "darwin-pid-version-dropped",
    file: "src/darwin/structs.ts",
    find: "pidVersion: audit[AUDIT_TOKEN_PIDVERSION_INDEX] | 0,",
    replace: "pidVersion: 0,",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 9",
    why: "issue 19 defect 9: an allowPeer on pid and pid version refuses a process that got " +
      "a reused pid",
  },
  {
    id: "darwin-dead-right-returned",
    file: "src/darwin/ports.ts",
    find: "    : dead\n    ? ",
    replace: "    : false\n    ? ",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "MACH_PORT_DEAD",
    why: "issue 19 defect 13: receivePortRight must not return MACH_PORT_DEAD as a right",
  },
  {
    id: "darwin-layout-cache-off",
    file: "src/darwin/received.ts",
    find: 'let problem = cached ? layoutMismatch(cached, geometry) : "not cached";',
    replace: 'let problem: string | undefined = "not cached";',
    tests: ["tests/darwin_glue_test.ts"],
    filter: "defect 12: a received frame",
    why: "issue 19 defect 12: a frame of a surface seen before costs 5 IOSurface/CF calls, " +
      "not 14-20",
  },
  {
    id: "darwin-stale-layout-refused",
    file: "src/darwin/received.ts",
    find: "      if (problem !== undefined) {\n        const layout = readLayout(native, surface);",
    replace: "      if (problem !== undefined && !cached) {\n        const layout = " +
      "readLayout(native, surface);",
    tests: ["tests/darwin_glue_test.ts"],
    filter: "defect 12: a surface whose ID",
    why: "issue 19 defect 12: a cached layout that no longer matches is read again before " +
      "the frame is refused",
  },
  {
    id: "darwin-inbox-default-qlimit",
    file: "src/darwin/mach.ts",
    find: "    setQueueLimit(native, port.name, INBOX_QUEUE_LIMIT);\n",
    replace: "",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 6: an inbox queues",
    why: "issue 19 defect 6: an inbox keeps XNU's default queue limit of 5 while depth goes to 64",
  },
  {
    id: "darwin-full-queue-polled",
    file: "src/darwin/send.ts",
    find: "    await room.wait(operation, deadline, signal);\n",
    replace: "    await new Promise((resolve) => setTimeout(resolve, 2));\n",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 6: an inbox queues",
    why: "issue 19 defect 6: a send to a full inbox waits for MACH_NOTIFY_SEND_POSSIBLE, not a " +
      "timer",
  },
  {
    id: "darwin-replaced-request-leaked",
    file: "src/darwin/send.ts",
    find: "      native.mach_port_deallocate(native.taskSelf, old);\n",
    replace: "",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "comes back as a right",
    why: "issue 23: the fake now returns a replaced request's send-once right, as XNU does; it " +
      "must be released",
  },
  {
    id: "darwin-live-name-retried",
    file: "src/darwin/bootstrap.ts",
    find:
      "if (look === DARWIN.BOOTSTRAP_SUCCESS && held === DARWIN.MACH_PORT_DEAD) return STILL_HELD;",
    replace: "if (look === DARWIN.BOOTSTRAP_SUCCESS) return STILL_HELD;",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 10",
    why: "issue 19 defect 10: only a name launchd still holds for a closed listener is retried " +
      "(by timers); a live listener's name fails at once",
  },
  {
    id: "darwin-listen-blocks-for-held-name",
    file: "src/darwin/listener.ts",
    find: "    const first = checkInOnce(native, service);\n",
    replace: "    let first = checkInOnce(native, service);\n" +
      "    for (const end = performance.now() + 250; first === STILL_HELD && performance.now() < end;) {\n" +
      "      first = checkInOnce(native, service);\n" +
      "    }\n",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 10",
    why: "issue 19 defect 10: listen() of a name launchd still holds retries on timers, never on " +
      "the thread; judged by the check-ins made during the call, not by how long it took",
  },
  {
    id: "darwin-sandbox-unexplained",
    file: "src/darwin/bootstrap.ts",
    find:
      "throw machError(call, kr, kr === DARWIN.BOOTSTRAP_NOT_PRIVILEGED ? SANDBOX_HINT : undefined);",
    replace: "throw machError(call, kr);",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 11",
    why: "issue 19 defect 11: a sandboxed caller is told the sandbox denies mach-register",
  },
  {
    id: "darwin-app-group-ignored",
    file: "src/darwin/bootstrap.ts",
    find: 'const service = (group ? `${group}.` : "") + SERVICE_PREFIX + name;',
    replace: "const service = SERVICE_PREFIX + name;",
    tests: ["tests/darwin_xnu_test.ts"],
    filter: "defect 11",
    why: "issue 19 defect 11: a sandboxed app's channel names start with its application group",
  },
  {
    id: "darwin-registry-pid-ignored",
    file: "src/darwin/backend.ts",
    find: '      if (probe === DARWIN.ESRCH) return "dead";',
    replace: "",
    tests: ["tests/darwin_registry_test.ts"],
    filter: "dead owner's entry",
    why: "issue 19 defect 7: a dead owner's entry counted as live while another process held " +
      "its name (the pid was ignored), and an unresolvable one stayed on disk forever",
  },
  {
    id: "darwin-registry-probes-process-group",
    file: "src/darwin/backend.ts",
    find: '      if (!(pid > 0 && pid <= 0x7fffffff)) return "dead";',
    replace: "",
    tests: ["tests/darwin_registry_test.ts"],
    filter: "never probed as a process group",
    why: "issue 19 defect 7: an entry's pid 0 or -1 must not reach kill(), which would probe " +
      "this process's group or every process and find one alive",
  },
  // --- Issue 21: the runtime seam, Node and Bun ---------------------------------------------
  {
    id: "bun-address-before-materialized",
    file: "ffi/runtime_bun.ts",
    find: "  void bytes.buffer;\n  return bytes;",
    replace: "  return bytes;",
    tests: ["tests/runtimes_test.ts"],
    filter: "bun test",
    why: "issue 21: on Bun a small typed array's bytes move out of its heap cell at the first " +
      "`.buffer`; an address taken before (a msghdr's iovec) sent 0 bytes",
  },
  {
    id: "publish-last-before-subscribers",
    file: "src/pubsub/publish.ts",
    find: "      this.#busy();\n      let failure: unknown;",
    replace: "      if (this.#keepLast) d.held.keepLast(message, backing.exportHandle());\n" +
      "      this.#busy();\n      let failure: unknown;",
    tests: ["tests/pubsub_subscribe_race_test.ts"],
    why: "issue 21 (found by the cross-runtime tests): a SUBSCRIBE drained inside send() was " +
      "offered the frame being sent as the last one, then got it again",
  },
  // --- Publish/subscribe allocation per frame (issue 20) -------------------------------------
  {
    id: "publish-message-not-reused",
    file: "src/pubsub/subscriber_state.ts",
    find: "    if (spare.length === SPARE_MESSAGES) spare.shift();\n    spare.push(message);\n",
    replace: "",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "Publisher.send",
    why: "issue 20: a new message buffer per frame (and a new iovec address per subscriber)",
  },

  {
    id: "subscription-wait-async-loop",
    file: "src/pubsub/subscribe.ts",
    find: "        return this.#receiveTail = this.#wait(deadline, options);",
    replace:
      "        return this.#receiveTail = this.#settled(this.#receiveLoop(deadline, options));",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "Subscription.receive",
    why: "issue 20: a parked receive through two async frames and a settling layer (5.3 KB)",
  },
  {
    id: "received-frame-registered-with-token",
    file: "src/surface/surface.ts",
    find:
      'if (origin === "received" || origin === "adopted") finalizers[origin].register(this, owner);',
    replace:
      'if (origin === "received" || origin === "adopted") finalizers[origin].register(this, owner, this);',
    also: [{
      // ... and close() unregisters it (a token never unregistered costs V8 little).
      find: 'else if (origin !== "adopted") finalizers[origin].unregister(this);',
      replace: "finalizers[origin].unregister(this);",
    }],
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "Subscription.receive",
    why: "issue 20: registering each received frame with an unregister token, unregistered at " +
      "close(), cost ~52 B per frame (V8's token map)",
  },
  {
    id: "received-finalizer-ignores-release",
    file: "src/surface/surface_lifetime.ts",
    find: '    if (!(owner as SurfaceBacking).released) dropped(owner, "received");',
    replace: '    dropped(owner, "received");',
    tests: ["tests/channel_mappings_test.ts"],
    filter: "not finalized again",
    why: "issue 20: received frames keep their registration after close(); the finalizer of a " +
      "closed frame must not release, count or warn again",
  },
  {
    id: "bell-read-async-frame",
    file: "src/linux/bell_tower.ts",
    find: "      return this.#conn.read(this.#buffer).then(this.#ringsRead, this.#readFailed);",
    replace: "      return (async () => this.#ringsRead(await this.#conn.read(this.#buffer)))()\n" +
      "        .catch(this.#readFailed);",
    tests: ["tests/wakeup_allocation_test.ts"],
    why: "issue 20: the doorbell's read of its rings as an async function cost ~300 B per " +
      "parked receive",
  },
  {
    id: "subscription-wait-through-then",
    file: "src/pubsub/subscribe.ts",
    find: "      if (connection.receiveThen) {",
    replace: "      if (connection.receiveThen && this.#closed) {",
    tests: ["tests/wakeup_allocation_test.ts"],
    why: "issue 20: a parked subscriber receive chained a `then` on the connection's own " +
      "promise (and its resolvers) instead of being called back",
  },
  {
    id: "channel-receive-async-run",
    file: "src/channel/channel.ts",
    find: "      if (this.#receivesPending === 1 && connection.receiveThen) {",
    replace: "      if (this.#receivesPending === 1 && connection.receiveThen && this.#closed) {",
    tests: ["tests/allocation_test.ts"],
    filter: "parks until its frame comes",
    why: "issue 20: a parked channel receive ran an async function with its closure and a `then` " +
      "on the connection's promise (~0.5 KB per frame)",
  },
  {
    id: "shared-poll-as-calls",
    file: "src/linux/poller.ts",
    find: "    if (pollThreadEnabled && !this.#threadBroken && runtime.pollThread) {",
    replace: "    if (false) {",
    tests: ["tests/pubsub_allocation_test.ts", "tests/poll_thread_test.ts"],
    filter: "parked",
    why: "issue 20: the shared poll as a nonblocking call per round (the runtime's call, its " +
      "promise and a `then`: 0.4-0.9 KB per parked receive) instead of its thread's callback",
  },
  {
    id: "poller-defers-rearmed-round",
    file: "src/linux/poller.ts",
    find: "    if (!unarmed) return this.#startRound();\n",
    replace: "",
    tests: ["tests/gst_allocation_test.ts"],
    filter: "live source",
    why: "issue 20: a round after one whose woken waits all armed again from their callbacks " +
      "must start at once, not a microtask later (a `then`, ~97 B per frame behind a live source)",
  },
  {
    id: "publisher-credit-wait-async",
    file: "src/pubsub/delivery.ts",
    find: "    if (connection.waitControlThen) {",
    replace: "    if (connection.waitControlThen && subscriber.closed) {",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "credit",
    why: "issue 20: the publisher's wait for a lagging subscriber's credit as an async loop over " +
      "receiveControl (~0.9 KB per frame) instead of the connection's re-armed wait",
  },
  {
    id: "poll-thread-not-refd",
    file: "ffi/runtime_deno_poll.ts",
    find: "      this.#callback.ref();",
    replace: "",
    tests: ["tests/poll_thread_test.ts"],
    filter: "in flight",
    why: "issue 20: a poll in flight on the thread must keep the process alive, as the " +
      "nonblocking call it replaced did (a Deno process that ends while the worker polls can " +
      "also crash at exit)",
  },
  {
    id: "poll-thread-worker-refd",
    file: "ffi/runtime_deno_poll.ts",
    find: "    worker.unref();",
    replace: "",
    tests: ["tests/poll_thread_test.ts"],
    filter: "exits by itself",
    why: "issue 20: the poll's worker must never keep an idle process alive",
  },
  {
    id: "poll-thread-failure-not-resumed",
    file: "src/linux/poller.ts",
    find: "    this.#thread = this.#chooseRunner();\n    this.#startRound();\n",
    replace: "    this.#thread = this.#chooseRunner();\n",
    tests: ["tests/poll_thread_test.ts"],
    filter: "cannot load",
    why: "issue 20: when the poll's thread fails, the round it had must go on as a nonblocking " +
      "call (its waits would hang)",
  },
  {
    id: "poll-thread-worker-spins-idle",
    file: "ffi/runtime_deno_poll.ts",
    find: "      Atomics.wait(words, ${STATE}, state);\n",
    replace: "",
    tests: ["tests/poll_thread_test.ts"],
    filter: "CPU",
    why: "an idle poll thread must sleep: a worker that spins for its next round costs a core",
  },
  {
    id: "poller-rounds-never-block",
    file: "src/linux/poller.ts",
    find: "        : Math.max(0, Math.min(Math.ceil(deadline - performance.now()), 0x7fffffff));",
    replace: "        : 0;",
    tests: ["tests/poll_thread_test.ts"],
    filter: "CPU",
    why: "a parked wait must cost no CPU: rounds polled with timeout 0 until the deadline spin",
  },
  {
    id: "poll-thread-gate-left-open",
    file: "ffi/runtime_deno_poll.ts",
    find: "      Atomics.store(this.#words, GATE, CLOSED);\n",
    replace: "",
    tests: ["tests/poll_thread_test.ts"],
    filter: "deno test",
    why: "CI of 4892dbc: a deno test module's runtime went with a wait parked, the poll returned " +
      "later and the worker called back into freed memory (SIGSEGV, SIGABRT)",
  },
  {
    id: "poll-thread-left-in-poll",
    file: "ffi/runtime_deno_poll.ts",
    find: "      if (this.#endFlight()) interrupt();",
    replace: "      this.#endFlight();",
    tests: ["tests/poll_thread_test.ts"],
    filter: "deno test",
    why: "a runtime that went with a wait parked left its poll's thread blocked in poll for good",
  },
  {
    id: "poll-thread-in-workers",
    file: "ffi/runtime_deno_poll.ts",
    find: '  return isMainThread && !("WorkerGlobalScope" in globalThis);',
    replace: "  return true;",
    tests: ["tests/poll_thread_test.ts"],
    filter: "Worker terminated",
    why: "a Worker terminated with a wait parked (no unload) had its poll's thread call back " +
      "into its freed runtime",
  },
  {
    id: "gst-supervisor-backoff-stays-zero",
    file: "src/gst/from_gst_supervisor.ts",
    find: "        backoff = 50;\n        continue;",
    replace: "        backoff = 0;\n        continue;",
    tests: ["tests/gst_supervisor_test.ts"],
    why: "found splitting the supervisor out: after a copy-mode switch restarted the pipeline " +
      "at once, a PipeWire source whose node was gone was launched again in a loop (0 doubled)",
  },
  // --- Issue 22: PipeWire -------------------------------------------------------------------
  {
    id: "pipewire-holds-below-budget",
    file: "src/gst/from_gst_options.ts",
    find: "budget > 0 ? budget + 1 : 8;",
    replace: "budget > 0 ? 4 : 8;",
    tests: ["tests/pipewire_test.ts"],
    filter: "keeps 3 frames",
    why: "issue 22: from-pipewire held 4 frames, below its publisher's surfaceBudget: a " +
      "subscriber that kept 3 and stopped reading held all 4 and starved the others",
  },
  {
    id: "pipewire-sink-feedless-pipeline-kept",
    file: "src/gst/pipewire.ts",
    find: "      if (!lost) return;",
    replace: "      if (lost !== null) return;",
    tests: ["tests/pipewire_test.ts"],
    filter: "never lets go",
    why: "issue 22: a to-pipewire pipeline whose unixfdsrc to-gst had cut off (behind a stopped " +
      "PipeWire consumer) lived on feeding the node nothing: the next client got no frames",
  },
  {
    id: "pipewire-direct-copies",
    file: "src/gst/pipewire.ts",
    find: '  #copy: PipeWireCopyMode = "direct";',
    replace: '  #copy: PipeWireCopyMode = "swap";',
    tests: ["tests/pipewire_zero_copy_test.ts"],
    why: "issue 22: a producer's memfds reach subscribers without a copy (the subscriber maps " +
      "the producer's inode)",
  },
  {
    id: "pipewire-buffer-back-while-held",
    file: "src/gst/held_buffers.ts",
    find: "      if (surface.inUse) {",
    replace: "      if (surface.closed) {",
    tests: ["tests/pipewire_zero_copy_test.ts"],
    why: "issue 22: a PipeWire buffer goes back to its producer only once every surfaceport " +
      "consumer let go of it",
  },
  // --- Issue 22: the timestamp across the network --------------------------------------------
  {
    id: "network-timestamp-next-frame",
    file: "src/gst/to_gst.ts",
    find: "const message = this.#writer.recordFor(id, frame.timestamp);",
    replace: "const message = this.#writer.recordFor(id, frame.timestamp! + 33_333);",
    tests: ["tests/network_send_receive_test.ts"],
    filter: "send / receive H.264:",
    why: "issue 22: each frame must arrive with the timestamp its sender gave that very frame; " +
      "one frame off is a wrong timestamp, not a late one",
  },
  {
    id: "network-ntp-rounding-kept",
    file: "src/gst/timestamp_meta.ts",
    find: "return Number((nanos + 1n) / 1000n) - NTP_TO_UNIX_MICROS;",
    replace: "return Number(nanos / 1000n) - NTP_TO_UNIX_MICROS;",
    tests: ["tests/network_timestamps_test.ts"],
    filter: "NTP's 32.32",
    why: "issue 22: rtphdrextntp64 rounds down twice and may take 1 ns off; the µs timestamp " +
      "must still come back exactly",
  },
  {
    id: "network-merged-timestamps-trusted",
    file: "src/gst/network.ts",
    find: "        found = undefined;\n        break;",
    replace: "        break;",
    tests: ["tests/network_timestamps_test.ts"],
    filter: "SenderTimestamps",
    why: "issue 22: a buffer carrying the timestamps of two frames (packets merged after a loss) " +
      "must not be republished with either",
  },
  {
    id: "network-repeated-timestamp-trusted",
    file: "src/gst/network.ts",
    find: "if (timestamp === null || timestamp === this.#last) {",
    replace: "if (timestamp === null) {",
    tests: ["tests/network_timestamps_test.ts"],
    filter: "SenderTimestamps",
    why: "issue 22: the previous frame's timestamp again (a depayloader that labelled a frame " +
      "with the next one's packet) must not be trusted",
  },
  {
    id: "send-batch-record-not-reused",
    file: "src/pubsub/send_batch.ts",
    find: "    if (this.#spare.length < SPARE_BATCHES) this.#spare.push(batch);\n",
    replace: "",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "queue",
    why: "a send() waiting for a 'queue' subscriber made a batch, its arrays and closures per " +
      "frame (872 B, 2.34 KB with a timeout) where its record can be reused",
  },
  {
    id: "queue-subscriber-array-shift",
    file: "src/pubsub/subscriber_state.ts",
    find: "  readonly queue: FrameQueue = new FrameQueue();",
    replace: "  readonly queue = Object.assign([] as Outgoing[], {\n" +
      "    remove(this: Outgoing[], item: Outgoing): boolean {\n" +
      "      const at = this.indexOf(item);\n" +
      "      if (at >= 0) this.splice(at, 1);\n" +
      "      return at >= 0;\n" +
      "    },\n" +
      "  });",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "queue",
    why: "a 'queue' subscriber's frames in an array: shift() of its last frame let V8 drop the " +
      "backing store, and each frame's push() made a new one (152 B a frame)",
  },
  {
    id: "send-batch-timer-per-send",
    file: "src/pubsub/send_batch.ts",
    find: "      this.#timed.push(batch);\n",
    replace: "      this.#timed.push(batch);\n      this.#timerDue = Infinity;\n",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "queue",
    why: "a setTimeout per waiting send() with a timeout (~1.2 KB a frame in the runtime's " +
      "timers) where the publisher's one timer, set for an earlier deadline, serves",
  },
  {
    id: "send-batch-earlier-deadline-late",
    file: "src/pubsub/send_batch.ts",
    find: "      if (deadline < this.#timerDue) this.#arm(deadline);",
    replace: "      if (this.#timer === undefined) this.#arm(deadline);",
    tests: ["tests/pubsub_send_wait_test.ts"],
    filter: "withdraws its frame",
    why: "a send() with a shorter timeout than one already waiting timed out only at the " +
      "other's deadline (the publisher's timer not brought forward)",
  },
  {
    id: "send-batch-expiry-ignores-deadline",
    file: "src/pubsub/send_batch.ts",
    find: "      if (batch.deadline <= now) batch.fail(",
    replace: "      if (batch.deadline <= now || true) batch.fail(",
    tests: ["tests/pubsub_send_wait_test.ts"],
    filter: "reuses a settled send's record",
    why: "the timer set for a settled send's deadline failed the send that reuses its record " +
      "(a stale timer acting on a reused record)",
  },
  {
    id: "send-batch-stale-abort",
    file: "src/pubsub/send_batch.ts",
    find: "    if (!this.#settled && signal?.aborted) this.fail(signal.reason);",
    replace: "    if (!this.#settled) this.fail(signal?.reason);",
    also: [{
      find: '    this.signal?.removeEventListener("abort", this.#onAbort);\n',
      replace: "",
    }],
    tests: ["tests/pubsub_send_wait_test.ts"],
    filter: "reuses a settled send's record",
    why: "a settled send's abort signal, still listened to, failed the send that reuses its " +
      "record",
  },
  {
    id: "send-batch-settles-while-filling",
    file: "src/pubsub/send_batch.ts",
    find: "    if (--this.#remaining === 0 && !this.#filling) this.#settle(undefined);",
    replace: "    if (--this.#remaining === 0) this.#settle(undefined);",
    tests: ["tests/pubsub_send_wait_test.ts"],
    filter: "resolves only once",
    why: "a send() resolved once the 'queue' subscribers it had been through so far took the " +
      "frame, before it was queued for the later ones (and its record was free for reuse)",
  },
  {
    id: "send-batch-late-report-of-earlier-turn",
    file: "src/pubsub/send_batch.ts",
    find: "    if (item.turn === this.turn) this.fail(error);",
    replace: "    this.fail(error);",
    tests: ["tests/pubsub_send_wait_test.ts"],
    filter: "reports back late",
    why: "a frame whose send() was aborted while it was being sent reported its failure to " +
      "the send that reuses the record, which then rejected",
  },
  {
    id: "publish-held-record-not-reused",
    file: "src/pubsub/held_frames.ts",
    find: "    if (this.#spareItems.length < SPARE_ITEMS) this.#spareItems.push(item);\n",
    replace: "",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "Publisher.send",
    why: "issue 20: a record per frame held for a subscriber a frame behind",
  },
  {
    id: "sendmsg-address-per-buffer-switch",
    file: "src/linux/socket_sender.ts",
    find: "message === this.#otherBuffer ? this.#otherAddress : addressOf(message);",
    replace: "addressOf(message);",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "Publisher.send",
    why: "issue 20: a pointer and a BigInt per sendmsg when a publisher's two messages alternate",
  },
  {
    id: "darwin-publish-extra-export",
    file: "src/pubsub/publish.ts",
    find: "        const handle = backing.exportHandle();\n",
    replace: "        backend().releaseHandle(backing.exportHandle());\n" +
      "        const handle = backing.exportHandle();\n",
    tests: ["tests/darwin_glue_test.ts"],
    filter: "issue 20",
    why: "issue 20: the macOS publisher's framework calls per frame over the fake (a port per " +
      "subscriber, one for the kept last frame)",
  },
  {
    id: "network-meta-of-next-frame",
    file: "src/gst/network.ts",
    find: "const joined = this.#senderMetas.take(timestamp);",
    replace: "const joined = this.#senderMetas.take(timestamp + 33_333);",
    tests: ["tests/network_send_receive_test.ts"],
    filter: "send / receive H.264:",
    why: "issue 22: the sender's metadata of a frame must arrive with that frame, joined by its " +
      "timestamp, not with its neighbour",
  },
  {
    id: "network-meta-record-length-unchecked",
    file: "src/gst/network_meta.ts",
    find: "if (length < META_RECORD_HEADER - 4 || length > MAX_META_RECORD - 4) {",
    replace: "if (length < META_RECORD_HEADER - 4) {",
    tests: ["tests/network_timestamps_test.ts"],
    filter: "metadata records survive",
    why: "issue 22: a side-channel peer announcing a 2 GiB record must be cut off, not buffered",
  },
  {
    id: "frames-through-async-generator",
    file: "src/channel/frame.ts",
    find: "  return new FrameIterator(receive, isClosed);\n",
    replace: "  return (async function* () {\n    for (;;) yield await receive();\n  })();\n",
    tests: ["tests/pubsub_allocation_test.ts"],
    filter: "Subscription.receive",
    why: "issue 20: for await over an async generator cost ~0.9 KB per frame",
  },
  {
    id: "pipewire-recolour-passthrough",
    file: "src/gst/pipewire_pipelines.ts",
    find: 'const colorimetry = sourceColorimetry === "1:1:0:0" ? "1:1:1:0" : "1:1:0:0";',
    replace: 'const colorimetry = sourceColorimetry ?? "sRGB";',
    tests: ["tests/pipewire_test.ts"],
    filter: "daemon killed",
    why: "issue 22: an RGB node already in the format wanted is copied once (recolour); caps " +
      "equal to the source's let videoconvert pass mapped memory through (unixfdsink refuses " +
      "it), and the bridge fell back to two copies",
  },
  // --- The test harness beside other test processes ------------------------------------------
  {
    id: "helpers-proc-stat-taken-for-gone",
    file: "tests/helpers.ts",
    find: "  const lib = libc();\n  const fd = lib.open(cString(`/proc/${pid}`)",
    replace: "  try {\n    Deno.statSync(`/proc/${pid}`);\n    return true;\n  } catch {\n" +
      "    return false;\n  }\n  const lib = libc();\n  const fd = lib.open(cString(`/proc/${pid}`)",
    tests: ["tests/helpers_test.ts"],
    why: "Deno refuses stat of /proc/PID without --allow-all: taken for 'gone', every test " +
      "process removed the PipeWire runtime directories, temporary sockets and network " +
      "namespaces of the other test processes running beside it (the PipeWire and network " +
      "flakes of concurrent suites)",
  },
];
