// The engine's Web Worker: the package's own worker (PKG_URL/src/worker.js), started from a URL inside
// this app's folder. Why not let createWorkerEngine start /pkg/src/worker.js itself: a dedicated
// worker's script is matched against service-worker scopes by its own URL, and /pkg/ lies outside
// this app's scope (/www/app/), so that worker would not be controlled by sw.js and could not start
// offline. This one is in scope, so its imports and the wasm come from the service worker's cache.
//
// The package's module is imported dynamically (its path lives in config.js only); requests that
// arrive before it has loaded are held and replayed in order.

import { PKG_URL } from "./config.js";

const held = [];
const hold = (ev) => {
  ev.stopImmediatePropagation();
  held.push(ev.data);
};
self.addEventListener("message", hold);

try {
  await import(new URL("src/worker.js", PKG_URL).href);
  self.removeEventListener("message", hold);
  for (const data of held.splice(0)) self.dispatchEvent(new MessageEvent("message", { data }));
} catch (err) {
  // Answer every request (held and later) with a readable error instead of leaving the page waiting.
  const error = {
    code: "NETWORK",
    message:
      `the chat engine's code could not be loaded (${err?.message ?? err}). ` +
      "If you are offline, open the app once while online so it can keep its files for offline use.",
  };
  const reply = (data) => {
    if (data && data.id !== undefined && data.type !== "cancel") self.postMessage({ type: "error", id: data.id, error });
  };
  self.removeEventListener("message", hold);
  self.addEventListener("message", (ev) => reply(ev.data));
  for (const data of held.splice(0)) reply(data);
}
