/**
 * The page `surfaceport preview` serves: a canvas the frames are drawn into
 * as they arrive over a WebSocket, the stream's numbers, the producer's pool
 * as the consumer sees it, and a picker of the names `list` shows.
 *
 * Protocol (server → page): a binary message per frame, `u32le n`, `n`
 * bytes of JSON (`width`, `height`, `stats`...), then `width * height * 4`
 * bytes of RGBA; a text message `{"stats": ...}` when no frame came for a
 * while; `{"error": "..."}`, `{"ended": true}`. Page → server: `"ready"`
 * after drawing a frame (one frame in flight at a time keeps a slow page from
 * piling frames up).
 *
 * @module
 */

/** The HTML of the preview page. */
export const PREVIEW_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>surfaceport preview</title>
<style>
  body { margin: 0; background: #16181d; color: #e6e6e6; font: 13px/1.45 ui-monospace, monospace; }
  #view { position: absolute; left: 0; top: 0; background: #000; image-rendering: pixelated; }
  #panel { position: absolute; top: 0; padding: 10px 14px; min-width: 300px; }
  h1 { font-size: 14px; margin: 0 0 8px; }
  table { border-collapse: collapse; }
  td { padding: 1px 10px 1px 0; vertical-align: top; }
  td:first-child { color: #8b93a1; }
  #pool span { display: inline-block; margin: 2px 4px 0 0; padding: 0 4px; border: 1px solid #3a3f4b; }
  #pool span.current { border-color: #ffd24a; color: #ffd24a; }
  #status { color: #ffb454; margin-top: 8px; }
  select { background: #23262e; color: inherit; border: 1px solid #3a3f4b; font: inherit; }
</style>
</head>
<body>
<canvas id="view" width="320" height="180"></canvas>
<div id="panel">
  <h1>surfaceport preview</h1>
  <table>
    <tr><td>stream</td><td><select id="names"></select></td></tr>
    <tr><td>producer</td><td id="producer">-</td></tr>
    <tr><td>format</td><td id="format">-</td></tr>
    <tr><td>frames/s</td><td id="fps">-</td></tr>
    <tr><td>latency</td><td id="latency">-</td></tr>
    <tr><td>drops</td><td id="drops">-</td></tr>
    <tr><td>sequence</td><td id="sequence">-</td></tr>
    <tr><td>shown</td><td id="shown">0</td></tr>
    <tr><td>metadata</td><td id="meta">-</td></tr>
    <tr><td>pool</td><td id="pool">-</td></tr>
  </table>
  <div id="status">connecting…</div>
</div>
<script>
"use strict";
const canvas = document.getElementById("view");
const context = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let name = params.get("name") || "";
let socket, shown = 0, retry;

function ms(micros) { return (micros / 1000).toFixed(2) + " ms"; }

function showStats(s) {
  if (s.format) $("format").textContent = s.format + " " + s.width + "x" + s.height;
  $("fps").textContent = s.fps.toFixed(1);
  $("latency").textContent = "p50 " + ms(s.latencyP50Micros) + "  p99 " + ms(s.latencyP99Micros);
  $("drops").textContent = String(s.drops);
  $("sequence").textContent = String(s.sequence);
  $("meta").textContent = s.metaText;
  const pool = $("pool");
  pool.textContent = s.pool.length + " surfaces seen ";
  for (const surface of s.pool) {
    const span = document.createElement("span");
    span.textContent = surface.id + " ×" + surface.frames;
    if (surface.lastSequence === s.sequence) span.className = "current";
    pool.appendChild(span);
  }
}

function connect() {
  clearTimeout(retry);
  if (socket) { socket.onclose = null; socket.close(); }
  if (!name) { $("status").textContent = "pick a stream"; return; }
  $("status").textContent = "connecting to " + name + "…";
  socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/ws?name=" + encodeURIComponent(name));
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.stats) showStats(message.stats);
      if (message.producer) $("producer").textContent = message.producer;
      if (message.error) $("status").textContent = message.error;
      if (message.ended) $("status").textContent = "stream ended";
      return;
    }
    const view = new DataView(event.data);
    const headerLength = view.getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, headerLength)));
    const pixels = new Uint8ClampedArray(event.data, 4 + headerLength, header.width * header.height * 4);
    if (canvas.width !== header.width || canvas.height !== header.height) {
      canvas.width = header.width;
      canvas.height = header.height;
      $("panel").style.left = (header.width + 8) + "px";
    }
    context.putImageData(new ImageData(pixels, header.width, header.height), 0, 0);
    shown++;
    $("shown").textContent = String(shown);
    $("status").textContent = "";
    showStats(header.stats);
    socket.send("ready");
  };
  socket.onclose = () => {
    $("status").textContent = "disconnected; retrying…";
    retry = setTimeout(connect, 1000);
  };
}

async function refreshNames() {
  try {
    const endpoints = await (await fetch("/api/list")).json();
    const select = $("names");
    const names = endpoints.map((e) => e.name);
    if (name && !names.includes(name)) names.unshift(name);
    const current = [...select.options].map((o) => o.value).join("\\n");
    if (current !== names.join("\\n")) {
      select.textContent = "";
      for (const n of names) {
        const option = document.createElement("option");
        option.value = option.textContent = n;
        select.appendChild(option);
      }
    }
    select.value = name;
    if (!name && names.length) { name = names[0]; select.value = name; connect(); }
  } catch { /* the server went away: the socket's retry says so */ }
}

$("names").onchange = (event) => {
  name = event.target.value;
  history.replaceState(null, "", "?name=" + encodeURIComponent(name));
  shown = 0;
  $("shown").textContent = "0";
  connect();
};
$("panel").style.left = (canvas.width + 8) + "px";
refreshNames();
setInterval(refreshNames, 2000);
connect();
</script>
</body>
</html>
`;
