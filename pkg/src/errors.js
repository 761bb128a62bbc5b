// Errors: one class per stable `code`, so callers can `switch (err.code)` or `instanceof`. The wasm
// module throws plain `Error`s carrying `.code` (and details such as `.neededBytes`); `toLlmError`
// turns those, fetch/cache failures and DOMExceptions into these classes. Errors cross the worker
// boundary as plain objects (`errorToJSON` / `errorFromJSON`), so the class, code and details survive.

/** Every code a WebGpuLlmError can carry. */
export const ErrorCode = Object.freeze({
  WEBGPU_UNAVAILABLE: "WEBGPU_UNAVAILABLE",
  FEATURE_MISSING: "FEATURE_MISSING",
  LIMIT_TOO_SMALL: "LIMIT_TOO_SMALL",
  OUT_OF_MEMORY: "OUT_OF_MEMORY",
  BAD_MODEL: "BAD_MODEL",
  NETWORK: "NETWORK",
  QUOTA: "QUOTA",
  ABORTED: "ABORTED",
  BUSY: "BUSY",
  CONTEXT_OVERFLOW: "CONTEXT_OVERFLOW",
  INPUT_TOO_LONG: "INPUT_TOO_LONG",
  DEVICE_LOST: "DEVICE_LOST",
  BAD_REQUEST: "BAD_REQUEST",
  INTERNAL: "INTERNAL",
});

/** Base class of every error this package throws. `details` fields are copied onto the error. */
export class WebGpuLlmError extends Error {
  /**
   * @param {string} code one of ErrorCode
   * @param {string} message what happened and what to do about it
   * @param {object} [details] extra fields (e.g. `url`, `status`, `neededBytes`), copied onto the error
   * @param {{cause?: unknown}} [options]
   */
  constructor(code, message, details, options) {
    super(message, options);
    this.name = "WebGpuLlmError";
    this.code = code;
    if (details) {
      for (const [k, v] of Object.entries(details)) {
        if (v !== undefined && !(k in this)) this[k] = v;
      }
    }
  }
}

function subclass(name, code) {
  const cls = class extends WebGpuLlmError {
    constructor(message, details, options) {
      super(code, message, details, options);
      this.name = name;
    }
  };
  Object.defineProperty(cls, "name", { value: name });
  return cls;
}

export const WebGpuUnavailableError = subclass("WebGpuUnavailableError", ErrorCode.WEBGPU_UNAVAILABLE);
export const FeatureMissingError = subclass("FeatureMissingError", ErrorCode.FEATURE_MISSING);
export const LimitTooSmallError = subclass("LimitTooSmallError", ErrorCode.LIMIT_TOO_SMALL);
export const OutOfMemoryError = subclass("OutOfMemoryError", ErrorCode.OUT_OF_MEMORY);
export const BadModelError = subclass("BadModelError", ErrorCode.BAD_MODEL);
export const NetworkError = subclass("NetworkError", ErrorCode.NETWORK);
export const QuotaError = subclass("QuotaError", ErrorCode.QUOTA);
export const AbortedError = subclass("AbortedError", ErrorCode.ABORTED);
export const BusyError = subclass("BusyError", ErrorCode.BUSY);
export const ContextOverflowError = subclass("ContextOverflowError", ErrorCode.CONTEXT_OVERFLOW);
export const InputTooLongError = subclass("InputTooLongError", ErrorCode.INPUT_TOO_LONG);
export const DeviceLostError = subclass("DeviceLostError", ErrorCode.DEVICE_LOST);
export const BadRequestError = subclass("BadRequestError", ErrorCode.BAD_REQUEST);
export const InternalError = subclass("InternalError", ErrorCode.INTERNAL);

const CLASSES = {
  WEBGPU_UNAVAILABLE: WebGpuUnavailableError,
  FEATURE_MISSING: FeatureMissingError,
  LIMIT_TOO_SMALL: LimitTooSmallError,
  OUT_OF_MEMORY: OutOfMemoryError,
  BAD_MODEL: BadModelError,
  NETWORK: NetworkError,
  QUOTA: QuotaError,
  ABORTED: AbortedError,
  BUSY: BusyError,
  CONTEXT_OVERFLOW: ContextOverflowError,
  INPUT_TOO_LONG: InputTooLongError,
  DEVICE_LOST: DeviceLostError,
  BAD_REQUEST: BadRequestError,
  INTERNAL: InternalError,
};

/** A new error of the class for `code` (INTERNAL for an unknown code). */
export function makeError(code, message, details, options) {
  const cls = CLASSES[code] ?? InternalError;
  return new cls(message, details, options);
}

/** Fields of a wasm error worth keeping (anything not inherited from Error). */
function detailsOf(err) {
  const out = {};
  for (const k of Object.keys(err)) {
    if (k !== "code" && k !== "message" && k !== "stack" && k !== "name") out[k] = err[k];
  }
  return out;
}

/**
 * Any thrown value → WebGpuLlmError: wasm errors by `.code`, AbortError/TimeoutError → ABORTED,
 * QuotaExceededError → QUOTA (loads never let one through: they give caching up, loader.js),
 * anything else → INTERNAL (the original kept as `cause`).
 */
export function toLlmError(err) {
  if (err instanceof WebGpuLlmError) return err;
  if (err && typeof err === "object") {
    const code = err.code;
    if (typeof code === "string" && code in CLASSES) {
      return makeError(code, String(err.message ?? code), detailsOf(err), { cause: err });
    }
    if (err.name === "AbortError" || err.name === "TimeoutError") {
      return new AbortedError("the operation was aborted (AbortSignal)", undefined, { cause: err });
    }
    if (err.name === "QuotaExceededError") {
      return new QuotaError(
        `storage quota exceeded (${err.message}); free space with clearCache() or deleteCachedModel(), or call navigator.storage.persist()`,
        undefined,
        { cause: err },
      );
    }
    if (err instanceof Error) {
      return new InternalError(`${err.name}: ${err.message}`, undefined, { cause: err });
    }
  }
  return new InternalError(String(err));
}

/** The error for an aborted signal: its reason if that already is one of ours, else ABORTED. */
export function abortError(signal) {
  const reason = signal?.reason;
  if (reason instanceof WebGpuLlmError) return reason;
  const why = reason instanceof Error ? `: ${reason.message}` : typeof reason === "string" ? `: ${reason}` : "";
  return new AbortedError(`aborted by the caller's AbortSignal${why}`);
}

/** Throw ABORTED if `signal` is aborted. */
export function throwIfAborted(signal) {
  if (signal?.aborted) throw abortError(signal);
}

/** A plain, structured-clonable copy of an error (for postMessage). */
export function errorToJSON(err) {
  const e = toLlmError(err);
  const out = { code: e.code, message: e.message };
  for (const [k, v] of Object.entries(e)) {
    if (k === "code" || k === "message" || k === "name") continue;
    if (v === null || ["string", "number", "boolean"].includes(typeof v)) out[k] = v;
    else if (Array.isArray(v) && v.every((x) => ["string", "number"].includes(typeof x))) out[k] = v;
  }
  return out;
}

/** The inverse of errorToJSON. */
export function errorFromJSON(json) {
  const { code, message, ...details } = json ?? {};
  return makeError(code ?? "INTERNAL", message ?? "unknown error from the worker", details);
}
