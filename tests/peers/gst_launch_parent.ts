/**
 * Starts an endless `gst-launch-1.0` pipeline through the command line's
 * launcher (`cli/gst_launch.ts`), prints `launched`, and waits to be killed:
 * `tests/gst_launch_test.ts` SIGKILLs it and checks the pipeline goes too.
 *
 * Usage: gst_launch_parent.ts TAG (the fakesink's name, to find the process)
 */

import { denoGstLauncher } from "../../cli/gst_launch.ts";

const tag = Deno.args[0];
denoGstLauncher(["videotestsrc", "is-live=true", "!", "fakesink", `name=${tag}`]);
console.log("launched");
setInterval(() => {}, 1000); // hold the process until it is killed
