// GenerationStream: what engine.generate() returns. An async iterable of `{text, tokenId}` chunks,
// one per generated token (text may be "" while a UTF-8 character is split across tokens), plus
// `result`, a promise of the summary. Generation starts at once and chunks are buffered until read;
// leaving a `for await` loop early (break, return, throw) stops the generation.

export class GenerationStream {
  /** @param {() => void} stop asks the engine to stop this generation */
  constructor(stop) {
    this._stop = stop;
    this._queue = [];
    this._waiters = [];
    this._state = "running"; // running | done | failed
    this._error = undefined;
    this._closed = false; // the consumer left the loop
    /** @type {Promise<object>} the summary (GenerationResult); rejects like the iteration does */
    this.result = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    // Whoever only iterates must not see an "unhandled rejection" for `result`.
    this.result.catch(() => {});
    /** Set when the prompt has been processed: `{promptTokens, reusedTokens}`. */
    this.prefill = undefined;
    /** @internal resolves when the prompt has been processed (or the generation ended), rejects
     * like `result` when it failed before that (BUSY, bad options) */
    this._started = new Promise((resolve, reject) => {
      this._startedResolve = resolve;
      this._startedReject = reject;
    });
    this._started.catch(() => {});
  }

  /** @internal an event from the core */
  _event(e) {
    if (e.type === "token") {
      // After a tool call opened, text is the call's (the OpenAI layer streams it as tool_calls).
      if (!this._closed) this._push(this._inCall ? { text: e.text, tokenId: e.id, toolCall: true } : { text: e.text, tokenId: e.id });
    } else if (e.type === "triggered") {
      this._inCall = true;
    } else if (e.type === "prefilled") {
      this.prefill = { promptTokens: e.promptTokens, reusedTokens: e.reusedTokens };
      this._startedResolve();
    }
  }

  /** @internal */
  _finish(result) {
    if (this._state !== "running") return;
    this._state = "done";
    this._startedResolve();
    this._resolve(result);
    this._wake();
  }

  /** @internal */
  _fail(error) {
    if (this._state !== "running") return;
    this._state = "failed";
    this._error = error;
    this._startedReject(error);
    this._reject(error);
    this._wake();
  }

  _push(chunk) {
    const w = this._waiters.shift();
    if (w) w.resolve({ value: chunk, done: false });
    else this._queue.push(chunk);
  }

  _wake() {
    for (const w of this._waiters.splice(0)) {
      if (this._state === "failed") w.reject(this._error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** The next chunk; rejects with the generation's error (e.g. BUSY, ABORTED). */
  next() {
    if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
    if (this._closed || this._state === "done") return Promise.resolve({ value: undefined, done: true });
    if (this._state === "failed") return Promise.reject(this._error);
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Called when a `for await` loop is left early: stops the generation (finishReason "abort"). */
  return() {
    this._closed = true;
    this._queue.length = 0;
    for (const w of this._waiters.splice(0)) w.resolve({ value: undefined, done: true });
    if (this._state === "running") this._stop();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Collect the whole text (convenience): resolves with `result`. */
  async text() {
    return (await this.result).text;
  }
}
