// Load progress: byte counts per shard, a transfer rate over a sliding window, and throttled
// delivery (at most one event per INTERVAL_MS, plus every change of phase or shard, plus "ready").
// A change held back by the throttle is delivered by a timer (every TICK_MS) once INTERVAL_MS have
// passed, so the last bytes of a burst are not left unreported. While no byte arrives (a stalled
// server: the loader has no fetch timeout), an event still comes every HEARTBEAT_MS, with the same
// loadedBytes and a rate that falls to 0, until stop().

const INTERVAL_MS = 100;
const WINDOW_MS = 2000;
const HEARTBEAT_MS = 1000;
const TICK_MS = 250;

export class ProgressTracker {
  /** @param {((event: object) => void) | undefined} onProgress */
  constructor(onProgress) {
    this.onProgress = onProgress;
    this.phase = "manifest";
    this.totalBytes = 0;
    this.shardBytes = []; // bytes loaded so far, per shard
    this.shard = 0;
    this.shardCount = 0;
    this.file = undefined;
    this.fromCache = false;
    this.samples = []; // [time, loadedBytes], for the rate
    this.lastEmit = -Infinity;
    this.cacheWarning = undefined;
    this.held = false; // a change the throttle held back
    this.heartbeat = onProgress
      ? setInterval(() => {
          const since = performance.now() - this.lastEmit;
          if ((this.held && since >= INTERVAL_MS) || since >= HEARTBEAT_MS - 10) this.emit(true);
        }, TICK_MS)
      : undefined;
  }

  /** No more events (the load ended). */
  stop() {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Caching was given up for this load: reported on this and every later event. */
  setCacheWarning(warning) {
    this.cacheWarning = warning;
    this.emit(true);
  }

  /** The shard list is known: sizes drive totalBytes. */
  setShards(shards) {
    this.shardCount = shards.length;
    this.shardBytes = shards.map(() => 0);
    this.totalBytes = shards.reduce((s, x) => s + x.bytes, 0);
  }

  get loadedBytes() {
    return this.shardBytes.reduce((s, x) => s + x, 0);
  }

  /** Enter `phase` (always reported). */
  setPhase(phase, fields = {}) {
    const changed = phase !== this.phase || (fields.shard !== undefined && fields.shard !== this.shard);
    this.phase = phase;
    if (phase === "ready") this.stop();
    if (fields.shard !== undefined) this.shard = fields.shard;
    if (fields.file !== undefined) this.file = fields.file;
    if (fields.fromCache !== undefined) this.fromCache = fields.fromCache;
    if (changed) this.samples = [];
    this.emit(true);
  }

  /** Shard `i` now holds `bytes` bytes (goes back to 0 when a shard is re-fetched). */
  setShardBytes(i, bytes) {
    this.shardBytes[i] = bytes;
    this.emit(false);
  }

  emit(force) {
    if (!this.onProgress) return;
    const now = performance.now();
    const loaded = this.loadedBytes;
    this.samples.push([now, loaded]);
    while (this.samples.length > 2 && now - this.samples[0][0] > WINDOW_MS) this.samples.shift();
    if (!force && now - this.lastEmit < INTERVAL_MS) {
      this.held = true;
      return;
    }
    this.held = false;
    this.lastEmit = now;
    const [t0, b0] = this.samples[0];
    const moving = this.phase === "download" || this.phase === "cache";
    const bytesPerSecond = moving && now - t0 >= 50 ? Math.max(0, ((loaded - b0) * 1000) / (now - t0)) : 0;
    const left = Math.max(0, this.totalBytes - loaded);
    const event = {
      phase: this.phase,
      loadedBytes: loaded,
      totalBytes: this.totalBytes,
      bytesPerSecond: Math.round(bytesPerSecond),
      etaSeconds: this.phase === "ready" ? 0 : bytesPerSecond > 0 ? left / bytesPerSecond : undefined,
      shard: this.shard,
      shardCount: this.shardCount,
      fromCache: this.fromCache,
      file: this.file,
    };
    if (this.cacheWarning) event.cacheWarning = this.cacheWarning;
    try {
      this.onProgress(event);
    } catch (err) {
      // A throwing callback must not break the load; surface it where developers look.
      console.error("webgpu-llm: onProgress threw", err);
    }
  }
}
